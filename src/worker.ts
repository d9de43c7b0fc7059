import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';

import { NativeConnection, Worker, type WorkerOptions } from '@temporalio/worker';

import { createActivities } from './activities';
import type { BotConfig } from './config';
import type { DiscordOutput } from './discord/discord-output';
import type { ImageStore } from './image-store';
import type { Logger } from './logger';
import { TASK_QUEUE } from './shared';
import type { TokenSealer } from './token-seal';

export interface BotWorkerOptions {
  connection: NativeConnection;
  namespace: string;
  config: BotConfig;
  discord: DiscordOutput;
  imageStore: ImageStore;
  logger: Logger;
  /** A prebuilt workflow bundle (tests build it once); otherwise the workflows are bundled at start. */
  workflowBundle?: WorkerOptions['workflowBundle'];
  /** How often a running generation heartbeats, in ms. */
  heartbeatIntervalMs?: number;
  /** How often a running generation's message shows progress, in ms (default 2500). */
  progressEditIntervalMs?: number;
  /** Opens interaction tokens the endpoint sealed; the same TOKEN_SEAL_KEY as the endpoint. */
  tokenSealer?: TokenSealer | undefined;
  /** How long a stopping worker lets running generations finish, in ms. Default: the generation timeout. */
  shutdownGraceTimeMs?: number;
  /** After the generations drained, how long the worker's own queue still takes deliveries, in ms. Default 5000. */
  deliveryDrainMs?: number;
}

/**
 * One bot worker process: a worker on the shared task queue (channel workflows and generation) plus
 * one on a queue of its own, to which deliveries of the images it generated are routed.
 */
export class BotWorker {
  readonly #shared: Worker;
  readonly #own: Worker;
  readonly #deliveryDrainMs: number;
  #sharedRun: Promise<void> | undefined;

  private constructor(shared: Worker, own: Worker, deliveryDrainMs: number) {
    this.#shared = shared;
    this.#own = own;
    this.#deliveryDrainMs = deliveryDrainMs;
  }

  static async create(options: BotWorkerOptions): Promise<BotWorker> {
    const workerTaskQueue = `${TASK_QUEUE}/worker/${hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`;
    const activities = createActivities({
      config: options.config,
      discord: options.discord,
      imageStore: options.imageStore,
      logger: options.logger,
      workerTaskQueue,
      tokenSealer: options.tokenSealer,
      ...(options.heartbeatIntervalMs === undefined ? {} : { heartbeatIntervalMs: options.heartbeatIntervalMs }),
      ...(options.progressEditIntervalMs === undefined
        ? {}
        : { progressEditIntervalMs: options.progressEditIntervalMs }),
    });
    const workflowSource =
      options.workflowBundle === undefined
        ? { workflowsPath: require.resolve('./workflows') }
        : { workflowBundle: options.workflowBundle };

    const shared = await Worker.create({
      connection: options.connection,
      namespace: options.namespace,
      taskQueue: TASK_QUEUE,
      activities,
      ...workflowSource,
      // Cancel reaches a running generation only through a heartbeat that reaches the server; keep it prompt.
      maxHeartbeatThrottleInterval: '1s',
      defaultHeartbeatThrottleInterval: '1s',
      // A stopping worker finishes the generations it runs instead of wasting them (and the GPU time).
      shutdownGraceTime: options.shutdownGraceTimeMs ?? options.config.queue.generationTimeoutMs,
    });
    const own = await Worker.create({
      connection: options.connection,
      namespace: options.namespace,
      taskQueue: workerTaskQueue,
      activities,
    });
    options.logger.info({ taskQueue: TASK_QUEUE, workerTaskQueue }, 'worker ready');
    return new BotWorker(shared, own, options.deliveryDrainMs ?? 5_000);
  }

  /** Polls until {@link shutdown} is called; resolves once both workers have drained. */
  async run(): Promise<void> {
    this.#sharedRun = this.#shared.run();
    await Promise.all([this.#sharedRun, this.#own.run()]);
  }

  /**
   * Stops taking new work. Running generations finish (up to the grace time), and this worker's own
   * queue keeps delivering the images they produce for a few seconds more before it stops too.
   */
  shutdown(): void {
    if (this.#shared.getState() === 'RUNNING') {
      this.#shared.shutdown();
    }

    const stopOwn = () => {
      if (this.#own.getState() === 'RUNNING') {
        this.#own.shutdown();
      }
    };
    void (this.#sharedRun ?? Promise.resolve())
      .catch(() => undefined)
      .then(() => new Promise((resolve) => setTimeout(resolve, this.#deliveryDrainMs)))
      .then(stopOwn);
  }
}
