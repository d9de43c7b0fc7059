import { DefaultLogger, Runtime, type LogLevel } from '@temporalio/worker';

import type { Logger } from './logger';

let installed = false;

/**
 * Routes the Temporal SDK's own logs (worker state, workflow `log.*` calls) into pino. The Temporal
 * runtime is process-wide and can be configured once, before the first worker or connection.
 */
export function installTemporalLogging(logger: Logger, level: LogLevel = 'INFO'): void {
  if (installed) {
    return;
  }

  installed = true;
  Runtime.install({
    // Each process stops its workers itself, in order (see BotWorker.shutdown), rather than all at once.
    shutdownSignals: [],
    logger: new DefaultLogger(level, (entry) => {
      const { message, meta } = entry;
      const fields = meta ?? {};
      switch (entry.level) {
        case 'TRACE':
        case 'DEBUG':
          logger.debug(fields, message);
          break;
        case 'INFO':
          logger.info(fields, message);
          break;
        case 'WARN':
          logger.warn(fields, message);
          break;
        case 'ERROR':
          logger.error(fields, message);
          break;
      }
    }),
  });
}
