import { z } from 'zod';
import { describeNetworkError, parseServerAddress } from './http-util';
import { pngSize } from './png-size';

/** What to draw. Sizes are pixels; the WebUI wants multiples of 8. */
export interface Txt2ImgParams {
  prompt: string;
  negativePrompt: string;
  /** `-1` lets the server pick a random seed; the chosen one comes back in {@link GeneratedImage.seed}. */
  seed: number;
  /** A sampler name as listed by {@link A1111Client.samplers}, e.g. `'Euler a'`. */
  sampler: string;
  steps: number;
  cfgScale: number;
  width: number;
  height: number;
  /** A checkpoint title as listed by {@link A1111Client.models}; the server's current one when omitted. */
  model?: string;
}

/** What to draw from a starting image: everything {@link Txt2ImgParams} has, plus the image and how far to move. */
export interface Img2ImgParams extends Txt2ImgParams {
  /** The starting image: PNG, JPEG or WebP bytes. The WebUI resizes it to `width` x `height`. */
  initImage: Buffer;
  /** How far to move away from the starting image, 0 (keep it) to 1 (ignore it). */
  denoisingStrength: number;
}

export interface GeneratedImage {
  png: Buffer;
  /** The seed actually used, so a random (`-1`) request can be reproduced. */
  seed: number;
  /** The checkpoint name the server reports having used, or `null` when it does not say. */
  model: string | null;
  /** Pixel size read from the PNG itself. */
  width: number;
  height: number;
}

export interface GenerationProgress {
  /** Whether the server is generating right now (for anyone: the WebUI has a single global progress). */
  active: boolean;
  /** Progress of the running job, 0..1; 0 when idle. */
  fraction: number;
  /** Estimated seconds left, or `null` when idle or unknown. */
  etaSeconds: number | null;
  step: number;
  steps: number;
  /** A low-resolution preview of the running job, or `null` when there is none or it is not a PNG. */
  previewPng: Buffer | null;
}

export type ImageServerErrorCode =
  'IMAGE_SERVER_UNREACHABLE' | 'IMAGE_SERVER_HTTP' | 'IMAGE_SERVER_BAD_REPLY' | 'IMAGE_SERVER_TIMEOUT';

/**
 * Thrown when the image server cannot be reached (`IMAGE_SERVER_UNREACHABLE`), answers with a non-2xx status
 * (`IMAGE_SERVER_HTTP`), sends a reply this client cannot use (`IMAGE_SERVER_BAD_REPLY`), or does not answer
 * within the timeout (`IMAGE_SERVER_TIMEOUT`).
 *
 * `retryable` is true for network failures, timeouts and 5xx statuses, which may succeed on another attempt,
 * and false for 4xx statuses (such as a 422 validation error) and unusable replies, which will not.
 * The message and `url` carry the request path and status but never credentials from the base URL.
 */
export class ImageServerError extends Error {
  override readonly name = 'ImageServerError';
  readonly code: ImageServerErrorCode;
  readonly status: number | undefined;
  readonly url: string;
  readonly retryable: boolean;

  constructor(code: ImageServerErrorCode, message: string, context: { url: string; status?: number; cause?: unknown }) {
    super(message, context.cause === undefined ? undefined : { cause: context.cause });
    this.code = code;
    this.status = context.status;
    this.url = context.url;
    this.retryable =
      code === 'IMAGE_SERVER_HTTP'
        ? context.status !== undefined && context.status >= 500
        : code !== 'IMAGE_SERVER_BAD_REPLY';
  }
}

const DEFAULTS = {
  requestTimeoutMs: 600_000, // 10 min: a large image on a slow GPU, possibly after a checkpoint swap
  controlTimeoutMs: 15_000, // 15 s: progress, interrupt and listings are not queued behind generation
} as const satisfies Record<string, number>;

