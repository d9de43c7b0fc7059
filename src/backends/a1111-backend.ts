import { A1111Client, ImageServerError } from './a1111';
import type {
  GenerateOptions,
  GeneratedImage,
  GenerationProgress,
  GenerationRequest,
  ImageBackend,
} from './image-backend';

/** Progress polls that fail in a row before the server is taken to have stopped answering. */
const MISSED_POLLS_TO_GIVE_UP = 3;
const POLL_TIMEOUT_MS = 3_000;

/**
 * An AUTOMATIC1111-compatible WebUI (A1111, Forge, SD.Next) as an {@link ImageBackend}. Progress is
 * polled from `/sdapi/v1/progress` while our request is open; a server that stops answering those
 * polls fails the generation (retryable) instead of leaving it hanging until the request timeout.
 *
 * Limitation: the WebUI's progress is global. While the bot holds the server's only slot the running
 * job is ours, but someone using the WebUI directly at the same time would show in our progress bar.
 */
export class A1111Backend implements ImageBackend {
  readonly kind = 'a1111';
  readonly #client: A1111Client;

  constructor(baseUrl: string) {
    this.#client = new A1111Client(baseUrl);
  }

  async generate(request: GenerationRequest, options: GenerateOptions = {}): Promise<GeneratedImage> {
    const stop = new AbortController();
    const signal = options.signal === undefined ? stop.signal : AbortSignal.any([options.signal, stop.signal]);
    const { initImage, ...params } = request;
    const generation =
      initImage === undefined
        ? this.#client.txt2img(params, { signal })
        : this.#client.img2img(
            { ...params, initImage: initImage.data, denoisingStrength: initImage.denoisingStrength },
            { signal },
          );

    let settled = false;
    let missed = 0;
    let stalled: ImageServerError | undefined;
    const poll = async () => {
      try {
        const progress = await withTimeout(this.#client.progress(), POLL_TIMEOUT_MS);
        missed = 0;
        if (!settled && progress.active) {
          options.onProgress?.(progress);
        }
      } catch (error) {
        missed += 1;
        if (missed >= MISSED_POLLS_TO_GIVE_UP && !settled) {
          stalled = new ImageServerError(
            'IMAGE_SERVER_UNREACHABLE',
            'image server stopped answering during generation',
            {
              url: 'sdapi/v1/progress',
              cause: error,
            },
          );
          stop.abort(stalled);
        }
      }
    };
    const timer = setInterval(() => void poll(), options.progressIntervalMs ?? 1_000);

    try {
      return await generation;
    } catch (error) {
      throw stalled ?? error;
    } finally {
      settled = true;
      clearInterval(timer);
    }
  }

  interrupt(): Promise<void> {
    return this.#client.interrupt();
  }

  models(): Promise<string[]> {
    return this.#client.models();
  }

  samplers(): Promise<string[]> {
    return this.#client.samplers();
  }

  async ping(): Promise<void> {
    await withTimeout(this.#client.progress(), POLL_TIMEOUT_MS);
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export type { GenerationProgress };
