import { resolve } from 'node:path';

import { parseConfig, type GenerationDefaults } from '../../src/config';
import type { Logger } from '../../src/logger';
import { startDiscordStandIn, type DiscordStandIn } from '../../src/standins/discord-api';
import { startImageServer, type ImageServerStandIn } from '../../src/standins/image-server';
import { InteractionSigner } from '../../src/standins/interaction-signer';
import { SimulatedDiscord } from '../../src/standins/simulated-discord';
import { startLocalBot, type LocalBot } from './local-bot';
import { startTemporalDevServer, type DevServer } from './temporal-dev-server';

export const OFFLINE_APPLICATION_ID = '400000000000000001';
export const OFFLINE_CHANNEL_ID = '100000000000000001';
const OFFLINE_BOT_TOKEN = 'offline-bot-token';

export interface OfflineStack {
  temporal: DevServer;
  images: ImageServerStandIn;
  discord: DiscordStandIn;
  signer: InteractionSigner;
  bot: LocalBot;
  simulated: SimulatedDiscord;
  stop(): Promise<void>;
}

/**
 * The whole bot with nothing outside this machine, for the demo and the benchmark: an in-memory
 * Temporal dev server, the image server and Discord stand-ins, and the real worker and endpoint
 * serving one enabled channel.
 */
export async function startOfflineStack(options: {
  name: string;
  logger: Logger;
  imageDelayMs: number;
  defaults?: Partial<GenerationDefaults>;
  queue?: Record<string, number>;
}): Promise<OfflineStack> {
  const temporal = await startTemporalDevServer();
  const images = await startImageServer({ delayMs: options.imageDelayMs });
  const discord = await startDiscordStandIn({ applicationId: OFFLINE_APPLICATION_ID, botToken: OFFLINE_BOT_TOKEN });
  const signer = InteractionSigner.generate();
  const config = parseConfig({
    defaults: {
      width: 512,
      height: 512,
      steps: 20,
      cfgScale: 7,
      sampler: 'Euler a',
      negativePrompt: '',
      ...options.defaults,
    },
    limits: { maxWidth: 1024, maxHeight: 1024, maxSteps: 50 },
    ...(options.queue === undefined ? {} : { queue: options.queue }),
    backends: { local: { type: 'a1111', url: images.url, capacity: 1 } },
    channels: { [OFFLINE_CHANNEL_ID]: { backend: 'local' } },
  });
  const bot = await startLocalBot({
    temporalAddress: temporal.address,
    namespace: 'default',
    config,
    discordApiBase: discord.url,
    botToken: OFFLINE_BOT_TOKEN,
    publicKeyHex: signer.publicKeyHex,
    host: '127.0.0.1',
    port: 0,
    imageDir: resolve('.data', `${options.name}-images`),
    logger: options.logger,
  });

  return {
    temporal,
    images,
    discord,
    signer,
    bot,
    simulated: new SimulatedDiscord(discord, signer, bot.endpointUrl, OFFLINE_APPLICATION_ID),
    async stop() {
      await bot.stop();
      await discord.close();
      await images.close();
      await temporal.stop();
    },
  };
}
