// `npm run dev`: everything on one machine with no Docker. Starts the Temporal dev server (SQLite in
// .data/, so queues survive a restart, plus its Web UI), a worker and the endpoint. Without Discord
// credentials it also starts the Discord and image-server stand-ins and lets you type prompts.
import { resolve } from 'node:path';
import { createInterface } from 'node:readline';

import { loadConfig } from '../src/config';
import { loadDotEnv, readEnvironment } from '../src/environment';
import { createLogger } from '../src/logger';
import { startDiscordStandIn, type DiscordStandIn } from '../src/standins/discord-api';
import { startComfyUIServer } from '../src/standins/comfyui-server';
import { startImageServer } from '../src/standins/image-server';
import { InteractionSigner } from '../src/standins/interaction-signer';
import { ephemeralText, SimulatedDiscord } from '../src/standins/simulated-discord';
import { installTemporalLogging } from '../src/temporal-logging';
import { ConversationPrinter } from './lib/conversation';
import { startLocalBot } from './lib/local-bot';
import { isListening, startTemporalDevServer, type DevServer } from './lib/temporal-dev-server';

const LOCAL_APPLICATION_ID = '400000000000000001';
const LOCAL_BOT_TOKEN = 'local-stand-in-bot-token';
const LOCAL_DISCORD_PORT = 3001;

