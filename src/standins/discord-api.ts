import { randomBytes } from 'node:crypto';
import { STATUS_CODES } from 'node:http';
import type { AddressInfo } from 'node:net';
import multipart from '@fastify/multipart';
import fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';

/** How to start the stand-in. */
export interface DiscordStandInOptions {
  /** Port on 127.0.0.1; 0 (the default) picks a free one. */
  port?: number;
  /** The application id the bot uses in webhook and command routes. */
  applicationId: string;
  /** When set, bot-authenticated routes require `Authorization: Bot <botToken>`; when unset they accept any caller. */
  botToken?: string;
  /** How long an interaction token works after it is issued, in ms. Default 900_000 (15 min), as on Discord. */
  tokenLifetimeMs?: number;
}

/** A file uploaded in a multipart request. */
export interface RecordedFile {
  /** The multipart field name, e.g. `files[0]`. */
  field: string;
  filename: string;
  contentType: string;
  data: Buffer;
}

/** One HTTP call the bot made, with what the stand-in answered. Rejected calls are recorded too. */
export interface RecordedCall {
  method: string;
  /** Decoded path after the `/api/v{n}` prefix, e.g. `/webhooks/123/abc/messages/@original`. */
  path: string;
  /** The matched route, e.g. `PATCH /webhooks/:app/:token/messages/@original`; `METHOD path` for unknown routes. */
  route: string;
  /** The interaction token in the path, if the route has one. */
  token: string | null;
  authorization: string | null;
  /** The JSON body, the parsed `payload_json` of a multipart body, the raw text of unparseable JSON, or null. */
  body: unknown;
  files: RecordedFile[];
  /** The HTTP status the stand-in answered. */
  status: number;
  /** When the call arrived (`Date.now()`). */
  at: number;
}

/** A message as Discord holds it after the calls so far. */
export interface StoredMessage {
  /** A snowflake-like numeric string. */
  id: string;
  channelId: string;
  content: string;
  embeds: unknown[];
  components: unknown[];
  attachments: Array<{ id: string; filename: string; size: number; contentType: string }>;
  /** The bytes behind `attachments`, in the same order. */
  files: RecordedFile[];
  /** Successful PATCHes so far. A followup that fills a deferred response is not an edit. */
  editCount: number;
  /** Message flags: 64 ephemeral, 128 loading (a deferred response nobody has edited yet), 4 embeds suppressed. */
  flags: number;
}

/**
 * A local stand-in for the slice of Discord's HTTP API this bot uses: interaction webhooks, channel messages and
 * command registration. It validates requests against Discord's documented limits, answers with Discord's error
 * shapes, and records every call so tests can assert on what Discord would have received.
 */
export interface DiscordStandIn {
  /** The `api` option for `@discordjs/rest`, e.g. `http://127.0.0.1:PORT/api` (the client appends `/v10`). */
  readonly url: string;
  /** Every call so far, in the order they were answered. */
  readonly calls: RecordedCall[];

  /**
   * Creates an interaction as if Discord had just delivered it, with a fresh token that works for `tokenLifetimeMs`.
   * Its `@original` message exists only after {@link DiscordStandIn.acknowledge}.
   */
  issueInteraction(options: { channelId: string; ephemeral?: boolean }): { id: string; token: string };

  /**
   * Records the bot's initial interaction response: type 4 creates `@original` from `data` (content, and embeds or
   * components if present), type 5 an empty "thinking" `@original` (flag 128 until it is edited or filled by the
   * first followup). Flags default to 64 when the interaction was issued as ephemeral. Throws for an unknown token,
   * a second acknowledgement, a type 4 response Discord would refuse (empty, too long...), or any other type.
   */
  acknowledge(token: string, response: { type: number; data?: { content?: string; flags?: number } }): void;

  /** Makes the token invalid from now on, as if its 15 minutes had passed. */
  expireToken(token: string): void;

  /** The interaction's `@original` message, or undefined before acknowledgement and after deletion. A copy. */
  originalMessage(token: string): StoredMessage | undefined;

  /**
   * Messages posted to the channel with the bot token plus interaction followups, oldest first, deleted ones left
   * out. `@original` messages are not included, nor is a followup that filled a deferred `@original`. Copies.
   */
  channelMessages(channelId: string): StoredMessage[];

  /**
   * Resolves with the first recorded call, past or future, that matches. Rejects after `timeoutMs` (default
   * 10_000, 10 s) with an error listing the calls seen so far, when the predicate throws, or when the stand-in closes.
   */
  waitFor(predicate: (call: RecordedCall) => boolean, timeoutMs?: number): Promise<RecordedCall>;

  /**
   * Fails the next `count` matching calls with `status` before anything else is checked. A call matches when its
   * `route` (e.g. `PATCH /webhooks`) or `path` (e.g. `/channels/`) starts with `routePrefix`, or always when it is
   * omitted. A 429 carries `Retry-After` and JSON `retry_after` of `retryAfterSeconds` (default 0.1 s).
   */
  failNext(count: number, status: number, routePrefix?: string, retryAfterSeconds?: number): void;

  /** Stops listening and rejects pending `waitFor` calls. */
  close(): Promise<void>;
}

/**
 * Starts the stand-in on 127.0.0.1. Throws a TypeError when an option is invalid.
 * Routes answer under `/api`, `/api/v10` and any other `/api/v{n}`.
 */
export async function startDiscordStandIn(options: DiscordStandInOptions): Promise<DiscordStandIn> {
  const standIn = new DiscordApiStandIn(normalizeOptions(options));
  await standIn.listen();
  return standIn;
}

const DEFAULTS = {
  port: 0,
  tokenLifetimeMs: 900_000, // 15 min
  retryAfterSeconds: 0.1,
  waitForTimeoutMs: 10_000, // 10 s
} as const satisfies Record<string, number>;

const LIMITS = {
  content: 2000,
  embeds: 10,
  embedTitle: 256,
  embedDescription: 4096,
  embedFields: 25,
  embedFieldName: 256,
  embedFieldValue: 1024,
  embedFooterText: 2048,
  embedAuthorName: 256,
  embedTotal: 6000,
  actionRows: 5,
  rowComponents: 5,
  customId: 100,
  buttonLabel: 80,
  buttonUrl: 512,
  attachments: 10,
  fileBytes: 10 * 1024 * 1024, // 10 MiB, Discord's upload limit without server boosts
  commands: 100,
  commandName: 32,
  commandDescription: 100,
  commandOptions: 25,
  optionChoices: 25,
  choiceName: 100,
  choiceValue: 100,
  commandTotal: 4000,
} as const;

const MESSAGE_FLAG = {
  suppressEmbeds: 1 << 2,
  ephemeral: 1 << 6,
  loading: 1 << 7,
  suppressNotifications: 1 << 12,
  componentsV2: 1 << 15,
} as const;

const FOLLOWUP_FLAGS =
  MESSAGE_FLAG.suppressEmbeds | MESSAGE_FLAG.ephemeral | MESSAGE_FLAG.suppressNotifications | MESSAGE_FLAG.componentsV2;
const CHANNEL_POST_FLAGS = MESSAGE_FLAG.suppressEmbeds | MESSAGE_FLAG.suppressNotifications | MESSAGE_FLAG.componentsV2;

const MESSAGE_TYPE = { default: 0, chatInputCommand: 20 } as const;
const RESPONSE_TYPE = { channelMessage: 4, deferredChannelMessage: 5 } as const;

