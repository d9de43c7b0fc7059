import assert from 'node:assert/strict';
import { test } from 'node:test';

import { parsePublicKey, verifyInteractionSignature } from '../src/discord/signature';
import { InteractionSigner } from '../src/standins/interaction-signer';

const signer = InteractionSigner.generate();
const key = parsePublicKey(signer.publicKeyHex);
const body = JSON.stringify({ type: 1, id: '1' });
const nowMs = Date.now();

/** What the endpoint decides for `body` signed as Discord would, at `timestampSeconds`. */
function verdictForSigned(timestampSeconds?: number) {
  const headers = signer.sign(body, timestampSeconds);
  return verifyInteractionSignature(
    key,
    Buffer.from(body),
    headers['x-signature-ed25519'],
    headers['x-signature-timestamp'],
    nowMs,
  );
}

test('a body signed with the application key is valid', () => {
  assert.equal(verdictForSigned(), 'valid');
});

test('a changed body, a changed timestamp or another key is invalid', () => {
  const headers = signer.sign(body);
  const signature = headers['x-signature-ed25519'];
  const timestamp = headers['x-signature-timestamp'] as string;
  assert.equal(verifyInteractionSignature(key, Buffer.from(`${body} `), signature, timestamp, nowMs), 'invalid');
  assert.equal(
    verifyInteractionSignature(key, Buffer.from(body), signature, String(Number(timestamp) + 1), nowMs),
    'invalid',
  );

  const otherKey = parsePublicKey(InteractionSigner.generate().publicKeyHex);
  assert.equal(verifyInteractionSignature(otherKey, Buffer.from(body), signature, timestamp, nowMs), 'invalid');
});

test('garbage signatures are invalid rather than errors', () => {
  for (const signature of ['zz', 'a'.repeat(128), '0'.repeat(127), '']) {
    const verdict = verifyInteractionSignature(key, Buffer.from(body), signature, '1700000000', nowMs);
    assert.ok(verdict === 'invalid' || verdict === 'missing', `${signature}: ${verdict}`);
  }
});

test('missing headers are reported as missing', () => {
  assert.equal(verifyInteractionSignature(key, Buffer.from(body), undefined, '1', nowMs), 'missing');
  assert.equal(verifyInteractionSignature(key, Buffer.from(body), 'ab', undefined, nowMs), 'missing');
});

test('a correctly signed request older than five minutes is refused as a replay', () => {
  assert.equal(verdictForSigned(Math.floor(nowMs / 1_000) - 301), 'stale');
  assert.equal(verdictForSigned(Math.floor(nowMs / 1_000) - 299), 'valid');
});

test('a public key that is not 32 bytes of hex is rejected at start-up', () => {
  assert.throws(() => parsePublicKey('abc'), /DISCORD_PUBLIC_KEY/);
});
