import { randomInt, randomUUID } from 'node:crypto';
import WebSocket from 'ws';
import { z } from 'zod';
import { ImageServerError, type GeneratedImage, type GenerationProgress } from './a1111';
import type { GenerateOptions, GenerationRequest, ImageBackend } from './image-backend';
import { describeNetworkError, parseServerAddress } from './http-util';
import { readPngSize } from './png-size';

/**
 * An API-format ComfyUI graph, as saved by "Save (API Format)": node ids mapped to a class and its inputs.
 * An input is a literal value or a link `[sourceNodeId, outputIndex]`.
 */
export type ComfyUIGraph = Record<string, { class_type: string; inputs: Record<string, unknown> }>;

export interface ComfyUIBackendOptions {
  /**
   * The graph to run, with placeholder strings where the request's values go (see {@link ComfyUIBackend}).
   * Either one bare graph (txt2img only) or `{ txt2img: graph, img2img?: graph }`.
   */
  template: object;
  /** How long one generation may take, queueing included, in ms. Default 600_000. */
  requestTimeoutMs?: number;
}

const DEFAULTS = {
  requestTimeoutMs: 600_000, // 10 min: a large image on a slow GPU, possibly behind other prompts
  controlTimeoutMs: 15_000, // 15 s: listings, interrupt and the websocket handshake
  progressIntervalMs: 1_000,
} as const satisfies Record<string, number>;

const TEXT_PLACEHOLDERS = ['$prompt', '$negative', '$sampler', '$model', '$init_image'] as const;
const NUMBER_PLACEHOLDERS = ['$seed', '$steps', '$width', '$height', '$cfg', '$denoise'] as const;

type Placeholder = (typeof TEXT_PLACEHOLDERS)[number] | (typeof NUMBER_PLACEHOLDERS)[number];

const PLACEHOLDERS: ReadonlySet<string> = new Set<string>([...TEXT_PLACEHOLDERS, ...NUMBER_PLACEHOLDERS]);

/** Every graph must use these, or the bot's prompt would be ignored and the reported seed would be wrong. */
const REQUIRED_PLACEHOLDERS = ['$prompt', '$seed'] as const;

/** A1111 sampler names (lowercased) and their ComfyUI `sampler_name`. */
const A1111_SAMPLERS: Readonly<Record<string, string>> = {
  'euler a': 'euler_ancestral',
  euler: 'euler',
  lms: 'lms',
  heun: 'heun',
  dpm2: 'dpm_2',
  'dpm2 a': 'dpm_2_ancestral',
  'dpm++ 2s a': 'dpmpp_2s_ancestral',
  'dpm++ 2m': 'dpmpp_2m',
  'dpm++ sde': 'dpmpp_sde',
  'dpm++ 2m sde': 'dpmpp_2m_sde',
  'dpm++ 3m sde': 'dpmpp_3m_sde',
  'dpm fast': 'dpm_fast',
  'dpm adaptive': 'dpm_adaptive',
  lcm: 'lcm',
  ddim: 'ddim',
  ddpm: 'ddpm',
  unipc: 'uni_pc',
};

/** Older WebUIs folded the scheduler into the sampler name, e.g. `DPM++ 2M Karras`. */
const SCHEDULER_SUFFIX = / (karras|exponential|sgm uniform|polyexponential)$/;

/** The first 4 bytes of a binary websocket frame say what it is; 1 is a preview image. */
const PREVIEW_EVENT = 1;
/** The next 4 bytes of a preview frame give its format: 1 JPEG, 2 PNG. */
const PREVIEW_FORMAT_PNG = 2;
const PREVIEW_HEADER_BYTES = 8;

const queuedReply = z.object({ prompt_id: z.string().min(1) });

const uploadReply = z.object({ name: z.string().min(1), subfolder: z.string().default('') });

const imageRef = z.object({
  filename: z.string().min(1),
  subfolder: z.string().default(''),
  type: z.string().default('output'),
});

const historyEntry = z.object({
  outputs: z.record(z.string(), z.object({ images: z.array(imageRef).optional() })),
});

