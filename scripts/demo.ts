// `npm run demo`: the whole flow offline, in under a minute. A real Temporal dev server (in memory),
// the real endpoint and worker, and stand-ins for Discord and the GPU. Real interactions are signed
// with a locally generated key and POSTed to the endpoint; the script prints what Discord users see.
import { resolve } from 'node:path';
import { rmSync } from 'node:fs';

import { createLogger } from '../src/logger';
import { fakeSnowflake, InteractionSigner, postSignedInteraction } from '../src/standins/interaction-signer';
import type { SentInteraction } from '../src/standins/simulated-discord';
import { installTemporalLogging } from '../src/temporal-logging';
import { ConversationPrinter } from './lib/conversation';
import { OFFLINE_APPLICATION_ID, OFFLINE_CHANNEL_ID, startOfflineStack } from './lib/offline-stack';

const APPLICATION_ID = OFFLINE_APPLICATION_ID;
const CHANNEL_ID = OFFLINE_CHANNEL_ID;
const OUTPUT_DIR = resolve('demo-output');

async function main(): Promise<void> {
  const logger = createLogger('demo', process.env['LOG_LEVEL'] ?? 'warn');
  installTemporalLogging(logger, 'ERROR');
  rmSync(OUTPUT_DIR, { recursive: true, force: true });

  console.log('Starting a Temporal dev server, the image server and Discord stand-ins, a worker and the endpoint…');
  const stack = await startOfflineStack({
    name: 'demo',
    logger,
    imageDelayMs: 3_500,
    queue: { retryInitialIntervalMs: 500 },
  });
  const { temporal, images, discord, signer, bot, simulated } = stack;
  console.log(`Endpoint ${bot.endpointUrl} · Temporal ${temporal.address} · Temporal UI ${temporal.uiUrl}\n`);

  const conversation = new ConversationPrinter(discord, OUTPUT_DIR);
  conversation.start();

  const users = {
    alice: { id: '500000000000000001', username: 'alice' },
    bob: { id: '500000000000000002', username: 'bob' },
    carol: { id: '500000000000000003', username: 'carol' },
  };
  const describeAnswer = (label: string, answer: SentInteraction) => {
    const response = answer.body as { type: number; data?: { content?: string } };
    const shown =
      response.type === 5
        ? '“SD Bot is thinking…” (deferred)'
        : response.type === 4
          ? `only you can see this: ${response.data?.content ?? ''}`
          : JSON.stringify(response);
    conversation.say(`[${label}] answered in ${answer.elapsedMs.toFixed(0)} ms: ${shown}`);
  };
  const send = async (user: keyof typeof users, options: Record<string, string | number>) => {
    const { prompt, ...rest } = options;
    const summary = Object.entries(options)
      .map(([name, value]) => `${name}:${value}`)
      .join(' ');
    const label = `${user}: /generate ${summary}`;
    const issued = discord.issueInteraction({ channelId: CHANNEL_ID });
    conversation.label(issued.token, label);
    const answer = await simulated.generate(String(prompt), {
      channelId: CHANNEL_ID,
      user: users[user],
      options: rest,
      interaction: issued,
    });
    describeAnswer(label, answer);
    return issued.token;
  };
  const delivered = (token: string) =>
    discord.waitFor(
      (call) => call.token === token && call.files.some((f) => f.filename.startsWith('sd-')) && call.status === 200,
      45_000,
    );

  const ping = await postSignedInteraction(bot.endpointUrl, signer, {
    id: fakeSnowflake(),
    application_id: APPLICATION_ID,
    type: 1,
    token: 'ping',
    version: 1,
  });
  conversation.say(`[Discord] PING answered ${ping.status} ${JSON.stringify(ping.body)}`);

  const forged = await postSignedInteraction(bot.endpointUrl, InteractionSigner.generate(), { type: 1 });
  conversation.say(`[Discord] a request signed with the wrong key is refused: HTTP ${forged.status}`);

  images.failNext(1, 500, 'a lighthouse on a cliff at dusk');
  conversation.say('[image server] the next generation will fail once, to show a retry');
  const lighthouse = await send('alice', {
    prompt: 'a lighthouse on a cliff at dusk [blurry, text]',
    width: 768,
    height: 512,
  });
  const fox = await send('bob', { prompt: 'a red fox in fresh snow', seed: 42, steps: 30 });
  const robot = await send('alice', { prompt: 'a tiny robot watering plants', sampler: 'DPM++ 2M' });
  await send('carol', { prompt: 'a poster', width: 3000 });
  await send('alice', { prompt: 'one too many' });
  describeAnswer('bob: /queue', await simulated.command('queue', { channelId: CHANNEL_ID, user: users.bob }));

  await delivered(lighthouse);
  const reroll = await simulated.click(lighthouse, 'Re-roll', { channelId: CHANNEL_ID, user: users.carol });
  conversation.label(reroll.token, 'carol: 🎲 Re-roll of alice’s lighthouse');
  describeAnswer('carol: 🎲 Re-roll', reroll);
  const cancelledByBob = await simulated.click(robot, 'Cancel', { channelId: CHANNEL_ID, user: users.bob });
  describeAnswer('bob: Cancel on alice’s robot', cancelledByBob);

  for (const token of [fox, robot, reroll.token]) {
    await delivered(token);
  }

  conversation.stop();
  console.log(`\nDone: 4 images delivered, saved in ${OUTPUT_DIR}. Cleaning up…`);
  await stack.stop();
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error('demo failed:', error instanceof Error ? error.message : error);
    process.exit(1);
  },
);
