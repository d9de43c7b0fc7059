import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';

const PREFIX = 'sealed:v1:';
const IV_BYTES = 12;
const TAG_BYTES = 16;

/** Thrown when TOKEN_SEAL_KEY is malformed, or a sealed token cannot be opened with it. */
export class TokenSealError extends Error {
  readonly code = 'TOKEN_SEAL_FAILED';

  constructor(message: string) {
    super(message);
    this.name = 'TokenSealError';
  }
}

/**
 * Seals interaction tokens (AES-256-GCM) before they enter Temporal, so that workflow histories,
 * which operators browse in the Temporal UI, never show a usable token. The endpoint seals, the
 * workers open; both need the same key. Everything else in the history stays readable.
 */
export class TokenSealer {
  readonly #key: Buffer;

  private constructor(key: Buffer) {
    this.#key = key;
  }

  /** From 32 bytes as 64 hex characters or base64; throws {@link TokenSealError} otherwise. */
  static fromKey(text: string): TokenSealer {
    const key = /^[0-9a-fA-F]{64}$/.test(text) ? Buffer.from(text, 'hex') : Buffer.from(text, 'base64');
    if (key.length !== 32) {
      throw new TokenSealError('TOKEN_SEAL_KEY must be 32 bytes, as 64 hex characters or base64');
    }

    return new TokenSealer(key);
  }

  /** A fresh random key, for processes that run the endpoint and the worker together. */
  static random(): TokenSealer {
    return new TokenSealer(randomBytes(32));
  }

  seal(token: string): string {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.#key, iv);
    const sealed = Buffer.concat([cipher.update(token, 'utf8'), cipher.final()]);
    return PREFIX + Buffer.concat([iv, cipher.getAuthTag(), sealed]).toString('base64url');
  }

  /** Whether a value is a sealed token (rather than a token left readable). */
  static isSealed(value: string): boolean {
    return value.startsWith(PREFIX);
  }

  /** Opens a sealed token; a value that was never sealed is returned as it is. */
  open(value: string): string {
    if (!TokenSealer.isSealed(value)) {
      return value;
    }

    try {
      const raw = Buffer.from(value.slice(PREFIX.length), 'base64url');
      const decipher = createDecipheriv('aes-256-gcm', this.#key, raw.subarray(0, IV_BYTES));
      decipher.setAuthTag(raw.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
      return Buffer.concat([decipher.update(raw.subarray(IV_BYTES + TAG_BYTES)), decipher.final()]).toString('utf8');
    } catch {
      throw new TokenSealError('cannot open a sealed interaction token: TOKEN_SEAL_KEY differs from the endpoint’s');
    }
  }
}