const systemStatsReply = z.object({ system: z.record(z.string(), z.unknown()) });

/** A combo input's choices: `[names, options?]`, or `['COMBO', { options: names }]` in newer ComfyUI. */
const comboInput = z.union([
  z.tuple([z.array(z.string())], z.unknown()),
  z.tuple([z.literal('COMBO'), z.object({ options: z.array(z.string()) })], z.unknown()),
]);

const serverMessage = z.object({ type: z.string(), data: z.record(z.string(), z.unknown()) });

const progressData = z.object({ value: z.number(), max: z.number().positive() });

const executionErrorData = z.object({
  node_id: z.union([z.string(), z.number()]).nullish(),
  node_type: z.string().nullish(),
  exception_type: z.string().nullish(),
  exception_message: z.string().nullish(),
});

const nodeErrorsBody = z.object({
  error: z.object({ message: z.string(), details: z.string().nullish() }).nullish(),
  node_errors: z
    .union([
      z.record(
        z.string(),
        z.object({
          class_type: z.string().nullish(),
          errors: z.array(z.object({ message: z.string(), details: z.string().nullish() })),
        }),
      ),
      z.array(z.unknown()),
    ])
    .nullish(),
});

/** The limits one call runs under: its own deadline and, optionally, the caller's abort signal. */
interface Limits {
  deadline: AbortSignal;
  timeoutMs: number;
  signal?: AbortSignal | undefined;
}

/**
 * Maps an AUTOMATIC1111 sampler name (`'Euler a'`, `'DPM++ 2M'`) to ComfyUI's `sampler_name` (`euler_ancestral`,
 * `dpmpp_2m`). A scheduler suffix such as `Karras` is dropped: the template's KSampler `scheduler` applies.
 * Unknown names are passed through lowercased with spaces as underscores, so ComfyUI names stay as they are.
 */
export function toComfyUISampler(name: string): string {
  const lower = name.trim().toLowerCase();
  const known = A1111_SAMPLERS[lower] ?? A1111_SAMPLERS[lower.replace(SCHEDULER_SUFFIX, '')];
  return known ?? lower.replace(/\s+/g, '_');
}

/**
 * An {@link ImageBackend} for ComfyUI. Each generation fills a copy of the template, queues it with
 * `POST /prompt`, follows it over the websocket `GET /ws?clientId=`, and fetches the first saved image through
 * `/history/{prompt_id}` and `/view`.
 *
 * Template placeholders are string values that equal one of these exactly:
 * - `"$prompt"`, `"$negative"`, `"$model"`: the request's text and checkpoint name;
 * - `"$sampler"`: the request's sampler, mapped by {@link toComfyUISampler};
 * - `"$seed"`, `"$steps"`, `"$cfg"`, `"$width"`, `"$height"`: numbers (a seed of `-1` is replaced by a random
 *   32-bit seed here, since ComfyUI has none of its own, and reported back);
 * - img2img only: `"$init_image"` (the uploaded file's name) and `"$denoise"` (the denoising strength; 1 in txt2img).
 *
 * Every graph must use `"$prompt"` and `"$seed"`, and an img2img graph `"$init_image"`. A `"$model"` needs the
 * request to name a checkpoint; put a real `ckpt_name` in the template for a default.
 *
 * `baseUrl` is ComfyUI's address, e.g. `http://127.0.0.1:8188`, optionally with a path prefix behind a proxy;
 * credentials in it are sent as HTTP basic auth and kept out of errors. The constructor throws a `TypeError` for a
 * URL that is not http(s) or a template of the wrong shape, and a `RangeError` for a non-positive timeout.
 * Every method throws {@link ImageServerError}.
 */
export class ComfyUIBackend implements ImageBackend {
  readonly kind = 'comfyui';
  readonly #base: URL;
  readonly #authorization: string | undefined;
  readonly #requestTimeoutMs: number;
  readonly #txt2img: ComfyUIGraph;
  readonly #img2img: ComfyUIGraph | undefined;

