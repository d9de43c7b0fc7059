import { DiscordAPIError, HTTPError, RateLimitError, REST, type RawFile } from '@discordjs/rest';
import {
  Routes,
  type RESTPatchAPIWebhookWithTokenMessageJSONBody,
  type RESTPostAPIChannelMessageJSONBody,
} from 'discord-api-types/v10';

export const DEFAULT_DISCORD_API_BASE = 'https://discord.com/api';
const UPLOAD_TIMEOUT_MS = 60_000; // 1 min for a request carrying an image

export type DiscordFailureKind =
  /** The interaction token is older than Discord's 15 minutes, or otherwise invalid. */
  | 'token-expired'
  /** The message does not exist yet (our deferred answer may still be on its way) or any more. */
  | 'unknown-message'
  /** Discord refused the payload or our credentials; sending it again would not help. */
  | 'rejected'
  /** Rate limited for longer than we are willing to wait inside one call. */
  | 'rate-limited'
  /** Discord or the network failed; worth another try. */
  | 'unavailable';

/** Thrown when Discord does not accept a message. Carries the HTTP context without the token-bearing URL. */
export class DiscordOutputError extends Error {
  readonly code = 'DISCORD_OUTPUT_FAILED';

  constructor(
    message: string,
    readonly kind: DiscordFailureKind,
    readonly status: number | null,
    readonly discordCode: number | string | null,
    readonly method: string,
    readonly route: string,
  ) {
    super(message);
    this.name = 'DiscordOutputError';
  }
}

export interface DiscordOutputOptions {
  /** Base URL without the version, e.g. `https://discord.com/api` or a local stand-in. */
  apiBase?: string;
  /** Needed only to post in a channel (delivery after the token expired) and to register commands. */
  botToken?: string | undefined;
  /** Per-request timeout in ms (default 5000); Temporal retries the activity after that. */
  timeoutMs?: number;
}

export interface MessageFile {
  name: string;
  data: Buffer;
  contentType: string;
}

/** Everything the bot sends to Discord goes through here: interaction webhooks without the bot token. */
export class DiscordOutput {
  readonly #rest: REST;
  /** The same, with room for multi-megabyte uploads. */
  readonly #uploads: REST;
  readonly #hasBotToken: boolean;

  constructor(options: DiscordOutputOptions = {}) {
    const timeout = options.timeoutMs ?? 5_000;
    const client = (timeoutMs: number) =>
      new REST({
        api: options.apiBase ?? DEFAULT_DISCORD_API_BASE,
        version: '10',
        timeout: timeoutMs,
        // Temporal retries the activity with backoff; one quick retry here covers a dropped connection.
        retries: 1,
        // Never sit out a long rate limit inside an activity: fail, and let Temporal's retry wait instead.
        rejectOnRateLimit: (limit) => limit.retryAfter > 5_000,
      });
    this.#rest = client(timeout);
    this.#uploads = client(Math.max(timeout, UPLOAD_TIMEOUT_MS));
    this.#hasBotToken = options.botToken !== undefined && options.botToken !== '';
    if (this.#hasBotToken) {
      this.#rest.setToken(options.botToken as string);
      this.#uploads.setToken(options.botToken as string);
    }
  }

  get hasBotToken(): boolean {
    return this.#hasBotToken;
  }

  /** Edits the interaction's original response; idempotent, so safe to repeat. */
  async editOriginal(
    applicationId: string,
    interactionToken: string,
    body: RESTPatchAPIWebhookWithTokenMessageJSONBody,
    files: MessageFile[] = [],
  ): Promise<void> {
    const route = Routes.webhookMessage(applicationId, interactionToken, '@original');
    const rest = files.length > 0 ? this.#uploads : this.#rest;
    await this.#send('PATCH', 'PATCH /webhooks/:app/:token/messages/@original', () =>
      rest.patch(route, { body, files: toRawFiles(files), auth: false }),
    );
  }

  /**
   * Posts a new message in a channel with the bot token. `nonce` with `enforce_nonce` makes Discord
   * drop a repeat of the same post, so a retried activity does not post twice.
   */
  async postInChannel(
    channelId: string,
    body: RESTPostAPIChannelMessageJSONBody,
    nonce: string,
    files: MessageFile[] = [],
  ): Promise<void> {
    if (!this.#hasBotToken) {
      throw new DiscordOutputError(
        'no bot token configured (DISCORD_TOKEN)',
        'rejected',
        null,
        null,
        'POST',
        'channel',
      );
    }

    await this.#send('POST', 'POST /channels/:channel/messages', () =>
      this.#uploads.post(Routes.channelMessages(channelId), {
        body: { ...body, nonce, enforce_nonce: true },
        files: toRawFiles(files),
      }),
    );
  }

  /** Replaces the application's commands, globally or in one guild. Needs the bot token. */
  async putCommands(applicationId: string, commands: unknown[], guildId?: string): Promise<unknown> {
    const route =
      guildId === undefined
        ? Routes.applicationCommands(applicationId)
        : Routes.applicationGuildCommands(applicationId, guildId);
    return this.#send('PUT', 'PUT /applications/:app/commands', () => this.#rest.put(route, { body: commands }));
  }

  async #send<T>(method: string, route: string, call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (error) {
      throw toOutputError(error, method, route);
    }
  }
}

function toRawFiles(files: MessageFile[]): RawFile[] {
  return files.map((file) => ({ name: file.name, data: file.data, contentType: file.contentType }));
}

function toOutputError(error: unknown, method: string, route: string): DiscordOutputError {
  if (error instanceof DiscordAPIError) {
    const kind: DiscordFailureKind =
      error.code === 50027 || error.status === 401
        ? 'token-expired'
        : error.code === 10008 || error.code === 10015
          ? 'unknown-message'
          : error.status >= 500
            ? 'unavailable'
            : 'rejected';
    return new DiscordOutputError(
      `discord answered ${error.status} (code ${error.code}): ${'message' in error.rawError ? error.rawError.message : 'no message'}`,
      kind,
      error.status,
      error.code,
      method,
      route,
    );
  }

  if (error instanceof RateLimitError) {
    return new DiscordOutputError(`rate limited for ${error.retryAfter} ms`, 'rate-limited', 429, null, method, route);
  }

  if (error instanceof HTTPError) {
    return new DiscordOutputError(`discord answered ${error.status}`, 'unavailable', error.status, null, method, route);
  }

  // Network errors and timeouts. Their messages can contain the URL, and so the token: leave them out.
  const name = error instanceof Error ? error.name : 'unknown error';
  return new DiscordOutputError(`request to discord failed (${name})`, 'unavailable', null, null, method, route);
}
