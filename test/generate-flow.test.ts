import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import type { TestWorkflowEnvironment } from '@temporalio/testing';

import { channelWorkflowId, queueQuery } from '../src/shared';
import type { RecordedCall } from '../src/standins/discord-api';
import { readPngSize } from '../src/standins/png';
import { fakeSnowflake, postSignedInteraction, slashCommandInteraction } from '../src/standins/interaction-signer';
import { APPLICATION_ID, BotHarness, CHANNEL_ID, startTemporal } from './helpers/bot-harness';

interface EmbedField {
  name: string;
  value: string;
}

interface Embed {
  title?: string;
  description?: string;
  fields?: EmbedField[];
  image?: { url: string };
}

function field(embed: Embed | undefined, name: string): string | undefined {
  return embed?.fields?.find((f) => f.name === name)?.value;
}

const isImageEdit = (token: string) => (call: RecordedCall) =>
  call.route.startsWith('PATCH') &&
  call.token === token &&
  call.files.some((f) => f.filename.startsWith('sd-')) &&
  call.status === 200;

describe('a signed /generate through the real endpoint and Temporal', () => {
  let env: TestWorkflowEnvironment;
  let bot: BotHarness;

  before(async () => {
    env = await startTemporal();
    bot = await new BotHarness(env).start();
  });

  after(async () => {
    await bot?.stop();
    await env?.teardown();
  });

  test('ends as an edit of @original with a PNG of the requested size and an embed with the seed', async () => {
    const sent = await bot.generate('a lighthouse at dusk [blurry, text]', {
      options: { width: 640, height: 384, steps: 12, seed: 1234 },
    });
    assert.equal(sent.status, 200);
    assert.deepEqual(sent.body, { type: 5 });

    const edit = await bot.discord.waitFor(isImageEdit(sent.token), 20_000);
    const file = edit.files[0];
    assert.ok(file);
    assert.equal(file.contentType, 'image/png');
    assert.deepEqual(readPngSize(file.data), { width: 640, height: 384 });

    const body = edit.body as { embeds: Embed[]; attachments: Array<{ id: number | string; filename: string }> };
    const embed = body.embeds[0];
    assert.equal(field(embed, 'Seed'), '1234');
    assert.equal(field(embed, 'Size'), '640×384');
    assert.equal(field(embed, 'Steps'), '12');
    assert.equal(field(embed, 'Negative prompt'), 'blurry, text');
    assert.equal(embed?.description, 'a lighthouse at dusk');
    assert.equal(embed?.image?.url, `attachment://${file.filename}`);

    const drawn = bot.images.requests.find((r) => r.seed === 1234);
    assert.equal(drawn?.prompt, 'a lighthouse at dusk');
    assert.equal(drawn?.negativePrompt, 'blurry, text');
    assert.equal(bot.discord.originalMessage(sent.token)?.attachments.length, 1);

    // Operators browse histories in the Temporal UI: the interaction token is sealed there.
    const history = await env.client.workflow.getHandle(channelWorkflowId(CHANNEL_ID)).fetchHistory();
    const payloads = JSON.stringify(history, (_key, value: unknown) =>
      value instanceof Uint8Array ? Buffer.from(value).toString('utf8') : value,
    );
    assert.ok(payloads.includes(sent.id), 'the history holds the request');
    assert.ok(!payloads.includes(sent.token), 'the history holds the token in the clear');
  });

  test('a random seed is picked once and reported back', async () => {
    const sent = await bot.generate('a red fox');
    const edit = await bot.discord.waitFor(isImageEdit(sent.token), 20_000);
    const seed = field((edit.body as { embeds: Embed[] }).embeds[0], 'Seed');
    assert.match(seed ?? '', /^\d+$/);
    assert.ok(bot.images.requests.some((r) => String(r.seed) === seed && r.prompt === 'a red fox'));
  });

  test('the same interaction posted twice queues one job and sends one image', async () => {
    const interaction = bot.discord.issueInteraction({ channelId: CHANNEL_ID });
    const first = await bot.generate('twin moons over a desert', { interaction });
    const second = await bot.generate('twin moons over a desert', { interaction });
    assert.deepEqual(first.body, { type: 5 });
    assert.deepEqual(second.body, { type: 5 });

    await bot.discord.waitFor(isImageEdit(interaction.token), 20_000);
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    assert.equal(bot.images.requests.filter((r) => r.prompt === 'twin moons over a desert').length, 1);
    assert.equal(bot.discord.calls.filter(isImageEdit(interaction.token)).length, 1);
  });

  test('a missing or bad signature is refused with 401 and starts no workflow', async () => {
    const channelId = '100000000000000002';
    const interaction = slashCommandInteraction({
      id: fakeSnowflake(),
      token: 'unused',
      applicationId: APPLICATION_ID,
      channelId,
      user: { id: '500000000000000009', username: 'mallory' },
      options: { prompt: 'forged' },
    });
    const body = JSON.stringify(interaction);

    const unsigned = await fetch(bot.endpointUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body,
    });
    assert.equal(unsigned.status, 401);

    const headers = bot.signer.sign(body);
    const tampered = await fetch(bot.endpointUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: body.replace('forged', 'forget'),
    });
    assert.equal(tampered.status, 401);

    const replayed = await postSignedInteraction(
      bot.endpointUrl,
      bot.signer,
      interaction,
      bot.signer.sign(body, Math.floor(Date.now() / 1_000) - 600),
    );
    assert.equal(replayed.status, 401);

    await assert.rejects(env.client.workflow.getHandle(channelWorkflowId(channelId)).describe(), /not found/i);
    assert.equal(bot.images.requests.filter((r) => r.prompt === 'forged').length, 0);
  });

  test('PING is answered with PONG', async () => {
    const ping = { id: fakeSnowflake(), application_id: APPLICATION_ID, type: 1, token: 'x', version: 1 };
    const answer = await postSignedInteraction(bot.endpointUrl, bot.signer, ping);
    assert.equal(answer.status, 200);
    assert.deepEqual(answer.body, { type: 1 });
  });

  test('invalid options get an ephemeral explanation and queue nothing', async () => {
    const sent = await bot.generate('too big', { options: { width: 4096, steps: 80 } });
    assert.equal(sent.status, 200);
    const body = sent.body as { type: number; data: { content: string; flags: number } };
    assert.equal(body.type, 4);
    assert.equal(body.data.flags, 64);
    assert.match(body.data.content, /width/);
    assert.match(body.data.content, /steps/);

    const odd = await bot.generate('odd size', { options: { width: 500 } });
    assert.match((odd.body as { data: { content: string } }).data.content, /multiple of 8/);

    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.equal(bot.images.requests.filter((r) => r.prompt === 'too big' || r.prompt === 'odd size').length, 0);
    const snapshot = await env.client.workflow.getHandle(channelWorkflowId(CHANNEL_ID)).query(queueQuery);
    const queued = [...snapshot.waiting, ...snapshot.running].map((job) => job.requestId);
    assert.ok(!queued.includes(sent.id) && !queued.includes(odd.id));
    assert.equal(bot.discord.calls.filter((c) => c.token === sent.token).length, 0);
  });

  test('a channel that config.json does not enable is told so, ephemerally', async () => {
    const sent = await bot.generate('anything', { channelId: '999999999999999999' });
    const body = sent.body as { type: number; data: { content: string; flags: number } };
    assert.equal(body.type, 4);
    assert.equal(body.data.flags, 64);
    assert.match(body.data.content, /not enabled in this channel/);
  });

  test('a failing image server is retried, then the failure is reported, and the next request still runs', async () => {
    bot.images.failNext(3, 500, 'doomed castle');
    const failing = await bot.generate('doomed castle');
    const next = await bot.generate('hopeful castle');

    const failure = await bot.discord.waitFor(
      (call) => call.token === failing.token && JSON.stringify(call.body).includes('Generation failed'),
      30_000,
    );
    assert.match(JSON.stringify(failure.body), /3 attempts/);
    assert.equal(bot.images.requests.filter((r) => r.failedWith === 500).length >= 3, true);

    const image = await bot.discord.waitFor(isImageEdit(next.token), 30_000);
    assert.deepEqual(readPngSize(image.files[0]!.data), { width: 512, height: 512 });
  });

  test('health and readiness answer', async () => {
    const base = bot.endpointUrl.replace('/interactions', '');
    assert.equal((await fetch(`${base}/healthz`)).status, 200);
    assert.equal((await fetch(`${base}/readyz`)).status, 200);
  });
});
