import { existsSync } from 'node:fs';
import { resolve } from 'node:path';

import { DEFAULT_DISCORD_API_BASE } from './discord/discord-output';

/** Settings and secrets read from the environment (and a git-ignored `.env` file, if present). */
export interface BotEnvironment {
  applicationId: string | undefined;
  publicKey: string | undefined;
  botToken: string | undefined;
  discordApiBase: string;
  temporalAddress: string;
  temporalNamespace: string;
  configPath: string;
  host: string;
  port: number;
  imageDir: string;
  /** 32-byte key sealing interaction tokens inside Temporal; endpoint and workers share it. */
  tokenSealKey: string | undefined;
}

/** Thrown when an environment variable is missing or malformed; names the variable. */
export class EnvironmentError extends Error {
  readonly code = 'ENVIRONMENT_INVALID';

  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(`${variable}: ${message}`);
    this.name = 'EnvironmentError';
  }
}

/** Loads `.env` from the working directory into process.env, without overriding what is already set. */
export function loadDotEnv(path = resolve('.env')): void {
  if (existsSync(path)) {
    process.loadEnvFile(path);
  }
}

export function readEnvironment(env: NodeJS.ProcessEnv = process.env): BotEnvironment {
  const port = Number(env['PORT'] ?? 3000);
  if (!Number.isInteger(port) || port < 0 || port > 65_535) {
    throw new EnvironmentError('PORT', `expected a port number, got "${env['PORT']}"`);
  }

  return {
    applicationId: nonEmpty(env['DISCORD_APPLICATION_ID']),
    publicKey: nonEmpty(env['DISCORD_PUBLIC_KEY']),
    botToken: nonEmpty(env['DISCORD_TOKEN']),
    discordApiBase: nonEmpty(env['DISCORD_API_BASE']) ?? DEFAULT_DISCORD_API_BASE,
    temporalAddress: nonEmpty(env['TEMPORAL_ADDRESS']) ?? 'localhost:7233',
    temporalNamespace: nonEmpty(env['TEMPORAL_NAMESPACE']) ?? 'default',
    configPath: nonEmpty(env['CONFIG_PATH']) ?? resolve('config.json'),
    host: nonEmpty(env['HOST']) ?? '0.0.0.0',
    port,
    imageDir: nonEmpty(env['IMAGE_DIR']) ?? resolve('.data', 'images'),
    tokenSealKey: nonEmpty(env['TOKEN_SEAL_KEY']),
  };
}

/** The value of a variable that must be set, or an {@link EnvironmentError} saying so. */
export function required(value: string | undefined, variable: string): string {
  if (value === undefined) {
    throw new EnvironmentError(variable, 'is required but not set (see .env.example)');
  }

  return value;
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === '' ? undefined : value.trim();
}
