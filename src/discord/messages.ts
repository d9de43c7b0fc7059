import type { APIEmbed, RESTPatchAPIWebhookWithTokenMessageJSONBody } from 'discord-api-types/v10';

import type { GenerationSettings } from '../shared';

/** What a request's message says at each step; the workflow decides, the activity renders. */
export type RequestStatus =
  | { kind: 'queued'; position: number; etaMs: number | null; tokenExpiresAt: number }
  | { kind: 'generating'; settings: GenerationSettings; backend: string }
  | { kind: 'failed'; reason: string; settings: GenerationSettings };

/** Details shown in the embed of a finished image. */
export interface ImageDetails {
  settings: GenerationSettings;
  seed: number;
  model: string | null;
  durationMs: number;
  filename: string;
  userId: string;
}

const EMBED_COLOR_DONE = 0x57_f2_87;
const EMBED_COLOR_FAILED = 0xed_42_45;

export function renderStatus(status: RequestStatus): RESTPatchAPIWebhookWithTokenMessageJSONBody {
  switch (status.kind) {
    case 'queued': {
      const wait = status.etaMs === null ? '' : `, about ${formatDuration(status.etaMs)} to wait`;
      return {
        content: `⏳ Queued: position ${status.position}${wait}.`,
        embeds: [],
        components: [],
      };
    }

    case 'generating': {
      const { width, height, steps, sampler } = status.settings;
      return {
        content: `🎨 Generating ${width}×${height}, ${steps} steps, ${sampler}…`,
        embeds: [],
        components: [],
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
  }
}

/** The final message: the image attached and an embed with everything needed to make it again. */
export function renderImageMessage(details: ImageDetails): RESTPatchAPIWebhookWithTokenMessageJSONBody {
  return {
    content: `<@${details.userId}>`,
    embeds: [renderImageEmbed(details)],
    components: [],
    attachments: [{ id: 0, filename: details.filename }],
    allowed_mentions: { parse: [] },
  };
}

export function renderImageEmbed(details: ImageDetails): APIEmbed {
  const { settings } = details;
  return {
    title: 'Generated',
    description: truncate(settings.prompt, 4_000),
    color: EMBED_COLOR_DONE,
    image: { url: `attachment://${details.filename}` },
    fields: [
      { name: 'Negative prompt', value: truncate(settings.negativePrompt || '—', 1_024) },
      { name: 'Seed', value: String(details.seed), inline: true },
      { name: 'Size', value: `${settings.width}×${settings.height}`, inline: true },
      { name: 'Steps', value: String(settings.steps), inline: true },
      { name: 'Sampler', value: truncate(settings.sampler, 1_024), inline: true },
      { name: 'CFG scale', value: String(settings.cfgScale), inline: true },
      { name: 'Model', value: truncate(details.model ?? settings.model ?? 'server default', 1_024), inline: true },
      { name: 'Time', value: formatDuration(details.durationMs), inline: true },
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