const ORIGINAL = '@original';
const DISCORD_EPOCH_MS = 1_420_070_400_000n; // 2015-01-01T00:00:00Z
const API_PREFIX = /^\/api(?:\/v\d+)?(?=\/|$)/;
const SNOWFLAKE = /^\d{1,20}$/;
const COMMAND_NAME = /^[-_'\p{L}\p{N}\p{sc=Deva}\p{sc=Thai}]+$/u;
const SELECT_MENU_TYPES = new Set([3, 5, 6, 7, 8]);

interface Settings {
  readonly port: number;
  readonly applicationId: string;
  readonly botToken: string | undefined;
  readonly tokenLifetimeMs: number;
}

interface Interaction {
  readonly id: string;
  readonly channelId: string;
  readonly ephemeral: boolean;
  readonly issuedAt: number;
  expired: boolean;
  acknowledged: boolean;
  originalId: string | null;
  readonly followupIds: Set<string>;
}

interface MessageRecord extends StoredMessage {
  readonly type: number;
  readonly webhookId: string | null;
  readonly createdAt: number;
  editedAt: number | null;
}

type MessageContent = Pick<StoredMessage, 'content' | 'embeds' | 'components' | 'attachments' | 'files'>;

interface ParsedMessage {
  readonly content: MessageContent;
  readonly flags: number | undefined;
}

interface RequestPayload {
  readonly body: unknown;
  readonly files: RecordedFile[];
  /** Why the body could not be read; answered only once the route and credentials are known to be fine. */
  readonly problem: Rejection | null;
}

interface RouteRequest {
  readonly params: ReadonlyMap<string, string>;
  readonly authorization: string | null;
  readonly payload: RequestPayload;
  readonly at: number;
}

interface Answer {
  readonly status: number;
  readonly body?: unknown;
  readonly headers?: Readonly<Record<string, string>>;
}

type RouteHandler = (request: RouteRequest) => Answer;

interface Route {
  readonly name: string;
  readonly method: string;
  readonly segments: readonly string[];
  readonly handle: RouteHandler;
}

interface InjectedFailure {
  remaining: number;
  readonly status: number;
  readonly routePrefix: string | undefined;
  readonly retryAfterSeconds: number;
}

interface CallWaiter {
  readonly predicate: (call: RecordedCall) => boolean;
  readonly resolve: (call: RecordedCall) => void;
  readonly reject: (error: unknown) => void;
  readonly timer: NodeJS.Timeout;
}

class DiscordApiStandIn implements DiscordStandIn {
  readonly calls: RecordedCall[] = [];
  readonly #settings: Settings;
  readonly #app: FastifyInstance;
  readonly #interactions = new Map<string, Interaction>();
  readonly #messages = new Map<string, MessageRecord>();
  readonly #messageByNonce = new Map<string, string>();
  readonly #channelPosts = new Map<string, string[]>();
  readonly #commands = new Map<string, unknown[]>();
  readonly #commandIds = new Map<string, string>();
  readonly #failures: InjectedFailure[] = [];
  readonly #waiters = new Set<CallWaiter>();
  #sequence = 0n;
  #url = '';
  #closing: Promise<void> | null = null;

  readonly #routes: readonly Route[] = [
    route('GET /webhooks/:app/:token/messages/@original', (request) => this.#getWebhookMessage(request, ORIGINAL)),
    route('PATCH /webhooks/:app/:token/messages/@original', (request) => this.#editWebhookMessage(request, ORIGINAL)),
    route('DELETE /webhooks/:app/:token/messages/@original', (request) =>
      this.#deleteWebhookMessage(request, ORIGINAL),
    ),
    route('GET /webhooks/:app/:token/messages/:message', (request) =>
      this.#getWebhookMessage(request, param(request, 'message')),
    ),
    route('PATCH /webhooks/:app/:token/messages/:message', (request) =>
      this.#editWebhookMessage(request, param(request, 'message')),
    ),
    route('DELETE /webhooks/:app/:token/messages/:message', (request) =>
      this.#deleteWebhookMessage(request, param(request, 'message')),
    ),
    route('POST /webhooks/:app/:token', (request) => this.#createFollowup(request)),
    route('POST /channels/:channel/messages', (request) => this.#createChannelMessage(request)),
    route('GET /applications/:app/commands', (request) => this.#getCommands(request, null)),
    route('PUT /applications/:app/commands', (request) => this.#putCommands(request, null)),
    route('GET /applications/:app/guilds/:guild/commands', (request) =>
      this.#getCommands(request, param(request, 'guild')),
    ),
    route('PUT /applications/:app/guilds/:guild/commands', (request) =>
      this.#putCommands(request, param(request, 'guild')),
    ),
  ];

  constructor(settings: Settings) {
    this.#settings = settings;
    this.#app = fastify({
      logger: false,
      forceCloseConnections: true,
      frameworkErrors: (error, request, reply) => void this.#answerFailure(error, request, reply),
    });
    this.#app.removeAllContentTypeParsers();
    this.#app.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, body, done) => done(null, body));
    void this.#app.register(multipart, { limits: { fileSize: LIMITS.fileBytes, files: LIMITS.attachments } });
    this.#app.setErrorHandler((error, request, reply) => this.#answerFailure(error, request, reply));
    this.#app.all('/*', (request, reply) => this.#handle(request, reply));
  }

  get url(): string {
    return this.#url;
  }

  async listen(): Promise<void> {
    await this.#app.listen({ host: '127.0.0.1', port: this.#settings.port });
    const { port } = this.#app.server.address() as AddressInfo;
    this.#url = `http://127.0.0.1:${port}/api`;
  }

  issueInteraction(options: { channelId: string; ephemeral?: boolean }): { id: string; token: string } {
    const id = this.#nextId();
    const token = randomBytes(144).toString('base64url');
    this.#interactions.set(token, {
      id,
      channelId: options.channelId,
      ephemeral: options.ephemeral ?? false,
      issuedAt: Date.now(),
      expired: false,
      acknowledged: false,
      originalId: null,
      followupIds: new Set(),
    });
    return { id, token };
  }

  acknowledge(token: string, response: { type: number; data?: { content?: string; flags?: number } }): void {
    const interaction = this.#interactions.get(token);
    if (!interaction) {
      throw new Error('acknowledge: no interaction was issued with this token');
    }

    if (interaction.acknowledged) {
      throw new Error('acknowledge: the interaction has already been acknowledged (Discord code 40060)');
    }

    const flags = response.data?.flags ?? (interaction.ephemeral ? MESSAGE_FLAG.ephemeral : 0);
    if (response.type === RESPONSE_TYPE.deferredChannelMessage) {
      const thinking = { content: '', embeds: [], components: [], attachments: [], files: [] };
      this.#acknowledgeWith(interaction, thinking, flags | MESSAGE_FLAG.loading);
      return;
    }

    if (response.type !== RESPONSE_TYPE.channelMessage) {
      throw new Error(`acknowledge: response type ${response.type} is not modelled; use 4 or 5`);
    }

    const data: Record<string, unknown> = isRecord(response.data) ? response.data : {};
    try {
      this.#acknowledgeWith(interaction, this.#parseMessage(data, [], null).content, flags);
    } catch (error) {
      if (error instanceof Rejection) {
        throw new Error(`acknowledge: Discord would refuse this response: ${JSON.stringify(error.toAnswer().body)}`);
      }

      throw error;
    }
  }

  expireToken(token: string): void {
    const interaction = this.#interactions.get(token);
    if (interaction) {
      interaction.expired = true;
    }
  }

  originalMessage(token: string): StoredMessage | undefined {
    const originalId = this.#interactions.get(token)?.originalId;
    const message = originalId ? this.#messages.get(originalId) : undefined;
    return message && snapshot(message);
  }

  channelMessages(channelId: string): StoredMessage[] {
    const ids = this.#channelPosts.get(channelId) ?? [];
    return ids.flatMap((id) => {
      const message = this.#messages.get(id);
      return message ? [snapshot(message)] : [];
    });
  }

  waitFor(
    predicate: (call: RecordedCall) => boolean,
    timeoutMs: number = DEFAULTS.waitForTimeoutMs,
  ): Promise<RecordedCall> {
    try {
      const seen = this.calls.find(predicate);
      if (seen) {
        return Promise.resolve(seen);
      }
    } catch (error) {
      return Promise.reject(error);
    }

    if (this.#closing) {
      return Promise.reject(new Error(`waitFor: the Discord stand-in is closed; ${describeCalls(this.calls)}`));
    }

    return new Promise<RecordedCall>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters.delete(waiter);
        reject(new Error(`waitFor: no matching Discord call within ${timeoutMs} ms; ${describeCalls(this.calls)}`));
      }, timeoutMs);
      const waiter: CallWaiter = { predicate, resolve, reject, timer };
      this.#waiters.add(waiter);
    });
  }

  failNext(
    count: number,
    status: number,
    routePrefix?: string,
    retryAfterSeconds: number = DEFAULTS.retryAfterSeconds,
  ): void {
    if (!Number.isInteger(count) || count < 1) {
      throw new RangeError(`failNext: count must be a positive integer, got ${count}`);
    }

    if (!Number.isInteger(status) || status < 400 || status > 599) {
      throw new RangeError(`failNext: status must be an HTTP error status (400-599), got ${status}`);
    }

    if (!(retryAfterSeconds >= 0)) {
      throw new RangeError(`failNext: retryAfterSeconds must be 0 or more, got ${retryAfterSeconds}`);
    }

    this.#failures.push({ remaining: count, status, routePrefix, retryAfterSeconds });
  }

  close(): Promise<void> {
    this.#closing ??= this.#shutDown();
    return this.#closing;
  }

  async #shutDown(): Promise<void> {
    for (const waiter of this.#waiters) {
      clearTimeout(waiter.timer);
      waiter.reject(new Error(`waitFor: the Discord stand-in closed first; ${describeCalls(this.calls)}`));
    }

    this.#waiters.clear();
    await this.#app.close();
  }

  async #handle(request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
    const at = Date.now();
    const target = parseTarget(request.url);
    const payload = await readPayload(request);
    const match = target.segments && matchRoute(this.#routes, request.method, target.segments);
    const call: Omit<RecordedCall, 'status'> = {
      method: request.method,
      path: target.path,
      route: match?.route.name ?? `${request.method} ${target.path}`,
      token: match?.params.get('token') ?? null,
      authorization: request.headers.authorization ?? null,
      body: payload.body,
      files: payload.files,
      at,
    };

    const answer =
      this.#takeInjectedFailure(call) ??
      (match
        ? answerWith(() => match.route.handle({ params: match.params, authorization: call.authorization, payload, at }))
        : rejections.notFound().toAnswer());
    return this.#send(reply, call, answer);
  }

  #answerFailure(error: unknown, request: FastifyRequest, reply: FastifyReply): FastifyReply {
    const target = parseTarget(request.url);
    const status = statusOf(error);
    const answer =
      status === 413
        ? rejections.tooLarge().toAnswer()
        : { status, body: { message: `${status}: ${STATUS_CODES[status] ?? 'Error'}`, code: 0 } };
    const call = {
      method: request.method,
      path: target.path,
      route: `${request.method} ${target.path}`,
      token: null,
      authorization: request.headers.authorization ?? null,
      body: null,
      files: [],
      at: Date.now(),
    };
    return this.#send(reply, call, answer);
  }

  #send(reply: FastifyReply, call: Omit<RecordedCall, 'status'>, answer: Answer): FastifyReply {
    this.#record({ ...call, status: answer.status });
    return reply
      .code(answer.status)
      .headers(answer.headers ?? {})
      .send(answer.body);
  }

  #record(call: RecordedCall): void {
    this.calls.push(call);
    for (const waiter of this.#waiters) {
      let matched: boolean;
      try {
        matched = waiter.predicate(call);
      } catch (error) {
        this.#settle(waiter);
        waiter.reject(error);
        continue;
      }

      if (matched) {
        this.#settle(waiter);
        waiter.resolve(call);
      }
    }
  }

  #settle(waiter: CallWaiter): void {
    clearTimeout(waiter.timer);
    this.#waiters.delete(waiter);
  }

  #takeInjectedFailure(call: Omit<RecordedCall, 'status'>): Answer | null {
    const index = this.#failures.findIndex(
      ({ routePrefix }) =>
        routePrefix === undefined || call.route.startsWith(routePrefix) || call.path.startsWith(routePrefix),
    );
    const failure = this.#failures[index];
    if (!failure) {
      return null;
    }

    failure.remaining -= 1;
    if (failure.remaining === 0) {
      this.#failures.splice(index, 1);
    }

    if (failure.status === 429) {
      const retryAfter = String(failure.retryAfterSeconds);
      return {
        status: 429,
        body: { message: 'You are being rate limited.', retry_after: failure.retryAfterSeconds, global: false },
        headers: { 'retry-after': retryAfter, 'x-ratelimit-scope': 'user' },
      };
    }

    const reason = STATUS_CODES[failure.status] ?? 'Error';
    return { status: failure.status, body: { message: `${failure.status}: ${reason}`, code: 0 } };
  }

  #getWebhookMessage(request: RouteRequest, reference: string): Answer {
    const interaction = this.#authorizeWebhook(request);
    return { status: 200, body: this.#toApiMessage(this.#webhookMessage(interaction, reference)) };
  }

  #editWebhookMessage(request: RouteRequest, reference: string): Answer {
    const interaction = this.#authorizeWebhook(request);
    const body = messageBody(request.payload);
    const message = this.#webhookMessage(interaction, reference);
    const parsed = this.#parseMessage(body, request.payload.files, message);
    const suppressEmbeds = (parsed.flags ?? message.flags) & MESSAGE_FLAG.suppressEmbeds;
    Object.assign(message, parsed.content, {
      flags: (message.flags & ~(MESSAGE_FLAG.loading | MESSAGE_FLAG.suppressEmbeds)) | suppressEmbeds,
      editCount: message.editCount + 1,
      editedAt: request.at,
    });
    return { status: 200, body: this.#toApiMessage(message) };
  }

  #deleteWebhookMessage(request: RouteRequest, reference: string): Answer {
    const interaction = this.#authorizeWebhook(request);
    const message = this.#webhookMessage(interaction, reference);
    this.#messages.delete(message.id);
    return { status: 204 };
  }

  /** Followups always answer with the message: for interaction webhooks Discord treats `wait` as always true. */
  #createFollowup(request: RouteRequest): Answer {
    const interaction = this.#authorizeWebhook(request);
    const body = messageBody(request.payload);
    if (!interaction.acknowledged) {
      throw rejections.unknownWebhook();
    }

    // The first followup to a deferred response replaces its "thinking" message, keeping the ACK's ephemerality.
    const deferred = interaction.originalId === null ? undefined : this.#messages.get(interaction.originalId);
    if (deferred && deferred.flags & MESSAGE_FLAG.loading) {
      const parsed = this.#parseMessage(body, request.payload.files, deferred);
      Object.assign(deferred, parsed.content, { flags: deferred.flags & ~MESSAGE_FLAG.loading });
      return { status: 200, body: this.#toApiMessage(deferred) };
    }

    const parsed = this.#parseMessage(body, request.payload.files, null);
    const message = this.#storeMessage(parsed.content, {
      channelId: interaction.channelId,
      type: MESSAGE_TYPE.default,
      webhookId: this.#settings.applicationId,
      flags: (parsed.flags ?? 0) & FOLLOWUP_FLAGS,
      createdAt: request.at,
    });
    interaction.followupIds.add(message.id);
    this.#postToChannel(message);
    return { status: 200, body: this.#toApiMessage(message) };
  }

  #createChannelMessage(request: RouteRequest): Answer {
    this.#authorizeBot(request);
    const channelId = param(request, 'channel');
    const body = messageBody(request.payload);
    if (!SNOWFLAKE.test(channelId)) {
      const errors = new FormErrors();
      errors.add(['channel_id'], 'NUMBER_TYPE_COERCE', `Value "${channelId}" is not snowflake.`);
      errors.throwIfAny();
    }

    // With enforce_nonce, Discord answers a repeat of a recent nonce with the message it already created.
    const nonce = enforcedNonce(body);
    const earlier = nonce === null ? undefined : this.#messageByNonce.get(`${channelId}:${nonce}`);
    const existing = earlier === undefined ? undefined : this.#messages.get(earlier);
    if (existing !== undefined) {
      return { status: 200, body: this.#toApiMessage(existing) };
    }

    const parsed = this.#parseMessage(body, request.payload.files, null);
    const message = this.#storeMessage(parsed.content, {
      channelId,
      type: MESSAGE_TYPE.default,
      webhookId: null,
      flags: (parsed.flags ?? 0) & CHANNEL_POST_FLAGS,
      createdAt: request.at,
    });
    this.#postToChannel(message);
    if (nonce !== null) {
      this.#messageByNonce.set(`${channelId}:${nonce}`, message.id);
    }

    return { status: 200, body: this.#toApiMessage(message) };
  }

  #getCommands(request: RouteRequest, guildId: string | null): Answer {
    this.#authorizeBot(request);
    this.#requireOwnApplication(request);
    return { status: 200, body: this.#commands.get(commandScope(guildId)) ?? [] };
  }

  #putCommands(request: RouteRequest, guildId: string | null): Answer {
    this.#authorizeBot(request);
    this.#requireOwnApplication(request);
    if (request.payload.problem) {
      throw request.payload.problem;
    }

    const commands = parseCommands(request.payload.body);
    const scope = commandScope(guildId);
    const version = this.#nextId();
    const stored = commands.map((command) => {
      const type = typeof command.type === 'number' ? command.type : 1;
      const key = `${scope}/${type}/${String(command.name)}`;
      const id = this.#commandIds.get(key) ?? this.#nextId();
      this.#commandIds.set(key, id);
      return {
        id,
        application_id: this.#settings.applicationId,
        version,
        type,
        name: command.name,
        description: command.description ?? '',
        ...(command.options === undefined ? {} : { options: command.options }),
        default_member_permissions: command.default_member_permissions ?? null,
        nsfw: command.nsfw ?? false,
        contexts: command.contexts ?? null,
        integration_types: command.integration_types ?? [0],
        ...(guildId === null ? {} : { guild_id: guildId }),
      };
    });
    this.#commands.set(scope, stored);
    return { status: 200, body: stored };
  }

  #authorizeWebhook(request: RouteRequest): Interaction {
    if (param(request, 'app') !== this.#settings.applicationId) {
      throw rejections.unknownWebhook();
    }

    const interaction = this.#interactions.get(param(request, 'token'));
    if (!interaction || interaction.expired || request.at - interaction.issuedAt > this.#settings.tokenLifetimeMs) {
      throw rejections.invalidWebhookToken();
    }

    return interaction;
  }

  #authorizeBot(request: RouteRequest): void {
    const { botToken } = this.#settings;
    if (botToken !== undefined && request.authorization !== `Bot ${botToken}`) {
      throw rejections.unauthorized();
    }
  }

  #requireOwnApplication(request: RouteRequest): void {
    if (param(request, 'app') !== this.#settings.applicationId) {
      throw rejections.missingAccess();
    }
  }

  #webhookMessage(interaction: Interaction, reference: string): MessageRecord {
    const isOwn = reference === interaction.originalId || interaction.followupIds.has(reference);
    const id = reference === ORIGINAL ? interaction.originalId : isOwn ? reference : null;
    const message = id === null ? undefined : this.#messages.get(id);
    if (!message) {
      throw rejections.unknownMessage();
    }

    return message;
  }

  /** Validates a create (`base` null) or an edit of `base`; throws the 400 Discord would answer. */
  #parseMessage(body: Record<string, unknown>, uploads: RecordedFile[], base: MessageContent | null): ParsedMessage {
    const errors = new FormErrors();
    const content = body.content === null ? '' : checkText(errors, ['content'], body.content, { max: LIMITS.content });
    const embeds = body.embeds === null ? [] : checkEmbeds(errors, body.embeds);
    const components = body.components === null ? [] : checkComponents(errors, body.components);
    const files = resolveAttachments(errors, body.attachments, uploads, base, () => this.#nextId());
    const flags = checkFlags(errors, body.flags);
    errors.throwIfAny();

    const merged: MessageContent = {
      content: content ?? base?.content ?? '',
      embeds: embeds ?? base?.embeds ?? [],
      components: components ?? base?.components ?? [],
      attachments: files.attachments,
      files: files.files,
    };
    const isEmpty =
      merged.content === '' &&
      merged.embeds.length === 0 &&
      merged.components.length === 0 &&
      merged.attachments.length === 0;
    if (isEmpty) {
      throw rejections.emptyMessage();
    }

    return { content: merged, flags };
  }

  #acknowledgeWith(interaction: Interaction, content: MessageContent, flags: number): void {
    const message = this.#storeMessage(content, {
      channelId: interaction.channelId,
      type: MESSAGE_TYPE.chatInputCommand,
      webhookId: this.#settings.applicationId,
      flags,
      createdAt: Date.now(),
    });
    interaction.acknowledged = true;
    interaction.originalId = message.id;
  }

  #storeMessage(
    content: MessageContent,
    meta: Pick<MessageRecord, 'channelId' | 'type' | 'webhookId' | 'flags' | 'createdAt'>,
  ): MessageRecord {
    const message: MessageRecord = { id: this.#nextId(), ...content, ...meta, editCount: 0, editedAt: null };
    this.#messages.set(message.id, message);
    return message;
  }

  #postToChannel(message: MessageRecord): void {
    const posts = this.#channelPosts.get(message.channelId) ?? [];
    posts.push(message.id);
    this.#channelPosts.set(message.channelId, posts);
  }

  #toApiMessage(message: MessageRecord): Record<string, unknown> {
    const { applicationId } = this.#settings;
    return {
      id: message.id,
      type: message.type,
      channel_id: message.channelId,
      author: { id: applicationId, username: 'Stand-in Bot', discriminator: '0000', avatar: null, bot: true },
      content: message.content,
      embeds: message.embeds,
      components: message.components,
      attachments: message.attachments.map((attachment) => {
        const path = `${message.channelId}/${attachment.id}/${encodeURIComponent(attachment.filename)}`;
        return {
          id: attachment.id,
          filename: attachment.filename,
          size: attachment.size,
          content_type: attachment.contentType,
          url: `https://cdn.discordapp.com/attachments/${path}`,
          proxy_url: `https://media.discordapp.net/attachments/${path}`,
        };
      }),
      flags: message.flags,
      timestamp: new Date(message.createdAt).toISOString(),
      edited_timestamp: message.editedAt === null ? null : new Date(message.editedAt).toISOString(),
      tts: false,
      mention_everyone: false,
      mentions: [],
      mention_roles: [],
      pinned: false,
      application_id: applicationId,
      ...(message.webhookId === null ? {} : { webhook_id: message.webhookId }),
    };
  }

  #nextId(): string {
    this.#sequence = (this.#sequence + 1n) & 0xfffn;
    return (((BigInt(Date.now()) - DISCORD_EPOCH_MS) << 22n) | this.#sequence).toString();
  }
}

