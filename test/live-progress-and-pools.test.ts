import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import type { TestWorkflowEnvironment } from '@temporalio/testing';
import Fastify, { type FastifyInstance } from 'fastify';

import { IMAGE_SERVERS_WORKFLOW_ID, serversQuery } from '../src/shared';
import { startComfyUIServer, type ComfyUIStandIn } from '../src/standins/comfyui-server';
import type { RecordedCall } from '../src/standins/discord-api';
import { startImageServer, type ImageServerStandIn } from '../src/standins/image-server';
import { encodePng, readPngSize } from '../src/standins/png';
import { BotHarness, ephemeralText, sleep, startTemporal } from './helpers/bot-harness';

const POOL_CHANNEL = '100000000000000010';
const COMFY_CHANNEL = '100000000000000011';
const IMG2IMG_CHANNEL = '100000000000000012';

const finalImage = (token: string) => (call: RecordedCall) =>
  call.token === token && call.status === 200 && call.files.some((f) => f.filename.startsWith('sd-'));
const progressEdits = (calls: RecordedCall[], token: string) =>
  calls.filter(
    (call) => call.token === token && call.status === 200 && JSON.stringify(call.body).includes('"title":"Generating"'),
  );
const percentOf = (call: RecordedCall) => Number(/(\d+)%/.exec(JSON.stringify(call.body))?.[1] ?? Number.NaN);