  constructor(baseUrl: string, options: ComfyUIBackendOptions) {
    const { base, authorization } = parseServerAddress(baseUrl, 'ComfyUIBackend', 'http://127.0.0.1:8188');

    const requestTimeoutMs = options.requestTimeoutMs ?? DEFAULTS.requestTimeoutMs;
    if (!(requestTimeoutMs > 0)) {
      throw new RangeError('ComfyUIBackend requestTimeoutMs must be a positive number of milliseconds');
    }

    const { txt2img, img2img } = readTemplate(options.template);

    this.#authorization = authorization;
    this.#base = base;
    this.#requestTimeoutMs = requestTimeoutMs;
    this.#txt2img = txt2img;
    this.#img2img = img2img;
  }

  /**
   * Runs one generation, waiting up to `requestTimeoutMs` for it, queueing behind other prompts included.
   * `onProgress` gets the sampling progress of this prompt only, and the latest preview when ComfyUI sends
   * PNG previews (it sends none unless started with `--preview-method`, and JPEG by default).
   *
   * Aborting `options.signal` closes the websocket and rejects with the signal's reason; the prompt stays queued
   * or running on the server until {@link interrupt}. Throws {@link ImageServerError}: not retryable when the
   * template cannot serve the request (img2img without an img2img graph, `"$model"` without a model), when
   * ComfyUI rejects the graph (400, naming the node), or when the prompt was interrupted; retryable when a node
   * fails while running (`execution_error`, such as running out of memory).
   */
  async generate(request: GenerationRequest, options: GenerateOptions = {}): Promise<GeneratedImage> {
    const { signal } = options;
    signal?.throwIfAborted();

    const template = request.initImage === undefined ? this.#txt2img : this.#img2img;
    if (template === undefined) {
      throw this.#unusable('img2img needs a template with an "img2img" graph next to "txt2img"');
    }

    const seed = request.seed === -1 ? randomInt(0, 2 ** 32) : request.seed;
    const values = new Map<Placeholder, string | number>([
      ['$prompt', request.prompt],
      ['$negative', request.negativePrompt],
      ['$sampler', toComfyUISampler(request.sampler)],
      ['$seed', seed],
      ['$steps', request.steps],
      ['$cfg', request.cfgScale],
      ['$width', request.width],
      ['$height', request.height],
      ['$denoise', request.initImage?.denoisingStrength ?? 1],
    ]);
    if (request.model !== undefined) {
      values.set('$model', request.model);
    }

    if (request.model === undefined && placeholdersIn(template).has('$model')) {
      throw this.#unusable(
        'the request names no model and the template\'s ckpt_name is "$model"; configure a default model ' +
          'or put a checkpoint name in the template',
      );
    }