function normalizeOptions(options: DiscordStandInOptions): Settings {
  const port = options.port ?? DEFAULTS.port;
  const tokenLifetimeMs = options.tokenLifetimeMs ?? DEFAULTS.tokenLifetimeMs;
  if (typeof options.applicationId !== 'string' || options.applicationId === '') {
    throw new TypeError('startDiscordStandIn: applicationId is required (the bot application id)');
  }

  if (!Number.isInteger(port) || port < 0 || port > 65_535) {
    throw new TypeError(`startDiscordStandIn: port must be an integer from 0 to 65535, got ${port}`);
  }

  if (!(tokenLifetimeMs > 0)) {
    throw new TypeError(`startDiscordStandIn: tokenLifetimeMs must be positive, got ${tokenLifetimeMs}`);
  }

  if (options.botToken === '') {
    throw new TypeError('startDiscordStandIn: botToken must not be empty; leave it out to accept any caller');
  }

  return { port, applicationId: options.applicationId, botToken: options.botToken, tokenLifetimeMs };
}

function route(name: string, handle: RouteHandler): Route {
  const [method = '', path = ''] = name.split(' ');
  return { name, method, segments: path.split('/').slice(1), handle };
}

function param(request: RouteRequest, name: string): string {
  const value = request.params.get(name);
  if (value === undefined) {
    throw new Error(`the route has no :${name} segment`);
  }

  return value;
}

