// `npm run worker`: a Temporal worker for channel workflows and image generation. Run as many as you like.
import { NativeConnection } from '@temporalio/worker';

import { loadConfig } from './config';
import { DiscordOutput } from './discord/discord-output';
import { loadDotEnv, readEnvironment } from './environment';
import { ImageStore } from './image-store';
import { createLogger } from './logger';
import { installTemporalLogging } from './temporal-logging';
import { TokenSealer } from './token-seal';
import { BotWorker } from './worker';

async function main(): Promise<void> {
  loadDotEnv();
  const env = readEnvironment();
  const logger = createLogger('worker');
  const config = loadConfig(env.configPath);
  installTemporalLogging(logger);

  const connection = await NativeConnection.connect({ address: env.temporalAddress });
  const worker = await BotWorker.create({
    connection,
    namespace: env.temporalNamespace,
    config,
    discord: new DiscordOutput({ apiBase: env.discordApiBase, botToken: env.botToken }),
    imageStore: new ImageStore(env.imageDir),
    logger,
    tokenSealer: env.tokenSealKey === undefined ? undefined : TokenSealer.fromKey(env.tokenSealKey),
  });

  const stop = (signal: string) => {
    logger.info({ signal }, 'stopping: finishing running generations first');
    worker.shutdown();
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);

  // run() resolves once both workers have drained.
  await worker.run();
  await connection.close();
  logger.info('worker stopped');
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  process.exit(1);
});
