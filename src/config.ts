import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { z } from 'zod';

/** Hard bounds that the /generate command registers with Discord; channel limits may only narrow them. */
export const OPTION_BOUNDS = {
  promptLength: 1_000,
  negativeLength: 1_000,
  sizeMin: 64,
  sizeMax: 2_048,
  stepsMin: 1,
  stepsMax: 150,
  cfgMin: 1,
  cfgMax: 30,
  seedMax: 4_294_967_295,
  samplerLength: 100,
  modelLength: 100,
  strengthMin: 0.05,
  strengthMax: 1,
} as const;

const positiveInt = z.number().int().positive();

const generationDefaultsSchema = z
  .object({
    width: positiveInt.multipleOf(8).optional(),
    height: positiveInt.multipleOf(8).optional(),
    steps: positiveInt.optional(),
    cfgScale: z.number().min(OPTION_BOUNDS.cfgMin).max(OPTION_BOUNDS.cfgMax).optional(),
    sampler: z.string().min(1).optional(),
    negativePrompt: z.string().optional(),
    model: z.string().min(1).optional(),
  })
  .strict();

const limitsSchema = z
  .object({
    maxWidth: positiveInt.max(OPTION_BOUNDS.sizeMax).optional(),
    maxHeight: positiveInt.max(OPTION_BOUNDS.sizeMax).optional(),
    maxSteps: positiveInt.max(OPTION_BOUNDS.stepsMax).optional(),
    /** Checkpoints a request may name; any the servers offer when left out. */
    allowedModels: z.array(z.string().min(1)).min(1).optional(),
  })
  .strict();

const a1111Schema = z
  .object({
    type: z.literal('a1111'),
    url: z.url({ protocol: /^https?$/ }),
    capacity: positiveInt.default(1),
  })
  .strict();

const comfyuiSchema = z
  .object({
    type: z.literal('comfyui'),
    url: z.url({ protocol: /^https?$/ }),
    capacity: positiveInt.default(1),
    /** An API-format workflow JSON file with $prompt, $seed… placeholders; relative to config.json. */
    template: z.string().min(1).optional(),
    /** The checkpoint used when a request names none and the template asks for "$model". */
    defaultModel: z.string().min(1).optional(),
  })
  .strict();

const backendSchema = z.discriminatedUnion('type', [a1111Schema, comfyuiSchema]);

const initImagesSchema = z
  .object({
    /** Hosts img2img images may be fetched from; Discord's attachment CDN unless changed. */
    allowedHosts: z.array(z.string().min(1)).min(1).default(['cdn.discordapp.com', 'media.discordapp.net']),
    /** Only for local stand-ins in tests and demos. */
    allowHttp: z.boolean().default(false),
    maxBytes: positiveInt.default(8_388_608), // 8 MiB
  })
  .strict();

const channelSchema = z
  .object({
    /** One image server, or a pool: a job goes to the least busy healthy one. */
    backend: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]),
    defaults: generationDefaultsSchema.optional(),
    limits: limitsSchema.optional(),
  })
  .strict();

const queueSchema = z
  .object({
    maxConcurrentPerUser: positiveInt.default(2),
    /** How long Discord accepts edits through an interaction token. */
    interactionTokenLifetimeMs: positiveInt.default(900_000), // 15 min
    /** A channel workflow with nothing to do for this long ends; the next request starts it again. */
    idleTimeoutMs: positiveInt.default(86_400_000), // 24 h
    generationTimeoutMs: positiveInt.default(600_000), // 10 min, kept alive by heartbeats
    generationAttempts: positiveInt.default(3),
    retryInitialIntervalMs: positiveInt.default(2_000),
    // Must stay well above the workers' heartbeat interval (2 s by default), or live workers look dead.
    heartbeatTimeoutMs: positiveInt.min(1_000).default(30_000), // 30 s
  })
  .strict();

const configSchema = z
  .object({
    defaults: generationDefaultsSchema
      .required({ width: true, height: true, steps: true, cfgScale: true, sampler: true, negativePrompt: true })
      .strict(),
    limits: limitsSchema.required({ maxWidth: true, maxHeight: true, maxSteps: true }).strict(),
    initImages: initImagesSchema.default(initImagesSchema.parse({})),
    queue: queueSchema.default(queueSchema.parse({})),
    backends: z.record(z.string().min(1), backendSchema),
    channels: z.record(z.string().regex(/^(\d{1,25}|\*)$/), channelSchema),
  })
  .strict();

export type BotConfig = z.infer<typeof configSchema>;
export type BackendConfig = z.infer<typeof backendSchema>;
export type ChannelConfig = z.infer<typeof channelSchema>;
export type QueueSettings = z.infer<typeof queueSchema>;
export type InitImagesConfig = z.infer<typeof initImagesSchema>;
export type GenerationDefaults = BotConfig['defaults'];
export type GenerationLimits = BotConfig['limits'];

/** Thrown when config.json cannot be read or does not match the schema; the message names every bad field. */
export class ConfigError extends Error {
  readonly code = 'CONFIG_INVALID';