function matchRoute(
  routes: readonly Route[],
  method: string,
  segments: readonly string[],
): { route: Route; params: Map<string, string> } | null {
  for (const candidate of routes) {
    if (candidate.method !== method || candidate.segments.length !== segments.length) {
      continue;
    }

    const params = new Map<string, string>();
    const matches = candidate.segments.every((expected, index) => {
      const actual = segments[index] ?? '';
      if (expected.startsWith(':')) {
        params.set(expected.slice(1), actual);
        return actual !== '';
      }

      return expected === actual;
    });
    if (matches) {
      return { route: candidate, params };
    }
  }

  return null;
}

/** Splits a request URL into the decoded path after `/api[/v{n}]`; segments are null when no route can match. */
function parseTarget(rawUrl: string): { path: string; segments: string[] | null } {
  const { pathname } = new URL(rawUrl, 'http://stand-in.invalid');
  const prefix = API_PREFIX.exec(pathname);
  const encoded = prefix ? pathname.slice(prefix[0].length) || '/' : pathname;
  try {
    const segments = encoded.split('/').slice(1).map(decodeURIComponent);
    return { path: `/${segments.join('/')}`, segments: prefix ? segments : null };
  } catch {
    return { path: encoded, segments: null };
  }
}

function commandScope(guildId: string | null): string {
  return guildId === null ? 'global' : `guild:${guildId}`;
}