    const limits: Limits = {
      deadline: AbortSignal.timeout(this.#requestTimeoutMs),
      timeoutMs: this.#requestTimeoutMs,
      signal,
    };
    const clientId = randomUUID();
    const events = await this.#listen(clientId, limits, options);
    try {
      if (request.initImage !== undefined) {
        values.set('$init_image', await this.#upload(request.initImage.data, limits));
      }

      const graph = fillTemplate(template, values) as ComfyUIGraph;
      const promptTarget = this.#target('prompt');
      const queued = await this.#requestJson('POST', promptTarget, queuedReply, limits, {
        prompt: graph,
        client_id: clientId,
      });

      await events.follow(queued.prompt_id);

      const image = await this.#findOutputImage(queued.prompt_id, limits);
      const viewTarget = this.#target('view');
      viewTarget.search = new URLSearchParams(image).toString();
      const png = await this.#send('GET', viewTarget, limits);
      const size = pngSizeOf(png);
      if (size === undefined) {
        throw badReply('GET', viewTarget, `${image.filename} is not a PNG; save with SaveImage`);
      }

      return { png, seed, model: request.model ?? checkpointOf(graph), ...size };
    } finally {
      events.close();
    }
  }

  /**
   * Stops the prompt ComfyUI is running (`POST /interrupt`), which then ends with `execution_interrupted`.
   * Limitation: ComfyUI runs one prompt at a time for all clients, so this stops whoever's prompt is running, and
   * leaves queued prompts queued; `POST /queue` with `{ delete: [promptId] }` would remove ours.
   */
  async interrupt(): Promise<void> {
    await this.#send('POST', this.#target('interrupt'), controlLimits(), {});
  }

  /** Lists checkpoint file names (`GET /object_info/CheckpointLoaderSimple`), usable as a request's `model`. */
  async models(): Promise<string[]> {
    return this.#comboChoices('CheckpointLoaderSimple', 'ckpt_name');
  }

  /** Lists ComfyUI sampler names (`GET /object_info/KSampler`); A1111 names are accepted too when generating. */
  async samplers(): Promise<string[]> {
    return this.#comboChoices('KSampler', 'sampler_name');
  }

  /** Succeeds when ComfyUI answers `GET /system_stats`. */
  async ping(): Promise<void> {
    await this.#requestJson('GET', this.#target('system_stats'), systemStatsReply, controlLimits());
  }

  async #comboChoices(nodeClass: string, input: string): Promise<string[]> {
    const schema = z.object({
      [nodeClass]: z.object({ input: z.object({ required: z.object({ [input]: comboInput }) }) }),
    });
    const target = this.#target(`object_info/${nodeClass}`);
    const reply = await this.#requestJson('GET', target, schema, controlLimits());
    const choices = reply[nodeClass]?.input.required[input];
    if (choices === undefined) {
      throw badReply('GET', target, `${nodeClass}.input.required.${input} is missing`);
    }

    return choices[0] === 'COMBO' ? choices[1].options : choices[0];
  }

  /** Opens this generation's websocket; ComfyUI sends a prompt's events to the client id that queued it. */
  async #listen(clientId: string, limits: Limits, options: GenerateOptions): Promise<PromptEvents> {
    const target = this.#target('ws');
    target.protocol = target.protocol === 'https:' ? 'wss:' : 'ws:';
    target.searchParams.set('clientId', clientId);
    const socket = new WebSocket(target, {
      headers: this.#authorization === undefined ? {} : { authorization: this.#authorization },
      handshakeTimeout: DEFAULTS.controlTimeoutMs,
    });
    const events = new PromptEvents(socket, target, limits, options.onProgress, options.progressIntervalMs);
    await events.opened;
    return events;
  }

  /** Uploads the init image (`POST /upload/image`) and returns the name a LoadImage node knows it by. */
  async #upload(data: Buffer, limits: Limits): Promise<string> {
    const format = imageFormatOf(data);
    const form = new FormData();
    form.append('image', new Blob([data], { type: format.mime }), `discord-${randomUUID()}.${format.extension}`);
    form.append('type', 'input');
    const reply = await this.#requestJson('POST', this.#target('upload/image'), uploadReply, limits, form);
    return reply.subfolder === '' ? reply.name : `${reply.subfolder}/${reply.name}`;
  }

  /** The first image the prompt saved, from `GET /history/{prompt_id}`; SaveImage outputs come before previews. */
  async #findOutputImage(promptId: string, limits: Limits): Promise<z.infer<typeof imageRef>> {
    const target = this.#target(`history/${encodeURIComponent(promptId)}`);
    const history = await this.#requestJson('GET', target, z.record(z.string(), historyEntry), limits);
    const entry = history[promptId];
    if (entry === undefined) {
      throw badReply('GET', target, `no history for prompt ${promptId}`);
    }

    const images = Object.values(entry.outputs).flatMap((output) => output.images ?? []);
    const image = images.find((candidate) => candidate.type === 'output') ?? images[0];
    if (image === undefined) {
      throw badReply('GET', target, `prompt ${promptId} saved no image; end the graph with a SaveImage node`);
    }

    return image;
  }

  #target(path: string): URL {
    return new URL(path, this.#base);
  }

  /** A non-retryable error for a request this backend's template cannot serve; nothing was sent. */
  #unusable(reason: string): ImageServerError {
    // Limitation: ImageServerErrorCode has no code for "this configuration cannot serve the request", so this
    // borrows IMAGE_SERVER_BAD_REPLY, the non-retryable one; a dedicated code in a1111.ts would say it better.
    return new ImageServerError('IMAGE_SERVER_BAD_REPLY', `ComfyUI template cannot serve this request: ${reason}`, {
      url: this.#base.href,
    });
  }

  async #requestJson<T>(
    method: string,
    target: URL,
    schema: z.ZodType<T>,
    limits: Limits,
    body?: FormData | object,
  ): Promise<T> {
    const bytes = await this.#send(method, target, limits, body);
    return parseReply(method, target, schema, parseJson(bytes.toString('utf8')));
  }

  /** Sends one request and returns the body of a 2xx reply; every other outcome becomes an ImageServerError. */
  async #send(method: string, target: URL, limits: Limits, body?: FormData | object): Promise<Buffer> {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (body !== undefined && !(body instanceof FormData)) {
      headers['content-type'] = 'application/json';
    }

    if (this.#authorization !== undefined) {
      headers['authorization'] = this.#authorization;
    }

    let status: number;
    let bytes: Buffer;
    try {
      const response = await fetch(target, {
        method,
        headers,
        body: body === undefined ? null : body instanceof FormData ? body : JSON.stringify(body),
        signal: combine(limits),
      });
      status = response.status;
      bytes = Buffer.from(await response.arrayBuffer());
    } catch (error) {
      if (limits.deadline.aborted || limits.signal?.aborted) {
        throw stopped(limits, `${method} ${target.pathname}`, `${target.origin}${target.pathname}`, error);
      }

      throw new ImageServerError(
        'IMAGE_SERVER_UNREACHABLE',
        `image server unreachable for ${method} ${target.pathname} (${describeNetworkError(error)})`,
        { url: target.href, cause: error },
      );
    }

    if (status < 200 || status > 299) {
      const detail = describeErrorBody(parseJson(bytes.toString('utf8')));
      throw new ImageServerError(
        'IMAGE_SERVER_HTTP',
        `image server answered ${status} to ${method} ${target.pathname}${detail ? `: ${detail}` : ''}`,
        { url: target.href, status },
      );
    }

    return bytes;
  }
}