const TXT2IMG_PATH = 'sdapi/v1/txt2img';
const IMG2IMG_PATH = 'sdapi/v1/img2img';
const PROGRESS_PATH = 'sdapi/v1/progress?skip_current_image=false';
const INTERRUPT_PATH = 'sdapi/v1/interrupt';
const MODELS_PATH = 'sdapi/v1/sd-models';
const SAMPLERS_PATH = 'sdapi/v1/samplers';

const generationReply = z.object({
  images: z.array(z.string()).min(1),
  // A1111 and Forge send a JSON string; accept an already-decoded object too.
  info: z.union([z.string(), z.record(z.string(), z.unknown())]),
});

const generationInfo = z.object({
  seed: z.number().int(),
  sd_model_name: z.string().nullish(),
});

const progressReply = z.object({
  progress: z.number(),
  eta_relative: z.number().nullish(),
  state: z.object({
    job_count: z.number(),
    sampling_step: z.number(),
    sampling_steps: z.number(),
  }),
  current_image: z.string().nullish(),
});

const modelsReply = z.array(z.object({ title: z.string() }));

const samplersReply = z.array(z.object({ name: z.string() }));

interface RequestOptions {
  body?: unknown;
  timeoutMs: number;
  signal?: AbortSignal | undefined;
}

/**
 * A client for the AUTOMATIC1111 Stable Diffusion WebUI API (`--api`), which Forge and SD.Next also serve.
 *
 * `baseUrl` is the WebUI's address, e.g. `http://127.0.0.1:7860`, optionally with a path prefix behind a proxy.
 * Credentials in it (`http://user:pass@host:7860`, for `--api-auth`) are sent as HTTP basic auth and kept out
 * of errors. Throws a `TypeError` when `baseUrl` is not an http(s) URL, and a `RangeError` when
 * `requestTimeoutMs` is not positive.
 *
 * Every method throws {@link ImageServerError} on failure. txt2img and img2img wait up to `requestTimeoutMs`
 * (default 600_000 ms); the other calls up to 15 s.
 */
export class A1111Client {
  readonly #base: URL;
  readonly #authorization: string | undefined;
  readonly #requestTimeoutMs: number;

  constructor(baseUrl: string, options: { requestTimeoutMs?: number } = {}) {
    const { base, authorization } = parseServerAddress(baseUrl, 'A1111Client', 'http://127.0.0.1:7860');

    const requestTimeoutMs = options.requestTimeoutMs ?? DEFAULTS.requestTimeoutMs;
    if (!(requestTimeoutMs > 0)) {
      throw new RangeError('A1111Client requestTimeoutMs must be a positive number of milliseconds');
    }

    this.#authorization = authorization;
    this.#base = base;
    this.#requestTimeoutMs = requestTimeoutMs;
  }

  /**
   * Generates one image (`POST /sdapi/v1/txt2img`), waiting for it for up to `requestTimeoutMs`.
   * The server runs one job at a time, so this also waits behind anyone else's jobs.
   *
   * Aborting `options.signal` rejects with the signal's reason, but only drops the HTTP request: the WebUI keeps
   * generating until {@link interrupt} is called. Throws {@link ImageServerError}, with `IMAGE_SERVER_BAD_REPLY`
   * when the image is not a PNG (the WebUI's `samples_format` setting must be `png`).
   */
  async txt2img(params: Txt2ImgParams, options: { signal?: AbortSignal } = {}): Promise<GeneratedImage> {
    return this.#generate(TXT2IMG_PATH, generationBody(params), options.signal);
  }

  /**
   * Generates one image from a starting image (`POST /sdapi/v1/img2img`), otherwise exactly like {@link txt2img}:
   * same timeout, waiting and abort behaviour, and errors. The image travels base64-encoded in the JSON body,
   * a third larger than the file.
   *
   * Keep `denoisingStrength` within 0..1 and pass only images already checked (as `fetchInitImage` does): the
   * WebUI may answer an undecodable image with a 500, which reads as retryable.
   */
  async img2img(params: Img2ImgParams, options: { signal?: AbortSignal } = {}): Promise<GeneratedImage> {
    const body = {
      ...generationBody(params),
      init_images: [params.initImage.toString('base64')],
      denoising_strength: params.denoisingStrength,
    };
    return this.#generate(IMG2IMG_PATH, body, options.signal);
  }

