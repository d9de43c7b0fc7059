import {
  ApplicationCommandOptionType,
  ApplicationCommandType,
  type APIApplicationCommandInteractionDataOption,
  type APIAttachment,
  type RESTPostAPIChatInputApplicationCommandsJSONBody,
} from 'discord-api-types/v10';

import { checkInitImageUrl, DEFAULT_INIT_IMAGE_POLICY } from '../backends/init-image';
import { OPTION_BOUNDS, type GenerationDefaults, type GenerationLimits, type InitImagesConfig } from '../config';
import type { GenerationSettings } from '../shared';

/**
 * The /generate command as registered with Discord. The endpoint enforces the same types, ranges and
 * lengths (plus each channel's narrower limits), so this is the single definition of both.
 */
export const GENERATE_COMMAND = {
  name: 'generate',
  description: 'Generate an image with Stable Diffusion',
  type: ApplicationCommandType.ChatInput,
  options: [
    {
      name: 'prompt',
      description: 'What to draw; [words in brackets] become the negative prompt',
      type: ApplicationCommandOptionType.String,
      required: true,
      min_length: 1,
      max_length: OPTION_BOUNDS.promptLength,
    },
    {
      name: 'negative',
      description: 'What to keep out of the image',
      type: ApplicationCommandOptionType.String,
      max_length: OPTION_BOUNDS.negativeLength,
    },
    {
      name: 'width',
      description: 'Width in pixels (a multiple of 8)',
      type: ApplicationCommandOptionType.Integer,
      min_value: OPTION_BOUNDS.sizeMin,
      max_value: OPTION_BOUNDS.sizeMax,
    },
    {
      name: 'height',
      description: 'Height in pixels (a multiple of 8)',
      type: ApplicationCommandOptionType.Integer,
      min_value: OPTION_BOUNDS.sizeMin,
      max_value: OPTION_BOUNDS.sizeMax,
    },
    {
      name: 'steps',
      description: 'Sampling steps',
      type: ApplicationCommandOptionType.Integer,
      min_value: OPTION_BOUNDS.stepsMin,
      max_value: OPTION_BOUNDS.stepsMax,
    },
    {
      name: 'seed',
      description: 'Seed for a repeatable image (random when left out)',
      type: ApplicationCommandOptionType.Integer,
      min_value: 0,
      max_value: OPTION_BOUNDS.seedMax,
    },
    {
      name: 'sampler',
      description: 'Sampler, e.g. Euler a',
      type: ApplicationCommandOptionType.String,
      min_length: 1,
      max_length: OPTION_BOUNDS.samplerLength,
      autocomplete: true,
    },
    {
      name: 'model',
      description: 'Checkpoint to use',
      type: ApplicationCommandOptionType.String,
      min_length: 1,
      max_length: OPTION_BOUNDS.modelLength,
      autocomplete: true,
    },
    {
      name: 'image',
      description: 'Start from this image (img2img)',
      type: ApplicationCommandOptionType.Attachment,
    },
    {
      name: 'strength',
      description: 'img2img: how far to move away from the image, 0.05 to 1 (default 0.6)',
      type: ApplicationCommandOptionType.Number,
      min_value: OPTION_BOUNDS.strengthMin,
      max_value: OPTION_BOUNDS.strengthMax,
    },
    {
      name: 'cfg_scale',
      description: 'How closely to follow the prompt',
      type: ApplicationCommandOptionType.Number,
      min_value: OPTION_BOUNDS.cfgMin,
      max_value: OPTION_BOUNDS.cfgMax,
    },
  ],
} as const satisfies RESTPostAPIChatInputApplicationCommandsJSONBody;

export type ParsedGenerate = { ok: true; settings: GenerationSettings } | { ok: false; problems: string[] };

/** What else the options are checked against, beyond the channel's defaults and limits. */
export interface GenerateContext {
  /** The interaction's `data.resolved.attachments`, for the `image` option. */
  attachments?: Record<string, APIAttachment> | undefined;
  initImages?: InitImagesConfig;
  /** Models and samplers the channel's servers offer, when known (cached); unknown names are refused. */
  catalog?: { models: string[] | null; samplers: string[] | null };
}