/**
 * The websocket one generation listens on. Events that arrive before `POST /prompt` answers are kept and
 * replayed once the prompt id is known, since a short prompt may start (or even finish) before that reply.
 */
class PromptEvents {
  /** Settles once the socket is open; rejects when it cannot be opened. */
  readonly opened: Promise<void>;
  readonly #socket: WebSocket;
  readonly #target: URL;
  /** The socket's address without the client id, for errors. */
  readonly #url: string;
  readonly #signal: AbortSignal;
  readonly #onProgress: ((progress: GenerationProgress) => void) | undefined;
  readonly #progressIntervalMs: number;
  readonly #finished: Promise<void>;
  readonly #early: Array<{ message: z.infer<typeof serverMessage>; receivedAt: number }> = [];
  readonly #stopOnAbort: () => void;
  #resolve: () => void = () => undefined;
  #reject: (error: unknown) => void = () => undefined;
  #promptId: string | null = null;
  #open = false;
  #settled = false;
  #preview: Buffer | null = null;
  /** When the node now running started, for the ETA. */
  #nodeStartedAt: number | null = null;
  #lastReportAt = -Infinity;

  constructor(
    socket: WebSocket,
    target: URL,
    limits: Limits,
    onProgress: ((progress: GenerationProgress) => void) | undefined,
    progressIntervalMs: number | undefined,
  ) {
    this.#socket = socket;
    this.#target = target;
    this.#url = `${target.origin}${target.pathname}`;
    this.#signal = combine(limits);
    this.#onProgress = onProgress;
    this.#progressIntervalMs = progressIntervalMs ?? DEFAULTS.progressIntervalMs;
    this.#finished = new Promise<void>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    // Whoever awaits follow() sees a failure; until then it must not count as unhandled.
    this.#finished.catch(() => undefined);

    this.opened = new Promise<void>((resolve, reject) => {
      socket.once('open', () => {
        this.#open = true;
        resolve();
      });
      this.#finished.catch(reject);
    });

    socket.on('unexpected-response', (_request, response) => {
      const status = response.statusCode ?? 0;
      this.#settle(
        new ImageServerError('IMAGE_SERVER_HTTP', `image server answered ${status} to GET ${target.pathname}`, {
          url: this.#url,
          status,
        }),
      );
    });
    socket.on('error', (error) => this.#settle(this.#closedEarly(error)));
    socket.on('close', () => this.#settle(this.#closedEarly(undefined)));
    socket.on('message', (data, isBinary) => {
      if (isBinary) {
        this.#keepPreview(toBuffer(data));
      } else {
        this.#receive(toBuffer(data).toString('utf8'));
      }
    });

    this.#stopOnAbort = () => this.#settle(stopped(limits, 'the prompt', this.#url, this.#signal.reason));
    if (this.#signal.aborted) {
      this.#stopOnAbort();
    } else {
      this.#signal.addEventListener('abort', this.#stopOnAbort, { once: true });
    }
  }

  /** Resolves when the prompt has run (`executing` with `node: null`); rejects when it failed or was stopped. */
  follow(promptId: string): Promise<void> {
    this.#promptId = promptId;
    for (const { message, receivedAt } of this.#early.splice(0)) {
      this.#handle(message, receivedAt);
    }

    return this.#finished;
  }

  /** Closes the socket; no progress is reported after this. */
  close(): void {
    this.#settle(new Error('the prompt events were closed'));
  }

  #receive(text: string): void {
    const parsed = serverMessage.safeParse(parseJson(text));
    if (!parsed.success || typeof parsed.data.data['prompt_id'] !== 'string') {
      return;
    }

    if (this.#promptId === null) {
      this.#early.push({ message: parsed.data, receivedAt: Date.now() });
    } else {
      this.#handle(parsed.data, Date.now());
    }
  }

