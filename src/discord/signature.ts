import { createPublicKey, verify, type KeyObject } from 'node:crypto';

// DER prefix of an Ed25519 SubjectPublicKeyInfo; Discord hands out the bare 32-byte key as hex.
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

/** How far a signed timestamp may be from our clock before the request is treated as a replay. */
export const MAX_TIMESTAMP_SKEW_SECONDS = 300; // 5 min

/** Thrown when the configured Discord public key is not 32 bytes of hex. */
export class PublicKeyError extends Error {
  readonly code = 'DISCORD_PUBLIC_KEY_INVALID';

  constructor() {
    super('DISCORD_PUBLIC_KEY must be the 64-character hex public key from the Discord developer portal');
    this.name = 'PublicKeyError';
  }
}

/** Parses Discord's hex public key once, so each verification costs only the signature check. */
export function parsePublicKey(hex: string): KeyObject {
  if (!/^[0-9a-fA-F]{64}$/.test(hex)) {
    throw new PublicKeyError();
  }

  const der = Buffer.concat([ED25519_SPKI_PREFIX, Buffer.from(hex, 'hex')]);
  return createPublicKey({ key: der, format: 'der', type: 'spki' });
}

export type SignatureVerdict = 'valid' | 'missing' | 'invalid' | 'stale';

/**
 * Checks an interaction POST: Ed25519 over `timestamp + raw body`, and a timestamp within
 * {@link MAX_TIMESTAMP_SKEW_SECONDS} of `nowMs`. Any malformed input is 'invalid', never an exception.
 */
export function verifyInteractionSignature(
  publicKey: KeyObject,
  rawBody: Buffer,
  signatureHex: string | undefined,
  timestamp: string | undefined,
  nowMs = Date.now(),
): SignatureVerdict {
  if (signatureHex === undefined || timestamp === undefined || signatureHex === '' || timestamp === '') {
    return 'missing';
  }

  if (!/^[0-9a-fA-F]{128}$/.test(signatureHex)) {
    return 'invalid';
  }

  let valid: boolean;
  try {
    const message = Buffer.concat([Buffer.from(timestamp, 'utf8'), rawBody]);
    valid = verify(null, message, publicKey, Buffer.from(signatureHex, 'hex'));
  } catch {
    return 'invalid';
  }

  if (!valid) {
    return 'invalid';
  }

  // Checked after the signature so that a forged request learns nothing about our clock.
  const seconds = Number(timestamp);
  if (!Number.isFinite(seconds) || Math.abs(nowMs / 1_000 - seconds) > MAX_TIMESTAMP_SKEW_SECONDS) {
    return 'stale';
  }

  return 'valid';
}