async function readPayload(request: FastifyRequest): Promise<RequestPayload> {
  if (request.isMultipart()) {
    return readMultipart(request);
  }

  if (!Buffer.isBuffer(request.body) || request.body.length === 0) {
    return { body: null, files: [], problem: null };
  }

  const text = request.body.toString('utf8');
  try {
    return { body: JSON.parse(text) as unknown, files: [], problem: null };
  } catch {
    return { body: text, files: [], problem: rejections.invalidJson() };
  }
}

async function readMultipart(request: FastifyRequest): Promise<RequestPayload> {
  const files: RecordedFile[] = [];
  let payloadJson: unknown;
  try {
    for await (const part of request.parts()) {
      if (part.type === 'file') {
        const data = await part.toBuffer();
        const contentType = part.mimetype || 'application/octet-stream';
        files.push({ field: part.fieldname, filename: part.filename, contentType, data });
      } else if (part.fieldname === 'payload_json') {
        payloadJson = part.value;
      }
    }
  } catch (error) {
    return { body: null, files, problem: multipartProblem(error) };
  }

  if (payloadJson === undefined) {
    const errors = new FormErrors();
    errors.add(['payload_json'], 'BASE_TYPE_REQUIRED', 'This field is required');
    return { body: null, files, problem: errors.toRejection() };
  }

  if (typeof payloadJson !== 'string') {
    return { body: payloadJson, files, problem: null };
  }

  try {
    return { body: JSON.parse(payloadJson) as unknown, files, problem: null };
  } catch {
    return { body: payloadJson, files, problem: rejections.invalidJson() };
  }
}

function multipartProblem(error: unknown): Rejection {
  const code = isRecord(error) ? error.code : undefined;
  if (code === 'FST_REQ_FILE_TOO_LARGE') {
    return rejections.tooLarge();
  }

  const errors = new FormErrors();
  if (code === 'FST_FILES_LIMIT') {
    errors.add(['attachments'], 'BASE_TYPE_MAX_LENGTH', `Must be ${LIMITS.attachments} or fewer in length.`);
  } else {
    const reason = error instanceof Error ? error.message : String(error);
    errors.add([], 'MULTIPART_BODY_INVALID', `The multipart body could not be parsed: ${reason}`);
  }

  return errors.toRejection();
}

function messageBody(payload: RequestPayload): Record<string, unknown> {
  if (payload.problem) {
    throw payload.problem;
  }

  if (payload.body === null || payload.body === undefined) {
    return {};
  }

  if (!isRecord(payload.body)) {
    const errors = new FormErrors();
    errors.add([], 'DICT_TYPE_CONVERT', 'Only dictionaries may be used in a DictType');
    errors.throwIfAny();
  }

  return payload.body as Record<string, unknown>;
}

/**
 * Resolves the message's attachments. With an `attachments` list, each entry keeps an existing attachment (by its
 * id) or names an upload `files[id]`, and every upload must be named. Without one, existing attachments stay and
 * uploads are added, as Discord does.
 */
function resolveAttachments(
  errors: FormErrors,
  value: unknown,
  uploads: RecordedFile[],
  base: MessageContent | null,
  nextId: () => string,
): Pick<MessageContent, 'attachments' | 'files'> {
  const attachments = [...(base?.attachments ?? [])];
  const files = [...(base?.files ?? [])];
  const addUpload = (upload: RecordedFile, filename: string) => {
    attachments.push({ id: nextId(), filename, size: upload.data.length, contentType: upload.contentType });
    files.push(upload);
  };

  if (value === undefined || value === null) {
    uploads.forEach((upload) => addUpload(upload, upload.filename));
    checkAttachmentCount(errors, attachments.length);
    return { attachments, files };
  }

  const entries = checkList(errors, ['attachments'], value, { max: LIMITS.attachments });
  if (!entries) {
    return { attachments, files };
  }

  const kept: Pick<MessageContent, 'attachments' | 'files'> = { attachments: [], files: [] };
  const named = new Set<RecordedFile>();
  entries.forEach((entry, index) => {
    const id = isRecord(entry) ? entry.id : undefined;
    if (typeof id !== 'string' && typeof id !== 'number') {
      errors.add(['attachments', index, 'id'], 'BASE_TYPE_REQUIRED', 'This field is required');
      return;
    }

    const existing = attachments.findIndex((attachment) => attachment.id === String(id));
    const upload = uploads.find((file) => file.field === `files[${id}]`);
    const existingFile = files[existing];
    const existingAttachment = attachments[existing];
    if (existingAttachment && existingFile) {
      kept.attachments.push(existingAttachment);
      kept.files.push(existingFile);
    } else if (upload) {
      const filename = isRecord(entry) && typeof entry.filename === 'string' ? entry.filename : upload.filename;
      kept.attachments.push({ id: nextId(), filename, size: upload.data.length, contentType: upload.contentType });
      kept.files.push(upload);
      named.add(upload);
    } else {
      errors.add(
        ['attachments', index],
        'ATTACHMENT_NOT_FOUND',
        `No uploaded file files[${id}] and no attachment ${id}`,
      );
    }
  });

  for (const upload of uploads) {
    if (!named.has(upload)) {
      errors.add(['attachments'], 'ATTACHMENT_NOT_REFERENCED', `Uploaded ${upload.field} is not in attachments`);
    }
  }

  checkAttachmentCount(errors, kept.attachments.length);
  return kept;
}

