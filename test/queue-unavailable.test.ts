import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import type { TestWorkflowEnvironment } from '@temporalio/testing';

import { BotHarness, ephemeralText, sleep, startTemporal } from './helpers/bot-harness';

describe('when no worker takes the request in time', () => {
  let env: TestWorkflowEnvironment;
  let bot: BotHarness;

  before(async () => {
    env = await startTemporal();
    bot = await new BotHarness(env).start({ worker: false });
  });

  after(async () => {
    await bot?.stop();
    await env?.teardown();
  });

  test('the user is told within Discord’s 3 seconds, and the request is not run behind their back', async () => {
    const sent = await bot.generate('nobody home');
    assert.match(ephemeralText(sent) ?? '', /did not answer in time, so nothing was queued/);
    assert.ok(sent.elapsedMs < 2_900, `answered after ${sent.elapsedMs} ms`);

    // A worker turns up later: the workflow sees the endpoint gave up on the request and refuses it.
    await bot.startWorker();
    const next = await bot.generate('somebody home', { userId: '500000000000000801' });
    await bot.discord.waitFor(
      (call) => call.token === next.token && call.files.some((f) => f.filename.startsWith('sd-')),
      20_000,
    );
    await sleep(1_000);
    assert.equal(bot.images.requests.filter((r) => r.prompt === 'nobody home').length, 0);
    assert.equal(bot.discord.calls.filter((call) => call.token === sent.token).length, 0);
  });
});
