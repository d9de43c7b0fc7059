import type { AddressInfo } from 'node:net';

import { Client, Connection } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';

import type { BotConfig } from '../../src/config';
import { DiscordOutput } from '../../src/discord/discord-output';
import { parsePublicKey } from '../../src/discord/signature';
import { ImageStore } from '../../src/image-store';
import type { Logger } from '../../src/logger';
import { ensureSearchAttributes } from '../../src/search-attributes';
import { buildServer } from '../../src/server';
import { TokenSealer } from '../../src/token-seal';
import { BotWorker } from '../../src/worker';

export interface LocalBotOptions {
  temporalAddress: string;
  namespace: string;
  config: BotConfig;
  discordApiBase: string;
  botToken: string | undefined;
  publicKeyHex: string;
  host: string;
  port: number;
  imageDir: string;
  logger: Logger;
  /** TOKEN_SEAL_KEY when set; otherwise a random key shared by this process's endpoint and worker. */
  tokenSealKey?: string | undefined;
}

export interface LocalBot {
  endpointUrl: string;
  stop(): Promise<void>;
}

/** A worker and the endpoint in this process: what `npm run worker` and `npm run server` run separately. */
export async function startLocalBot(options: LocalBotOptions): Promise<LocalBot> {
  const tokenSealer =
    options.tokenSealKey === undefined ? TokenSealer.random() : TokenSealer.fromKey(options.tokenSealKey);
  const nativeConnection = await NativeConnection.connect({ address: options.temporalAddress });
  const worker = await BotWorker.create({
    connection: nativeConnection,
    namespace: options.namespace,
    config: options.config,
    discord: new DiscordOutput({ apiBase: options.discordApiBase, botToken: options.botToken }),
    imageStore: new ImageStore(options.imageDir),
    logger: options.logger.child({ component: 'worker' }),
    tokenSealer,
  });
  const workerRun = worker.run();

  const connection = await Connection.connect({ address: options.temporalAddress });
  const app = buildServer({
    config: options.config,
    publicKey: parsePublicKey(options.publicKeyHex),
    temporal: new Client({ connection, namespace: options.namespace }),
    logger: options.logger.child({ component: 'server' }),
    searchAttributes: await ensureSearchAttributes(connection, options.namespace, options.logger),
    tokenSealer,
  });
  await app.listen({ host: options.host, port: options.port });
  const { port } = app.server.address() as AddressInfo;
  const shownHost = options.host === '0.0.0.0' ? 'localhost' : options.host;

  return {
    endpointUrl: `http://${shownHost}:${port}/interactions`,
    async stop() {
      await app.close();
      await connection.close();
      worker.shutdown();
      await workerRun;
      await nativeConnection.close();
    },
  };
}
