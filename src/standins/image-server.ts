import { createHash, randomInt } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import Fastify from 'fastify';
import { PNG } from 'pngjs';
import { encodePng } from './png';
import { runStandInFromCommandLine } from './standalone';

/**
 * A stand-in for the AUTOMATIC1111 WebUI API, for tests and an offline demo without a GPU. It answers the routes
 * the bot uses with the same shapes, runs one generation at a time behind a global lock like the WebUI, and
 * draws placeholder gradients instead of pictures.
 *
 * Run it alone with `npx tsx src/standins/image-server.ts --port 7860`.
 */

export interface ImageServerStandInOptions {
  /** TCP port; 0 (the default) picks a free one. */
  port?: number;
  /** Interface to listen on; default `127.0.0.1`. */
  host?: string;
  /** Milliseconds one generation takes, start to finish; default 1_500. */
  delayMs?: number;
  /** Checkpoint titles, e.g. `'sd_xl_base_1.0.safetensors [31e35c80fc]'`; the first is the current model. */
  models?: string[];
  /** Sampler names; requests naming another get a 404, as on the WebUI. */
  samplers?: string[];
}

/**
 * One txt2img or img2img call that got past validation, recorded once it held the lock. Times are epoch
 * milliseconds.
 */
export interface Txt2ImgRecord {
  /** Which route the call came through. */
  mode: GenerationMode;
  prompt: string;
  negativePrompt: string;
  /** The seed used: the requested one, or the random pick for `-1`. */
  seed: number;
  width: number;
  height: number;
  steps: number;
  sampler: string;
  cfgScale: number;
  /** The checkpoint title used. */
  model: string;
  /** img2img: the requested denoising strength, 0..1; `null` for txt2img. */
  denoisingStrength: number | null;
  /** img2img: the size of the decoded init image in bytes; `null` for txt2img. */
  initImageBytes: number | null;
  /** When the HTTP request arrived, before it waited for the lock. */
  receivedAt: number;
  startedAt: number;
  finishedAt: number | null;
  interrupted: boolean;
  /** The injected HTTP status the call answered with, or `null` when it was not failed on purpose. */
  failedWith: number | null;
}

export type GenerationMode = 'txt2img' | 'img2img';

export interface ImageServerStandIn {
  /** Base URL without a trailing slash, e.g. `http://127.0.0.1:54321`. */
  readonly url: string;
  /** Every txt2img and img2img that started, in start order; the live list, updated as jobs finish. */
  readonly requests: Txt2ImgRecord[];
  /** How many interrupt calls arrived, whether or not a job was running. */
  readonly interrupts: number;
  /** The most txt2img and img2img calls that were ever open at once (waiting for the lock or running). */
  readonly peakConcurrentRequests: number;
  /**
   * Makes the next `count` valid txt2img or img2img calls answer `status` (default 500) with a WebUI-style error
   * body.
   *
   * With `onlyPrompt`, only calls for exactly that prompt fail; others pass through.
   */
  failNext(count: number, status?: number, onlyPrompt?: string): void;
  /** Drops every open connection and stops listening at once, mid-generation if one runs. */
  crash(): void;
  /** Changes how long the next generations take, in milliseconds. */
  setDelay(ms: number): void;
  /** The [start, end] of each finished job (failed and interrupted ones included), in start order. */
  busyIntervals(): Array<{ start: number; end: number }>;
  /** Stops listening; a running job is interrupted and queued ones finish at once. */
  close(): Promise<void>;
}

const DEFAULTS = {
  port: 0,
  host: '127.0.0.1',
  delayMs: 1_500, // 1.5 s: long enough to watch progress, short enough for tests
  models: ['sd_xl_base_1.0.safetensors [31e35c80fc]', 'v1-5-pruned-emaonly.safetensors [6ce0161689]'],
  samplers: ['DPM++ 2M', 'Euler a', 'Euler', 'DDIM', 'UniPC'],
} as const;

const FAILURE_DELAY_MS = 50;
const BODY_LIMIT_BYTES = 64 * 1_024 * 1_024; // 64 MiB: img2img sends the init image base64-encoded in JSON
const DEFAULT_DENOISING_STRENGTH = 0.75;
const PREVIEW_SIZE = 64;
const STANDALONE_PORT = 7860;

