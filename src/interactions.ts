import type { Client } from '@temporalio/client';
import { WithStartWorkflowOperation, WorkflowNotFoundError, WorkflowUpdateFailedError } from '@temporalio/client';
import {
  ComponentType,
  InteractionResponseType,
  InteractionType,
  MessageFlags,
  PermissionFlagsBits,
  type APIApplicationCommandAutocompleteInteraction,
  type APIApplicationCommandInteractionDataOption,
  type APIAttachment,
  type APIInteraction,
  type APIInteractionResponse,
  type APIMessageComponentInteraction,
} from 'discord-api-types/v10';

import { autocompleteChoices, BackendCatalog } from './backends/catalog';
import { checkInitImageUrl, DEFAULT_INIT_IMAGE_POLICY } from './backends/init-image';
import { resolveChannel, type BotConfig, type ResolvedChannel } from './config';
import { GENERATE_COMMAND, parseGenerateOptions } from './discord/generate-command';
import { settingsFromEmbed } from './discord/messages';
import { QUEUE_COMMAND, renderQueue } from './discord/queue-command';
import type { Logger } from './logger';
import type { TokenSealer } from './token-seal';
import {
  cancelUpdate,
  channelWorkflowId,
  enqueueUpdate,
  parseCustomId,
  queueQuery,
  SEARCH_ATTRIBUTES,
  TASK_QUEUE,
  type ChannelQueueSettings,
  type EnqueueResult,
  type GenerateRequest,
  type GenerationSettings,
  type QueueSnapshot,
} from './shared';
import type { channelQueueWorkflow } from './workflows/channel-queue';

export interface InteractionHandlerDependencies {
  config: BotConfig;
  temporal: Client;
  logger: Logger;
  /** How long Temporal may take to accept a request before Discord is told it failed, in ms. */
  enqueueTimeoutMs?: number;
  /** Whether the bot's search attributes are registered on the Temporal namespace. */
  searchAttributes?: boolean;
  /** Cached model and sampler listings; one is made from the config when not given. */
  catalog?: BackendCatalog;
  /** Seals interaction tokens before they enter Temporal (TOKEN_SEAL_KEY); left readable when absent. */
  tokenSealer?: TokenSealer | undefined;
  now?: () => number;
}

type UserLike = { id: string; username: string; global_name?: string | null };

/** Decides the answer to one verified interaction. The HTTP layer has already checked the signature. */
export class InteractionHandler {
  readonly #deps: InteractionHandlerDependencies;
  readonly #enqueueTimeoutMs: number;
  readonly #queueSettings: ChannelQueueSettings;
  readonly #catalog: BackendCatalog;

  constructor(deps: InteractionHandlerDependencies) {
    this.#deps = deps;
    this.#catalog = deps.catalog ?? new BackendCatalog(deps.config, deps.logger);
    this.#enqueueTimeoutMs = deps.enqueueTimeoutMs ?? 2_000;
    this.#queueSettings = { ...deps.config.queue, searchAttributes: deps.searchAttributes ?? false };
  }

  async handle(interaction: APIInteraction): Promise<APIInteractionResponse> {
    switch (interaction.type) {
      case InteractionType.Ping:
        return { type: InteractionResponseType.Pong };

      case InteractionType.ApplicationCommand:
        if (interaction.data.name === GENERATE_COMMAND.name && 'options' in interaction.data) {
          return this.#generate(interaction, interaction.data.options);
        }

        if (interaction.data.name === QUEUE_COMMAND.name) {
          return this.#showQueue(interaction);
        }

        return ephemeral(`Unknown command \`/${interaction.data.name}\`.`);

      case InteractionType.MessageComponent:
        return this.#component(interaction);

      case InteractionType.ApplicationCommandAutocomplete:
        return this.#autocomplete(interaction);

      default:
        return ephemeral('This interaction is not supported.');
    }
  }