  #handle({ type, data }: z.infer<typeof serverMessage>, receivedAt: number): void {
    if (data['prompt_id'] !== this.#promptId || this.#settled) {
      return;
    }

    const promptId = String(this.#promptId);
    switch (type) {
      case 'executing': {
        const node = data['node'];
        if (node === null) {
          this.#settle(null);
        } else {
          this.#nodeStartedAt = receivedAt;
        }

        break;
      }

      case 'progress': {
        const progress = progressData.safeParse(data);
        if (progress.success) {
          this.#report(progress.data.value, progress.data.max, receivedAt);
        }

        break;
      }

      case 'execution_error': {
        const error = executionErrorData.safeParse(data);
        const details = error.success ? error.data : {};
        const node = details.node_id == null ? '' : ` at node ${details.node_id} (${details.node_type ?? '?'})`;
        const cause = [details.exception_type, details.exception_message].filter(Boolean).join(': ');
        // Limitation: there is no ImageServerError code for a failed run; it is reported like the 500 the WebUI
        // answers when a generation throws, which is what makes it retryable.
        this.#settle(
          new ImageServerError('IMAGE_SERVER_HTTP', `ComfyUI prompt ${promptId} failed${node}: ${cause || 'error'}`, {
            url: this.#url,
            status: 500,
          }),
        );
        break;
      }

      case 'execution_interrupted':
        this.#settle(
          new ImageServerError('IMAGE_SERVER_BAD_REPLY', `ComfyUI prompt ${promptId} was interrupted`, {
            url: this.#url,
          }),
        );
        break;