interface GenerationRequest {
  mode: GenerationMode;
  prompt: string;
  negativePrompt: string;
  seed: number;
  sampler: string;
  steps: number;
  cfgScale: number;
  width: number;
  height: number;
  model: string | undefined;
  keepModel: boolean;
  denoisingStrength: number | null;
  initImageBytes: number | null;
}

interface ValidationIssue {
  loc: string[];
  msg: string;
  type: string;
}

interface RunningJob {
  record: Txt2ImgRecord;
  durationMs: number;
  preview: Buffer;
  stop: AbortController;
}

/**
 * Starts the stand-in on `options.port` (default: a free port) and resolves once it is listening.
 * Throws a `RangeError` for a negative delay or an empty model or sampler list, and the listen error when the
 * port is taken.
 */
export async function startImageServer(options: ImageServerStandInOptions = {}): Promise<ImageServerStandIn> {
  const host = options.host ?? DEFAULTS.host;
  const models = options.models ?? [...DEFAULTS.models];
  const samplers = options.samplers ?? [...DEFAULTS.samplers];
  const delayMs = options.delayMs ?? DEFAULTS.delayMs;
  if (models.length === 0 || samplers.length === 0) {
    throw new RangeError('the image server stand-in needs at least one model and one sampler');
  }

  const state = new WebUiState(models[0] ?? '', delayMs);
  const app = Fastify({ logger: false, bodyLimit: BODY_LIMIT_BYTES });

  app.setNotFoundHandler(async (_request, reply) => reply.code(404).send({ detail: 'Not Found' }));

  for (const mode of ['txt2img', 'img2img'] as const) {
    app.post(`/sdapi/v1/${mode}`, async (request, reply) => {
      const parsed = parseGeneration(mode, request.body, samplers[0] ?? '');
      if ('issues' in parsed) {
        return reply.code(422).send({ detail: parsed.issues });
      }

      if (!samplers.includes(parsed.sampler) && !samplers.map(samplerAlias).includes(parsed.sampler)) {
        return reply.code(404).send({ detail: 'Sampler not found' });
      }

      const outcome = await state.generate(parsed);
      if ('failedWith' in outcome) {
        return reply.code(outcome.failedWith).send({
          error: 'RuntimeError',
          detail: '',
          body: '',
          errors: `failure injected by the stand-in (status ${outcome.failedWith})`,
        });
      }

      // Like the WebUI, img2img does not echo the init images back.
      const parameters = mode === 'img2img' ? { ...(request.body as object), init_images: null } : request.body;
      return { images: [outcome.png.toString('base64')], parameters, info: outcome.info };
    });
  }

  app.get('/sdapi/v1/progress', async (request) => {
    const query = request.query as Record<string, unknown>;
    return state.progress(query['skip_current_image'] === 'true');
  });

  app.post('/sdapi/v1/interrupt', async () => {
    state.interrupt();
    return {};
  });

  app.get('/sdapi/v1/sd-models', async () => models.map(describeModel));

  app.get('/sdapi/v1/samplers', async () =>
    samplers.map((name) => ({ name, aliases: [samplerAlias(name)], options: {} })),
  );

  app.get('/sdapi/v1/options', async () => ({ sd_model_checkpoint: state.currentModel }));

  await app.listen({ port: options.port ?? DEFAULTS.port, host });
  const address = app.server.address();
  const port = typeof address === 'object' && address !== null ? address.port : options.port;
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;

  return {
    url,
    requests: state.requests,
    get interrupts() {
      return state.interrupts;
    },
    get peakConcurrentRequests() {
      return state.peakConcurrentRequests;
    },
    failNext: (count, status = 500, onlyPrompt) => state.failNext(count, status, onlyPrompt),
    setDelay: (ms) => state.setDelay(ms),
    busyIntervals: () => state.busyIntervals(),
    crash: () => {
      // Like a GPU box losing power: open connections drop, nothing answers any more.
      state.shutDown();
      app.server.closeAllConnections();
      app.server.close();
    },
    close: async () => {
      state.shutDown();
      await app.close().catch(() => undefined);
    },
  };
}

/** What the WebUI keeps in memory: the current model, the running job and its queue. */
class WebUiState {
  readonly requests: Txt2ImgRecord[] = [];
  interrupts = 0;
  peakConcurrentRequests = 0;
  #openRequests = 0;
  currentModel: string;
  #delayMs: number;
  #injectedFailures: Array<{ status: number; onlyPrompt: string | undefined }> = [];
  #running: RunningJob | null = null;
  #queueTail: Promise<void> = Promise.resolve();
  #closing = false;

