import {
  ActivityCancellationType,
  ActivityFailure,
  allHandlersFinished,
  ApplicationFailure,
  CancellationScope,
  condition,
  continueAsNew,
  getExternalWorkflowHandle,
  isCancellation,
  log,
  proxyActivities,
  setHandler,
  sleep,
  TimeoutFailure,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';

import { TimeoutType } from '@temporalio/common';

import type { BotActivities, GenerateImageResult } from '../activities';
import type { ImageDetails, RequestStatus } from '../discord/messages';
import {
  cancelUpdate,
  enqueueUpdate,
  IMAGE_SERVERS_WORKFLOW_ID,
  leaseGrantedSignal,
  queueQuery,
  releaseLeaseSignal,
  SEARCH_ATTRIBUTES,
  type CancelResult,
  type ChannelQueueSettings,
  type EnqueueResult,
  type GenerateRequest,
  type LeaseRelease,
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
  /** Times the image was generated but could not be handed to the worker holding it. */
  regenerations: number;
}

interface RunningJob {
  job: Job;
  startedAt: number;
  scope: CancellationScope;
  cancelledBy: string | null;
}

interface CarriedState {
  waiting: Job[];
  recentRequestIds: string[];
  completed: number;
  /** Moving average of generation time per backend, in ms: the basis of the estimated wait. */
  averageDurationMs: Record<string, number>;
  undeliverable: QueueSnapshot['undeliverable'];
}

const RECENT_REQUEST_IDS = 1_000;
const ACCEPT_MARGIN_MS = 500;
/** How long to wait for a lease grant before asking again (the image-servers workflow may have restarted). */
const LEASE_REASK_MS = 60_000;
/** A head request not granted a slot within this long is shown as queued. */
const HEAD_QUEUED_AFTER_MS = 1_000;
const UNDELIVERABLE_KEPT = 50;
const MAX_REGENERATIONS = 2;
const POSITION_REFRESH_MS = 3_000;
const FAR_POSITION = 10;
const FAR_POSITION_REFRESH_MS = 30_000;
/** Our own bound on history, below Temporal's, in case the server never suggests continuing as new. */
const MAX_HISTORY_EVENTS = 10_000;

/**
 * One long-lived workflow per Discord channel: it owns the channel's queue, runs each request on the
 * channel's image servers (as many at once as the image-servers workflow grants) and reports every
 * step by editing the request's message. Status edits and deliveries run alongside generation, so the
 * next job starts the moment a slot is free.
 */
export async function channelQueueWorkflow(input: ChannelQueueInput): Promise<void> {
  const { channelId } = input;
  // The newest settings win: each request carries the endpoint's current config.
  let settings = input.settings;
  const carried = input.carried;
  const waiting: Job[] = carried?.waiting ?? [];
  const recentRequestIds: string[] = carried?.recentRequestIds ?? [];
  const recentSet = new Set(recentRequestIds);
  const averageDurationMs: Record<string, number> = carried?.averageDurationMs ?? {};
  const undeliverable: QueueSnapshot['undeliverable'] = carried?.undeliverable ?? [];
  let completed = carried?.completed ?? 0;
  const running = new Map<string, RunningJob>();
  const inFlight = new Set<Promise<void>>();
  /** Lease id -> the server it was granted on. */
  const grantedLeases = new Map<string, string>();
  /** Lease ids asked for and not yet granted or withdrawn. */
  const pendingLeases = new Set<string>();
  /** When the request at the head of the queue started waiting for a slot, or null. */
  let headWaitingSince: number | null = null;
  // Bumped whenever the queue changes, to wake whoever shows positions.
  let queueVersion = 0;
  // The SdUserIds search attribute as last written, to write it only when it changes.
  let shownUsers = '';
  // Every edit of one message goes through its own chain, so a late status can never overwrite the image.
  const messageChains = new Map<string, Promise<void>>();
  const tokenMarginMs = () => Math.min(30_000, settings.interactionTokenLifetimeMs / 5);

  // Short, so that an edit lost with a dead worker holds up the message's later edits only briefly.
  const discord = proxyActivities<BotActivities>({
    startToCloseTimeout: '15s',
    retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '10s', maximumAttempts: 6 },
  });
  const leases = proxyActivities<BotActivities>({
    startToCloseTimeout: '30s',
    retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '30s' },
  });
  // One attempt per activity: retries are the workflow's, through the scheduler, so that a failed
  // attempt can move to another server and a failing server is taken out of rotation.
  const generator = () =>
    proxyActivities<BotActivities>({
      startToCloseTimeout: settings.generationTimeoutMs,
      heartbeatTimeout: settings.heartbeatTimeoutMs,
      // A cancelled generation must have stopped on the server before its slot is given to the next job.
      cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
      retry: { maximumAttempts: 1 },
    });

  const activeCountOf = (userId: string): number =>
    waiting.filter((job) => job.request.userId === userId).length +
    [...running.values()].filter((run) => run.job.request.userId === userId).length;
  const positionOf = (requestId: string): number => waiting.findIndex((job) => job.request.requestId === requestId) + 1;

  setHandler(
    enqueueUpdate,
    (request): EnqueueResult => {
      if (recentSet.has(request.requestId)) {
        return { status: 'queued', position: positionOf(request.requestId), duplicate: true };
      }

      if (request.queueSettings !== undefined) {
        settings = request.queueSettings;
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

      waiting.push({ request: withResolvedSeed(request), shownPosition: null, shownAt: 0, regenerations: 0 });
      remember(request.requestId);
      queueChanged();
      log.info('request queued', { requestId: request.requestId, userId: request.userId, position: waiting.length });
      return { status: 'queued', position: waiting.length, duplicate: false };
    },
    {
      // Runs before anything is written to history: a request whose endpoint already gave up on it
      // (it answered Discord with an error) must not be queued behind the user's back.
      validator: (request) => {
        // A margin below the endpoint's deadline leaves time for the acceptance to travel back to it.
        if (!recentSet.has(request.requestId) && Date.now() > request.acceptBefore - ACCEPT_MARGIN_MS) {
          throw new Error('the endpoint stopped waiting for this request');
        }
      },
    },
  );

  setHandler(cancelUpdate, (cancel): CancelResult => {
    const index = waiting.findIndex((job) => job.request.requestId === cancel.requestId);
    const job = index === -1 ? running.get(cancel.requestId)?.job : waiting[index];
    if (job === undefined) {
      return { status: 'not-found' };
    }

    if (job.request.userId !== cancel.userId && !cancel.canManageMessages) {
      return { status: 'forbidden' };
    }

    log.info('request cancelled', { requestId: cancel.requestId, by: cancel.userId });
    const run = running.get(cancel.requestId);
    if (run !== undefined) {
      run.cancelledBy = cancel.userId;
      run.scope.cancel();
      return { status: 'cancelled', wasRunning: true };
    }

    waiting.splice(index, 1);
    queueChanged();
    void showStatus(job.request, {
      kind: 'cancelled',
      requestId: job.request.requestId,
      byUserId: cancel.userId,
      settings: job.request.settings,
    });
    return { status: 'cancelled', wasRunning: false };
  });

  setHandler(leaseGrantedSignal, ({ leaseId, server }) => {
    if (pendingLeases.has(leaseId)) {
      grantedLeases.set(leaseId, server);
    } else {
      // A grant for a request we already withdrew (or a duplicate): give the slot straight back.
      releaseLease(leaseId, 'withdrawn');
    }
  });

  setHandler(queueQuery, (): QueueSnapshot => {
    const head = waiting[0];
    return {
      running: [...running.values()].map((run) => ({
        requestId: run.job.request.requestId,
        userId: run.job.request.userId,
        prompt: run.job.request.settings.prompt,
        startedAt: run.startedAt,
      })),
      waiting: waiting.map((job, index) => ({
        requestId: job.request.requestId,
        userId: job.request.userId,
        position: index + 1,
      })),
      completed,
      undeliverable: [...undeliverable],
      etaMs: head === undefined ? null : estimatedWaitMs(1, head.request),
    };
  });

  function remember(requestId: string): void {
    recentSet.add(requestId);
    recentRequestIds.push(requestId);
    while (recentRequestIds.length > RECENT_REQUEST_IDS) {
      recentSet.delete(recentRequestIds.shift() as string);
    }
  }

  function queueChanged(): void {
    queueVersion += 1;
    if (!settings.searchAttributes) {
      return;
    }

    const users = [
      ...new Set([...waiting, ...[...running.values()].map((run) => run.job)].map((job) => job.request.userId)),
    ].sort();
    if (users.join(',') !== shownUsers) {
      shownUsers = users.join(',');
      upsertSearchAttributes([{ key: SEARCH_ATTRIBUTES.userIds, value: users }]);
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
    return Date.now() > request.receivedAt + settings.interactionTokenLifetimeMs - tokenMarginMs();
  }

  function estimatedWaitMs(position: number, request: GenerateRequest): number | null {
    const average = averageDurationMs[poolKey(request)];
    if (average === undefined) {
      return null;
    }

    const capacity = Math.max(
      1,
      request.pool.reduce((sum, member) => sum + member.capacity, 0),
    );
    const elapsed = [...running.values()].map((run) => Date.now() - run.startedAt);
    const soonestLeft = elapsed.length === 0 ? 0 : Math.max(0, average - Math.max(...elapsed));
    return soonestLeft + Math.floor((position - 1) / capacity) * average;
  }

  // Keeps queued messages in step with the queue, throttled per message: near the front every few
  // seconds, further back rarely, so that a long queue does not flood Discord. A request that will
  // start at once (nothing running) is not shown as queued at all.
  async function refreshPositions(): Promise<void> {
    for (;;) {
      const now = Date.now();
      let nextDueAt = Number.POSITIVE_INFINITY;
      // Someone is ahead whenever a job runs here, or the head has waited for a slot (another channel holds it).
      const headBlocked = headWaitingSince !== null && now - headWaitingSince >= HEAD_QUEUED_AFTER_MS;
      if (headWaitingSince !== null && !headBlocked) {
        nextDueAt = headWaitingSince + HEAD_QUEUED_AFTER_MS;
      }

      if (running.size > 0 || headBlocked) {
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
          const etaMs = estimatedWaitMs(position, job.request);
          const tokenLeftMs = job.request.receivedAt + settings.interactionTokenLifetimeMs - now;
          void showStatus(job.request, {
            kind: 'queued',
            requestId: job.request.requestId,
            position,
            etaMs,
            tokenLifetimeMs: settings.interactionTokenLifetimeMs,
            mayOutlastToken: etaMs !== null && etaMs + (averageDurationMs[poolKey(job.request)] ?? 0) > tokenLeftMs,
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

  /**
   * Asks the image-servers workflow for a slot on one of the job's servers and waits for the grant.
   * Returns the granted server, or null when `abandon()` became true first (the job was cancelled).
   */
  async function acquireLease(
    request: GenerateRequest,
    leaseId: string,
    options: { priority: boolean; avoid: string | null },
    abandon: () => boolean,
  ): Promise<string | null> {
    pendingLeases.add(leaseId);
    const ask = () =>
      leases.requestLease({
        leaseId,
        holderWorkflowId: workflowInfo().workflowId,
        pool: request.pool,
        priority: options.priority,
        avoid: options.avoid,
      });
    await ask();
    // Asking again is harmless (the scheduler knows the lease id) and recovers from a scheduler restart.
    while (!(await condition(() => grantedLeases.has(leaseId) || abandon(), LEASE_REASK_MS))) {
      await ask();
    }

    pendingLeases.delete(leaseId);
    const server = grantedLeases.get(leaseId);
    if (server === undefined || abandon()) {
      releaseLease(leaseId, 'withdrawn');
      return null;
    }

    return server;
  }

  function releaseLease(leaseId: string, outcome: LeaseRelease['outcome']): void {
    grantedLeases.delete(leaseId);
    getExternalWorkflowHandle(IMAGE_SERVERS_WORKFLOW_ID)
      .signal(releaseLeaseSignal, { leaseId, outcome })
      .catch((error: unknown) => log.warn('lease release failed', { leaseId, error: describe(error) }));
  }

  /**
   * Generates the job's image, moving to another server of the pool when one fails (with backoff),
   * then delivers it. One attempt at a time: a job never runs on two servers at once.
   */
  async function runJob(job: Job, firstServer: string, firstLeaseId: string): Promise<void> {
    const { request } = job;
    const run: RunningJob = { job, startedAt: Date.now(), scope: new CancellationScope(), cancelledBy: null };
    running.set(request.requestId, run);
    queueChanged();
    const statusShown = showStatus(request, {
      kind: 'generating',
      requestId: request.requestId,
      settings: request.settings,
    });

    let server: string | null = firstServer;
    let leaseId = firstLeaseId;
    let result: GenerateImageResult | undefined;
    let failure: unknown;
    try {
      for (let attempt = 1; server !== null; attempt += 1) {
        try {
          const attemptServer: string = server;
          result = await run.scope.run(() =>
            generator().generateImage({
              requestId: request.requestId,
              server: attemptServer,
              settings: request.settings,
              progressMessage: tokenExpired(request)
                ? null
                : {
                    applicationId: request.applicationId,
                    interactionToken: request.interactionToken,
                    editUntil: request.receivedAt + settings.interactionTokenLifetimeMs - tokenMarginMs(),
                  },
            }),
          );
          releaseLease(leaseId, 'ok');
          break;
        } catch (error) {
          failure = error;
          const retryable = isWorkerLost(error) || (!isCancellation(error) && !isRefusal(error));
          const serverAtFault = retryable && !isWorkerLost(error) && !isFailureType(error, 'INIT_IMAGE_UNAVAILABLE');
          releaseLease(
            leaseId,
            !serverAtFault ? 'ok' : isFailureType(error, 'IMAGE_SERVER_UNREACHABLE') ? 'unreachable' : 'failed',
          );
          if (!retryable || attempt >= settings.generationAttempts) {
            break;
          }

          log.warn('generation attempt failed', {
            requestId: request.requestId,
            server,
            attempt,
            error: describe(error),
          });
          const failedServer: string = server;
          try {
            await run.scope.run(() => sleep(settings.retryInitialIntervalMs * 2 ** (attempt - 1)));
          } catch (cancelled) {
            failure = cancelled;
            break;
          }

          // A retry goes ahead of new requests, and to another server of the pool if one is free.
          leaseId = leaseIdFor(job, attempt + 1);
          server = await acquireLease(
            request,
            leaseId,
            { priority: true, avoid: failedServer },
            () => run.cancelledBy !== null,
          );
        }
      }
    } finally {
      running.delete(request.requestId);
      queueChanged();
    }

    if (result === undefined) {
      await statusShown;
      if (run.cancelledBy !== null || isCancellation(failure)) {
        await showStatus(request, {
          kind: 'cancelled',
          requestId: request.requestId,
          byUserId: run.cancelledBy ?? request.userId,
          settings: request.settings,
        });
      } else {
        log.warn('generation failed', { requestId: request.requestId, error: describe(failure) });
        await showStatus(request, {
          kind: 'failed',
          requestId: request.requestId,
          reason: isRefusal(failure)
            ? `The image server refused this request: ${describe(failure)}`
            : `The image server could not make this image after ${settings.generationAttempts} attempts: ${describe(failure)}`,
          settings: request.settings,
        });
      }

      return;
    }

    const key = poolKey(request);
    const previous = averageDurationMs[key];
    averageDurationMs[key] =
      previous === undefined ? result.durationMs : Math.round(previous * 0.7 + result.durationMs * 0.3);

    await statusShown;
    await deliver(job, result);
  }

  async function deliver(job: Job, result: GenerateImageResult): Promise<void> {
    const { request } = job;
    const details: ImageDetails = {
      requestId: request.requestId,
      settings: { ...request.settings, seed: result.seed },
      seed: result.seed,
      model: result.model,
      durationMs: result.durationMs,
      filename: `sd-${result.seed}.png`,
      userId: request.userId,
    };
    const onWorker = proxyActivities<BotActivities>({
      taskQueue: result.deliveryTaskQueue,
      // If the worker holding the PNG is gone, nobody picks this up: generate it again (same seed).
      scheduleToStartTimeout: '1m',
      startToCloseTimeout: '1m',
      retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '10s', maximumAttempts: 6 },
    });

    try {
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
            throw error;
          }
        }
      }

      // Past the token's lifetime: a new channel message through the bot token, mentioning the requester.
      await onWorker.postImageInChannel({
        channelId: request.channelId,
        imageKey: result.imageKey,
        details,
        nonce: request.requestId.slice(0, 25),
      });
      completed += 1;
    } catch (error) {
      if (isImageLost(error) && job.regenerations < MAX_REGENERATIONS) {
        log.warn('image lost with its worker, generating it again', { requestId: request.requestId });
        job.regenerations += 1;
        waiting.unshift(job);
        queueChanged();
        return;
      }

      const reason = describe(error);
      log.error('image undeliverable', { requestId: request.requestId, userId: request.userId, reason });
      void showStatus(request, {
        kind: 'failed',
        requestId: request.requestId,
        reason: `The image was made, but Discord did not accept it: ${reason}`,
        settings: request.settings,
      });
      undeliverable.push({ requestId: request.requestId, userId: request.userId, reason });
      undeliverable.splice(0, Math.max(0, undeliverable.length - UNDELIVERABLE_KEPT));
    } finally {
      messageChains.delete(request.requestId);
    }
  }

  const shouldContinueAsNew = () =>
    workflowInfo().continueAsNewSuggested || workflowInfo().historyLength > MAX_HISTORY_EVENTS;

  void refreshPositions();
  if (settings.searchAttributes) {
    queueChanged();
  }

  for (;;) {
    const hasWork = await condition(() => waiting.length > 0, settings.idleTimeoutMs);
    if (!hasWork) {
      if (inFlight.size > 0) {
        continue;
      }

      await condition(allHandlersFinished);
      if (waiting.length === 0 && inFlight.size === 0) {
        log.info('channel idle, ending', { channelId });
        return;
      }
    }

    if (shouldContinueAsNew()) {
      // Jobs in flight belong to this run: let them finish, then hand the waiting ones over.
      await condition(() => inFlight.size === 0);
      await condition(allHandlersFinished);
      await Promise.all(messageChains.values());
      log.info('continuing as new', { channelId, waiting: waiting.length, history: workflowInfo().historyLength });
      await continueAsNew<typeof channelQueueWorkflow>({
        channelId,
        settings,
        carried: { waiting, recentRequestIds, completed, averageDurationMs, undeliverable },
      });
    }

    const job = waiting[0] as Job;
    const leaseId = leaseIdFor(job, 1);
    headWaitingSince = Date.now();
    queueVersion += 1;
    const server = await acquireLease(job.request, leaseId, { priority: false, avoid: null }, () => waiting[0] !== job);
    headWaitingSince = null;
    if (server === null) {
      continue;
    }

    // runJob marks the job running (and the queue changed) before its first await.
    waiting.shift();
    const task: Promise<void> = runJob(job, server, leaseId).finally(() => {
      inFlight.delete(task);
    });
    inFlight.add(task);
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

/** The worker running the attempt died or was shut down: not the server's fault, and worth a retry. */
function isWorkerLost(error: unknown): boolean {
  const cause = error instanceof ActivityFailure ? error.cause : error;
  return (
    (cause instanceof TimeoutFailure && cause.timeoutType === TimeoutType.HEARTBEAT) ||
    isFailureType(error, 'WorkerShutdown')
  );
}

/** The worker holding the PNG is gone (nobody picked up the delivery) or no longer has it. */
function isImageLost(error: unknown): boolean {
  const cause = error instanceof ActivityFailure ? error.cause : error;
  return (
    isFailureType(error, 'IMAGE_MISSING') ||
    (cause instanceof TimeoutFailure && cause.timeoutType === TimeoutType.SCHEDULE_TO_START)
  );
}

function isRefusal(error: unknown): boolean {
  const cause = error instanceof ActivityFailure ? error.cause : error;
  return cause instanceof ApplicationFailure && cause.nonRetryable === true;
}

/** Jobs on the same set of servers share one measured average. */
function poolKey(request: GenerateRequest): string {
  return request.pool.map((member) => member.name).join('+');
}

/** Unique per job, regeneration and attempt, so a late grant or release can never touch another lease. */
function leaseIdFor(job: Job, attempt: number): string {
  return `${job.request.requestId}:${job.regenerations}:${attempt}`;
}
