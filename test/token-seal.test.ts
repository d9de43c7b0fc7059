import assert from 'node:assert/strict';
import { test } from 'node:test';

import { TokenSealer } from '../src/token-seal';

const token = 'aW50ZXJhY3Rpb246MTIzNDU2Nzg5MDoxMjM0NTY3ODkw.fake-interaction-token';

test('a sealed token shows nothing of the token and opens back with the same key', () => {
  const sealer = TokenSealer.random();
  const sealed = sealer.seal(token);
  assert.ok(sealed.startsWith('sealed:v1:'));
  assert.ok(!sealed.includes(token.slice(0, 12)));
  assert.notEqual(sealer.seal(token), sealed, 'a fresh nonce each time');
  assert.equal(sealer.open(sealed), token);
});

test('another key cannot open it, and says why', () => {
  const sealed = TokenSealer.random().seal(token);
  assert.throws(() => TokenSealer.random().open(sealed), /TOKEN_SEAL_KEY differs/);
});

test('a tampered sealed token is refused', () => {
  const sealer = TokenSealer.random();
  const sealed = sealer.seal(token);
  const tampered = `${sealed.slice(0, -2)}${sealed.endsWith('A') ? 'B' : 'A'}${sealed.slice(-1)}`;
  assert.throws(() => sealer.open(tampered));
});

test('keys are 32 bytes, as hex or base64', () => {
  assert.doesNotThrow(() => TokenSealer.fromKey('ab'.repeat(32)));
  assert.doesNotThrow(() => TokenSealer.fromKey(Buffer.alloc(32, 7).toString('base64')));
  assert.throws(() => TokenSealer.fromKey('short'), /32 bytes/);
});