      default:
        break;
    }
  }

  #report(value: number, max: number, receivedAt: number): void {
    const now = Date.now();
    if (this.#onProgress === undefined || this.#settled || now - this.#lastReportAt < this.#progressIntervalMs) {
      return;
    }

    this.#lastReportAt = now;
    const step = Math.min(Math.max(value, 0), max);
    const elapsedMs = this.#nodeStartedAt === null ? 0 : receivedAt - this.#nodeStartedAt;
    this.#onProgress({
      active: true,
      fraction: step / max,
      etaSeconds: step > 0 && elapsedMs > 0 ? ((elapsedMs / step) * (max - step)) / 1000 : null,
      step,
      steps: max,
      previewPng: this.#preview,
    });
  }

  /** Keeps a binary preview frame when it is a PNG; JPEG previews (ComfyUI's default) are dropped. */
  #keepPreview(frame: Buffer): void {
    if (
      frame.length > PREVIEW_HEADER_BYTES &&
      frame.readUInt32BE(0) === PREVIEW_EVENT &&
      frame.readUInt32BE(4) === PREVIEW_FORMAT_PNG
    ) {
      const png = frame.subarray(PREVIEW_HEADER_BYTES);
      if (pngSizeOf(png) !== undefined) {
        this.#preview = Buffer.from(png);
      }
    }
  }

  #closedEarly(cause: unknown): ImageServerError {
    const reason = cause === undefined ? '' : ` (${describeNetworkError(cause)})`;
    if (!this.#open) {
      return new ImageServerError(
        'IMAGE_SERVER_UNREACHABLE',
        `image server unreachable for GET ${this.#target.pathname}${reason}`,
        { url: this.#url, cause },
      );
    }

    // Limitation: a dropped socket fails the generation although the prompt may still finish on the server;
    // polling GET /history/{prompt_id} until it appears would recover it.
    return new ImageServerError(
      'IMAGE_SERVER_UNREACHABLE',
      `image server websocket ${this.#target.pathname} closed before the prompt finished${reason}`,
      { url: this.#url, cause },
    );
  }

  /** Ends the watch once: `null` for success, otherwise the error; always closes the socket. */
  #settle(error: unknown): void {
    if (this.#settled) {
      return;
    }

    this.#settled = true;
    this.#signal.removeEventListener('abort', this.#stopOnAbort);
    this.#socket.terminate();
    if (error === null) {
      this.#resolve();
    } else {
      this.#reject(error);
    }
  }
}

/** Splits the template into its graphs and checks them; throws a `TypeError` that says what is expected. */
function readTemplate(template: unknown): { txt2img: ComfyUIGraph; img2img: ComfyUIGraph | undefined } {
  const shape =
    'a ComfyUI template must be an API-format graph ({ "1": { "class_type": ..., "inputs": {...} } }, ' +
    'from "Save (API Format)") or { "txt2img": graph, "img2img": graph }';
  if (typeof template !== 'object' || template === null || Array.isArray(template)) {
    throw new TypeError(shape);
  }

  const named = 'txt2img' in template;
  const txt2img = named ? Reflect.get(template, 'txt2img') : template;
  const img2img = named ? Reflect.get(template, 'img2img') : undefined;
  if (!isGraph(txt2img) || (img2img !== undefined && !isGraph(img2img))) {
    throw new TypeError(shape);
  }

  const graphs = { txt2img, ...(img2img === undefined ? {} : { img2img }) };
  for (const [name, graph] of Object.entries(graphs)) {
    const used = placeholdersIn(graph);
    const required = name === 'img2img' ? [...REQUIRED_PLACEHOLDERS, '$init_image'] : REQUIRED_PLACEHOLDERS;
    const missing = required.filter((placeholder) => !used.has(placeholder));
    if (missing.length > 0) {
      throw new TypeError(`the ComfyUI ${name} template must use the placeholder(s) ${missing.join(', ')}`);
    }
  }

  return { txt2img: structuredClone(txt2img), img2img: img2img === undefined ? undefined : structuredClone(img2img) };
}

function isGraph(value: unknown): value is ComfyUIGraph {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return false;
  }

  const nodes = Object.values(value);
  return (
    nodes.length > 0 &&
    nodes.every(
      (node: unknown) =>
        typeof node === 'object' &&
        node !== null &&
        typeof Reflect.get(node, 'class_type') === 'string' &&
        typeof Reflect.get(node, 'inputs') === 'object',
    )
  );
}

/** The placeholders a graph uses anywhere in its values. */
function placeholdersIn(value: unknown, found = new Set<string>()): Set<string> {
  if (typeof value === 'string' && PLACEHOLDERS.has(value)) {
    found.add(value);
  } else if (typeof value === 'object' && value !== null) {
    for (const child of Object.values(value)) {
      placeholdersIn(child, found);
    }
  }

  return found;
}

