import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';

import { TestWorkflowEnvironment } from '@temporalio/testing';
import { bundleWorkflowCode, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import type { FastifyInstance } from 'fastify';

import { parseConfig, type BotConfig } from '../../src/config';
import { DiscordOutput } from '../../src/discord/discord-output';
import { parsePublicKey } from '../../src/discord/signature';
import { ImageStore } from '../../src/image-store';
import { createLogger } from '../../src/logger';
import { ensureSearchAttributes } from '../../src/search-attributes';
import { buildServer } from '../../src/server';
import { startDiscordStandIn, type DiscordStandIn } from '../../src/standins/discord-api';
import { startImageServer, type ImageServerStandIn } from '../../src/standins/image-server';
import { fakeSnowflake, InteractionSigner } from '../../src/standins/interaction-signer';
import { ephemeralText, SimulatedDiscord, type SentInteraction } from '../../src/standins/simulated-discord';
import { ensureTemporalCli } from '../../src/temporal-cli';
import { installTemporalLogging } from '../../src/temporal-logging';
import { TokenSealer } from '../../src/token-seal';
import { BotWorker } from '../../src/worker';

export const APPLICATION_ID = '400000000000000001';
export const CHANNEL_ID = '100000000000000001';
export const OTHER_CHANNEL_ID = '100000000000000002';
export const BOT_TOKEN = 'test-bot-token';
/** Seals interaction tokens inside Temporal, as TOKEN_SEAL_KEY does in production. */
export const TOKEN_SEAL_KEY = randomBytes(32).toString('hex');

let sharedBundle: WorkflowBundleWithSourceMap | undefined;

/** Bundles the workflow code once per test process; each bundle takes a few seconds. */
export async function workflowBundle(): Promise<WorkflowBundleWithSourceMap> {
  sharedBundle ??= await bundleWorkflowCode({
    workflowsPath: require.resolve('../../src/workflows'),
    logger: { trace() {}, debug() {}, info() {}, warn() {}, error() {}, log() {} },
  });
  return sharedBundle;
}

/** A real Temporal dev server on free ports, from the project's installed CLI. */
export async function startTemporal(extraArgs: string[] = []): Promise<TestWorkflowEnvironment> {
  const level = process.env['LOG_LEVEL'] === undefined ? 'ERROR' : 'INFO';
  installTemporalLogging(createLogger('temporal', process.env['LOG_LEVEL'] ?? 'error'), level);
  const path = ensureTemporalCli();
  return TestWorkflowEnvironment.createLocal({
    server: {
      executable: { type: 'existing-path', path },
      ip: '127.0.0.1',
      extraArgs: ['--log-level', 'error', ...extraArgs],
    },
  });
}

export interface HarnessOptions {
  imageDelayMs?: number;
  queue?: Partial<BotConfig['queue']>;
  tokenLifetimeMs?: number;
  botToken?: string | undefined;
  /** Run a bot worker in this process (default true); false when a test runs workers itself. */
  worker?: boolean;
  /** More image servers and channels, merged into the test config. */
  backends?: Record<string, unknown>;
  channels?: Record<string, unknown>;
  initImages?: Record<string, unknown>;
  progressEditIntervalMs?: number;
}

export interface SendOptions {
  channelId?: string;
  userId?: string;
  options?: Record<string, string | number>;
  /** `data.resolved.attachments`, for the `image` option. */
  attachments?: Record<string, unknown>;
  /** Reuse an interaction (id and token) to simulate Discord posting the same interaction twice. */
  interaction?: { id: string; token: string };
}

/**
 * Everything between Discord and the GPU, for real: the endpoint on a loopback port, a bot worker,
 * a Temporal dev server, and the two stand-ins for what cannot run here (Discord, the image server).
 */
export class BotHarness {
  readonly signer = InteractionSigner.generate();
  endpointUrl = '';
  config!: BotConfig;
  discord!: DiscordStandIn;
  images!: ImageServerStandIn;
  worker: BotWorker | undefined;
  #server!: FastifyInstance;
  #workerRun: Promise<void> | undefined;
  #imageDir = '';

  /** Where the in-process worker keeps images until they are delivered. */
  get imageDir(): string {
    return this.#imageDir;
  }
  #botToken: string | undefined;
  #progressEditIntervalMs: number | undefined;

  constructor(readonly env: TestWorkflowEnvironment) {}

  async start(options: HarnessOptions = {}): Promise<this> {
    try {
      return await this.#start(options);
    } catch (error) {
      // Whatever did start must not keep the test process alive.
      await this.stop().catch(() => undefined);
      throw error;
    }
  }

  async #start(options: HarnessOptions): Promise<this> {
    this.images = await startImageServer({ delayMs: options.imageDelayMs ?? 300 });
    const botToken = 'botToken' in options ? options.botToken : BOT_TOKEN;
    this.discord = await startDiscordStandIn({
      applicationId: APPLICATION_ID,
      ...(botToken === undefined ? {} : { botToken }),
      ...(options.tokenLifetimeMs === undefined ? {} : { tokenLifetimeMs: options.tokenLifetimeMs }),
    });
    this.config = parseConfig({
      defaults: { width: 512, height: 512, steps: 20, cfgScale: 7, sampler: 'Euler a', negativePrompt: '' },
      limits: { maxWidth: 1024, maxHeight: 1024, maxSteps: 50 },
      queue: { retryInitialIntervalMs: 200, generationAttempts: 3, ...options.queue },
      backends: { local: { type: 'a1111', url: this.images.url, capacity: 1 }, ...options.backends },
      channels: {
        [CHANNEL_ID]: { backend: 'local' },
        [OTHER_CHANNEL_ID]: { backend: 'local', limits: { maxSteps: 30 } },
        ...options.channels,
      },
      ...(options.initImages === undefined ? {} : { initImages: options.initImages }),
    });
    this.#progressEditIntervalMs = options.progressEditIntervalMs;

    this.#botToken = botToken;
    this.#imageDir = mkdtempSync(join(tmpdir(), 'sd-bot-images-'));
    const logger = createLogger('test', process.env['LOG_LEVEL'] ?? 'silent');
    if (options.worker ?? true) {
      await this.startWorker();
    }

    this.#server = buildServer({
      config: this.config,
      publicKey: parsePublicKey(this.signer.publicKeyHex),
      temporal: this.env.client,
      logger,
      searchAttributes: await ensureSearchAttributes(this.env.connection, this.env.namespace ?? 'default', logger),
      tokenSealer: TokenSealer.fromKey(TOKEN_SEAL_KEY),
    });
    await this.#server.listen({ host: '127.0.0.1', port: 0 });
    const { port } = this.#server.server.address() as AddressInfo;
    this.endpointUrl = `http://127.0.0.1:${port}/interactions`;
    return this;
  }

  /** Starts the in-process bot worker (when the harness was started without one). */
  async startWorker(): Promise<void> {
    this.worker = await BotWorker.create({
      connection: this.env.nativeConnection,
      namespace: this.env.namespace ?? 'default',
      config: this.config,
      discord: new DiscordOutput({ apiBase: this.discord.url, botToken: this.#botToken, timeoutMs: 5_000 }),
      imageStore: new ImageStore(this.#imageDir),
      logger: createLogger('test', process.env['LOG_LEVEL'] ?? 'silent'),
      workflowBundle: await workflowBundle(),
      heartbeatIntervalMs: 300,
      shutdownGraceTimeMs: 2_000,
      deliveryDrainMs: 0,
      tokenSealer: TokenSealer.fromKey(TOKEN_SEAL_KEY),
      ...(this.#progressEditIntervalMs === undefined ? {} : { progressEditIntervalMs: this.#progressEditIntervalMs }),
    });
    this.#workerRun = this.worker.run();
  }

  /** Discord's side of the conversation, against this harness's endpoint and stand-in. */
  get simulated(): SimulatedDiscord {
    return new SimulatedDiscord(this.discord, this.signer, this.endpointUrl, APPLICATION_ID);
  }

  /** Sends another slash command (e.g. /queue) and returns the endpoint's answer. */
  command(name: string, userId = '500000000000000001', channelId = CHANNEL_ID): Promise<SentInteraction> {
    return this.simulated.command(name, { channelId, user: userFor(userId) });
  }

  /** Types into an autocomplete option of /generate; returns Discord's list of choices. */
  autocomplete(option: string, typed: string, channelId = CHANNEL_ID) {
    return this.simulated.autocomplete(option, typed, { channelId, user: userFor('500000000000000001') });
  }

  /** Clicks a button on the message that a request's token owns, as `userId`. */
  click(
    messageToken: string,
    label: string,
    userId: string,
    permissions = '0',
    channelId = CHANNEL_ID,
  ): Promise<SentInteraction> {
    return this.simulated.click(messageToken, label, { channelId, user: { ...userFor(userId), permissions } });
  }

  /** Sends a signed /generate the way Discord would, and tells the Discord stand-in what was answered. */
  generate(prompt: string, send: SendOptions = {}): Promise<SentInteraction> {
    return this.simulated.generate(prompt, {
      channelId: send.channelId ?? CHANNEL_ID,
      user: { id: send.userId ?? '500000000000000001', username: 'painter' },
      ...(send.options === undefined ? {} : { options: send.options }),
      ...(send.attachments === undefined ? {} : { attachments: send.attachments }),
      ...(send.interaction === undefined ? {} : { interaction: send.interaction }),
    });
  }

  /**
   * With RECORD_HISTORIES=<label>, saves the histories of the workflows this environment ran into
   * test/histories/, where the replay test checks them against the current workflow code.
   */
  async recordHistories(): Promise<void> {
    const label = process.env['RECORD_HISTORIES'];
    if (label === undefined || label === '') {
      return;
    }

    const dir = join(__dirname, '..', 'histories');
    mkdirSync(dir, { recursive: true });
    const seen = new Map<string, number>();
    for await (const execution of this.env.client.workflow.list()) {
      const count = seen.get(execution.workflowId) ?? 0;
      if (count >= 3) {
        continue;
      }

      seen.set(execution.workflowId, count + 1);
      // The CLI writes the proto3 JSON form that the SDK's replayer reads back.
      const json = execFileSync(ensureTemporalCli(), [
        'workflow',
        'show',
        '--address',
        this.env.address,
        '--workflow-id',
        execution.workflowId,
        '--run-id',
        execution.runId,
        '--output',
        'json',
      ]);
      writeFileSync(join(dir, `${label}-${execution.workflowId}-${count}.json`), json);
    }
  }

  async stop(): Promise<void> {
    await this.recordHistories().catch((error: unknown) => console.error('recording histories failed', error));
    await this.#server?.close();
    this.worker?.shutdown();
    await this.#workerRun?.catch(() => undefined);
    await this.discord?.close();
    await this.images?.close();
    if (this.#imageDir !== '') {
      rmSync(this.#imageDir, { recursive: true, force: true });
    }
  }
}

export { ephemeralText, fakeSnowflake, type SentInteraction };

function userFor(id: string): { id: string; username: string } {
  return { id, username: `user-${id.slice(-4)}` };
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
