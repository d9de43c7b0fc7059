import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import type { TestWorkflowEnvironment } from '@temporalio/testing';

import type { RecordedCall } from '../src/standins/discord-api';
import { BotHarness, ephemeralText, startTemporal } from './helpers/bot-harness';

const finalImage = (token: string) => (call: RecordedCall) =>
  call.token === token && call.status === 200 && call.files.some((f) => f.filename.startsWith('sd-'));

describe('a config change while a channel workflow is running', () => {
  let env: TestWorkflowEnvironment;

  before(async () => {
    env = await startTemporal();
  });

  after(async () => {
    await env?.teardown();
  });

  test('reaches the running workflow with the next request', async () => {
    const strict = await new BotHarness(env).start({ imageDelayMs: 2_000, queue: { maxConcurrentPerUser: 1 } });
    try {
      const first = await strict.generate('one at a time', { userId: '500000000000000901' });
      assert.deepEqual(first.body, { type: 5 });
      const refused = await strict.generate('a second one', { userId: '500000000000000901' });
      assert.match(ephemeralText(refused) ?? '', /the limit is 1/);
      await strict.discord.waitFor(finalImage(first.token), 20_000);
    } finally {
      await strict.stop();
    }

    // The operator raises the limit and restarts the bot; the channel's workflow keeps running meanwhile.
    const relaxed = await new BotHarness(env).start({ imageDelayMs: 2_000, queue: { maxConcurrentPerUser: 3 } });
    try {
      for (let i = 0; i < 3; i += 1) {
        const sent = await relaxed.generate(`relaxed ${i}`, { userId: '500000000000000901' });
        assert.deepEqual(sent.body, { type: 5 }, ephemeralText(sent));
      }

      const fourth = await relaxed.generate('one too many again', { userId: '500000000000000901' });
      assert.match(ephemeralText(fourth) ?? '', /the limit is 3/);
    } finally {
      await relaxed.stop();
    }
  });
});