function checkAttachmentCount(errors: FormErrors, count: number): void {
  if (count > LIMITS.attachments) {
    errors.add(['attachments'], 'BASE_TYPE_MAX_LENGTH', `Must be ${LIMITS.attachments} or fewer in length.`);
  }
}

function checkFlags(errors: FormErrors, value: unknown): number | undefined {
  if (value === undefined || value === null) {
    return undefined;
  }

  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) {
    errors.add(['flags'], 'NUMBER_TYPE_COERCE', `Value "${String(value)}" is not int.`);
    return undefined;
  }

  return value;
}

function checkEmbeds(errors: FormErrors, value: unknown): unknown[] | undefined {
  const embeds = checkList(errors, ['embeds'], value, { max: LIMITS.embeds });
  if (!embeds) {
    return undefined;
  }

  const total = embeds.reduce<number>((sum, embed, index) => sum + checkEmbed(errors, ['embeds', index], embed), 0);
  if (total > LIMITS.embedTotal) {
    errors.add(['embeds'], 'MAX_EMBED_SIZE_EXCEEDED', `Embed size exceeds maximum size of ${LIMITS.embedTotal}`);
  }

  return embeds;
}

/** Validates one embed and returns how many characters it counts toward the 6000 shared by a message's embeds. */
function checkEmbed(errors: FormErrors, path: FieldPath, embed: unknown): number {
  if (!checkRecord(errors, path, embed)) {
    return 0;
  }

  const texts = [
    checkText(errors, [...path, 'title'], embed.title, { max: LIMITS.embedTitle }),
    checkText(errors, [...path, 'description'], embed.description, { max: LIMITS.embedDescription }),
  ];
  if (embed.footer !== undefined && checkRecord(errors, [...path, 'footer'], embed.footer)) {
    const limit = { max: LIMITS.embedFooterText, required: true };
    texts.push(checkText(errors, [...path, 'footer', 'text'], embed.footer.text, limit));
  }

  if (embed.author !== undefined && checkRecord(errors, [...path, 'author'], embed.author)) {
    const limit = { max: LIMITS.embedAuthorName, required: true };
    texts.push(checkText(errors, [...path, 'author', 'name'], embed.author.name, limit));
  }

  const fields =
    embed.fields === undefined ? [] : checkList(errors, [...path, 'fields'], embed.fields, { max: LIMITS.embedFields });
  fields?.forEach((field, index) => {
    const fieldPath = [...path, 'fields', index];
    if (checkRecord(errors, fieldPath, field)) {
      const name = { min: 1, max: LIMITS.embedFieldName, required: true };
      const value = { min: 1, max: LIMITS.embedFieldValue, required: true };
      texts.push(checkText(errors, [...fieldPath, 'name'], field.name, name));
      texts.push(checkText(errors, [...fieldPath, 'value'], field.value, value));
    }
  });

  for (const media of ['image', 'thumbnail'] as const) {
    const value = embed[media];
    if (value !== undefined && checkRecord(errors, [...path, media], value)) {
      checkMediaUrl(errors, [...path, media, 'url'], value.url);
    }
  }

  const { color } = embed;
  const isColor = typeof color === 'number' && Number.isInteger(color) && color >= 0 && color <= 0xffffff;
  if (color !== undefined && color !== null && !isColor) {
    errors.add([...path, 'color'], 'NUMBER_TYPE_MAX', 'int value should be <= 16777215 and >= 0.');
  }

  return texts.reduce<number>((sum, text) => sum + (text === undefined ? 0 : codePoints(text)), 0);
}

function checkMediaUrl(errors: FormErrors, path: FieldPath, value: unknown): void {
  const url = checkText(errors, path, value, { max: 2048, required: true });
  if (url === undefined) {
    return;
  }

  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1]?.toLowerCase();
  if (scheme !== 'http' && scheme !== 'https' && scheme !== 'attachment') {
    const message = `Scheme "${scheme ?? ''}" is not supported. Scheme must be one of ('http', 'https', 'attachment').`;
    errors.add(path, 'URL_TYPE_INVALID_SCHEME', message);
  }
}

// Limitation: components v2 layouts (flag 32768) are not modelled; every top-level component must be an action row.
function checkComponents(errors: FormErrors, value: unknown): unknown[] | undefined {
  const rows = checkList(errors, ['components'], value, { max: LIMITS.actionRows });
  const customIds = new Set<string>();
  rows?.forEach((row, rowIndex) => {
    const rowPath = ['components', rowIndex];
    if (!checkRecord(errors, rowPath, row)) {
      return;
    }

    if (row.type !== 1) {
      errors.add([...rowPath, 'type'], 'UNION_TYPE_CHOICES', 'Value of field "type" must be one of (1,).');
      return;
    }

    const limit = { min: 1, max: LIMITS.rowComponents, required: true };
    const children = checkList(errors, [...rowPath, 'components'], row.components, limit);
    children?.forEach((child, index) => {
      checkRowComponent(errors, [...rowPath, 'components', index], child, children.length, customIds);
    });
  });
  return rows;
}

function checkRowComponent(
  errors: FormErrors,
  path: FieldPath,
  component: unknown,
  rowSize: number,
  customIds: Set<string>,
): void {
  if (!checkRecord(errors, path, component)) {
    return;
  }

  if (component.type === 2) {
    checkButton(errors, path, component, customIds);
    return;
  }

  if (typeof component.type !== 'number' || !SELECT_MENU_TYPES.has(component.type)) {
    errors.add([...path, 'type'], 'UNION_TYPE_CHOICES', 'Value of field "type" must be one of (2, 3, 5, 6, 7, 8).');
    return;
  }

  if (rowSize > 1) {
    errors.add(path, 'COMPONENT_LAYOUT_WIDTH_EXCEEDED', 'The specified component exceeds the maximum width');
  }

  checkCustomId(errors, [...path, 'custom_id'], component.custom_id, customIds);
}

function checkButton(
  errors: FormErrors,
  path: FieldPath,
  button: Record<string, unknown>,
  customIds: Set<string>,
): void {
  const { style } = button;
  if (typeof style !== 'number' || !Number.isInteger(style) || style < 1 || style > 6) {
    errors.add([...path, 'style'], 'BASE_TYPE_CHOICES', 'Value must be one of {1, 2, 3, 4, 5, 6}.');
    return;
  }

  if (style === 6) {
    checkText(errors, [...path, 'sku_id'], button.sku_id, { max: 20, required: true });
    return;
  }

  const label = checkText(errors, [...path, 'label'], button.label, { max: LIMITS.buttonLabel });
  if (!label && (button.emoji === undefined || button.emoji === null)) {
    errors.add(path, 'BUTTON_COMPONENT_LABEL_OR_EMOJI_REQUIRED', 'A button needs a label or an emoji');
  }

  if (style === 5) {
    checkText(errors, [...path, 'url'], button.url, { min: 1, max: LIMITS.buttonUrl, required: true });
    if (button.custom_id !== undefined) {
      errors.add([...path, 'custom_id'], 'BUTTON_COMPONENT_CUSTOM_ID_NOT_ALLOWED', 'A link button has no custom_id');
    }

    return;
  }

  if (button.url !== undefined) {
    errors.add([...path, 'url'], 'BUTTON_COMPONENT_URL_NOT_ALLOWED', 'Only a link button (style 5) has a url');
  }

  checkCustomId(errors, [...path, 'custom_id'], button.custom_id, customIds);
}

