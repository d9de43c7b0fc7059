import {
  ActivityFailure,
  allHandlersFinished,
  ApplicationFailure,
  condition,
  continueAsNew,
  log,
  proxyActivities,
  setHandler,
  TimeoutFailure,
  workflowInfo,
} from '@temporalio/workflow';

import type { BotActivities, GenerateImageResult } from '../activities';
import type { ImageDetails, RequestStatus } from '../discord/messages';
import {
  enqueueUpdate,
  queueQuery,
  type ChannelQueueSettings,
  type EnqueueResult,
  type GenerateRequest,
  type QueueSnapshot,
} from '../shared';

export interface ChannelQueueInput {
  channelId: string;
  settings: ChannelQueueSettings;
  /** State handed over by the previous run when the workflow continued as new. */
  carried?: CarriedState;
}

interface Job {
  request: GenerateRequest;
  /** The position the user was last shown, so that only changes are sent. */
  shownPosition: number | null;
  shownAt: number;
}

interface CarriedState {
  waiting: Job[];
  recentRequestIds: string[];
  completed: number;
  /** Moving average of generation time per backend, in ms: the basis of the estimated wait. */
  averageDurationMs: Record<string, number>;
}

const RECENT_REQUEST_IDS = 1_000;
const TOKEN_SAFETY_MARGIN_MS = 30_000;
const POSITION_REFRESH_MS = 3_000;
const FAR_POSITION = 10;
const FAR_POSITION_REFRESH_MS = 30_000;

/**
 * One long-lived workflow per Discord channel: it owns the channel's queue, runs each request on the
 * channel's image server and reports every step by editing the request's message.
 */
