import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import type { TestWorkflowEnvironment } from '@temporalio/testing';

import type { RecordedCall } from '../src/standins/discord-api';
import { readPngSize } from '../src/standins/png';
import { BotHarness, BOT_TOKEN, sleep, startTemporal, TOKEN_SEAL_KEY } from './helpers/bot-harness';

const imageEdit = (token: string) => (call: RecordedCall) =>
  call.token === token && call.files.some((f) => f.filename.startsWith('sd-')) && call.status === 200;

function startWorkerProcess(env: TestWorkflowEnvironment, bot: BotHarness): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(__dirname, 'helpers', 'worker-process.ts')], {
    env: {
      ...process.env,
      SD_TEST_CONFIG: JSON.stringify(bot.config),
      TEMPORAL_ADDRESS: env.address,
      DISCORD_API_BASE: bot.discord.url,
      DISCORD_TOKEN: BOT_TOKEN,
      TOKEN_SEAL_KEY,
      IMAGE_DIR: mkdtempSync(join(tmpdir(), 'sd-bot-crash-')),
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`worker process exited early with ${code}`)));
    child.stdout?.on('data', (chunk: Buffer) => {
      if (chunk.toString().includes('worker ready')) {
        resolve(child);
      }
    });
  });
}

describe('a worker killed during generation', () => {
  let env: TestWorkflowEnvironment;
  let bot: BotHarness;
  let doomed: ChildProcess | undefined;

  before(async () => {
    env = await startTemporal();
    bot = await new BotHarness(env).start({ imageDelayMs: 3_000, worker: false, queue: { heartbeatTimeoutMs: 2_000 } });
  });

  after(async () => {
    doomed?.kill('SIGKILL');
    await bot?.stop();
    await env?.teardown();
  });

  test('the image still arrives, exactly once', async () => {
    doomed = await startWorkerProcess(env, bot);
    const sent = await bot.generate('survives a crash', { options: { seed: 31337, width: 320, height: 256 } });
    assert.deepEqual(sent.body, { type: 5 });
    await bot.discord.waitFor((call) => call.token === sent.token && JSON.stringify(call.body).includes('Generating'));

    const deadline = Date.now() + 10_000;
    while (!bot.images.requests.some((r) => r.prompt === 'survives a crash') && Date.now() < deadline) {
      await sleep(50);
    }

    doomed.kill('SIGKILL');
    await new Promise((resolve) => doomed?.once('exit', resolve));
    if (process.env['DEBUG_TIMELINE']) console.log('killed at', Date.now() - (bot.discord.calls[0]?.at ?? 0));
    await bot.startWorker();
    if (process.env['DEBUG_TIMELINE']) console.log('new worker at', Date.now() - (bot.discord.calls[0]?.at ?? 0));

    const edit = await bot.discord.waitFor(imageEdit(sent.token), 40_000);
    assert.deepEqual(readPngSize(edit.files[0]!.data), { width: 320, height: 256 });
    assert.match(JSON.stringify(edit.body), /"name":"Seed","value":"31337"/);

    if (process.env['DEBUG_TIMELINE']) {
      const t0 = bot.discord.calls[0]?.at ?? 0;
      console.log(
        bot.discord.calls.map((c) => `${c.at - t0} ${c.route} ${c.status} ${JSON.stringify(c.body).slice(0, 60)}`),
      );
      console.log(
        bot.images.requests.map((r) => `${r.receivedAt - t0} ${r.startedAt - t0} ${(r.finishedAt ?? 0) - t0}`),
      );
    }

    await sleep(2_000);
    assert.equal(bot.discord.calls.filter(imageEdit(sent.token)).length, 1);
    assert.equal(bot.discord.calls.filter((call) => call.route.startsWith('POST /channels')).length, 0);
  });
});
