import pino, { type Logger } from 'pino';

/**
 * The process-wide structured logger. Level from `LOG_LEVEL` (default `info`).
 * Callers log a fixed lowercase message with data in the first argument, and never log
 * tokens, signatures or whole interaction bodies.
 */
export function createLogger(name: string, level = process.env['LOG_LEVEL'] ?? 'info'): Logger {
  return pino({
    name,
    level,
    redact: {
      paths: ['token', '*.token', 'interactionToken', '*.interactionToken', 'authorization', '*.authorization'],
      censor: '[redacted]',
    },
  });
}

export type { Logger };
