import {
  ApplicationCommandOptionType,
  ApplicationCommandType,
  type APIApplicationCommandInteractionDataOption,
  type RESTPostAPIChatInputApplicationCommandsJSONBody,
} from 'discord-api-types/v10';

import { OPTION_BOUNDS, type GenerationDefaults, type GenerationLimits } from '../config';
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
      description: 'Sampler name, e.g. Euler a',
      type: ApplicationCommandOptionType.String,
      min_length: 1,
      max_length: OPTION_BOUNDS.samplerLength,
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

/**
 * Turns the options of a /generate interaction into generation settings for one channel, or lists
 * every problem in words meant for the person who sent it. Seed -1 means "pick one for me".
 */
export function parseGenerateOptions(
  options: readonly APIApplicationCommandInteractionDataOption[] | undefined,
  defaults: GenerationDefaults,
  limits: GenerationLimits,
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
  if (defaults.model !== undefined) {
    settings.model = defaults.model;
  }

  return { ok: true, settings };
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
