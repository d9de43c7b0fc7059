import { ApplicationCommandType, type RESTPostAPIChatInputApplicationCommandsJSONBody } from 'discord-api-types/v10';

import type { QueueSnapshot } from '../shared';
import { formatDuration } from './messages';

/** `/queue`: an ephemeral view of the channel's queue. */
export const QUEUE_COMMAND = {
  name: 'queue',
  description: "Show this channel's image queue and your place in it",
  type: ApplicationCommandType.ChatInput,
} as const satisfies RESTPostAPIChatInputApplicationCommandsJSONBody;

/** What the caller sees: what is running, how many wait, and their own positions. */
export function renderQueue(snapshot: QueueSnapshot | undefined, userId: string, now: number): string {
  if (snapshot === undefined || (snapshot.running.length === 0 && snapshot.waiting.length === 0)) {
    return 'The queue in this channel is empty: a /generate starts right away.';
  }

  const lines: string[] = [];
  for (const run of snapshot.running) {
    const mine = run.userId === userId ? ' (yours)' : '';
    lines.push(`🎨 Generating${mine}: “${shorten(run.prompt, 80)}” for ${formatDuration(now - run.startedAt)}`);
  }

  const count = snapshot.waiting.length;
  lines.push(count === 0 ? 'Nobody is waiting.' : `⏳ ${count} request${count === 1 ? '' : 's'} waiting.`);
  const own = snapshot.waiting.filter((job) => job.userId === userId).map((job) => job.position);
  if (own.length > 0) {
    lines.push(`Your position${own.length === 1 ? '' : 's'}: ${own.join(', ')}.`);
  }

  if (snapshot.etaMs !== null && count > 0) {
    lines.push(`The next request should start in about ${formatDuration(snapshot.etaMs)}.`);
  }

  return lines.join('\n');
}

function shorten(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}