  constructor(currentModel: string, delayMs: number) {
    this.currentModel = currentModel;
    this.#delayMs = checkDelay(delayMs);
  }

  failNext(count: number, status: number, onlyPrompt?: string): void {
    if (!Number.isInteger(count) || count < 0) {
      throw new RangeError(`failNext needs a count of zero or more, got ${count}`);
    }

    if (!Number.isInteger(status) || status < 400 || status > 599) {
      throw new RangeError(`failNext needs an HTTP error status (400-599), got ${status}`);
    }

    for (let i = 0; i < count; i++) {
      this.#injectedFailures.push({ status, onlyPrompt });
    }
  }

  setDelay(ms: number): void {
    this.#delayMs = checkDelay(ms);
  }

  busyIntervals(): Array<{ start: number; end: number }> {
    return this.requests.flatMap((record) =>
      record.finishedAt === null ? [] : [{ start: record.startedAt, end: record.finishedAt }],
    );
  }

  interrupt(): void {
    this.interrupts += 1;
    this.#running?.stop.abort();
  }

  shutDown(): void {
    this.#closing = true;
    this.#running?.stop.abort();
  }

  async generate(request: GenerationRequest): Promise<{ png: Buffer; info: string } | { failedWith: number }> {
    const failureIndex = this.#injectedFailures.findIndex(
      (failure) => failure.onlyPrompt === undefined || failure.onlyPrompt === request.prompt,
    );
    const injectedStatus = failureIndex === -1 ? undefined : this.#injectedFailures.splice(failureIndex, 1)[0]?.status;
    const receivedAt = Date.now();
    this.#openRequests += 1;
    this.peakConcurrentRequests = Math.max(this.peakConcurrentRequests, this.#openRequests);
    const release = await this.#takeTurn();
    try {
      const model = request.model ?? this.currentModel;
      if (request.keepModel) {
        this.currentModel = model;
      }

      const record: Txt2ImgRecord = {
        mode: request.mode,
        prompt: request.prompt,
        negativePrompt: request.negativePrompt,
        seed: request.seed === -1 ? randomInt(0, 2 ** 32) : request.seed,
        width: request.width,
        height: request.height,
        steps: request.steps,
        sampler: request.sampler,
        cfgScale: request.cfgScale,
        model,
        denoisingStrength: request.denoisingStrength,
        initImageBytes: request.initImageBytes,
        receivedAt,
        startedAt: Date.now(),
        finishedAt: null,
        interrupted: false,
        failedWith: null,
      };
      this.requests.push(record);

      if (injectedStatus !== undefined) {
        await sleep(FAILURE_DELAY_MS);
        record.failedWith = injectedStatus;
        record.finishedAt = Date.now();
        return { failedWith: injectedStatus };
      }

      const job: RunningJob = {
        record,
        durationMs: this.#closing ? 0 : this.#delayMs,
        preview: encodePreview(record),
        stop: new AbortController(),
      };
      this.#running = job;
      await sleep(job.durationMs, undefined, { signal: job.stop.signal }).catch(() => undefined);
      record.interrupted = job.stop.signal.aborted;

      const png = encodePng(record.width, record.height, record.seed, record.prompt);
      record.finishedAt = Date.now();
      return { png, info: JSON.stringify(describeResult(record)) };
    } finally {
      this.#running = null;
      this.#openRequests -= 1;
      release();
    }
  }

  /** The body of `GET /sdapi/v1/progress`, shaped like the WebUI's. */
  progress(skipCurrentImage: boolean): object {
    const job = this.#running;
    if (job === null) {
      return {
        progress: 0,
        eta_relative: 0,
        state: describeState(null, 0),
        current_image: null,
        textinfo: null,
      };
    }

    const elapsedMs = Date.now() - job.record.startedAt;
    const fraction = job.durationMs === 0 ? 1 : Math.min(elapsedMs / job.durationMs, 1);
    return {
      progress: fraction,
      eta_relative: Math.max(job.durationMs - elapsedMs, 0) / 1000,
      state: describeState(job, fraction),
      current_image: fraction > 0 && !skipCurrentImage ? job.preview.toString('base64') : null,
      textinfo: null,
    };
  }

  /** Waits for every earlier job to finish; resolves with the function that lets the next one in. */
  async #takeTurn(): Promise<() => void> {
    const previous = this.#queueTail;
    let release = (): void => undefined;
    this.#queueTail = new Promise<void>((resolve) => {
      release = resolve;
    });
    await previous;
    return release;
  }
}

