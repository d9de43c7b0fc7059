import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import type { TestWorkflowEnvironment } from '@temporalio/testing';

import { channelWorkflowId, queueQuery } from '../src/shared';
import { readPngSize } from '../src/standins/png';
import { BotHarness, BOT_TOKEN, CHANNEL_ID, sleep, startTemporal } from './helpers/bot-harness';

// Interaction tokens live 15 minutes on Discord; here both the stand-in and the bot are told 6 s.
const TOKEN_LIFETIME_MS = 6_000;

describe('a request that outlives its interaction token', () => {
  let env: TestWorkflowEnvironment;

  before(async () => {
    env = await startTemporal();
  });

  after(async () => {
    await env?.teardown();
  });

  test('is delivered as a new channel message through the bot token, mentioning the requester', async () => {
    const bot = await new BotHarness(env).start({
      imageDelayMs: 500,
      tokenLifetimeMs: TOKEN_LIFETIME_MS,
      queue: { interactionTokenLifetimeMs: TOKEN_LIFETIME_MS },
    });
    try {
      const first = await bot.generate('first in line', { userId: '500000000000000201' });
      const late = await bot.generate('waits past its token', { userId: '500000000000000202' });
      // The first is quick and in time; the second, generated after it, takes longer than the token lives.
      while (!bot.images.requests.some((r) => r.prompt === 'first in line')) {
        await sleep(20);
      }

      bot.images.setDelay(8_000);
      await bot.discord.waitFor(
        (call) => call.token === first.token && call.files.some((f) => f.filename.startsWith('sd-')),
        15_000,
      );

      const posted = await bot.discord.waitFor(
        (call) => call.route === 'POST /channels/:channel/messages' && call.status === 200,
        20_000,
      );
      assert.equal(posted.authorization, `Bot ${BOT_TOKEN}`);
      assert.match(JSON.stringify(posted.body), /<@500000000000000202> your image is ready/);
      assert.deepEqual((posted.body as { allowed_mentions: unknown }).allowed_mentions, {
        users: ['500000000000000202'],
      });
      assert.deepEqual(readPngSize(posted.files[0]!.data), { width: 512, height: 512 });

      const inChannel = bot.discord.channelMessages(CHANNEL_ID);
      assert.equal(inChannel.length, 1);
      assert.equal(inChannel[0]?.attachments.length, 1);
      // Nothing was sent with the dead token after it expired, and nothing twice.
      await sleep(500);
      assert.equal(bot.discord.calls.filter((call) => call.route.startsWith('POST /channels')).length, 1);
      const lateEdits = bot.discord.calls.filter((call) => call.token === late.token && call.status === 401);
      assert.equal(lateEdits.length, 0);
    } finally {
      await bot.stop();
      await endChannelWorkflow(env);
    }
  });

  test('while queued, the message says the image will be posted in the channel if it is late', async () => {
    const bot = await new BotHarness(env).start({
      imageDelayMs: 1_500,
      tokenLifetimeMs: 60_000,
      queue: { interactionTokenLifetimeMs: 6_000 },
    });
    try {
      // One measured generation first, so the queue can estimate waits.
      const warmup = await bot.generate('warm up', { userId: '500000000000000211' });
      await bot.discord.waitFor(
        (call) => call.token === warmup.token && call.files.some((f) => f.filename.startsWith('sd-')),
        15_000,
      );

      await bot.generate('runs now', { userId: '500000000000000212' });
      await bot.generate('second', { userId: '500000000000000213' });
      await bot.generate('third', { userId: '500000000000000214' });
      const fourth = await bot.generate('fourth', { userId: '500000000000000215' });
      const notice = await bot.discord.waitFor(
        (call) => call.token === fourth.token && JSON.stringify(call.body).includes('Queued'),
        10_000,
      );
      assert.match(JSON.stringify(notice.body), /will be posted in this channel and you will be mentioned/);
      // It is indeed late: delivered in the channel, as promised.
      await bot.discord.waitFor(
        (call) => call.route.startsWith('POST /channels') && JSON.stringify(call.body).includes('500000000000000215'),
        20_000,
      );
    } finally {
      await bot.stop();
      await endChannelWorkflow(env);
    }
  });

  test('without a bot token it is recorded as undeliverable, and the queue goes on', async () => {
    const bot = await new BotHarness(env).start({
      imageDelayMs: 500,
      tokenLifetimeMs: TOKEN_LIFETIME_MS,
      queue: { interactionTokenLifetimeMs: TOKEN_LIFETIME_MS },
      botToken: undefined,
    });
    try {
      await bot.generate('first again', { userId: '500000000000000221' });
      const late = await bot.generate('nowhere to go', { userId: '500000000000000222' });
      while (!bot.images.requests.some((r) => r.prompt === 'first again')) {
        await sleep(20);
      }

      bot.images.setDelay(8_000);
      while (!bot.images.requests.some((r) => r.prompt === 'nowhere to go')) {
        await sleep(20);
      }

      bot.images.setDelay(500);
      const handle = env.client.workflow.getHandle(channelWorkflowId(CHANNEL_ID));
      const deadline = Date.now() + 20_000;
      let snapshot = await handle.query(queueQuery);
      while (!snapshot.undeliverable.some((u) => u.requestId === late.id) && Date.now() < deadline) {
        await sleep(200);
        snapshot = await handle.query(queueQuery);
      }

      const record = snapshot.undeliverable.find((u) => u.requestId === late.id);
      assert.equal(record?.userId, '500000000000000222');
      assert.match(record?.reason ?? '', /bot token/);
      assert.equal(bot.discord.calls.filter((call) => call.route.startsWith('POST /channels')).length, 0);

      const next = await bot.generate('after the undeliverable one', { userId: '500000000000000223' });
      await bot.discord.waitFor(
        (call) => call.token === next.token && call.files.some((f) => f.filename.startsWith('sd-')),
        15_000,
      );
    } finally {
      await bot.stop();
      await endChannelWorkflow(env);
    }
  });
});

/** Each test starts the channel afresh, with its own queue settings. */
async function endChannelWorkflow(env: TestWorkflowEnvironment): Promise<void> {
  await env.client.workflow
    .getHandle(channelWorkflowId(CHANNEL_ID))
    .terminate('next test')
    .catch(() => undefined);
}
