import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import type { TestWorkflowEnvironment } from '@temporalio/testing';

import { channelWorkflowId, IMAGE_SERVERS_WORKFLOW_ID, queueQuery, serversQuery } from '../src/shared';
import type { RecordedCall } from '../src/standins/discord-api';
import { readPngSize } from '../src/standins/png';
import {
  BotHarness,
  CHANNEL_ID,
  ephemeralText,
  OTHER_CHANNEL_ID,
  sleep,
  startTemporal,
  type SentInteraction,
} from './helpers/bot-harness';

const MANAGE_MESSAGES = String(1n << 13n);

const imageEdit = (token: string) => (call: RecordedCall) =>
  call.token === token &&
  call.method === 'PATCH' &&
  call.files.some((f) => f.filename.startsWith('sd-')) &&
  call.status === 200;
const editSaying = (token: string, text: string | RegExp) => (call: RecordedCall) =>
  call.token === token &&
  call.status === 200 &&
  (typeof text === 'string' ? JSON.stringify(call.body).includes(text) : text.test(JSON.stringify(call.body)));

function user(n: number): string {
  return `5000000000000001${String(n).padStart(2, '0')}`;
}

describe('the channel queue', () => {
  let env: TestWorkflowEnvironment;
  let bot: BotHarness;

  before(async () => {
    env = await startTemporal();
    bot = await new BotHarness(env).start({ imageDelayMs: 800 });
  });

  after(async () => {
    await bot?.stop();
    await env?.teardown();
  });

  async function idle(channelId = CHANNEL_ID): Promise<void> {
    const handle = env.client.workflow.getHandle(channelWorkflowId(channelId));
    for (let i = 0; i < 100; i += 1) {
      const snapshot = await handle.query(queueQuery).catch(() => undefined);
      if (snapshot === undefined || (snapshot.running.length === 0 && snapshot.waiting.length === 0)) {
        return;
      }

      await sleep(100);
    }

    throw new Error('the queue did not drain');
  }

  test('a user gets at most two requests at once, and a failed job gives the slot back', async () => {
    await idle();
    bot.images.failNext(3, 500, 'slot one (fails)');
    const first = await bot.generate('slot one (fails)', { userId: user(1) });
    const second = await bot.generate('slot two', { userId: user(1) });
    const third = await bot.generate('slot three', { userId: user(1) });
    assert.deepEqual(first.body, { type: 5 });
    assert.deepEqual(second.body, { type: 5 });
    assert.match(ephemeralText(third) ?? '', /limit is 2/);

    await bot.discord.waitFor(editSaying(first.token, 'Generation failed'), 20_000);
    const again = await bot.generate('slot three, again', { userId: user(1) });
    assert.deepEqual(again.body, { type: 5 }, ephemeralText(again));

    await bot.discord.waitFor(imageEdit(again.token), 20_000);
    assert.equal(bot.images.requests.filter((r) => r.prompt === 'slot three').length, 0);
  });

  test('another user is not held back by the first user’s limit', async () => {
    await idle();
    await bot.generate('mine one', { userId: user(2) });
    await bot.generate('mine two', { userId: user(2) });
    const other = await bot.generate('theirs', { userId: user(3) });
    assert.deepEqual(other.body, { type: 5 });
    await bot.discord.waitFor(imageEdit(other.token), 20_000);
  });

  test('queued messages show their position, which moves up as the queue moves', async () => {
    await idle();
    // Long enough that a position change outlives the per-message throttle (3 s near the front).
    bot.images.setDelay(2_000);
    const a = await bot.generate('position a', { userId: user(4) });
    const b = await bot.generate('position b', { userId: user(5) });
    const c = await bot.generate('position c', { userId: user(6) });

    await bot.discord.waitFor(editSaying(b.token, 'Queued: position 1'), 10_000);
    await bot.discord.waitFor(editSaying(c.token, 'Queued: position 2'), 10_000);
    await bot.discord.waitFor(editSaying(c.token, 'Queued: position 1'), 20_000);
    // By then one generation was measured, so the wait is an estimate, not a constant.
    const moved = bot.discord.calls.find(editSaying(c.token, 'Queued: position 1'));
    assert.match(JSON.stringify(moved?.body), /about \d+ s to wait/);
    assert.match(JSON.stringify(moved?.body), /"label":"Cancel"/);

    for (const sent of [a, b, c]) {
      await bot.discord.waitFor(imageEdit(sent.token), 20_000);
    }

    bot.images.setDelay(800);

    // Once delivered, no late status overwrote the image.
    const last = bot.discord.calls.filter((call) => call.token === c.token && call.status === 200).at(-1);
    assert.equal(last?.files.length, 1);
    assert.equal(bot.discord.originalMessage(c.token)?.attachments.length, 1);
  });

  test('Cancel removes a queued request; nothing is generated for it', async () => {
    await idle();
    const running = await bot.generate('keeps running', { userId: user(7) });
    const queued = await bot.generate('cancelled while queued', { userId: user(8) });
    await bot.discord.waitFor(editSaying(queued.token, 'Queued: position 1'), 10_000);

    const click = await bot.click(queued.token, 'Cancel', user(8));
    assert.match(ephemeralText(click) ?? '', /Removed from the queue/);
    await bot.discord.waitFor(editSaying(queued.token, 'Cancelled by'), 10_000);

    await bot.discord.waitFor(imageEdit(running.token), 20_000);
    await sleep(500);
    assert.equal(bot.images.requests.filter((r) => r.prompt === 'cancelled while queued').length, 0);
    assert.equal(bot.discord.calls.filter(imageEdit(queued.token)).length, 0);
  });

  test('Cancel on a running request interrupts the image server and frees the queue', async () => {
    await idle();
    bot.images.setDelay(5_000);
    const slow = await bot.generate('slow and cancelled', { userId: user(9) });
    const next = await bot.generate('runs after the cancel', { userId: user(10) });
    await bot.discord.waitFor(editSaying(slow.token, 'Generating'), 10_000);
    await waitUntil(() => bot.images.requests.some((r) => r.prompt === 'slow and cancelled'));
    const interruptsBefore = bot.images.interrupts;

    const click = await bot.click(slow.token, 'Cancel', user(9));
    assert.match(ephemeralText(click) ?? '', /Stopping the generation/);
    await bot.discord.waitFor(editSaying(slow.token, 'Cancelled by'), 10_000);
    assert.equal(bot.images.interrupts, interruptsBefore + 1);
    bot.images.setDelay(800);

    await bot.discord.waitFor(imageEdit(next.token), 20_000);
    assert.equal(bot.discord.calls.filter(imageEdit(slow.token)).length, 0);
    const started = bot.images.requests.find((r) => r.prompt === 'runs after the cancel');
    const cancelled = bot.images.requests.find((r) => r.prompt === 'slow and cancelled');
    assert.ok(cancelled?.interrupted);
    assert.ok(
      started !== undefined && cancelled?.finishedAt !== null && started.startedAt >= (cancelled?.finishedAt ?? 0),
    );
  });

  test('only the requester or a member with Manage Messages may cancel', async () => {
    await idle();
    bot.images.setDelay(3_000);
    const target = await bot.generate('not yours to cancel', { userId: user(11) });
    await bot.discord.waitFor(editSaying(target.token, 'Generating'), 10_000);

    const stranger = await bot.click(target.token, 'Cancel', user(12));
    assert.match(ephemeralText(stranger) ?? '', /Only the person who asked for this image, or a moderator/);

    const moderator = await bot.click(target.token, 'Cancel', user(13), MANAGE_MESSAGES);
    assert.match(ephemeralText(moderator) ?? '', /Stopping the generation/);
    const cancelled = await bot.discord.waitFor(editSaying(target.token, 'Cancelled by'), 10_000);
    assert.match(JSON.stringify(cancelled.body), new RegExp(user(13)));
    bot.images.setDelay(800);
  });

  test('Re-roll queues the same settings with a new seed, as a new message', async () => {
    await idle();
    const original = await bot.generate('a glass teapot [dust]', {
      userId: user(14),
      options: { width: 576, height: 448, steps: 9, seed: 777, sampler: 'DDIM', cfg_scale: 5.5 },
    });
    await bot.discord.waitFor(imageEdit(original.token), 20_000);

    const reroll = await bot.click(original.token, 'Re-roll', user(15));
    assert.deepEqual(reroll.body, { type: 5 });
    const edit = await bot.discord.waitFor(imageEdit(reroll.token), 20_000);
    assert.deepEqual(readPngSize(edit.files[0]!.data), { width: 576, height: 448 });

    const drawn = bot.images.requests.filter((r) => r.prompt === 'a glass teapot');
    assert.equal(drawn.length, 2);
    const [first, second] = drawn;
    assert.equal(second?.negativePrompt, 'dust');
    assert.equal(second?.steps, 9);
    assert.equal(second?.sampler, 'DDIM');
    assert.equal(second?.cfgScale, 5.5);
    assert.equal(first?.seed, 777);
    assert.notEqual(second?.seed, 777);
    // The re-roll belongs to whoever pressed the button, and counts against their limit.
    assert.match(JSON.stringify(edit.body), new RegExp(`<@${user(15)}>`));
  });

  test('/queue shows what runs, how many wait and the caller’s own positions', async () => {
    await idle();
    bot.images.setDelay(2_000);
    await bot.generate('queue view running', { userId: user(16) });
    await bot.generate('queue view waiting 1', { userId: user(17) });
    await bot.generate('queue view waiting 2', { userId: user(18) });
    await sleep(300);

    const view = await bot.command('queue', user(18));
    const text = ephemeralText(view) ?? '';
    assert.match(text, /Generating: “queue view running”/);
    assert.match(text, /2 requests waiting/);
    assert.match(text, /Your position: 2/);
    assert.ok(view.elapsedMs < 1_000, `answered in ${view.elapsedMs} ms`);
    bot.images.setDelay(800);
  });

  test('two channels sharing a capacity-1 image server never use it at the same time', async () => {
    await idle();
    await idle(OTHER_CHANNEL_ID);
    const sent: SentInteraction[] = [];
    for (let i = 0; i < 3; i += 1) {
      sent.push(await bot.generate(`shared ${i} here`, { userId: user(20 + i) }));
      sent.push(await bot.generate(`shared ${i} there`, { userId: user(30 + i), channelId: OTHER_CHANNEL_ID }));
    }

    for (const request of sent) {
      await bot.discord.waitFor(imageEdit(request.token), 30_000);
    }

    const shared = bot.images.requests.filter((r) => r.prompt.startsWith('shared '));
    assert.equal(shared.length, 6);
    // The server was never even asked for a second image while one was in progress.
    const spans = shared.map((r) => [r.receivedAt, r.finishedAt ?? Number.POSITIVE_INFINITY] as const);
    spans.sort((x, y) => x[0] - y[0]);
    for (let i = 1; i < spans.length; i += 1) {
      assert.ok(spans[i]![0] >= spans[i - 1]![1], `request ${i} arrived before request ${i - 1} finished`);
    }

    const { servers } = await env.client.workflow.getHandle(IMAGE_SERVERS_WORKFLOW_ID).query(serversQuery);
    assert.deepEqual(
      servers.map((s) => ({ name: s.name, capacity: s.capacity, busy: s.busy, healthy: s.healthy })),
      [{ name: 'local', capacity: 1, busy: 0, healthy: true }],
    );
  });

  test('an operator finds the channel workflow and a user’s requests by search attributes', async () => {
    await idle();
    bot.images.setDelay(2_000);
    const pending = await bot.generate('searchable', { userId: user(40) });
    await bot.discord.waitFor(editSaying(pending.token, 'Generating'), 10_000);

    const find = async (query: string) => {
      const ids: string[] = [];
      for await (const workflow of env.client.workflow.list({ query })) {
        ids.push(workflow.workflowId);
      }

      return ids;
    };
    await waitUntil(async () => (await find(`SdUserIds = '${user(40)}'`)).length > 0);
    assert.deepEqual(await find(`SdUserIds = '${user(40)}'`), [channelWorkflowId(CHANNEL_ID)]);
    assert.deepEqual(await find(`SdChannelId = '${OTHER_CHANNEL_ID}'`), [channelWorkflowId(OTHER_CHANNEL_ID)]);
    bot.images.setDelay(800);
    await bot.discord.waitFor(imageEdit(pending.token), 20_000);
  });
});

async function waitUntil(predicate: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) {
      throw new Error('condition not met in time');
    }

    await sleep(50);
  }
}
