import {
  ButtonStyle,
  ComponentType,
  type APIActionRowComponent,
  type APIButtonComponent,
  type APIEmbed,
  type RESTPatchAPIWebhookWithTokenMessageJSONBody,
} from 'discord-api-types/v10';

import { CUSTOM_ID, type GenerationSettings } from '../shared';

/** What a request's message says at each step; the workflow decides, the activity renders. */
export type RequestStatus =
  | {
      kind: 'queued';
      requestId: string;
      position: number;
      etaMs: number | null;
      /** Shown when the wait may outlast the interaction token. */
      tokenLifetimeMs: number;
      mayOutlastToken: boolean;
    }
  | { kind: 'generating'; requestId: string; settings: GenerationSettings }
  | { kind: 'failed'; requestId: string; reason: string; settings: GenerationSettings }
  | { kind: 'cancelled'; requestId: string; byUserId: string; settings: GenerationSettings };

/** Details shown in the embed of a finished image. */
export interface ImageDetails {
  requestId: string;
  settings: GenerationSettings;
  seed: number;
  model: string | null;
  durationMs: number;
  filename: string;
  userId: string;
}

const EMBED_COLOR_DONE = 0x57_f2_87;
const EMBED_COLOR_FAILED = 0xed_42_45;
const EMBED_COLOR_CANCELLED = 0x99_aa_b5;
const EMBED_COLOR_PROGRESS = 0x58_65_f2;

export function renderStatus(status: RequestStatus): RESTPatchAPIWebhookWithTokenMessageJSONBody {
  switch (status.kind) {
    case 'queued': {
      const wait = status.etaMs === null ? '' : `, about ${formatDuration(status.etaMs)} to wait`;
      const lines = [`⏳ Queued: position ${status.position}${wait}.`];
      if (status.mayOutlastToken) {
        lines.push(
          `If it is not ready within ${formatDuration(status.tokenLifetimeMs)} of your request, ` +
            'the image will be posted in this channel and you will be mentioned.',
        );
      }

      return { content: lines.join('\n'), embeds: [], components: [cancelRow(status.requestId)] };
    }

    case 'generating': {
      const { width, height, steps, sampler } = status.settings;
      return {
        content: `🎨 Generating ${width}×${height}, ${steps} steps, ${sampler}…`,
        embeds: [],
        components: [cancelRow(status.requestId)],
      };
    }

    case 'failed':
      return {
        content: '',
        embeds: [
          {
            title: 'Generation failed',
            description: truncate(status.reason, 1_000),
            color: EMBED_COLOR_FAILED,
            fields: [{ name: 'Prompt', value: truncate(status.settings.prompt, 1_024) }],
          },
        ],
        components: [],
        attachments: [],
      };

    case 'cancelled':
      return {
        content: '',
        embeds: [
          {
            title: 'Cancelled',
            description: `Cancelled by <@${status.byUserId}>.`,
            color: EMBED_COLOR_CANCELLED,
            fields: [{ name: 'Prompt', value: truncate(status.settings.prompt, 1_024) }],
          },
        ],
        components: [],
        attachments: [],
        allowed_mentions: { parse: [] },
      };
  }
}

export interface ProgressView {
  requestId: string;
  settings: GenerationSettings;
  /** 0..1 */
  fraction: number;
  step: number;
  steps: number;
  etaSeconds: number | null;
  /** Name of an attached low-resolution preview, shown in the embed; null when there is none. */
  previewFilename: string | null;
}

const PROGRESS_BAR_CELLS = 20;

/** A running generation: progress bar, percentage, step x/y, time left and the preview, if any. */
export function renderProgress(view: ProgressView): RESTPatchAPIWebhookWithTokenMessageJSONBody {
  const { width, height, steps, sampler } = view.settings;
  const fraction = Math.min(1, Math.max(0, view.fraction));
  const filled = Math.round(fraction * PROGRESS_BAR_CELLS);
  const bar = `${'█'.repeat(filled)}${'░'.repeat(PROGRESS_BAR_CELLS - filled)}`;
  const left = view.etaSeconds === null ? '' : ` · about ${formatDuration(view.etaSeconds * 1_000)} left`;
  const stepText = view.steps > 0 ? ` · step ${view.step}/${view.steps}` : '';
  const embed: APIEmbed = {
    title: 'Generating',
    description: `\`${bar}\` ${Math.round(fraction * 100)}%${stepText}${left}`,
    color: EMBED_COLOR_PROGRESS,
    footer: { text: `${width}×${height} · ${steps} steps · ${sampler}` },
  };
  if (view.previewFilename !== null) {
    embed.image = { url: `attachment://${view.previewFilename}` };
  }

  return {
    content: '',
    embeds: [embed],
    components: [cancelRow(view.requestId)],
    attachments: view.previewFilename === null ? [] : [{ id: 0, filename: view.previewFilename }],
  };
}