  constructor(
    message: string,
    readonly source: string,
  ) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** Validates a parsed config object. `source` names it in error messages. */
export function parseConfig(raw: unknown, source = 'config'): BotConfig {
  const result = configSchema.safeParse(raw);
  const problems = result.success ? [] : result.error.issues.map(describeIssue);
  problems.push(...unknownBackendReferences(raw));
  if (result.success) {
    problems.push(...defaultsOutsideLimits(result.data));
  }
  if (!result.success || problems.length > 0) {
    throw new ConfigError(`${source} is invalid:\n${problems.map((p) => `  ${p}`).join('\n')}`, source);
  }

  return result.data;
}

function describeIssue(issue: z.core.$ZodIssue): string {
  const path = issue.path.length > 0 ? issue.path.join('.') : '(root)';
  if (issue.code === 'invalid_key' && issue.path[0] === 'channels') {
    return `${path}: channel ids are Discord ids (digits), or "*" for every channel`;
  }

  return `${path}: ${issue.message}`;
}

// Checked on the raw input so it is reported alongside shape errors, not only once they are fixed.
function unknownBackendReferences(raw: unknown): string[] {
  const backends = isRecord(raw) && isRecord(raw['backends']) ? raw['backends'] : {};
  const channels = isRecord(raw) && isRecord(raw['channels']) ? raw['channels'] : {};
  const known = Object.keys(backends);
  return Object.entries(channels).flatMap(([channelId, channel]) => {
    const backend = isRecord(channel) ? channel['backend'] : undefined;
    const names = typeof backend === 'string' ? [backend] : Array.isArray(backend) ? backend : [];
    return names
      .filter((name): name is string => typeof name === 'string' && !known.includes(name))
      .map((name) => `channels.${channelId}.backend: unknown backend "${name}" (known: ${known.join(', ') || 'none'})`);
  });
}

// A default the channel's own limits refuse would make every plain /generate (and its re-roll) fail.
function defaultsOutsideLimits(config: BotConfig): string[] {
  return Object.keys(config.channels).flatMap((channelId) => {
    const channel = resolveChannel(config, channelId);
    if (channel === undefined) {
      return [];
    }

    const where = channelId === '*' ? 'channels.*' : `channels.${channelId}`;
    const { defaults, limits } = channel;
    const problems: string[] = [];
    if (defaults.steps > limits.maxSteps) {
      problems.push(`${where}: default steps ${defaults.steps} is above maxSteps ${limits.maxSteps}`);
    }

    if (defaults.width > limits.maxWidth || defaults.height > limits.maxHeight) {
      problems.push(`${where}: default size ${defaults.width}×${defaults.height} is above the size limit`);
    }

    if (defaults.negativePrompt.length > OPTION_BOUNDS.negativeLength) {
      problems.push(`${where}: default negativePrompt is longer than ${OPTION_BOUNDS.negativeLength} characters`);
    }

    if (
      defaults.model !== undefined &&
      limits.allowedModels !== undefined &&
      !limits.allowedModels.includes(defaults.model)
    ) {
      problems.push(`${where}: default model "${defaults.model}" is not in allowedModels`);
    }

    return problems;
  });
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Reads and validates a config file (JSON). Throws {@link ConfigError}. */
export function loadConfig(path: string): BotConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new ConfigError(`cannot read ${path}: ${(error as Error).message}`, path);
  }

  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new ConfigError(`${path} is not valid JSON: ${(error as Error).message}`, path);
  }

  const config = parseConfig(raw, path);
  const problems: string[] = [];
  for (const [name, backend] of Object.entries(config.backends)) {
    if (backend.type !== 'comfyui' || backend.template === undefined) {
      continue;
    }

    backend.template = resolve(dirname(path), backend.template);
    try {
      JSON.parse(readFileSync(backend.template, 'utf8'));
    } catch (error) {
      problems.push(`  backends.${name}.template: cannot use ${backend.template}: ${(error as Error).message}`);
    }
  }

  if (problems.length > 0) {
    throw new ConfigError(`${path} is invalid:\n${problems.join('\n')}`, path);
  }

  return config;
}

/** The settings that apply in one channel, or undefined when the channel is not enabled. */
export interface ResolvedChannel {
  channelId: string;
  /** The image servers this channel's jobs may run on, in the order configured. */
  pool: Array<{ name: string; capacity: number }>;
  defaults: GenerationDefaults;
  limits: GenerationLimits;
}

export function resolveChannel(config: BotConfig, channelId: string): ResolvedChannel | undefined {
  const channel = config.channels[channelId] ?? config.channels['*'];
  if (channel === undefined) {
    return undefined;
  }

  const names = typeof channel.backend === 'string' ? [channel.backend] : channel.backend;
  const pool = names.flatMap((name) => {
    const backend = config.backends[name];
    return backend === undefined ? [] : [{ name, capacity: backend.capacity }];
  });
  if (pool.length === 0) {
    return undefined;
  }

  return {
    channelId,
    pool,
    defaults: { ...config.defaults, ...stripUndefined(channel.defaults ?? {}) } as GenerationDefaults,
    limits: { ...config.limits, ...stripUndefined(channel.limits ?? {}) } as GenerationLimits,
  };
}

function stripUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}