  /**
   * Reads the server's progress (`GET /sdapi/v1/progress`). The WebUI tracks a single global job, so this
   * describes whatever is running, not necessarily a job this client started. Throws {@link ImageServerError}.
   */
  async progress(): Promise<GenerationProgress> {
    const reply = await this.#requestJson('GET', this.#target(PROGRESS_PATH), progressReply, {
      timeoutMs: DEFAULTS.controlTimeoutMs,
    });

    const active = reply.state.job_count > 0 || reply.progress > 0;
    const eta = reply.eta_relative;
    const preview = reply.current_image ? decodeBase64(reply.current_image) : undefined;
    return {
      active,
      fraction: Math.min(Math.max(reply.progress, 0), 1),
      etaSeconds: active && eta !== null && eta !== undefined && Number.isFinite(eta) ? Math.max(eta, 0) : null,
      step: reply.state.sampling_step,
      steps: reply.state.sampling_steps,
      previewPng: preview !== undefined && pngSize(preview) !== undefined ? preview : null,
    };
  }

  /**
   * Asks the server to stop the running job early (`POST /sdapi/v1/interrupt`); that job still returns the
   * image it has so far. Does nothing when idle. Throws {@link ImageServerError}.
   */
  async interrupt(): Promise<void> {
    await this.#send('POST', this.#target(INTERRUPT_PATH), { timeoutMs: DEFAULTS.controlTimeoutMs });
  }

  /** Lists checkpoint titles (`GET /sdapi/v1/sd-models`), usable as {@link Txt2ImgParams.model}. */
  async models(): Promise<string[]> {
    const reply = await this.#requestJson('GET', this.#target(MODELS_PATH), modelsReply, {
      timeoutMs: DEFAULTS.controlTimeoutMs,
    });
    return reply.map((model) => model.title);
  }

  /** Lists sampler names (`GET /sdapi/v1/samplers`), usable as {@link Txt2ImgParams.sampler}. */
  async samplers(): Promise<string[]> {
    const reply = await this.#requestJson('GET', this.#target(SAMPLERS_PATH), samplersReply, {
      timeoutMs: DEFAULTS.controlTimeoutMs,
    });
    return reply.map((sampler) => sampler.name);
  }

  /** Posts a txt2img or img2img body and reads the one PNG and its seed out of the reply. */
  async #generate(path: string, body: object, signal: AbortSignal | undefined): Promise<GeneratedImage> {
    const target = this.#target(path);
    const reply = await this.#requestJson('POST', target, generationReply, {
      body,
      timeoutMs: this.#requestTimeoutMs,
      signal,
    });

    const png = decodeBase64(reply.images[0] ?? '');
    const size = pngSize(png);
    if (size === undefined) {
      throw badReply('POST', target, 'the image is not a PNG; set the WebUI samples_format option to png');
    }

    const infoJson = typeof reply.info === 'string' ? parseJson(reply.info) : reply.info;
    const info = parseReply('POST', target, generationInfo, infoJson, 'info');

    return { png, seed: info.seed, model: info.sd_model_name ?? null, ...size };
  }

  #target(path: string): URL {
    return new URL(path, this.#base);
  }

  async #requestJson<T>(method: string, target: URL, schema: z.ZodType<T>, options: RequestOptions): Promise<T> {
    const text = await this.#send(method, target, options);
    return parseReply(method, target, schema, parseJson(text), 'reply');
  }

  /** Sends one request and returns the body of a 2xx reply; every other outcome becomes an ImageServerError. */
  async #send(method: string, target: URL, options: RequestOptions): Promise<string> {
    const timeout = AbortSignal.timeout(options.timeoutMs);
    const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
    const headers: Record<string, string> = { accept: 'application/json' };
    if (options.body !== undefined) {
      headers['content-type'] = 'application/json';
    }

    if (this.#authorization !== undefined) {
      headers['authorization'] = this.#authorization;
    }

    let status: number;
    let text: string;
    try {
      const response = await fetch(target, {
        method,
        headers,
        body: options.body === undefined ? null : JSON.stringify(options.body),
        signal,
      });
      status = response.status;
      text = await response.text();
    } catch (error) {
      if (timeout.aborted) {
        throw new ImageServerError(
          'IMAGE_SERVER_TIMEOUT',
          `image server did not answer ${method} ${target.pathname} within ${options.timeoutMs} ms`,
          { url: target.href, cause: error },
        );
      }

      if (options.signal?.aborted) {
        throw options.signal.reason;
      }

      throw new ImageServerError(
        'IMAGE_SERVER_UNREACHABLE',
        `image server unreachable for ${method} ${target.pathname} (${describeNetworkError(error)})`,
        { url: target.href, cause: error },
      );
    }

    if (status < 200 || status > 299) {
      const detail = describeErrorBody(parseJson(text));
      throw new ImageServerError(
        'IMAGE_SERVER_HTTP',
        `image server answered ${status} to ${method} ${target.pathname}${detail ? `: ${detail}` : ''}`,
        { url: target.href, status },
      );
    }

    return text;
  }
}