/** The final message: the image attached, an embed with everything needed to make it again, and Re-roll. */
export function renderImageMessage(details: ImageDetails): RESTPatchAPIWebhookWithTokenMessageJSONBody {
  return {
    content: `<@${details.userId}>`,
    embeds: [renderImageEmbed(details)],
    components: [rerollRow(details.requestId)],
    attachments: [{ id: 0, filename: details.filename }],
    allowed_mentions: { parse: [] },
  };
}

export const EMBED_FIELD = {
  negative: 'Negative prompt',
  seed: 'Seed',
  size: 'Size',
  steps: 'Steps',
  sampler: 'Sampler',
  cfgScale: 'CFG scale',
  model: 'Model',
  time: 'Time',
  initImage: 'Starting image',
} as const;

const NO_NEGATIVE = '—';
const DEFAULT_MODEL = 'server default';

export function renderImageEmbed(details: ImageDetails): APIEmbed {
  const { settings } = details;
  return {
    title: 'Generated',
    description: truncate(settings.prompt, 4_000),
    color: EMBED_COLOR_DONE,
    image: { url: `attachment://${details.filename}` },
    fields: [
      { name: EMBED_FIELD.negative, value: truncate(settings.negativePrompt || NO_NEGATIVE, 1_024) },
      { name: EMBED_FIELD.seed, value: String(details.seed), inline: true },
      { name: EMBED_FIELD.size, value: `${settings.width}×${settings.height}`, inline: true },
      { name: EMBED_FIELD.steps, value: String(settings.steps), inline: true },
      { name: EMBED_FIELD.sampler, value: truncate(settings.sampler, 1_024), inline: true },
      { name: EMBED_FIELD.cfgScale, value: String(settings.cfgScale), inline: true },
      {
        name: EMBED_FIELD.model,
        value: truncate(
          settings.model ?? (details.model === null ? DEFAULT_MODEL : `${details.model} (${DEFAULT_MODEL})`),
          1_024,
        ),
        inline: true,
      },
      { name: EMBED_FIELD.time, value: formatDuration(details.durationMs), inline: true },
      ...(settings.initImage === undefined
        ? []
        : [
            {
              name: EMBED_FIELD.initImage,
              value: truncate(
                `strength ${settings.initImage.strength} · [starting image](${settings.initImage.url})`,
                1_024,
              ),
            },
          ]),
    ],
  };
}

/**
 * Reads the settings back from a finished image's embed, for Re-roll. The embed is the bot's own
 * message, delivered to us inside a signed interaction, so it survives any restart without state.
 */
export function settingsFromEmbed(embed: APIEmbed | undefined): Omit<GenerationSettings, 'seed'> | undefined {
  if (embed?.description === undefined) {
    return undefined;
  }

  const field = (name: string) => embed.fields?.find((f) => f.name === name)?.value;
  const size = /^(\d+)×(\d+)$/.exec(field(EMBED_FIELD.size) ?? '');
  const steps = Number(field(EMBED_FIELD.steps));
  const cfgScale = Number(field(EMBED_FIELD.cfgScale));
  const sampler = field(EMBED_FIELD.sampler);
  const negative = field(EMBED_FIELD.negative);
  if (size === null || !Number.isInteger(steps) || !Number.isFinite(cfgScale) || sampler === undefined) {
    return undefined;
  }

  const settings: Omit<GenerationSettings, 'seed'> = {
    prompt: embed.description,
    negativePrompt: negative === undefined || negative === NO_NEGATIVE ? '' : negative,
    width: Number(size[1]),
    height: Number(size[2]),
    steps,
    cfgScale,
    sampler,
  };
  const model = field(EMBED_FIELD.model);
  if (model !== undefined && model !== DEFAULT_MODEL && !model.endsWith(`(${DEFAULT_MODEL})`)) {
    settings.model = model;
  }

  const init = /^strength ([\d.]+) · \[starting image\]\((\S+)\)$/.exec(field(EMBED_FIELD.initImage) ?? '');
  if (init?.[1] !== undefined && init[2] !== undefined) {
    settings.initImage = { url: init[2], strength: Number(init[1]) };
  }

  return settings;
}

function cancelRow(requestId: string): APIActionRowComponent<APIButtonComponent> {
  return {
    type: ComponentType.ActionRow,
    components: [
      {
        type: ComponentType.Button,
        style: ButtonStyle.Secondary,
        label: 'Cancel',
        custom_id: CUSTOM_ID.cancel(requestId),
      },
    ],
  };
}

function rerollRow(requestId: string): APIActionRowComponent<APIButtonComponent> {
  return {
    type: ComponentType.ActionRow,
    components: [
      {
        type: ComponentType.Button,
        style: ButtonStyle.Primary,
        label: 'Re-roll',
        emoji: { name: '🎲' },
        custom_id: CUSTOM_ID.reroll(requestId),
      },
    ],
  };
}

export function formatDuration(ms: number): string {
  const seconds = Math.max(0, Math.round(ms / 1_000));
  if (seconds < 60) {
    return `${seconds} s`;
  }

  const minutes = Math.floor(seconds / 60);
  const rest = seconds % 60;
  return rest === 0 ? `${minutes} min` : `${minutes} min ${rest} s`;
}

function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}
