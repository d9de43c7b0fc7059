import assert from 'node:assert/strict';
import { test } from 'node:test';
import { resolve } from 'node:path';

import { ConfigError, loadConfig, parseConfig, resolveChannel } from '../src/config';

const valid = {
  defaults: { width: 512, height: 512, steps: 20, cfgScale: 7, sampler: 'Euler a', negativePrompt: '' },
  limits: { maxWidth: 1024, maxHeight: 1024, maxSteps: 50 },
  backends: { gpu: { type: 'a1111', url: 'http://127.0.0.1:7860' } },
  channels: { '123': { backend: 'gpu' } },
};

test('the committed config.json is valid and enables channels on the local stand-in', () => {
  const config = loadConfig(resolve(__dirname, '..', 'config.json'));
  assert.ok(Object.keys(config.channels).length > 0);
  assert.equal(config.backends['local']?.url, 'http://127.0.0.1:7860');
  assert.equal(config.queue.maxConcurrentPerUser, 2);
});

test('backend capacity defaults to 1 and queue settings to their documented values', () => {
  const config = parseConfig(valid);
  assert.equal(config.backends['gpu']?.capacity, 1);
  assert.equal(config.queue.interactionTokenLifetimeMs, 900_000);
  assert.equal(config.queue.idleTimeoutMs, 86_400_000);
});

test('an error names every bad field', () => {
  const broken = {
    ...valid,
    backends: { gpu: { type: 'a1111', url: 'not a url', capacity: 0 } },
    channels: { '123': { backend: 'missing' }, general: { backend: 'gpu' } },
  };
  assert.throws(
    () => parseConfig(broken, 'config.json'),
    (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.match(error.message, /backends\.gpu\.url/);
      assert.match(error.message, /backends\.gpu\.capacity/);
      assert.match(error.message, /channels\.123\.backend: unknown backend "missing"/);
      assert.match(error.message, /channels\.general/);
      return true;
    },
  );
});

test('a channel not in the config is not enabled, unless a "*" entry enables every channel', () => {
  assert.equal(resolveChannel(parseConfig(valid), '999'), undefined);
  const open = parseConfig({ ...valid, channels: { '*': { backend: 'gpu' } } });
  assert.deepEqual(resolveChannel(open, '999')?.pool, [{ name: 'gpu', capacity: 1 }]);
});

test('a channel whose defaults break its own limits is refused at start-up, naming the channel', () => {
  const broken = {
    ...valid,
    channels: { '123': { backend: 'gpu', limits: { maxSteps: 10 } } },
  };
  assert.throws(() => parseConfig(broken, 'config.json'), /channels\.123: default steps 20 is above maxSteps 10/);
});