function checkCustomId(errors: FormErrors, path: FieldPath, value: unknown, customIds: Set<string>): void {
  const customId = checkText(errors, path, value, { min: 1, max: LIMITS.customId, required: true });
  if (customId === undefined) {
    return;
  }

  if (customIds.has(customId)) {
    errors.add(path, 'COMPONENT_CUSTOM_ID_DUPLICATED', 'Component custom id cannot be duplicated');
  }

  customIds.add(customId);
}

/** Validates a bulk overwrite of application commands; throws the 400 Discord would answer. */
function parseCommands(body: unknown): Array<Record<string, unknown>> {
  const errors = new FormErrors();
  const commands = checkList(errors, [], body, { max: LIMITS.commands, required: true }) ?? [];
  const seen = new Set<string>();
  commands.forEach((command, index) => {
    if (!checkCommand(errors, [index], command)) {
      return;
    }

    const key = `${String(command.type ?? 1)}/${String(command.name)}`;
    if (seen.has(key)) {
      errors.add([index, 'name'], 'APPLICATION_COMMANDS_DUPLICATE_NAME', 'Application command names must be unique');
    }

    seen.add(key);
  });
  errors.throwIfAny();
  return commands as Array<Record<string, unknown>>;
}

function checkCommand(errors: FormErrors, path: FieldPath, command: unknown): command is Record<string, unknown> {
  if (!checkRecord(errors, path, command)) {
    return false;
  }

  const type = command.type ?? 1;
  if (type !== 1 && type !== 2 && type !== 3 && type !== 4) {
    errors.add([...path, 'type'], 'BASE_TYPE_CHOICES', 'Value must be one of {1, 2, 3, 4}.');
    return true;
  }

  if (type !== 1) {
    checkText(errors, [...path, 'name'], command.name, { min: 1, max: LIMITS.commandName, required: true });
    if (command.description !== undefined && command.description !== '') {
      errors.add([...path, 'description'], 'APPLICATION_COMMAND_INVALID_DESCRIPTION', 'Must be empty for this type');
    }

    return true;
  }

  const limit = { min: 1, max: LIMITS.commandDescription, required: true };
  const name = checkCommandName(errors, [...path, 'name'], command.name);
  const description = checkText(errors, [...path, 'description'], command.description, limit);
  const optionsSize = checkOptions(errors, [...path, 'options'], command.options, 'command');
  const size = codePoints(name ?? '') + codePoints(description ?? '') + optionsSize;
  if (size > LIMITS.commandTotal) {
    errors.add(path, 'APPLICATION_COMMAND_TOO_LARGE', `Command exceeds maximum size (${LIMITS.commandTotal})`);
  }

  return true;
}

function checkCommandName(errors: FormErrors, path: FieldPath, value: unknown): string | undefined {
  const name = checkText(errors, path, value, { min: 1, max: LIMITS.commandName, required: true });
  if (name !== undefined && (!COMMAND_NAME.test(name) || name !== name.toLowerCase())) {
    errors.add(path, 'APPLICATION_COMMAND_INVALID_NAME', 'Command name is invalid');
  }

  return name;
}

/**
 * Validates command options at one nesting level and returns their size toward the command's 4000 characters.
 * `command` is the top level, `subcommand` the options of a subcommand, `group` the subcommands of a group.
 */
function checkOptions(
  errors: FormErrors,
  path: FieldPath,
  value: unknown,
  level: 'command' | 'subcommand' | 'group',
): number {
  if (value === undefined || value === null) {
    return 0;
  }

  const options = checkList(errors, path, value, { max: LIMITS.commandOptions }) ?? [];
  const names = new Set<string>();
  let size = 0;
  let sawOptional = false;
  let sawSubcommand = false;
  let sawValue = false;
  options.forEach((option, index) => {
    const optionPath = [...path, index];
    if (!checkRecord(errors, optionPath, option)) {
      return;
    }

    const { type } = option;
    if (typeof type !== 'number' || !Number.isInteger(type) || type < 1 || type > 11) {
      errors.add([...optionPath, 'type'], 'BASE_TYPE_CHOICES', 'Value must be one of {1, 2, ..., 11}.');
      return;
    }

    const isSubcommand = type === 1 || type === 2;
    const allowed = level === 'group' ? type === 1 : level === 'subcommand' ? !isSubcommand : true;
    if (!allowed) {
      errors.add([...optionPath, 'type'], 'APPLICATION_COMMAND_OPTION_TYPE_INVALID', 'Option type not allowed here');
    }

    sawSubcommand ||= isSubcommand;
    sawValue ||= !isSubcommand;
    const name = checkCommandName(errors, [...optionPath, 'name'], option.name);
    const limit = { min: 1, max: LIMITS.commandDescription, required: true };
    const description = checkText(errors, [...optionPath, 'description'], option.description, limit);
    size += codePoints(name ?? '') + codePoints(description ?? '');
    if (name !== undefined && names.has(name)) {
      errors.add(
        [...optionPath, 'name'],
        'APPLICATION_COMMAND_OPTION_NAME_ALREADY_EXISTS',
        'Option names must be unique',
      );
    }

    if (name !== undefined) {
      names.add(name);
    }

    if (option.required === true && sawOptional) {
      const message = 'Required options must be placed before non-required options';
      errors.add([...optionPath, 'required'], 'APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID', message);
    }

    sawOptional ||= option.required !== true && !isSubcommand;
    size += checkChoices(errors, [...optionPath, 'choices'], option.choices, type);
    checkOptionBounds(errors, optionPath, option, type);
    if (isSubcommand) {
      size += checkOptions(errors, [...optionPath, 'options'], option.options, type === 2 ? 'group' : 'subcommand');
    }
  });

  if (sawSubcommand && sawValue) {
    const message = 'Subcommands and subcommand groups cannot be mixed with other options';
    errors.add(path, 'APPLICATION_COMMAND_OPTIONS_TYPE_INVALID', message);
  }

  return size;
}

function checkChoices(errors: FormErrors, path: FieldPath, value: unknown, type: number): number {
  if (value === undefined || value === null) {
    return 0;
  }

  if (type !== 3 && type !== 4 && type !== 10) {
    errors.add(
      path,
      'APPLICATION_COMMAND_OPTION_CHOICES_INVALID',
      'Only string, integer and number options have choices',
    );
    return 0;
  }

  const choices = checkList(errors, path, value, { max: LIMITS.optionChoices }) ?? [];
  let size = 0;
  choices.forEach((choice, index) => {
    const choicePath = [...path, index];
    if (!checkRecord(errors, choicePath, choice)) {
      return;
    }

    const name = checkText(errors, [...choicePath, 'name'], choice.name, { min: 1, max: 100, required: true });
    size += codePoints(name ?? '');
    if (type === 3) {
      const limit = { min: 1, max: LIMITS.choiceValue, required: true };
      size += codePoints(checkText(errors, [...choicePath, 'value'], choice.value, limit) ?? '');
    } else if (typeof choice.value !== 'number' || (type === 4 && !Number.isSafeInteger(choice.value))) {
      const kind = type === 4 ? 'int' : 'float';
      errors.add([...choicePath, 'value'], 'NUMBER_TYPE_COERCE', `Value "${String(choice.value)}" is not ${kind}.`);
    }
  });
  return size;
}