/** The fields txt2img and img2img share, in the WebUI's names. */
function generationBody(params: Txt2ImgParams): Record<string, unknown> {
  return {
    prompt: params.prompt,
    negative_prompt: params.negativePrompt,
    seed: params.seed,
    sampler_name: params.sampler,
    steps: params.steps,
    cfg_scale: params.cfgScale,
    width: params.width,
    height: params.height,
    batch_size: 1,
    n_iter: 1,
    send_images: true,
    save_images: false,
    ...(params.model === undefined ? {} : { override_settings: { sd_model_checkpoint: params.model } }),
    override_settings_restore_afterwards: true,
  };
}

function badReply(method: string, target: URL, reason: string): ImageServerError {
  return new ImageServerError(
    'IMAGE_SERVER_BAD_REPLY',
    `image server sent an unusable reply to ${method} ${target.pathname}: ${reason}`,
    { url: target.href },
  );
}

/** Checks a decoded reply against its schema; `label` names the value in the error, e.g. `info.seed`. */
function parseReply<T>(method: string, target: URL, schema: z.ZodType<T>, value: unknown, label: string): T {
  const result = schema.safeParse(value);
  if (result.success) {
    return result.data;
  }

  const issue = result.error.issues[0];
  const where = [label, ...(issue?.path ?? [])].map(String).join('.');
  throw badReply(method, target, `${where}: ${issue?.message ?? 'unexpected shape'}`);
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

function decodeBase64(encoded: string): Buffer {
  // SD.Next and some extensions send data URLs instead of bare base64.
  const comma = encoded.startsWith('data:') ? encoded.indexOf(',') : -1;
  return Buffer.from(encoded.slice(comma + 1), 'base64');
}

/** Summarises FastAPI (`{ detail }`) and WebUI (`{ error, errors }`) error bodies in one short line. */
function describeErrorBody(body: unknown): string {
  if (typeof body !== 'object' || body === null) {
    return '';
  }

  const { detail, error, errors } = body as Record<string, unknown>;
  let summary = '';
  if (Array.isArray(detail)) {
    summary = detail.map(describeValidationIssue).join('; ');
  } else if (typeof detail === 'string' && detail !== '') {
    summary = detail;
  } else if (typeof error === 'string') {
    summary = typeof errors === 'string' && errors !== '' ? `${error}: ${errors}` : error;
  }

  return summary.length > 300 ? `${summary.slice(0, 299)}…` : summary;
}

function describeValidationIssue(issue: unknown): string {
  if (typeof issue !== 'object' || issue === null) {
    return String(issue);
  }

  const { loc, msg } = issue as Record<string, unknown>;
  const where = Array.isArray(loc) ? loc.join('.') : '';
  return where ? `${where}: ${String(msg)}` : String(msg);
}
