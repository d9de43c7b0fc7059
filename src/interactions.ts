import type { Client } from '@temporalio/client';
import { WithStartWorkflowOperation, WorkflowUpdateFailedError } from '@temporalio/client';
import {
  InteractionResponseType,
  InteractionType,
  MessageFlags,
  type APIInteraction,
  type APIInteractionResponse,
} from 'discord-api-types/v10';

import { resolveChannel, type BotConfig } from './config';
import { GENERATE_COMMAND, parseGenerateOptions } from './discord/generate-command';
import type { Logger } from './logger';
import {
  channelWorkflowId,
  enqueueUpdate,
  TASK_QUEUE,
  type ChannelQueueSettings,
  type EnqueueResult,
  type GenerateRequest,
} from './shared';
import type { channelQueueWorkflow } from './workflows/channel-queue';

export interface InteractionHandlerDependencies {
  config: BotConfig;
  temporal: Client;
  logger: Logger;
  /** How long Temporal may take to accept a request before Discord is told it failed, in ms. */
  enqueueTimeoutMs?: number;
  now?: () => number;
}

/** Decides the answer to one verified interaction. The HTTP layer has already checked the signature. */
export class InteractionHandler {
  readonly #deps: InteractionHandlerDependencies;
  readonly #enqueueTimeoutMs: number;
  readonly #queueSettings: ChannelQueueSettings;

  constructor(deps: InteractionHandlerDependencies) {
    this.#deps = deps;
    this.#enqueueTimeoutMs = deps.enqueueTimeoutMs ?? 2_000;
    this.#queueSettings = { ...deps.config.queue };
  }

  async handle(interaction: APIInteraction): Promise<APIInteractionResponse> {
    switch (interaction.type) {
      case InteractionType.Ping:
        return { type: InteractionResponseType.Pong };

      case InteractionType.ApplicationCommand:
        if (interaction.data.name === GENERATE_COMMAND.name && 'options' in interaction.data) {
          return this.#generate(interaction, interaction.data.options);
        }

        return ephemeral(`Unknown command \`/${interaction.data.name}\`.`);

      case InteractionType.ApplicationCommandAutocomplete:
        return { type: InteractionResponseType.ApplicationCommandAutocompleteResult, data: { choices: [] } };

      default:
        return ephemeral('This interaction is not supported.');
    }
  }

  async #generate(
    interaction: APIInteraction,
    options: Parameters<typeof parseGenerateOptions>[0],
  ): Promise<APIInteractionResponse> {
    const receivedAt = (this.#deps.now ?? Date.now)();
    const channelId = interaction.channel_id ?? interaction.channel?.id;
    const user = interaction.member?.user ?? interaction.user;
    const log = this.#deps.logger.child({ interactionId: interaction.id, channelId, userId: user?.id });
    if (channelId === undefined || user === undefined) {
      return ephemeral('This command only works in a server channel or a DM with the bot.');
    }

    const channel = resolveChannel(this.#deps.config, channelId);
    if (channel === undefined) {
      log.info('generate refused: channel not enabled');
      return ephemeral('Image generation is not enabled in this channel.');
    }

    const parsed = parseGenerateOptions(options, channel.defaults, channel.limits);
    if (!parsed.ok) {
      log.info({ problems: parsed.problems.length }, 'generate refused: invalid options');
      return ephemeral(['That request cannot be run:', ...parsed.problems.map((p) => `• ${p}`)].join('\n'));
    }

    const request: GenerateRequest = {
      requestId: interaction.id,
      applicationId: interaction.application_id,
      interactionToken: interaction.token,
      channelId,
      guildId: interaction.guild_id ?? null,
      userId: user.id,
      userName: user.global_name ?? user.username,
      backend: channel.backendName,
      settings: parsed.settings,
      receivedAt,
      acceptBefore: receivedAt + this.#enqueueTimeoutMs,
    };

    let result: EnqueueResult;
    try {
      result = await this.#enqueue(request);
    } catch (error) {
      const timedOut = (this.#deps.now ?? Date.now)() - receivedAt >= this.#enqueueTimeoutMs;
      log.error({ err: describeError(error), timedOut }, 'enqueue failed');
      return ephemeral(
        timedOut
          ? 'The image queue did not answer in time, so nothing was queued. Please try again in a moment.'
          : 'The image queue is unavailable right now, so nothing was queued. Please try again in a moment.',
      );
    }

    if (result.status === 'rejected') {
      log.info('generate refused by queue');
      return ephemeral(result.reason);
    }

    log.info({ position: result.position, duplicate: result.duplicate }, 'generate queued');
    return { type: InteractionResponseType.DeferredChannelMessageWithSource };
  }

  /** Creates the channel's workflow if needed and adds the request to it, in one durable call. */
  async #enqueue(request: GenerateRequest): Promise<EnqueueResult> {
    const { temporal } = this.#deps;
    const startWorkflowOperation = new WithStartWorkflowOperation<typeof channelQueueWorkflow>('channelQueueWorkflow', {
      workflowId: channelWorkflowId(request.channelId),
      taskQueue: TASK_QUEUE,
      workflowIdConflictPolicy: 'USE_EXISTING',
      args: [{ channelId: request.channelId, settings: this.#queueSettings }],
    });

    const signal = AbortSignal.timeout(this.#enqueueTimeoutMs);
    try {
      return await temporal.withAbortSignal(signal, () =>
        temporal.workflow.executeUpdateWithStart(enqueueUpdate, {
          args: [request],
          updateId: request.requestId,
          startWorkflowOperation,
        }),
      );
    } catch (error) {
      if (error instanceof WorkflowUpdateFailedError) {
        throw new Error(`queue refused the request: ${describeError(error.cause ?? error)}`);
      }

      throw error;
    }
  }
}

function ephemeral(content: string): APIInteractionResponse {
  return {
    type: InteractionResponseType.ChannelMessageWithSource,
    data: { content, flags: MessageFlags.Ephemeral, allowed_mentions: { parse: [] } },
  };
}

function describeError(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}