describe('live progress, server pools, ComfyUI, img2img and autocomplete', () => {
  let env: TestWorkflowEnvironment;
  let bot: BotHarness;
  let second: ImageServerStandIn;
  let third: ImageServerStandIn;
  let comfy: ComfyUIStandIn;
  let cdn: FastifyInstance;
  let cdnUrl: string;

  before(async () => {
    env = await startTemporal();
    second = await startImageServer({ delayMs: 4_000 });
    third = await startImageServer({ delayMs: 500 });
    comfy = await startComfyUIServer({ delayMs: 3_000 });
    cdn = Fastify();
    cdn.get('/attachments/1/2/cat.png', async (_request, reply) =>
      reply.type('image/png').send(encodePng(96, 64, 7, 'cat')),
    );
    await cdn.listen({ host: '127.0.0.1', port: 0 });
    const address = cdn.server.address();
    cdnUrl = `http://127.0.0.1:${typeof address === 'object' && address !== null ? address.port : 0}`;

    bot = await new BotHarness(env).start({
      imageDelayMs: 9_000,
      backends: {
        second: { type: 'a1111', url: second.url, capacity: 1 },
        third: { type: 'a1111', url: third.url, capacity: 1 },
        comfy: { type: 'comfyui', url: comfy.url, capacity: 1, defaultModel: 'sd_xl_base_1.0.safetensors' },
      },
      channels: {
        [POOL_CHANNEL]: { backend: ['second', 'third'] },
        [COMFY_CHANNEL]: { backend: 'comfy' },
        [IMG2IMG_CHANNEL]: {
          backend: 'third',
          limits: { allowedModels: ['v1-5-pruned-emaonly.safetensors [6ce0161689]'] },
        },
      },
      initImages: { allowedHosts: ['127.0.0.1'], allowHttp: true },
    });
  });

  after(async () => {
    await bot?.stop();
    await second?.close();
    await third?.close();
    await comfy?.close();
    await cdn?.close();
    await env?.teardown();
  });

  test('a slow job shows at least three progress edits, rising, one with a preview image', async () => {
    const sent = await bot.generate('a slow sunrise', { options: { steps: 30 } });
    await bot.discord.waitFor(finalImage(sent.token), 30_000);

    const edits = progressEdits(bot.discord.calls, sent.token);
    const percents = edits.map(percentOf);
    assert.ok(edits.length >= 3, `only ${edits.length} progress edits`);
    assert.deepEqual(
      [...percents].sort((a, b) => a - b),
      percents,
      `not rising: ${percents.join(', ')}`,
    );
    assert.ok(percents.at(-1)! > percents[0]!);
    assert.match(JSON.stringify(edits.at(-1)?.body), /step \d+\/30/);
    const withPreview = edits.find((call) => call.files.some((f) => f.filename === 'preview.png'));
    assert.ok(withPreview, 'no progress edit carried a preview');
    assert.ok(readPngSize(withPreview.files[0]!.data).width > 0);

    const gaps = edits.slice(1).map((call, i) => call.at - edits[i]!.at);
    assert.ok(Math.min(...gaps) >= 2_000, `edits closer than 2 s: ${gaps.join(', ')} ms`);
    console.log(`progress edit cadence: ${gaps.join(', ')} ms over ${edits.length} edits`);

    // After the image, nothing overwrote it.
    const last = bot.discord.calls.filter((call) => call.token === sent.token && call.status === 200).at(-1);
    assert.ok(last?.files.some((f) => f.filename.startsWith('sd-')));
  });

  test('a pool of two: when one server dies mid-job, the image comes once, from the other', async () => {
    const sent = await bot.generate('failover fox', { channelId: POOL_CHANNEL, userId: '500000000000000501' });
    const onSecond = await waitFor(() => second.requests.find((r) => r.prompt === 'failover fox'));
    await sleep(1_000);
    const crashedAt = Date.now();
    second.crash();

    const image = await bot.discord.waitFor(finalImage(sent.token), 30_000);
    const onThird = third.requests.find((r) => r.prompt === 'failover fox');
    assert.ok(onSecond && onThird, 'the job ran on both servers, one after the other');
    assert.equal(onThird.seed, onSecond.seed);
    assert.ok(onThird.receivedAt >= crashedAt);
    console.log(`failover: crash to retry on the other server ${onThird.receivedAt - crashedAt} ms`);
    assert.deepEqual(readPngSize(image.files[0]!.data), { width: 512, height: 512 });

    await sleep(1_000);
    assert.equal(bot.discord.calls.filter(finalImage(sent.token)).length, 1);

    // The dead server is taken out: the next jobs go to the live one without waiting for the dead one.
    const next = await bot.generate('after the crash', { channelId: POOL_CHANNEL, userId: '500000000000000502' });
    await bot.discord.waitFor(finalImage(next.token), 20_000);
    const more = await bot.generate('still going', { channelId: POOL_CHANNEL, userId: '500000000000000503' });
    await bot.discord.waitFor(finalImage(more.token), 20_000);
    const { servers } = await env.client.workflow.getHandle(IMAGE_SERVERS_WORKFLOW_ID).query(serversQuery);
    assert.equal(servers.find((s) => s.name === 'second')?.healthy, false);
    assert.equal(servers.find((s) => s.name === 'third')?.healthy, true);
    assert.equal(second.requests.filter((r) => r.prompt !== 'failover fox').length, 0);

    // Back on its feet at the same address: a health probe returns it to rotation.
    const port = Number(new URL(second.url).port);
    second = await startImageServer({ port, delayMs: 500 });
    await waitFor(async () => {
      const state = await env.client.workflow.getHandle(IMAGE_SERVERS_WORKFLOW_ID).query(serversQuery);
      return state.servers.find((s) => s.name === 'second')?.healthy === true ? true : undefined;
    }, 20_000);
  });

  test('a ComfyUI server delivers the image with progress along the way', async () => {
    const sent = await bot.generate('a comfy cabin', {
      channelId: COMFY_CHANNEL,
      userId: '500000000000000601',
      options: { width: 384, height: 320, steps: 12, sampler: 'Euler a', seed: 99 },
    });
    const image = await bot.discord.waitFor(finalImage(sent.token), 30_000);
    assert.deepEqual(readPngSize(image.files[0]!.data), { width: 384, height: 320 });
    assert.match(JSON.stringify(image.body), /"name":"Seed","value":"99"/);
    const run = comfy.prompts.find((p) => p.prompt === 'a comfy cabin');
    assert.equal(run?.sampler, 'euler_ancestral');
    assert.equal(run?.model, 'sd_xl_base_1.0.safetensors');
    assert.ok(progressEdits(bot.discord.calls, sent.token).length >= 1, 'no progress shown');
  });

  test('img2img starts from an attachment on an allowed host', async () => {
    const attachment = {
      id: '700000000000000001',
      filename: 'cat.png',
      size: 2_000,
      url: `${cdnUrl}/attachments/1/2/cat.png?ex=abc&is=def&hm=123`,
      proxy_url: `${cdnUrl}/attachments/1/2/cat.png`,
      content_type: 'image/png',
    };
    const sent = await bot.generate('a cat, as a painting', {
      channelId: IMG2IMG_CHANNEL,
      userId: '500000000000000701',
      options: { image: attachment.id, strength: 0.45, width: 256, height: 192 },
      attachments: { [attachment.id]: attachment },
    });
    assert.deepEqual(sent.body, { type: 5 });
    const image = await bot.discord.waitFor(finalImage(sent.token), 20_000);
    assert.deepEqual(readPngSize(image.files[0]!.data), { width: 256, height: 192 });
    const run = third.requests.find((r) => r.prompt === 'a cat, as a painting');
    assert.equal(run?.mode, 'img2img');
    assert.equal(run?.denoisingStrength, 0.45);
    assert.ok((run?.initImageBytes ?? 0) > 0);
  });

  test('img2img from any other host is refused at once, and nothing is queued', async () => {
    const attachment = {
      id: '700000000000000002',
      filename: 'x.png',
      size: 2_000,
      url: 'https://images.example.com/x.png',
      proxy_url: 'https://images.example.com/x.png',
      content_type: 'image/png',
    };
    const sent = await bot.generate('not from discord', {
      channelId: IMG2IMG_CHANNEL,
      options: { image: attachment.id },
      attachments: { [attachment.id]: attachment },
    });
    assert.match(ephemeralText(sent) ?? '', /Images can only come from Discord attachments/);
    await sleep(300);
    assert.equal(third.requests.filter((r) => r.prompt === 'not from discord').length, 0);
  });

  test('a model outside the channel’s allowed list is refused, naming the rule', async () => {
    const sent = await bot.generate('wrong model', {
      channelId: IMG2IMG_CHANNEL,
      options: { model: 'sd_xl_base_1.0.safetensors [31e35c80fc]' },
    });
    assert.match(ephemeralText(sent) ?? '', /not allowed in this channel/);
  });

  test('autocomplete offers the servers’ samplers and models from a cache, fast', async () => {
    const first = await bot.autocomplete('sampler', 'eul', IMG2IMG_CHANNEL);
    assert.deepEqual(
      first.choices.map((c) => c.name),
      ['Euler', 'Euler a'],
    );

    third.crash();
    const cached = await bot.autocomplete('sampler', 'dpm', IMG2IMG_CHANNEL);
    assert.deepEqual(
      cached.choices.map((c) => c.name),
      ['DPM++ 2M'],
    );
    assert.ok(cached.elapsedMs < 200, `cached answer took ${cached.elapsedMs} ms`);

    const models = await bot.autocomplete('model', '', IMG2IMG_CHANNEL);
    assert.deepEqual(
      models.choices.map((c) => c.name),
      ['v1-5-pruned-emaonly.safetensors [6ce0161689]'],
    );
  });
});

async function waitFor<T>(find: () => T | undefined | Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = await find();
    if (found !== undefined) {
      return found;
    }

    if (Date.now() > deadline) {
      throw new Error('not found in time');
    }

    await sleep(50);
  }
}