const IMAGE_TYPES = ['image/png', 'image/jpeg', 'image/webp'];
const DEFAULT_STRENGTH = 0.6;

/**
 * Turns the options of a /generate interaction into generation settings for one channel, or lists
 * every problem in words meant for the person who sent it. Seed -1 means "pick one for me".
 */
export function parseGenerateOptions(
  options: readonly APIApplicationCommandInteractionDataOption[] | undefined,
  defaults: GenerationDefaults,
  limits: GenerationLimits,
  context: GenerateContext = {},
): ParsedGenerate {
  const values = new Map<string, unknown>();
  for (const option of options ?? []) {
    if ('value' in option) {
      values.set(option.name, option.value);
    }
  }

  const problems: string[] = [];
  const text = (name: string, max: number): string | undefined => {
    const value = values.get(name);
    if (value === undefined) {
      return undefined;
    }

    if (typeof value !== 'string') {
      problems.push(`\`${name}\` must be text.`);
      return undefined;
    }

    if (value.length > max) {
      problems.push(`\`${name}\` is ${value.length} characters long; the limit is ${max}.`);
    }

    return value;
  };
  const integer = (name: string, min: number, max: number, fallback: number): number => {
    const value = values.get(name);
    if (value === undefined) {
      return fallback;
    }

    if (typeof value !== 'number' || !Number.isInteger(value)) {
      problems.push(`\`${name}\` must be a whole number.`);
      return fallback;
    }

    if (value < min || value > max) {
      problems.push(`\`${name}\` must be between ${min} and ${max} in this channel (got ${value}).`);
    }

    return value;
  };

  const rawPrompt = text('prompt', OPTION_BOUNDS.promptLength) ?? '';
  const negativeOption = text('negative', OPTION_BOUNDS.negativeLength);
  const { prompt, negativePrompt } = splitPrompt(rawPrompt, negativeOption, defaults.negativePrompt);
  if (prompt.trim() === '') {
    problems.push('`prompt` is empty: describe what to draw.');
  }

  const width = integer(
    'width',
    OPTION_BOUNDS.sizeMin,
    Math.min(limits.maxWidth, OPTION_BOUNDS.sizeMax),
    defaults.width,
  );
  const height = integer(
    'height',
    OPTION_BOUNDS.sizeMin,
    Math.min(limits.maxHeight, OPTION_BOUNDS.sizeMax),
    defaults.height,
  );
  for (const [name, value] of [
    ['width', width],
    ['height', height],
  ] as const) {
    if (value % 8 !== 0) {
      problems.push(`\`${name}\` must be a multiple of 8 (got ${value}).`);
    }
  }

  const steps = integer(
    'steps',
    OPTION_BOUNDS.stepsMin,
    Math.min(limits.maxSteps, OPTION_BOUNDS.stepsMax),
    defaults.steps,
  );
  const seed = integer('seed', 0, OPTION_BOUNDS.seedMax, -1);
  const sampler = text('sampler', OPTION_BOUNDS.samplerLength)?.trim() || defaults.sampler;
  const samplers = context.catalog?.samplers ?? null;
  if (samplers !== null && samplers.length > 0 && !samplers.includes(sampler)) {
    problems.push(`\`sampler\` "${sampler}" is not offered here; pick one from the list.`);
  }

  const model = text('model', OPTION_BOUNDS.modelLength)?.trim() || defaults.model;
  if (model !== undefined && limits.allowedModels !== undefined && !limits.allowedModels.includes(model)) {
    problems.push(`\`model\` "${model}" is not allowed in this channel (allowed: ${limits.allowedModels.join(', ')}).`);
  } else if (model !== undefined && values.has('model')) {
    const models = context.catalog?.models ?? null;
    if (models !== null && models.length > 0 && !models.includes(model)) {
      problems.push(`\`model\` "${model}" is not offered here; pick one from the list.`);
    }
  }

  const initImage = readInitImage(values, context, problems);

  let cfgScale = defaults.cfgScale;
  const cfgValue = values.get('cfg_scale');
  if (cfgValue !== undefined) {
    if (typeof cfgValue !== 'number' || !Number.isFinite(cfgValue)) {
      problems.push('`cfg_scale` must be a number.');
    } else if (cfgValue < OPTION_BOUNDS.cfgMin || cfgValue > OPTION_BOUNDS.cfgMax) {
      problems.push(
        `\`cfg_scale\` must be between ${OPTION_BOUNDS.cfgMin} and ${OPTION_BOUNDS.cfgMax} (got ${cfgValue}).`,
      );
    } else {
      cfgScale = cfgValue;
    }
  }

  if (problems.length > 0) {
    return { ok: false, problems };
  }

  const settings: GenerationSettings = { prompt, negativePrompt, width, height, steps, cfgScale, sampler, seed };
  if (model !== undefined) {
    settings.model = model;
  }

  if (initImage !== undefined) {
    settings.initImage = initImage;
  }

  return { ok: true, settings };
}

