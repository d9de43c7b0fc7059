import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Finished images wait here between generation and delivery, so that a PNG never travels through
 * Temporal's history (payloads are capped at 2 MB and history is kept). Delivery runs on the worker
 * that generated the image (its own task queue), so a local folder is enough; a lost file means the
 * workflow generates the same image again from the same seed.
 */
export class ImageStore {
  readonly #dir: string;

  constructor(dir: string) {
    this.#dir = dir;
  }

  async put(key: string, png: Buffer): Promise<void> {
    await mkdir(this.#dir, { recursive: true });
    await writeFile(this.#path(key), png);
  }

  /** The stored PNG, or null when this worker does not hold it. */
  async get(key: string): Promise<Buffer | null> {
    try {
      return await readFile(this.#path(key));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
        return null;
      }

      throw error;
    }
  }

  async delete(key: string): Promise<void> {
    await rm(this.#path(key), { force: true });
  }

  #path(key: string): string {
    if (!/^[\w-]{1,100}$/.test(key)) {
      throw new Error(`invalid image key: ${key}`);
    }

    return join(this.#dir, `${key}.png`);
  }
}