function checkDelay(ms: number): number {
  if (!Number.isFinite(ms) || ms < 0) {
    throw new RangeError(`the stand-in delay must be zero or more milliseconds, got ${ms}`);
  }

  return ms;
}

/**
 * Validates a txt2img or img2img body the way the WebUI's request models do, with FastAPI's 422 issue format.
 * img2img also needs a decodable first init image and a denoising strength within 0..1 (default 0.75).
 */
function parseGeneration(
  mode: GenerationMode,
  body: unknown,
  defaultSampler: string,
): GenerationRequest | { issues: ValidationIssue[] } {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    return { issues: [{ loc: ['body'], msg: 'Input should be a valid dictionary', type: 'dict_type' }] };
  }

  const fields = body as Record<string, unknown>;
  const issues: ValidationIssue[] = [];
  const read = <T>(name: string, fallback: T | undefined, accepts: (value: unknown) => value is T, msg: string): T => {
    const value = fields[name] ?? fallback;
    if (accepts(value)) {
      return value;
    }

    issues.push({ loc: ['body', name], msg: value === undefined ? 'Field required' : msg, type: 'type_error' });
    return fallback as T;
  };

  const check = (name: string, valid: boolean, msg: string): void => {
    if (!valid) {
      issues.push({ loc: ['body', name], msg, type: 'value_error' });
    }
  };

  const isString = (value: unknown): value is string => typeof value === 'string';
  const isInteger = (value: unknown): value is number => Number.isInteger(value);
  const isNumber = (value: unknown): value is number => Number.isFinite(value);
  const isPixels = (value: number): boolean => value > 0 && value % 8 === 0;

  const prompt = read('prompt', undefined, isString, 'Input should be a valid string');
  const negativePrompt = read('negative_prompt', '', isString, 'Input should be a valid string');
  const sampler = read('sampler_name', defaultSampler, isString, 'Input should be a valid string');
  const seed = read('seed', -1, isInteger, 'Input should be a valid integer');
  const steps = read('steps', 20, isInteger, 'Input should be a valid integer');
  const cfgScale = read('cfg_scale', 7, isNumber, 'Input should be a valid number');
  const width = read('width', 512, isInteger, 'Input should be a valid integer');
  const height = read('height', 512, isInteger, 'Input should be a valid integer');
  check('steps', steps >= 1, 'Input should be greater than or equal to 1');
  check('width', isPixels(width), 'Value should be a positive multiple of 8');
  check('height', isPixels(height), 'Value should be a positive multiple of 8');

  const overrides = fields['override_settings'];
  const model =
    typeof overrides === 'object' && overrides !== null ? Reflect.get(overrides, 'sd_model_checkpoint') : undefined;
  check('override_settings', model === undefined || isString(model), 'sd_model_checkpoint should be a valid string');

  let denoisingStrength: number | null = null;
  let initImageBytes: number | null = null;
  if (mode === 'img2img') {
    const initImages = fields['init_images'];
    const first: unknown = Array.isArray(initImages) ? initImages[0] : undefined;
    initImageBytes = typeof first === 'string' ? decodedImageBytes(first) : null;
    if (!Array.isArray(initImages) || initImages.length === 0) {
      const missing = initImages === undefined || initImages === null;
      issues.push({
        loc: ['body', 'init_images'],
        msg: missing ? 'Field required' : 'List should have at least 1 item',
        type: missing ? 'missing' : 'too_short',
      });
    } else {
      check('init_images', initImageBytes !== null, 'The first init image is not a decodable PNG, JPEG or WebP');
    }

    denoisingStrength = read('denoising_strength', DEFAULT_DENOISING_STRENGTH, isNumber, 'Input should be a number');
    check('denoising_strength', denoisingStrength >= 0 && denoisingStrength <= 1, 'Input should be within 0..1');
  }

  if (issues.length > 0) {
    return { issues };
  }

  return {
    mode,
    prompt,
    negativePrompt,
    seed,
    sampler,
    steps,
    cfgScale,
    width,
    height,
    model: isString(model) ? model : undefined,
    keepModel: fields['override_settings_restore_afterwards'] === false,
    denoisingStrength,
    initImageBytes,
  };
}