async function main(): Promise<void> {
  loadDotEnv();
  const env = readEnvironment();
  const logger = createLogger('dev', process.env['LOG_LEVEL'] ?? 'warn');
  installTemporalLogging(logger, 'WARN');
  const config = loadConfig(env.configPath);
  const stops: Array<() => Promise<void>> = [];

  let temporalAddress = env.temporalAddress;
  let temporal: DevServer | undefined;
  if (process.env['TEMPORAL_ADDRESS'] === undefined) {
    if (await isListening('127.0.0.1', 7233)) {
      console.log('A Temporal server already answers on 127.0.0.1:7233; using it.');
      temporalAddress = '127.0.0.1:7233';
    } else {
      console.log('Starting the Temporal dev server (SQLite in .data/temporal/dev.sqlite)…');
      temporal = await startTemporalDevServer({
        dbFile: resolve('.data', 'temporal', 'dev.sqlite'),
        port: 7233,
        uiPort: 8233,
      });
      temporalAddress = temporal.address;
      stops.push(() => (temporal as DevServer).stop());
    }
  }

  // Any configured image server on this machine that is not running is replaced by a stand-in.
  for (const [name, backend] of Object.entries(config.backends)) {
    const url = new URL(backend.url);
    const port = Number(url.port || 80);
    if (['127.0.0.1', 'localhost'].includes(url.hostname) && !(await isListening(url.hostname, port))) {
      const standIn =
        backend.type === 'a1111'
          ? await startImageServer({ port, delayMs: 8_000 })
          : await startComfyUIServer({ port, delayMs: 8_000 });
      stops.push(() => standIn.close());
      console.log(
        `Image server "${name}": nothing answered at ${backend.url}, so the local ${backend.type} stand-in runs there.`,
      );
    }
  }

  const localDiscord = env.publicKey === undefined;
  let discord: DiscordStandIn | undefined;
  let signer: InteractionSigner | undefined;
  let discordApiBase = env.discordApiBase;
  let publicKeyHex = env.publicKey ?? '';
  let botToken = env.botToken;
  if (localDiscord) {
    discord = await startDiscordStandIn({
      applicationId: LOCAL_APPLICATION_ID,
      botToken: LOCAL_BOT_TOKEN,
      port: LOCAL_DISCORD_PORT,
    });
    stops.push(() => (discord as DiscordStandIn).close());
    signer = InteractionSigner.generate();
    discordApiBase = discord.url;
    publicKeyHex = signer.publicKeyHex;
    botToken = LOCAL_BOT_TOKEN;
  }

  const bot = await startLocalBot({
    temporalAddress,
    namespace: env.temporalNamespace,
    config,
    discordApiBase,
    botToken,
    publicKeyHex,
    host: env.host,
    port: env.port,
    imageDir: env.imageDir,
    logger,
    tokenSealKey: env.tokenSealKey,
  });
  stops.unshift(() => bot.stop());

  console.log('');
  console.log(`  Interactions endpoint  ${bot.endpointUrl}`);
  console.log(`  Temporal               ${temporalAddress}`);
  if (temporal !== undefined) {
    console.log(`  Temporal Web UI        ${temporal.uiUrl}`);
  }

  let stopping = false;
  const stop = async (): Promise<void> => {
    if (stopping) {
      return;
    }

    stopping = true;
    console.log('\nStopping…');
    for (const close of stops) {
      await close().catch((error: unknown) => console.error(error));
    }

    process.exit(0);
  };
  process.on('SIGINT', () => void stop());
  process.on('SIGTERM', () => void stop());

  if (!localDiscord || discord === undefined || signer === undefined) {
    console.log("\nPoint your Discord application's Interactions Endpoint URL at the endpoint (through a tunnel");
    console.log('such as cloudflared or ngrok when this machine is not public). Ctrl-C stops everything.');
    return;
  }

  const channelId = Object.keys(config.channels).find((id) => id !== '*') ?? '100000000000000001';
  console.log(`  Discord                local stand-in at ${discord.url} (no DISCORD_PUBLIC_KEY set)`);
  console.log('\nNo Discord credentials, so Discord is simulated here. Type a prompt and press Enter to send a');
  console.log(`signed /generate from a test user in channel ${channelId}; add options as name:value, e.g.`);
  console.log('  a lighthouse at dusk [blurry] steps:30 width:768 seed:42');
  console.log('Images are saved in .data/dev-images. Ctrl-C stops everything.\n');

  const simulated = new SimulatedDiscord(discord, signer, bot.endpointUrl, LOCAL_APPLICATION_ID);
  const conversation = new ConversationPrinter(discord, resolve('.data', 'dev-images'));
  conversation.start();
  const input = createInterface({ input: process.stdin });
  input.on('line', (line) => {
    const parsed = parseLine(line);
    if (parsed === undefined) {
      return;
    }

    const issued = simulated.discord.issueInteraction({ channelId });
    conversation.label(issued.token, `you: /generate ${line.trim()}`);
    const { prompt, ...options } = parsed;
    simulated
      .generate(String(prompt), {
        channelId,
        user: { id: '500000000000000001', username: 'you' },
        options,
        interaction: issued,
      })
      .then(
        (answer) => {
          const text = ephemeralText(answer);
          conversation.say(
            text === undefined
              ? `[you] accepted in ${answer.elapsedMs.toFixed(0)} ms`
              : `[you] only you can see this: ${text}`,
          );
        },
        (error: unknown) => console.error('could not reach the endpoint:', error),
      );
  });
  input.on('close', () => {
    // Standard input ended (e.g. not a terminal): keep serving until Ctrl-C.
  });
}

/** `a cat steps:30 width:768` -> { prompt: 'a cat', steps: 30, width: 768 }. */
function parseLine(line: string): Record<string, string | number> | undefined {
  const options: Record<string, string | number> = {};
  const words: string[] = [];
  for (const word of line.trim().split(/\s+/)) {
    const match = /^(negative|width|height|steps|seed|sampler|cfg_scale):(.+)$/.exec(word);
    if (match?.[1] !== undefined && match[2] !== undefined) {
      const numeric = Number(match[2]);
      options[match[1]] = ['negative', 'sampler'].includes(match[1]) || Number.isNaN(numeric) ? match[2] : numeric;
    } else if (word !== '') {
      words.push(word);
    }
  }

  if (words.length === 0) {
    return undefined;
  }

  return { prompt: words.join(' '), ...options };
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  process.exit(1);
});