/** A deep copy of `value` with each placeholder string replaced by its value. */
function fillTemplate(value: unknown, values: ReadonlyMap<string, string | number>): unknown {
  if (typeof value === 'string') {
    return values.get(value) ?? value;
  }

  if (Array.isArray(value)) {
    return value.map((item: unknown) => fillTemplate(item, values));
  }

  if (typeof value === 'object' && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, fillTemplate(item, values)]));
  }

  return value;
}

/** The checkpoint a filled graph loads, or `null` when it has no CheckpointLoaderSimple. */
function checkpointOf(graph: ComfyUIGraph): string | null {
  const loader = Object.values(graph).find((node) => node.class_type === 'CheckpointLoaderSimple');
  const name = loader?.inputs['ckpt_name'];
  return typeof name === 'string' ? name : null;
}

function imageFormatOf(data: Buffer): { mime: string; extension: string } {
  if (data.subarray(0, 3).equals(Buffer.from([0xff, 0xd8, 0xff]))) {
    return { mime: 'image/jpeg', extension: 'jpg' };
  }

  if (data.toString('latin1', 0, 4) === 'RIFF' && data.toString('latin1', 8, 12) === 'WEBP') {
    return { mime: 'image/webp', extension: 'webp' };
  }

  return { mime: 'image/png', extension: 'png' };
}

function pngSizeOf(data: Buffer): { width: number; height: number } | undefined {
  try {
    return readPngSize(data);
  } catch {
    return undefined;
  }
}

function controlLimits(): Limits {
  return { deadline: AbortSignal.timeout(DEFAULTS.controlTimeoutMs), timeoutMs: DEFAULTS.controlTimeoutMs };
}

function combine(limits: Limits): AbortSignal {
  return limits.signal === undefined ? limits.deadline : AbortSignal.any([limits.signal, limits.deadline]);
}

/** What to throw once a call's limits stopped it: a timeout error, or the caller's abort reason. */
function stopped(limits: Limits, what: string, url: string, cause: unknown): unknown {
  if (limits.signal?.aborted) {
    return limits.signal.reason;
  }

  return new ImageServerError(
    'IMAGE_SERVER_TIMEOUT',
    `image server did not finish ${what} within ${limits.timeoutMs} ms`,
    { url, cause },
  );
}

function toBuffer(data: WebSocket.RawData): Buffer {
  if (Buffer.isBuffer(data)) {
    return data;
  }

  return Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
}

function badReply(method: string, target: URL, reason: string): ImageServerError {
  return new ImageServerError(
    'IMAGE_SERVER_BAD_REPLY',
    `image server sent an unusable reply to ${method} ${target.pathname}: ${reason}`,
    { url: target.href },
  );
}

function parseReply<T>(method: string, target: URL, schema: z.ZodType<T>, value: unknown): T {
  const result = schema.safeParse(value);
  if (result.success) {
    return result.data;
  }

  const issue = result.error.issues[0];
  const where = ['reply', ...(issue?.path ?? [])].map(String).join('.');
  throw badReply(method, target, `${where}: ${issue?.message ?? 'unexpected shape'}`);
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

/** Summarises ComfyUI's `{ error, node_errors }` body in one line that names each failing node. */
function describeErrorBody(body: unknown): string {
  const parsed = nodeErrorsBody.safeParse(body);
  if (!parsed.success || typeof body !== 'object' || body === null) {
    return '';
  }

  const { error, node_errors: nodeErrors } = parsed.data;
  const nodes = Array.isArray(nodeErrors) || nodeErrors == null ? [] : Object.entries(nodeErrors);
  const parts = nodes.map(([id, node]) => {
    const issues = node.errors.map((issue) => (issue.details ? `${issue.message}: ${issue.details}` : issue.message));
    return `node ${id} (${node.class_type ?? '?'}): ${issues.join('; ')}`;
  });
  const summary = [error?.message, ...parts].filter(Boolean).join('; ');
  return summary.length > 400 ? `${summary.slice(0, 399)}…` : summary;
}
