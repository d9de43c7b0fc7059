import { activityInfo, CancelledFailure, Context } from '@temporalio/activity';
import { WorkflowNotFoundError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';

import { ImageServerError } from './backends/a1111';
import { createBackend } from './backends/create-backend';
import type { GenerationProgress, GenerationRequest } from './backends/image-backend';
import { DEFAULT_INIT_IMAGE_POLICY, fetchInitImage, InitImageError } from './backends/init-image';
import type { BackendConfig, BotConfig } from './config';
import { DiscordOutputError, type DiscordOutput } from './discord/discord-output';
import {
  renderImageEmbed,
  renderImageMessage,
  renderProgress,
  renderStatus,
  type ImageDetails,
  type RequestStatus,
} from './discord/messages';
import type { ImageStore } from './image-store';
import { TokenSealer } from './token-seal';
import type { Logger } from './logger';
import {
  acquireLeaseSignal,
  IMAGE_SERVERS_WORKFLOW_ID,
  TASK_QUEUE,
  type GenerationSettings,
  type LeaseRequest,
} from './shared';
import type { imageServersWorkflow } from './workflows/image-servers';

/** Failure types the workflow tells apart; stable, they appear in the Temporal UI. */
export const FailureType = {
  imageServerRejected: 'IMAGE_SERVER_REJECTED',
  imageServerFailed: 'IMAGE_SERVER_FAILED',
  imageServerUnreachable: 'IMAGE_SERVER_UNREACHABLE',
  unknownBackend: 'UNKNOWN_BACKEND',
  imageMissing: 'IMAGE_MISSING',
  initImageRefused: 'INIT_IMAGE_REFUSED',
  initImageUnavailable: 'INIT_IMAGE_UNAVAILABLE',
  tokenExpired: 'INTERACTION_TOKEN_EXPIRED',
  discordRejected: 'DISCORD_REJECTED',
  discordUnavailable: 'DISCORD_UNAVAILABLE',
  noBotToken: 'NO_BOT_TOKEN',
  tokenSealKey: 'TOKEN_SEAL_KEY_MISMATCH',
} as const;

export interface ActivityDependencies {
  config: BotConfig;
  discord: DiscordOutput;
  imageStore: ImageStore;
  logger: Logger;
  /** This worker's own task queue: delivery of an image it generated is routed back to it. */
  workerTaskQueue: string;
  /** How often a running generation reports progress to Temporal, in ms. */
  heartbeatIntervalMs?: number;
  /** How often the request's message shows generation progress, in ms. Default 2500. */
  progressEditIntervalMs?: number;
  /** Opens interaction tokens sealed by the endpoint (TOKEN_SEAL_KEY). */
  tokenSealer?: TokenSealer | undefined;
}

export interface GenerateImageInput {
  requestId: string;
  /** The image server the scheduler granted this attempt. */
  server: string;
  settings: GenerationSettings;
  /** Where to show live progress, or null to show none. */
  progressMessage: (MessageTarget & { editUntil: number }) | null;
}

export interface GenerateImageResult {
  imageKey: string;
  seed: number;
  model: string | null;
  durationMs: number;
  /** The task queue of the worker holding the PNG; deliver it there. */
  deliveryTaskQueue: string;
}

export interface MessageTarget {
  applicationId: string;
  interactionToken: string;
}

export interface DeliverImageInput extends MessageTarget {
  imageKey: string;
  details: ImageDetails;
}

export interface PostImageInput {
  channelId: string;
  imageKey: string;
  details: ImageDetails;
  /** Makes a repeated post a no-op on Discord's side. At most 25 characters. */
  nonce: string;
}

/** Builds the activities with their dependencies; the workflow imports only their types. */
export function createActivities(deps: ActivityDependencies) {
  const heartbeatIntervalMs = deps.heartbeatIntervalMs ?? 2_000;
  const progressEditIntervalMs = deps.progressEditIntervalMs ?? 2_500;

  return {
    /**
     * Runs one generation on the request's image server and keeps the PNG in this worker's store.
     * Heartbeats while the server works, so a long job is never timed out and run twice, while a
     * dead worker's job is noticed within the heartbeat timeout and taken up again.
     */
    async generateImage(input: GenerateImageInput): Promise<GenerateImageResult> {
      const backendConfig = configuredServer(deps, input.server);

      const backend = createBackend(backendConfig);
      const context = Context.current();
      const startedAt = Date.now();
      const progressEdits = new ProgressEditor(deps, input, progressEditIntervalMs);
      let latest: GenerationProgress | null = null;
      context.heartbeat({ fraction: 0 });
      // Heartbeats go on even when the server reports nothing, so a live worker is never taken for dead.
      const heartbeat = setInterval(() => {
        context.heartbeat({
          fraction: latest?.fraction ?? null,
          step: latest?.step ?? null,
          steps: latest?.steps ?? null,
        });
      }, heartbeatIntervalMs);

      // Cancel (the button) reaches this activity through its heartbeats; stop the server's work too.
      let interrupted: Promise<void> = Promise.resolve();
      const onCancel = () => {
        interrupted = backend.interrupt().catch(() => undefined);
      };
      context.cancellationSignal.addEventListener('abort', onCancel, { once: true });

      try {
        const request = await buildGenerationRequest(
          deps.config,
          backendConfig,
          input.settings,
          context.cancellationSignal,
        );
        const image = await backend.generate(request, {
          signal: context.cancellationSignal,
          progressIntervalMs: Math.min(1_000, heartbeatIntervalMs),
          onProgress: (progress) => {
            latest = progress;
            progressEdits.offer(progress);
          },
        });
        await progressEdits.close();
        await deps.imageStore.put(input.requestId, image.png);
        const durationMs = Date.now() - startedAt;
        deps.logger.info(
          { requestId: input.requestId, server: input.server, durationMs, attempt: activityInfo().attempt },
          'image generated',
        );
        return {
          imageKey: input.requestId,
          seed: image.seed,
          model: image.model,
          durationMs,
          deliveryTaskQueue: deps.workerTaskQueue,
        };
      } catch (error) {
        await progressEdits.close();
        if (context.cancellationSignal.aborted) {
          // The slot goes to the next job only once the server has really stopped this one.
          await interrupted;
          throw new CancelledFailure('generation cancelled; the image server was interrupted');
        }

        throw toGenerationFailure(error);
      } finally {
        clearInterval(heartbeat);
        context.cancellationSignal.removeEventListener('abort', onCancel);
      }
    },

    /** Succeeds when the image server answers; the scheduler uses it to bring a server back. */
    async probeImageServer(server: string): Promise<void> {
      await createBackend(configuredServer(deps, server)).ping();
    },

    /**
     * Which of these workflows are no longer running (terminated, failed, or gone). The image-servers
     * workflow uses it to take back slots held by channel workflows that an operator terminated.
     */
    async findClosedWorkflows(workflowIds: string[]): Promise<string[]> {
      const { client } = Context.current();
      const closed: string[] = [];
      for (const workflowId of workflowIds) {
        try {
          const description = await client.workflow.getHandle(workflowId).describe();
          if (description.status.name !== 'RUNNING') {
            closed.push(workflowId);
          }
        } catch (error) {
          if (error instanceof WorkflowNotFoundError) {
            closed.push(workflowId);
          } else {
            throw error;
          }
        }
      }

      return closed;
    },

    /**
     * Asks the image-servers workflow for a slot, starting that workflow if it is not running.
     * The grant arrives later as a signal to the asking channel workflow.
     */
    async requestLease(lease: LeaseRequest): Promise<void> {
      await Context.current().client.workflow.signalWithStart<typeof imageServersWorkflow, [LeaseRequest]>(
        'imageServersWorkflow',
        {
          workflowId: IMAGE_SERVERS_WORKFLOW_ID,
          taskQueue: TASK_QUEUE,
          args: [{}],
          signal: acquireLeaseSignal,
          signalArgs: [lease],
        },
      );
    },

    /** Shows a request's status by editing its original response. */
    async updateStatus(input: MessageTarget & { status: RequestStatus }): Promise<void> {
      try {
        await deps.discord.editOriginal(
          input.applicationId,
          openToken(deps, input.interactionToken),
          renderStatus(input.status),
        );
      } catch (error) {
        throw toDiscordFailure(error);
      }
    },

    /** Replaces the original response with the image and its embed. Runs on the worker that holds the PNG. */
    async deliverImage(input: DeliverImageInput): Promise<void> {
      const png = await storedImage(deps, input.imageKey);

      try {
        await deps.discord.editOriginal(
          input.applicationId,
          openToken(deps, input.interactionToken),
          renderImageMessage(input.details),
          [{ name: input.details.filename, data: png, contentType: 'image/png' }],
        );
      } catch (error) {
        throw toDiscordFailure(error);
      }

      await deps.imageStore.delete(input.imageKey);
    },

    /** Delivers an image as a new channel message with the bot token, for requests whose token has expired. */
    async postImageInChannel(input: PostImageInput): Promise<void> {
      if (!deps.discord.hasBotToken) {
        throw ApplicationFailure.nonRetryable('no bot token is configured (DISCORD_TOKEN)', FailureType.noBotToken);
      }

      const png = await storedImage(deps, input.imageKey);

      try {
        await deps.discord.postInChannel(
          input.channelId,
          {
            content: `<@${input.details.userId}> your image is ready.`,
            embeds: [renderImageEmbed(input.details)],
            attachments: [{ id: 0, filename: input.details.filename }],
            allowed_mentions: { users: [input.details.userId] },
          },
          input.nonce,
          [{ name: input.details.filename, data: png, contentType: 'image/png' }],
        );
      } catch (error) {
        throw toDiscordFailure(error);
      }

      await deps.imageStore.delete(input.imageKey);
    },
  };
}

export type BotActivities = ReturnType<typeof createActivities>;

function configuredServer(deps: ActivityDependencies, name: string): BackendConfig {
  const config = deps.config.backends[name];
  if (config === undefined) {
    throw ApplicationFailure.nonRetryable(`image server "${name}" is not configured`, FailureType.unknownBackend);
  }

  return config;
}

/** The PNG this worker generated; a non-retryable IMAGE_MISSING tells the workflow to generate it again. */
async function storedImage(deps: ActivityDependencies, imageKey: string): Promise<Buffer> {
  const png = await deps.imageStore.get(imageKey);
  if (png === null) {
    throw ApplicationFailure.nonRetryable('the image is not on this worker', FailureType.imageMissing);
  }

  return png;
}

/** The usable token behind what the workflow holds, which is sealed when TOKEN_SEAL_KEY is set. */
function openToken(deps: ActivityDependencies, value: string): string {
  if (deps.tokenSealer !== undefined) {
    try {
      return deps.tokenSealer.open(value);
    } catch (error) {
      throw ApplicationFailure.nonRetryable((error as Error).message, FailureType.tokenSealKey);
    }
  }

  if (TokenSealer.isSealed(value)) {
    throw ApplicationFailure.nonRetryable(
      'this worker has no TOKEN_SEAL_KEY, but the endpoint sealed the interaction token',
      FailureType.tokenSealKey,
    );
  }

  return value;
}

/** The settings as the image server takes them: the init image fetched, a default checkpoint filled in. */
async function buildGenerationRequest(
  config: BotConfig,
  backend: BackendConfig,
  settings: GenerationSettings,
  signal: AbortSignal,
): Promise<GenerationRequest> {
  const { initImage, ...params } = settings;
  const request: GenerationRequest = { ...params };
  if (request.model === undefined && backend.type === 'comfyui' && backend.defaultModel !== undefined) {
    request.model = backend.defaultModel;
  }

  if (initImage !== undefined) {
    const policy = { ...DEFAULT_INIT_IMAGE_POLICY, ...config.initImages };
    const data = await fetchInitImage(initImage.url, policy, { signal });
    request.initImage = { data, denoisingStrength: initImage.strength };
  }

  return request;
}

function toGenerationFailure(error: unknown): ApplicationFailure {
  if (error instanceof ApplicationFailure) {
    return error;
  }

  if (error instanceof InitImageError) {
    return error.retryable
      ? ApplicationFailure.retryable(error.message, FailureType.initImageUnavailable)
      : ApplicationFailure.nonRetryable(
          `the starting image cannot be used: ${error.message}`,
          FailureType.initImageRefused,
        );
  }

  if (error instanceof ImageServerError) {
    return error.retryable
      ? ApplicationFailure.retryable(
          error.message,
          error.code === 'IMAGE_SERVER_UNREACHABLE'
            ? FailureType.imageServerUnreachable
            : FailureType.imageServerFailed,
          { status: error.status ?? null },
        )
      : ApplicationFailure.nonRetryable(error.message, FailureType.imageServerRejected, {
          status: error.status ?? null,
        });
  }

  const message = error instanceof Error ? error.message : String(error);
  return ApplicationFailure.retryable(message, FailureType.imageServerFailed);
}

function toDiscordFailure(error: unknown): ApplicationFailure {
  if (!(error instanceof DiscordOutputError)) {
    const name = error instanceof Error ? error.name : 'unknown error';
    return ApplicationFailure.retryable(`sending to discord failed (${name})`, FailureType.discordUnavailable);
  }

  const details = { status: error.status, discordCode: error.discordCode, route: error.route };
  switch (error.kind) {
    case 'token-expired':
      return ApplicationFailure.nonRetryable(error.message, FailureType.tokenExpired, details);
    case 'rejected':
      return ApplicationFailure.nonRetryable(error.message, FailureType.discordRejected, details);
    case 'unknown-message':
    case 'rate-limited':
    case 'unavailable':
      return ApplicationFailure.retryable(error.message, FailureType.discordUnavailable, details);
  }
}

/**
 * Shows live progress by editing the request's message, at most once per interval, one edit at a
 * time, and never after {@link close}: the final image must not be overwritten by a late progress edit.
 */
class ProgressEditor {
  #lastSentAt = 0;
  #inFlight: Promise<void> = Promise.resolve();
  #closed = false;

  constructor(
    private readonly deps: ActivityDependencies,
    private readonly input: GenerateImageInput,
    private readonly intervalMs: number,
  ) {}

  offer(progress: GenerationProgress): void {
    const target = this.input.progressMessage;
    const now = Date.now();
    if (this.#closed || target === null || now > target.editUntil || now - this.#lastSentAt < this.intervalMs) {
      return;
    }

    this.#lastSentAt = now;
    const files =
      progress.previewPng === null
        ? []
        : [{ name: 'preview.png', data: progress.previewPng, contentType: 'image/png' }];
    const body = renderProgress({
      requestId: this.input.requestId,
      settings: this.input.settings,
      fraction: progress.fraction,
      step: progress.step,
      steps: progress.steps,
      etaSeconds: progress.etaSeconds,
      previewFilename: files.length > 0 ? 'preview.png' : null,
    });
    this.#inFlight = this.#inFlight
      .then(() =>
        this.deps.discord.editOriginal(
          target.applicationId,
          openToken(this.deps, target.interactionToken),
          body,
          files,
        ),
      )
      .catch((error: unknown) => {
        this.deps.logger.debug({ requestId: this.input.requestId, err: String(error) }, 'progress edit failed');
      });
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.#inFlight;
  }
}
