import type { Connection } from '@temporalio/client';
import { temporal } from '@temporalio/proto';

import type { Logger } from './logger';
import { SEARCH_ATTRIBUTES } from './shared';

const INDEXED_TYPE = {
  KEYWORD: temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
  KEYWORD_LIST: temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD_LIST,
} as const;

/**
 * Registers the bot's search attributes (SdChannelId, SdGuildId, SdUserIds) on the namespace when
 * they are missing. Returns false, and the bot runs without them, when the server does not allow it
 * (for example a hosted namespace where only an administrator may add them).
 */
export async function ensureSearchAttributes(
  connection: Connection,
  namespace: string,
  logger: Logger,
): Promise<boolean> {
  try {
    const existing = await connection.operatorService.listSearchAttributes({ namespace });
    const known = new Set([
      ...Object.keys(existing.customAttributes ?? {}),
      ...Object.keys(existing.systemAttributes ?? {}),
    ]);
    const missing = Object.values(SEARCH_ATTRIBUTES).filter((key) => !known.has(key.name));
    if (missing.length > 0) {
      await connection.operatorService.addSearchAttributes({
        namespace,
        searchAttributes: Object.fromEntries(
          missing.map((key) => [key.name, INDEXED_TYPE[key.type as keyof typeof INDEXED_TYPE]]),
        ),
      });
      logger.info({ added: missing.map((key) => key.name) }, 'search attributes registered');
    }

    return true;
  } catch (error) {
    logger.warn(
      { err: error instanceof Error ? error.message : String(error) },
      'search attributes unavailable; workflows will not be searchable by channel or user',
    );
    return false;
  }
}