/** The `image` and `strength` options: a Discord attachment from an allowed host, of an image type and size. */
function readInitImage(
  values: Map<string, unknown>,
  context: GenerateContext,
  problems: string[],
): GenerationSettings['initImage'] {
  const strengthValue = values.get('strength');
  const attachmentId = values.get('image');
  if (attachmentId === undefined) {
    if (strengthValue !== undefined) {
      problems.push('`strength` only applies with an `image`.');
    }

    return undefined;
  }

  const attachment = typeof attachmentId === 'string' ? context.attachments?.[attachmentId] : undefined;
  if (attachment === undefined) {
    problems.push('`image` could not be read from the interaction.');
    return undefined;
  }

  const policy = context.initImages;
  if (policy === undefined) {
    problems.push('Starting from an image is not available here.');
    return undefined;
  }

  const contentType = (attachment.content_type ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
  if (!IMAGE_TYPES.includes(contentType)) {
    problems.push('`image` must be a PNG, JPEG or WebP picture.');
  }

  if (attachment.size > policy.maxBytes) {
    problems.push(`\`image\` is ${formatMiB(attachment.size)}; the limit is ${formatMiB(policy.maxBytes)}.`);
  }

  const checked = checkInitImageUrl(attachment.url, { ...DEFAULT_INIT_IMAGE_POLICY, ...policy });
  if (!checked.ok) {
    problems.push(checked.reason);
  }

  let strength = DEFAULT_STRENGTH;
  if (strengthValue !== undefined) {
    if (
      typeof strengthValue !== 'number' ||
      strengthValue < OPTION_BOUNDS.strengthMin ||
      strengthValue > OPTION_BOUNDS.strengthMax
    ) {
      problems.push(`\`strength\` must be between ${OPTION_BOUNDS.strengthMin} and ${OPTION_BOUNDS.strengthMax}.`);
    } else {
      strength = strengthValue;
    }
  }

  return { url: attachment.url, strength };
}

function formatMiB(bytes: number): string {
  return `${(bytes / 1_048_576).toFixed(1)} MiB`;
}

/**
 * `a castle [blurry, people]` -> prompt `a castle`, negative `blurry, people`, but only when no
 * explicit negative was given; the channel's default negative prompt is used when neither is.
 */
export function splitPrompt(
  rawPrompt: string,
  negativeOption: string | undefined,
  defaultNegative: string,
): { prompt: string; negativePrompt: string } {
  if (negativeOption !== undefined) {
    return { prompt: rawPrompt.trim(), negativePrompt: negativeOption.trim() };
  }

  const bracketed: string[] = [];
  const prompt = rawPrompt.replace(/\[([^\[\]]*)\]/g, (_match, words: string) => {
    if (words.trim() !== '') {
      bracketed.push(words.trim());
    }

    return ' ';
  });

  return {
    prompt: prompt.replace(/\s+/g, ' ').trim(),
    negativePrompt: bracketed.length > 0 ? bracketed.join(', ') : defaultNegative,
  };
}