export async function channelQueueWorkflow(input: ChannelQueueInput): Promise<void> {
  const { channelId, settings } = input;
  const carried = input.carried;
  const waiting: Job[] = carried?.waiting ?? [];
  const recentRequestIds: string[] = carried?.recentRequestIds ?? [];
  const recentSet = new Set(recentRequestIds);
  const averageDurationMs: Record<string, number> = carried?.averageDurationMs ?? {};
  let completed = carried?.completed ?? 0;
  let running: { job: Job; startedAt: number } | null = null;
  // Bumped whenever the queue changes, to wake whoever shows positions.
  let queueVersion = 0;

  // Every edit of one message goes through its own chain, so a late status can never overwrite the image.
  const messageChains = new Map<string, Promise<void>>();

  const discord = proxyActivities<BotActivities>({
    startToCloseTimeout: '30s',
    retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '10s', maximumAttempts: 6 },
  });
  const generator = proxyActivities<BotActivities>({
    startToCloseTimeout: settings.generationTimeoutMs,
    heartbeatTimeout: '30s',
    retry: {
      initialInterval: settings.retryInitialIntervalMs,
      backoffCoefficient: 2,
      maximumAttempts: settings.generationAttempts,
    },
  });

  const activeCountOf = (userId: string): number =>
    waiting.filter((job) => job.request.userId === userId).length + (running?.job.request.userId === userId ? 1 : 0);
  const positionOf = (requestId: string): number => {
    const index = waiting.findIndex((job) => job.request.requestId === requestId);
    return index === -1 ? 0 : index + 1;
  };

  setHandler(
    enqueueUpdate,
    (request): EnqueueResult => {
      if (recentSet.has(request.requestId)) {
        return { status: 'queued', position: positionOf(request.requestId), duplicate: true };
      }

      const active = activeCountOf(request.userId);
      if (active >= settings.maxConcurrentPerUser) {
        return {
          status: 'rejected',
          reason:
            `You already have ${active} request${active === 1 ? '' : 's'} in this channel's queue; ` +
            `the limit is ${settings.maxConcurrentPerUser}. Try again when one has finished.`,
        };
      }

      const job: Job = { request: withResolvedSeed(request), shownPosition: null, shownAt: 0 };
      waiting.push(job);
      queueVersion += 1;
      remember(request.requestId);
      log.info('request queued', { requestId: request.requestId, userId: request.userId, position: waiting.length });
      return { status: 'queued', position: waiting.length, duplicate: false };
    },
    {
      // Runs before anything is written to history: a request whose endpoint already gave up on it
      // (it answered Discord with an error) must not be queued behind the user's back.
      validator: (request) => {
        if (!recentSet.has(request.requestId) && Date.now() > request.acceptBefore) {
          throw new Error('the endpoint stopped waiting for this request');
        }
      },
    },
  );

  setHandler(queueQuery, (): QueueSnapshot => {
    const snapshot: QueueSnapshot = {
      running: [],
      waiting: waiting.map((job, index) => ({
        requestId: job.request.requestId,
        userId: job.request.userId,
        position: index + 1,
      })),
      completed,
    };
    if (running !== null) {
      const { request } = running.job;
      snapshot.running.push({ requestId: request.requestId, userId: request.userId, prompt: request.settings.prompt });
    }

    return snapshot;
  });

  function remember(requestId: string): void {
    recentSet.add(requestId);
    recentRequestIds.push(requestId);
    while (recentRequestIds.length > RECENT_REQUEST_IDS) {
      recentSet.delete(recentRequestIds.shift() as string);
    }
  }

  /** Runs `send` after every earlier edit of the same message; rejects with its failure. */
  function editMessage(request: GenerateRequest, send: () => Promise<void>): Promise<void> {
    const previous = messageChains.get(request.requestId) ?? Promise.resolve();
    const result = previous.then(send);
    messageChains.set(
      request.requestId,
      result.catch(() => undefined),
    );
    return result;
  }

  function showStatus(request: GenerateRequest, status: RequestStatus): Promise<void> {
    if (tokenExpired(request)) {
      return Promise.resolve();
    }

    // Status edits are best effort: a failed one is logged and the request goes on.
    return editMessage(request, () =>
      discord.updateStatus({
        applicationId: request.applicationId,
        interactionToken: request.interactionToken,
        status,
      }),
    ).catch((error: unknown) => {
      log.warn('status edit failed', { requestId: request.requestId, status: status.kind, error: describe(error) });
    });
  }

  function tokenExpired(request: GenerateRequest): boolean {
    return Date.now() > request.receivedAt + settings.interactionTokenLifetimeMs - TOKEN_SAFETY_MARGIN_MS;
  }

  function estimatedWaitMs(position: number, backend: string): number | null {
    const average = averageDurationMs[backend];
    if (average === undefined) {
      return null;
    }

    const runningLeft = running === null ? 0 : Math.max(0, average - (Date.now() - running.startedAt));
    return runningLeft + (position - 1) * average;
  }

  // Keeps queued messages in step with the queue, throttled per message: near the front every few
  // seconds, further back rarely, so that a long queue does not flood Discord. A request that will
  // start at once (nothing running) is not shown as queued at all.
  async function refreshPositions(): Promise<void> {
    for (;;) {
      const now = Date.now();
      let nextDueAt = Number.POSITIVE_INFINITY;
      if (running !== null) {
        waiting.forEach((job, index) => {
          const position = index + 1;
          if (job.shownPosition === position) {
            return;
          }

          const interval = position > FAR_POSITION ? FAR_POSITION_REFRESH_MS : POSITION_REFRESH_MS;
          const dueAt = job.shownPosition === null ? now : job.shownAt + interval;
          if (dueAt > now) {
            nextDueAt = Math.min(nextDueAt, dueAt);
            return;
          }

          job.shownPosition = position;
          job.shownAt = now;
          void showStatus(job.request, {
            kind: 'queued',
            position,
            etaMs: estimatedWaitMs(position, job.request.backend),
            tokenExpiresAt: job.request.receivedAt + settings.interactionTokenLifetimeMs,
          });
        });
      }

      const seen = queueVersion;
      const changed = () => queueVersion !== seen;
      if (nextDueAt === Number.POSITIVE_INFINITY) {
        await condition(changed);
      } else {
        await condition(changed, nextDueAt - now);
      }
    }
  }

  async function runJob(job: Job): Promise<void> {
    const { request } = job;
    const statusShown = showStatus(request, {
      kind: 'generating',
      settings: request.settings,
      backend: request.backend,
    });

    let result: GenerateImageResult;
    try {
      result = await generator.generateImage({
        requestId: request.requestId,
        backend: request.backend,
        settings: request.settings,
      });
    } catch (error) {
      log.warn('generation failed', { requestId: request.requestId, error: describe(error) });
      await statusShown;
      await showStatus(request, {
        kind: 'failed',
        reason: `The image server could not make this image after ${settings.generationAttempts} attempts: ${describe(error)}`,
        settings: request.settings,
      });
      return;
    }

    const previous = averageDurationMs[request.backend];
    averageDurationMs[request.backend] =
      previous === undefined ? result.durationMs : Math.round(previous * 0.7 + result.durationMs * 0.3);

    await statusShown;
    await deliver(request, result);
  }

  async function deliver(request: GenerateRequest, result: GenerateImageResult): Promise<void> {
    const details: ImageDetails = {
      settings: { ...request.settings, seed: result.seed },
      seed: result.seed,
      model: result.model,
      durationMs: result.durationMs,
      filename: `sd-${result.seed}.png`,
      userId: request.userId,
    };
    const onWorker = proxyActivities<BotActivities>({
      taskQueue: result.deliveryTaskQueue,
      // If the worker holding the PNG is gone, nobody picks this up; fall back to generating again.
      scheduleToStartTimeout: '1m',
      startToCloseTimeout: '1m',
      retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '10s', maximumAttempts: 6 },
    });

    if (!tokenExpired(request)) {
      try {
        await editMessage(request, () =>
          onWorker.deliverImage({
            applicationId: request.applicationId,
            interactionToken: request.interactionToken,
            imageKey: result.imageKey,
            details,
          }),
        );
        completed += 1;
        return;
      } catch (error) {
        if (!isFailureType(error, 'INTERACTION_TOKEN_EXPIRED')) {
          log.error('image undeliverable', { requestId: request.requestId, error: describe(error) });
          return;
        }
      }
    }

    try {
      await onWorker.postImageInChannel({
        channelId: request.channelId,
        imageKey: result.imageKey,
        details,
        nonce: request.requestId.slice(0, 25),
      });
      completed += 1;
    } catch (error) {
      log.error('image undeliverable', {
        requestId: request.requestId,
        reason: 'interaction token expired',
        error: describe(error),
      });
    }
  }

  void refreshPositions();

  for (;;) {
    const hasWork = await condition(() => waiting.length > 0, settings.idleTimeoutMs);
    if (!hasWork) {
      await condition(allHandlersFinished);
      if (waiting.length === 0) {
        log.info('channel idle, ending', { channelId });
        return;
      }
    }

    if (workflowInfo().continueAsNewSuggested) {
      await condition(allHandlersFinished);
      await Promise.all(messageChains.values());
      log.info('continuing as new', { channelId, waiting: waiting.length, history: workflowInfo().historyLength });
      await continueAsNew<typeof channelQueueWorkflow>({
        channelId,
        settings,
        carried: { waiting, recentRequestIds, completed, averageDurationMs },
      });
    }

    const job = waiting.shift() as Job;
    running = { job, startedAt: Date.now() };
    queueVersion += 1;
    await runJob(job);
    running = null;
    queueVersion += 1;
    messageChains.delete(job.request.requestId);
  }
}

function withResolvedSeed(request: GenerateRequest): GenerateRequest {
  if (request.settings.seed >= 0) {
    return request;
  }

  // Workflow Math.random is deterministic, so replays and retries draw the same seed.
  const seed = Math.floor(Math.random() * 4_294_967_296);
  return { ...request, settings: { ...request.settings, seed } };
}

function describe(error: unknown): string {
  let current: unknown = error;
  while (current instanceof ActivityFailure && current.cause !== undefined) {
    current = current.cause;
  }

  if (current instanceof TimeoutFailure) {
    return `timed out (${current.timeoutType})`;
  }

  return current instanceof Error ? current.message : String(current);
}

function isFailureType(error: unknown, type: string): boolean {
  const cause = error instanceof ActivityFailure ? error.cause : error;
  return cause instanceof ApplicationFailure && cause.type === type;
}