function checkOptionBounds(errors: FormErrors, path: FieldPath, option: Record<string, unknown>, type: number): void {
  const isNumeric = type === 4 || type === 10;
  const valueRange = { floor: -(2 ** 53), ceiling: 2 ** 53 };
  checkBoundPair(errors, path, option, ['min_value', 'max_value'], isNumeric, valueRange);
  checkBoundPair(errors, path, option, ['min_length', 'max_length'], type === 3, { floor: 0, ceiling: 6000 });
}

function checkBoundPair(
  errors: FormErrors,
  path: FieldPath,
  option: Record<string, unknown>,
  keys: readonly [min: string, max: string],
  applies: boolean,
  range: { floor: number; ceiling: number },
): void {
  for (const key of keys) {
    const bound = option[key];
    if (bound === undefined || bound === null) {
      continue;
    }

    if (!applies) {
      errors.add(
        [...path, key],
        'APPLICATION_COMMAND_OPTION_BOUND_INVALID',
        `${key} does not apply to this option type`,
      );
    } else if (typeof bound !== 'number' || bound < range.floor || bound > range.ceiling) {
      errors.add([...path, key], 'NUMBER_TYPE_OUT_OF_RANGE', `Must be between ${range.floor} and ${range.ceiling}.`);
    }
  }

  const [minKey, maxKey] = keys;
  const min = option[minKey];
  const max = option[maxKey];
  if (typeof min === 'number' && typeof max === 'number' && min > max) {
    errors.add([...path, minKey], 'NUMBER_TYPE_OUT_OF_RANGE', `Must be less than or equal to ${maxKey}.`);
  }
}

type FieldPath = ReadonlyArray<string | number>;

interface TextLimit {
  readonly max: number;
  readonly min?: number;
  readonly required?: boolean;
}

/** Checks an optional string field; returns it when it is a string, whatever its length. */
function checkText(errors: FormErrors, path: FieldPath, value: unknown, limit: TextLimit): string | undefined {
  if (value === undefined || value === null) {
    if (limit.required) {
      errors.add(path, 'BASE_TYPE_REQUIRED', 'This field is required');
    }

    return undefined;
  }

  if (typeof value !== 'string') {
    errors.add(path, 'BASE_TYPE_STRING', `Could not interpret "${String(value)}" as string.`);
    return undefined;
  }

  const length = codePoints(value);
  const min = limit.min ?? 0;
  if (min > 0 && (length < min || length > limit.max)) {
    errors.add(path, 'BASE_TYPE_BAD_LENGTH', `Must be between ${min} and ${limit.max} in length.`);
  } else if (length > limit.max) {
    errors.add(path, 'BASE_TYPE_MAX_LENGTH', `Must be ${limit.max} or fewer in length.`);
  }

  return value;
}

function checkList(errors: FormErrors, path: FieldPath, value: unknown, limit: TextLimit): unknown[] | undefined {
  if (value === undefined || value === null) {
    if (limit.required) {
      errors.add(path, 'BASE_TYPE_REQUIRED', 'This field is required');
    }

    return undefined;
  }

  if (!Array.isArray(value)) {
    errors.add(path, 'LIST_TYPE_CONVERT', 'Only iterables may be used in a ListType');
    return undefined;
  }

  const min = limit.min ?? 0;
  if (min > 0 && (value.length < min || value.length > limit.max)) {
    errors.add(path, 'BASE_TYPE_BAD_LENGTH', `Must be between ${min} and ${limit.max} in length.`);
  } else if (value.length > limit.max) {
    errors.add(path, 'BASE_TYPE_MAX_LENGTH', `Must be ${limit.max} or fewer in length.`);
  }

  return value as unknown[];
}

function checkRecord(errors: FormErrors, path: FieldPath, value: unknown): value is Record<string, unknown> {
  if (!isRecord(value)) {
    errors.add(path, 'DICT_TYPE_CONVERT', 'Only dictionaries may be used in a DictType');
    return false;
  }

  return true;
}

/** Collects field errors into Discord's nested `{ field: { _errors: [{ code, message }] } }` shape. */
class FormErrors {
  readonly #root: Record<string, unknown> = {};
  #count = 0;

  add(path: FieldPath, code: string, message: string): void {
    let node = this.#root;
    for (const key of path) {
      const existing = node[String(key)];
      const child: Record<string, unknown> = isRecord(existing) ? existing : {};
      node[String(key)] = child;
      node = child;
    }

    const list: unknown[] = Array.isArray(node._errors) ? node._errors : [];
    list.push({ code, message });
    node._errors = list;
    this.#count += 1;
  }

  toRejection(): Rejection {
    return new Rejection(400, 50035, 'Invalid Form Body', this.#root);
  }

  throwIfAny(): void {
    if (this.#count > 0) {
      throw this.toRejection();
    }
  }
}

/** Thrown inside a route to answer with Discord's error body `{ message, code, errors? }`. */
class Rejection extends Error {
  constructor(
    readonly status: number,
    readonly code: number,
    message: string,
    readonly errors?: Record<string, unknown>,
  ) {
    super(message);
  }

  toAnswer(): Answer {
    const body = { message: this.message, code: this.code };
    return { status: this.status, body: this.errors ? { ...body, errors: this.errors } : body };
  }
}

const rejections = {
  notFound: () => new Rejection(404, 0, '404: Not Found'),
  unauthorized: () => new Rejection(401, 0, '401: Unauthorized'),
  missingAccess: () => new Rejection(403, 50001, 'Missing Access'),
  unknownWebhook: () => new Rejection(404, 10015, 'Unknown Webhook'),
  unknownMessage: () => new Rejection(404, 10008, 'Unknown Message'),
  invalidWebhookToken: () => new Rejection(401, 50027, 'Invalid Webhook Token'),
  emptyMessage: () => new Rejection(400, 50006, 'Cannot send an empty message'),
  invalidJson: () => new Rejection(400, 50109, 'The request body contains invalid JSON.'),
  tooLarge: () => new Rejection(413, 40005, 'Request entity too large'),
};

function answerWith(handle: () => Answer): Answer {
  try {
    return handle();
  } catch (error) {
    if (error instanceof Rejection) {
      return error.toAnswer();
    }

    throw error;
  }
}

function statusOf(error: unknown): number {
  const status = isRecord(error) ? error.statusCode : undefined;
  return typeof status === 'number' && status >= 400 && status < 600 ? status : 500;
}

function snapshot(message: MessageRecord): StoredMessage {
  return {
    id: message.id,
    channelId: message.channelId,
    content: message.content,
    embeds: [...message.embeds],
    components: [...message.components],
    attachments: message.attachments.map((attachment) => ({ ...attachment })),
    files: [...message.files],
    editCount: message.editCount,
    flags: message.flags,
  };
}

function describeCalls(calls: readonly RecordedCall[]): string {
  if (calls.length === 0) {
    return 'no calls seen';
  }

  const lines = calls.map((call) => `  ${call.route} -> ${call.status}`);
  return `calls seen:\n${lines.join('\n')}`;
}

function codePoints(text: string): number {
  return [...text].length;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function enforcedNonce(body: unknown): string | null {
  if (typeof body !== 'object' || body === null) {
    return null;
  }

  const { nonce, enforce_nonce: enforce } = body as { nonce?: unknown; enforce_nonce?: unknown };
  return enforce === true && (typeof nonce === 'string' || typeof nonce === 'number') ? String(nonce) : null;
}