  async #generate(
    interaction: APIInteraction,
    options: APIApplicationCommandInteractionDataOption[] | undefined,
  ): Promise<APIInteractionResponse> {
    const context = this.#context(interaction);
    if ('refusal' in context) {
      return context.refusal;
    }

    const data = interaction.data as { resolved?: { attachments?: Record<string, APIAttachment> } };
    const parsed = parseGenerateOptions(options, context.channel.defaults, context.channel.limits, {
      attachments: data.resolved?.attachments,
      initImages: this.#deps.config.initImages,
      // Submits are checked against the cache only, never waiting on an image server.
      catalog: await this.#catalog.lookup(
        context.channel.pool.map((member) => member.name),
        false,
      ),
    });
    if (!parsed.ok) {
      context.log.info({ problems: parsed.problems.length }, 'generate refused: invalid options');
      return ephemeral(['That request cannot be run:', ...parsed.problems.map((p) => `• ${p}`)].join('\n'));
    }

    return this.#submit(interaction, context, parsed.settings);
  }

  /** Re-roll: the finished image's settings, read back from its embed, with a new seed, as a new request. */
  async #reroll(interaction: APIMessageComponentInteraction): Promise<APIInteractionResponse> {
    const context = this.#context(interaction);
    if ('refusal' in context) {
      return context.refusal;
    }

    const previous = settingsFromEmbed(interaction.message.embeds[0]);
    if (previous === undefined) {
      return ephemeral('This message has no image settings to re-roll.');
    }

    // Checked again: the channel's limits may have changed since the image was made.
    const options = [
      { name: 'prompt', value: previous.prompt },
      { name: 'negative', value: previous.negativePrompt },
      { name: 'width', value: previous.width },
      { name: 'height', value: previous.height },
      { name: 'steps', value: previous.steps },
      { name: 'sampler', value: previous.sampler },
      { name: 'cfg_scale', value: previous.cfgScale },
      ...(previous.model === undefined ? [] : [{ name: 'model', value: previous.model }]),
    ] as APIApplicationCommandInteractionDataOption[];
    const parsed = parseGenerateOptions(options, context.channel.defaults, context.channel.limits);
    if (!parsed.ok) {
      return ephemeral(['This image cannot be re-rolled here any more:', ...parsed.problems].join('\n'));
    }

    const settings: GenerationSettings = { ...parsed.settings, seed: -1 };
    if (previous.initImage !== undefined) {
      const checked = checkInitImageUrl(previous.initImage.url, {
        ...DEFAULT_INIT_IMAGE_POLICY,
        ...this.#deps.config.initImages,
      });
      if (!checked.ok) {
        return ephemeral(checked.reason);
      }

      settings.initImage = previous.initImage;
    }

    return this.#submit(interaction, context, settings);
  }

  /** Model and sampler suggestions from the channel's servers, answered from the cache. */
  async #autocomplete(interaction: APIApplicationCommandAutocompleteInteraction): Promise<APIInteractionResponse> {
    const none: APIInteractionResponse = {
      type: InteractionResponseType.ApplicationCommandAutocompleteResult,
      data: { choices: [] },
    };
    const caller = callerOf(interaction);
    const channel = caller === undefined ? undefined : resolveChannel(this.#deps.config, caller.channelId);
    const focused = interaction.data.options
      .flatMap((option) => ('focused' in option && option.focused === true ? [option] : []))
      .at(0);
    if (channel === undefined || focused === undefined || !('value' in focused)) {
      return none;
    }

    const catalog = await this.#catalog.lookup(channel.pool.map((member) => member.name));
    let values: string[] = [];
    if (focused.name === 'model') {
      const allowed = channel.limits.allowedModels;
      values = allowed ?? catalog.models ?? [];
    } else if (focused.name === 'sampler') {
      values = catalog.samplers ?? [];
    }

    return {
      type: InteractionResponseType.ApplicationCommandAutocompleteResult,
      data: { choices: autocompleteChoices(values, String(focused.value)) },
    };
  }

  #now(): number {
    return (this.#deps.now ?? Date.now)();
  }

  /** Runs a Temporal call that Discord's 3-second deadline cannot wait out. */
  #withDeadline<T>(call: () => Promise<T>): Promise<T> {
    return this.#deps.temporal.withAbortSignal(AbortSignal.timeout(this.#enqueueTimeoutMs), call);
  }

  #context(
    interaction: APIInteraction,
  ):
    | { refusal: APIInteractionResponse }
    | { channelId: string; user: UserLike; channel: ResolvedChannel; log: Logger; receivedAt: number } {
    const receivedAt = this.#now();
    const caller = callerOf(interaction);
    if (caller === undefined) {
      return { refusal: NOT_IN_A_CHANNEL };
    }

    const { channelId, user } = caller;
    const log = this.#deps.logger.child({ interactionId: interaction.id, channelId, userId: user.id });

    const channel = resolveChannel(this.#deps.config, channelId);
    if (channel === undefined) {
      log.info('refused: channel not enabled');
      return { refusal: ephemeral('Image generation is not enabled in this channel.') };
    }

    return { channelId, user, channel, log, receivedAt };
  }

  async #submit(
    interaction: APIInteraction,
    context: { channelId: string; user: UserLike; channel: ResolvedChannel; log: Logger; receivedAt: number },
    settings: GenerationSettings,
  ): Promise<APIInteractionResponse> {
    const { channelId, user, channel, log, receivedAt } = context;
    const request: GenerateRequest = {
      requestId: interaction.id,
      applicationId: interaction.application_id,
      interactionToken: this.#deps.tokenSealer?.seal(interaction.token) ?? interaction.token,
      channelId,
      guildId: interaction.guild_id ?? null,
      userId: user.id,
      userName: user.global_name ?? user.username,
      pool: channel.pool,
      settings,
      receivedAt,
      acceptBefore: receivedAt + this.#enqueueTimeoutMs,
      queueSettings: this.#queueSettings,
    };

    let result: EnqueueResult;
    try {
      result = await this.#enqueue(request);
    } catch (error) {
      const timedOut = this.#now() - receivedAt >= this.#enqueueTimeoutMs;
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

  async #component(interaction: APIMessageComponentInteraction): Promise<APIInteractionResponse> {
    const action =
      interaction.data.component_type === ComponentType.Button ? parseCustomId(interaction.data.custom_id) : undefined;
    if (action === undefined) {
      return ephemeral('This button is not supported.');
    }

    if (action.action === 'reroll') {
      return this.#reroll(interaction);
    }

    const caller = callerOf(interaction);
    if (caller === undefined) {
      return NOT_IN_A_CHANNEL;
    }

    const { channelId, user } = caller;
    const canManageMessages =
      interaction.member !== undefined &&
      (BigInt(interaction.member.permissions) & PermissionFlagsBits.ManageMessages) ===
        PermissionFlagsBits.ManageMessages;
    const log = this.#deps.logger.child({ interactionId: interaction.id, channelId, userId: user.id });
    try {
      const handle = this.#deps.temporal.workflow.getHandle(channelWorkflowId(channelId));
      const result = await this.#withDeadline(() =>
        handle.executeUpdate(cancelUpdate, {
          args: [{ requestId: action.requestId, userId: user.id, canManageMessages }],
        }),
      );
      log.info({ requestId: action.requestId, result: result.status }, 'cancel answered');
      switch (result.status) {
        case 'cancelled':
          return ephemeral(result.wasRunning ? 'Stopping the generation.' : 'Removed from the queue.');
        case 'forbidden':
          return ephemeral('Only the person who asked for this image, or a moderator, can cancel it.');
        case 'not-found':
          return ephemeral('This request has already finished.');
      }
    } catch (error) {
      if (error instanceof WorkflowNotFoundError) {
        return ephemeral('This request has already finished.');
      }

      log.error({ err: describeError(error) }, 'cancel failed');
      return ephemeral('The image queue is unavailable right now; please try again in a moment.');
    }
  }

  async #showQueue(interaction: APIInteraction): Promise<APIInteractionResponse> {
    const caller = callerOf(interaction);
    if (caller === undefined) {
      return NOT_IN_A_CHANNEL;
    }

    const { channelId, user } = caller;
    let snapshot: QueueSnapshot | undefined;
    try {
      const handle = this.#deps.temporal.workflow.getHandle(channelWorkflowId(channelId));
      snapshot = await this.#withDeadline(() => handle.query(queueQuery));
    } catch (error) {
      if (!(error instanceof WorkflowNotFoundError)) {
        this.#deps.logger.error({ err: describeError(error), channelId }, 'queue query failed');
        return ephemeral('The image queue is unavailable right now; please try again in a moment.');
      }
    }

    return ephemeral(renderQueue(snapshot, user.id, this.#now()));
  }

  /** Creates the channel's workflow if needed and adds the request to it, in one durable call. */
  async #enqueue(request: GenerateRequest): Promise<EnqueueResult> {
    const { temporal } = this.#deps;
    const startWorkflowOperation = new WithStartWorkflowOperation<typeof channelQueueWorkflow>('channelQueueWorkflow', {
      workflowId: channelWorkflowId(request.channelId),
      taskQueue: TASK_QUEUE,
      workflowIdConflictPolicy: 'USE_EXISTING',
      args: [{ channelId: request.channelId, settings: this.#queueSettings }],
      ...(this.#queueSettings.searchAttributes
        ? {
            typedSearchAttributes: [
              { key: SEARCH_ATTRIBUTES.channelId, value: request.channelId },
              ...(request.guildId === null ? [] : [{ key: SEARCH_ATTRIBUTES.guildId, value: request.guildId }]),
            ],
          }
        : {}),
    });

    try {
      return await this.#withDeadline(() =>
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

/** Where an interaction came from; undefined when it has no channel or no user. */
function callerOf(interaction: APIInteraction): { channelId: string; user: UserLike } | undefined {
  const channelId = interaction.channel_id ?? interaction.channel?.id;
  const user = interaction.member?.user ?? interaction.user;
  return channelId === undefined || user === undefined ? undefined : { channelId, user };
}

/** Discord refuses message content over 2000 characters; long explanations are cut to fit. */
const MAX_CONTENT = 2_000;

function ephemeral(content: string): APIInteractionResponse {
  const fitted = content.length <= MAX_CONTENT ? content : `${content.slice(0, MAX_CONTENT - 1)}…`;
  return {
    type: InteractionResponseType.ChannelMessageWithSource,
    data: { content: fitted, flags: MessageFlags.Ephemeral, allowed_mentions: { parse: [] } },
  };
}

function describeError(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

const NOT_IN_A_CHANNEL = ephemeral('This only works in a server channel or a DM with the bot.');
