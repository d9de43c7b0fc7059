// `npm run server`: the Interactions Endpoint alone. Workers run elsewhere (`npm run worker`).
import { Client, Connection } from '@temporalio/client';

import { loadConfig } from './config';
import { parsePublicKey } from './discord/signature';
import { loadDotEnv, readEnvironment, required } from './environment';
import { createLogger } from './logger';
import { ensureSearchAttributes } from './search-attributes';
import { buildServer } from './server';
import { TokenSealer } from './token-seal';

async function main(): Promise<void> {
  loadDotEnv();
  const env = readEnvironment();
  const logger = createLogger('server');
  const config = loadConfig(env.configPath);
  const publicKey = parsePublicKey(required(env.publicKey, 'DISCORD_PUBLIC_KEY'));

  const connection = await Connection.connect({ address: env.temporalAddress });
  const temporal = new Client({ connection, namespace: env.temporalNamespace });
  const searchAttributes = await ensureSearchAttributes(connection, env.temporalNamespace, logger);
  const tokenSealer = env.tokenSealKey === undefined ? undefined : TokenSealer.fromKey(env.tokenSealKey);
  if (tokenSealer === undefined) {
    logger.warn('TOKEN_SEAL_KEY is not set: interaction tokens are readable in Temporal histories');
  }

  const app = buildServer({ config, publicKey, temporal, logger, searchAttributes, tokenSealer });
  await app.listen({ host: env.host, port: env.port });

  const stop = async (signal: string): Promise<void> => {
    logger.info({ signal }, 'stopping');
    await app.close();
    await connection.close();
    process.exit(0);
  };
  process.once('SIGINT', (signal) => void stop(signal));
  process.once('SIGTERM', (signal) => void stop(signal));
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  process.exit(1);
});
