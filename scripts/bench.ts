// `npm run bench`: numbers, not assertions. Prints
//  1. Ed25519 verification cost: node:crypto (what the endpoint uses) vs tweetnacl vs discord-interactions;
//  2. POST-to-answer latency of /generate through the real endpoint and a real Temporal dev server;
//  3. how long the image server sits idle between two queued jobs (the GPU-idle gap).
import { verifyKey } from 'discord-interactions';
import nacl from 'tweetnacl';

import { parsePublicKey, verifyInteractionSignature } from '../src/discord/signature';
import { createLogger } from '../src/logger';
import { InteractionSigner, postSignedInteraction, slashCommandInteraction } from '../src/standins/interaction-signer';
import { installTemporalLogging } from '../src/temporal-logging';
import { OFFLINE_APPLICATION_ID, OFFLINE_CHANNEL_ID, startOfflineStack } from './lib/offline-stack';

const APPLICATION_ID = OFFLINE_APPLICATION_ID;
const CHANNEL_ID = OFFLINE_CHANNEL_ID;

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
}

function summary(values: number[]): string {
  const sorted = [...values].sort((a, b) => a - b);
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  return `n=${values.length} mean=${mean.toFixed(2)} p50=${percentile(sorted, 50).toFixed(2)} p95=${percentile(sorted, 95).toFixed(2)} max=${sorted.at(-1)?.toFixed(2)} ms`;
}

async function benchSignatures(): Promise<void> {
  const signer = InteractionSigner.generate();
  const body = JSON.stringify(
    slashCommandInteraction({
      id: '1',
      token: 't'.repeat(200),
      applicationId: APPLICATION_ID,
      channelId: CHANNEL_ID,
      user: { id: '2', username: 'bench' },
      options: { prompt: 'a lighthouse at dusk' },
    }),
  );
  const headers = signer.sign(body);
  const signature = headers['x-signature-ed25519'] as string;
  const timestamp = headers['x-signature-timestamp'] as string;
  const key = parsePublicKey(signer.publicKeyHex);
  const raw = Buffer.from(body);

  const time = async (name: string, iterations: number, run: () => unknown) => {
    for (let i = 0; i < 50; i += 1) await run();
    const started = performance.now();
    for (let i = 0; i < iterations; i += 1) await run();
    const perOp = (performance.now() - started) / iterations;
    console.log(
      `  ${name.padEnd(34)} ${(perOp * 1_000).toFixed(1).padStart(8)} µs/verify  (${Math.round(1_000 / perOp)} /s)`,
    );
  };

  console.log('Ed25519 verification of one interaction body');
  await time('node:crypto (endpoint)', 5_000, () => verifyInteractionSignature(key, raw, signature, timestamp));
  await time('discord-interactions verifyKey', 2_000, () => verifyKey(raw, signature, timestamp, signer.publicKeyHex));
  const publicKey = Buffer.from(signer.publicKeyHex, 'hex');
  const message = Buffer.from(timestamp + body);
  const sig = Buffer.from(signature, 'hex');
  await time('tweetnacl', 200, () => nacl.sign.detached.verify(message, sig, publicKey));
}

async function benchEndToEnd(): Promise<void> {
  const logger = createLogger('bench', 'error');
  installTemporalLogging(logger, 'ERROR');
  const stack = await startOfflineStack({
    name: 'bench',
    logger,
    imageDelayMs: 200,
    defaults: { width: 64, height: 64 },
  });
  const { images, discord, signer, bot } = stack;

  const jobs = 40;
  const latencies: number[] = [];
  const tokens: string[] = [];
  const started = performance.now();
  for (let i = 0; i < jobs; i += 1) {
    const issued = discord.issueInteraction({ channelId: CHANNEL_ID });
    const interaction = slashCommandInteraction({
      ...issued,
      applicationId: APPLICATION_ID,
      channelId: CHANNEL_ID,
      user: { id: `6000000000000000${String(i).padStart(2, '0')}`, username: `u${i}` },
      options: { prompt: `bench ${i}` },
    });
    const answer = await postSignedInteraction(bot.endpointUrl, signer, interaction);
    if ((answer.body as { type: number }).type !== 5)
      throw new Error(`unexpected answer ${JSON.stringify(answer.body)}`);
    discord.acknowledge(issued.token, { type: 5 });
    latencies.push(answer.elapsedMs);
    tokens.push(issued.token);
  }

  for (const token of tokens) {
    await discord.waitFor(
      (call) => call.token === token && call.files.some((f) => f.filename.startsWith('sd-')) && call.status === 200,
      120_000,
    );
  }

  const total = performance.now() - started;
  const runs = images.requests.filter((r) => r.prompt.startsWith('bench ')).sort((a, b) => a.startedAt - b.startedAt);
  const gaps = runs.slice(1).map((run, i) => run.startedAt - (runs[i]?.finishedAt ?? run.startedAt));
  console.log(`\n/generate through endpoint + Temporal dev server (${jobs} requests, one after another)`);
  console.log(`  POST -> deferred answer           ${summary(latencies)}`);
  console.log(`  first (starts the workflow)       ${latencies[0]?.toFixed(2)} ms`);
  console.log(`\nImage server idle between consecutive queued jobs (200 ms generations, capacity 1)`);
  console.log(`  gap                               ${summary(gaps)}`);
  console.log(
    `  all ${jobs} delivered in ${(total / 1_000).toFixed(1)} s; generation alone ${(jobs * 0.2).toFixed(1)} s`,
  );
  console.log(
    `  process RSS ${(process.memoryUsage().rss / 1_048_576).toFixed(0)} MiB (endpoint + worker + stand-ins)`,
  );

  await stack.stop();
}

async function main(): Promise<void> {
  await benchSignatures();
  await benchEndToEnd();
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