/**
 * The byte size of a base64 (or data URL) init image, or `null` when it is not an image. PNGs are fully decoded.
 * Limitation: JPEG and WebP are only recognised by their signature, since decoding them would need another package.
 */
function decodedImageBytes(encoded: string): number | null {
  const comma = encoded.startsWith('data:') ? encoded.indexOf(',') : -1;
  const bytes = Buffer.from(encoded.slice(comma + 1), 'base64');
  if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) {
    return bytes.length;
  }

  if (bytes.length >= 12 && bytes.toString('latin1', 0, 4) === 'RIFF' && bytes.toString('latin1', 8, 12) === 'WEBP') {
    return bytes.length;
  }

  try {
    PNG.sync.read(bytes);
    return bytes.length;
  } catch {
    return null;
  }
}

/** The short name the WebUI reports for a checkpoint title: no hash, no file extension. */
function modelName(title: string): string {
  return title.replace(/ \[[0-9a-f]+\]$/, '').replace(/\.(safetensors|ckpt)$/, '');
}

/** Splits a WebUI checkpoint title such as `name.safetensors [hash]` into its parts. */
function describeModel(title: string): object {
  const match = /^(.*?)(?: \[([0-9a-f]+)\])?$/.exec(title);
  const filename = match?.[1] ?? title;
  const sha256 = createHash('sha256').update(filename).digest('hex');
  return {
    title,
    model_name: modelName(title),
    hash: match?.[2] ?? sha256.slice(0, 10),
    sha256,
    filename: `/models/Stable-diffusion/${filename}`,
    config: null,
  };
}

/** The k-diffusion style alias the WebUI lists for a sampler, e.g. `k_dpmpp_2m` for `DPM++ 2M`. */
function samplerAlias(name: string): string {
  return `k_${name
    .toLowerCase()
    .replace(/\+\+/g, 'pp')
    .replace(/[^a-z0-9]+/g, '_')}`;
}

function encodePreview(record: Txt2ImgRecord): Buffer {
  const scale = PREVIEW_SIZE / Math.max(record.width, record.height);
  const width = Math.max(1, Math.round(record.width * scale));
  const height = Math.max(1, Math.round(record.height * scale));
  return encodePng(width, height, record.seed, record.prompt);
}

function describeState(job: RunningJob | null, fraction: number): object {
  const steps = job?.record.steps ?? 0;
  return {
    skipped: false,
    interrupted: job?.stop.signal.aborted ?? false,
    job: job === null ? '' : `scripts_${job.record.mode}`,
    job_count: job === null ? 0 : 1,
    job_timestamp: job === null ? '0' : webUiTimestamp(job.record.startedAt),
    job_no: 0,
    sampling_step: Math.min(Math.floor(fraction * steps), steps),
    sampling_steps: steps,
  };
}

/** The parsed form of the `info` string the WebUI returns next to the images. */
function describeResult(record: Txt2ImgRecord): object {
  const model = modelName(record.model);
  const infotext = [
    record.prompt,
    `Negative prompt: ${record.negativePrompt}`,
    [
      `Steps: ${record.steps}`,
      `Sampler: ${record.sampler}`,
      `CFG scale: ${record.cfgScale}`,
      `Seed: ${record.seed}`,
      `Size: ${record.width}x${record.height}`,
      `Model: ${model}`,
      ...(record.denoisingStrength === null ? [] : [`Denoising strength: ${record.denoisingStrength}`]),
    ].join(', '),
  ].join('\n');

  return {
    seed: record.seed,
    all_seeds: [record.seed],
    prompt: record.prompt,
    negative_prompt: record.negativePrompt,
    width: record.width,
    height: record.height,
    sampler_name: record.sampler,
    steps: record.steps,
    cfg_scale: record.cfgScale,
    sd_model_name: model,
    ...(record.denoisingStrength === null ? {} : { denoising_strength: record.denoisingStrength }),
    infotexts: [infotext],
  };
}

/** `YYYYMMDDhhmmss` in local time, the WebUI's job timestamp format. */
function webUiTimestamp(epochMs: number): string {
  const date = new Date(epochMs);
  const parts = [date.getMonth() + 1, date.getDate(), date.getHours(), date.getMinutes(), date.getSeconds()];
  return `${date.getFullYear()}${parts.map((part) => String(part).padStart(2, '0')).join('')}`;
}

if (require.main === module) {
  runStandInFromCommandLine('image server stand-in', STANDALONE_PORT, (port) => startImageServer({ port }));
}
