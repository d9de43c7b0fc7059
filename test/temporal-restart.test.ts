import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { TestWorkflowEnvironment } from '@temporalio/testing';

import { freePort, startTemporalDevServer, type DevServer } from '../scripts/lib/temporal-dev-server';
import type { RecordedCall } from '../src/standins/discord-api';
import { BotHarness, sleep, type SentInteraction } from './helpers/bot-harness';

const finalImage = (token: string) => (call: RecordedCall) =>
  call.token === token && call.status === 200 && call.files.some((f) => f.filename.startsWith('sd-'));

describe('the Temporal server restarting with requests queued (SQLite, as `npm run dev` runs it)', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'sd-bot-temporal-'));
  const dbFile = join(dataDir, 'dev.sqlite');
  let ports: { port: number; uiPort: number };
  let server: DevServer;
  let env: TestWorkflowEnvironment;
  let bot: BotHarness;

  before(async () => {
    ports = { port: await freePort(), uiPort: await freePort() };
    server = await startTemporalDevServer({ dbFile, ...ports });
    env = await TestWorkflowEnvironment.createFromExistingServer({ address: server.address });
    bot = await new BotHarness(env).start({ imageDelayMs: 1_500 });
  });

  after(async () => {
    await bot?.stop();
    await env?.teardown();
    await server?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  test('every queued request is still delivered, once', async () => {
    const sent: SentInteraction[] = [];
    for (let i = 0; i < 4; i += 1) {
      sent.push(
        await bot.generate(`survives a restart ${i}`, { userId: `5000000000000009${String(i).padStart(2, '0')}` }),
      );
    }

    await bot.discord.waitFor(
      (call) => call.token === sent[0]!.token && JSON.stringify(call.body).includes('Generating'),
    );
    await server.stop();
    await sleep(1_000);
    server = await startTemporalDevServer({ dbFile, ...ports });

    for (const request of sent) {
      await bot.discord.waitFor(finalImage(request.token), 60_000);
    }

    await sleep(1_000);
    for (const [i, request] of sent.entries()) {
      assert.equal(bot.discord.calls.filter(finalImage(request.token)).length, 1, `request ${i} delivered once`);
    }
  });
});
