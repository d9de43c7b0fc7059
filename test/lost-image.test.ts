import assert from 'node:assert/strict';
import { readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import type { TestWorkflowEnvironment } from '@temporalio/testing';

import type { RecordedCall } from '../src/standins/discord-api';
import { BotHarness, sleep, startTemporal } from './helpers/bot-harness';

const finalImage = (token: string) => (call: RecordedCall) =>
  call.token === token && call.status === 200 && call.files.some((f) => f.filename.startsWith('sd-'));

describe('an image lost between generation and delivery', () => {
  let env: TestWorkflowEnvironment;
  let bot: BotHarness;

  before(async () => {
    env = await startTemporal();
    bot = await new BotHarness(env).start({ imageDelayMs: 1_500 });
  });

  after(async () => {
    await bot?.stop();
    await env?.teardown();
  });

  test('is generated again from the same seed and delivered once', async () => {
    const sent = await bot.generate('a fragile vase', { options: { seed: 4242 } });
    await bot.discord.waitFor(
      (call) => call.token === sent.token && call.status === 200 && JSON.stringify(call.body).includes('Generating'),
    );

    // Discord is down for the first delivery attempt; meanwhile the worker loses the PNG.
    bot.discord.failNext(4, 503, 'PATCH /webhooks');
    await bot.discord.waitFor(
      (call) =>
        call.token === sent.token && call.status === 503 && call.files.some((f) => f.filename.startsWith('sd-')),
    );
    for (const file of readdirSync(bot.imageDir)) {
      rmSync(join(bot.imageDir, file));
    }

    const image = await bot.discord.waitFor(finalImage(sent.token), 30_000);
    assert.match(JSON.stringify(image.body), /"name":"Seed","value":"4242"/);
    const runs = bot.images.requests.filter((r) => r.prompt === 'a fragile vase');
    assert.equal(runs.length, 2, 'generated again');
    assert.deepEqual(
      runs.map((r) => r.seed),
      [4242, 4242],
    );

    await sleep(1_000);
    assert.equal(bot.discord.calls.filter(finalImage(sent.token)).length, 1);
  });
});
