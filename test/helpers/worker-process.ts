// A bot worker in its own process, so that a test can kill it with SIGKILL mid-generation.
// Reads everything from the environment: SD_TEST_CONFIG (config JSON), TEMPORAL_ADDRESS,
// DISCORD_API_BASE, DISCORD_TOKEN, IMAGE_DIR. Prints "worker ready" once polling.
import { NativeConnection } from '@temporalio/worker';

import { parseConfig } from '../../src/config';
import { DiscordOutput } from '../../src/discord/discord-output';
import { ImageStore } from '../../src/image-store';
import { createLogger } from '../../src/logger';
import { installTemporalLogging } from '../../src/temporal-logging';
import { TokenSealer } from '../../src/token-seal';
import { BotWorker } from '../../src/worker';

async function main(): Promise<void> {
  const logger = createLogger('worker-process', 'error');
  installTemporalLogging(logger, 'ERROR');
  const config = parseConfig(JSON.parse(process.env['SD_TEST_CONFIG'] ?? '{}'));
  const connection = await NativeConnection.connect({ address: process.env['TEMPORAL_ADDRESS'] ?? '' });
  const worker = await BotWorker.create({
    connection,
    namespace: 'default',
    config,
    discord: new DiscordOutput({
      apiBase: process.env['DISCORD_API_BASE'] ?? '',
      botToken: process.env['DISCORD_TOKEN'],
    }),
    imageStore: new ImageStore(process.env['IMAGE_DIR'] ?? '.data/images'),
    logger,
    heartbeatIntervalMs: 300,
    tokenSealer: TokenSealer.fromKey(process.env['TOKEN_SEAL_KEY'] ?? ''),
  });
  const running = worker.run();
  console.log('worker ready');
  await running;
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
