import type { GeneratedImage, GenerationProgress, Txt2ImgParams } from './a1111';

export type { GeneratedImage, GenerationProgress, Txt2ImgParams };
export { ImageServerError } from './a1111';

/** What to draw: txt2img, or img2img when an init image is given. */
export interface GenerationRequest extends Txt2ImgParams {
  /** img2img: the starting image (PNG, JPEG or WebP bytes) and how far to move away from it, 0..1. */
  initImage?: { data: Buffer; denoisingStrength: number };
}

export interface GenerateOptions {
  /** Aborting stops waiting for the result; call {@link ImageBackend.interrupt} to stop the server too. */
  signal?: AbortSignal;
  /**
   * Called with the progress of this generation only (never another client's), at most every
   * `progressIntervalMs`, and not after `generate` settles.
   */
  onProgress?: (progress: GenerationProgress) => void;
  /** How often to look at progress, in ms. Default 1000. */
  progressIntervalMs?: number;
}

/**
 * One image server, whatever it speaks (AUTOMATIC1111 WebUI API, ComfyUI). Every method throws
 * `ImageServerError`, whose `retryable` says whether another attempt may succeed.
 */
export interface ImageBackend {
  readonly kind: 'a1111' | 'comfyui';
  generate(request: GenerationRequest, options?: GenerateOptions): Promise<GeneratedImage>;
  /** Stops the server's running generation. */
  interrupt(): Promise<void>;
  /** Checkpoint names a request's `model` may name. */
  models(): Promise<string[]>;
  samplers(): Promise<string[]>;
  /** A cheap request that succeeds when the server is up, for health probes. */
  ping(): Promise<void>;
}
