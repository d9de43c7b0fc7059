import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import type { TestWorkflowEnvironment } from '@temporalio/testing';

import { channelWorkflowId } from '../src/shared';
import type { RecordedCall } from '../src/standins/discord-api';
import { BotHarness, CHANNEL_ID, sleep, startTemporal, type SentInteraction } from './helpers/bot-harness';

const imageEdit = (token: string) => (call: RecordedCall) =>
  call.token === token && call.files.some((f) => f.filename.startsWith('sd-')) && call.status === 200;

describe('a channel workflow that continues as new', () => {
  let env: TestWorkflowEnvironment;
  let bot: BotHarness;

  before(async () => {
    // The server suggests continuing as new after 60 history events instead of thousands.
    env = await startTemporal(['--dynamic-config-value', 'limit.historyCount.suggestContinueAsNew=60']);
    bot = await new BotHarness(env).start({ imageDelayMs: 500 });
  });

  after(async () => {
    await bot?.stop();
    await env?.teardown();
  });

  test('hands over queued requests, loses none and runs none twice', async () => {
    const sent: SentInteraction[] = [];
    for (let i = 0; i < 8; i += 1) {
      sent.push(await bot.generate(`carried over ${i}`, { userId: `5000000000000003${String(i).padStart(2, '0')}` }));
    }

    for (const request of sent) {
      await bot.discord.waitFor(imageEdit(request.token), 40_000);
    }

    // A late repeat of an early interaction, after the hand-over, still queues nothing.
    const repeat = await bot.generate('carried over 0', { interaction: { id: sent[0]!.id, token: sent[0]!.token } });
    assert.deepEqual(repeat.body, { type: 5 });
    await sleep(1_500);

    for (const [i, request] of sent.entries()) {
      assert.equal(bot.discord.calls.filter(imageEdit(request.token)).length, 1, `request ${i} delivered once`);
      assert.equal(
        bot.images.requests.filter((r) => r.prompt === `carried over ${i}`).length,
        1,
        `request ${i} ran once`,
      );
    }

    const runs: string[] = [];
    for await (const run of env.client.workflow.list({ query: `WorkflowId = '${channelWorkflowId(CHANNEL_ID)}'` })) {
      runs.push(run.status.name);
    }

    assert.ok(runs.filter((status) => status === 'CONTINUED_AS_NEW').length >= 1, `runs: ${runs.join(', ')}`);
    assert.equal(runs.filter((status) => status === 'RUNNING').length, 1);
  });
});
