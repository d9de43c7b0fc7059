import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import type { DiscordStandIn, RecordedCall } from '../../src/standins/discord-api';

interface EmbedView {
  title?: string;
  description?: string;
  fields?: Array<{ name: string; value: string }>;
}

/**
 * Prints what a Discord user would have seen, as the bot's calls reach the Discord stand-in:
 * each edit of a request's message, and each image (saved to `outputDir`).
 */
export class ConversationPrinter {
  readonly #labels = new Map<string, string>();
  readonly #started = Date.now();
  #seen = 0;
  #timer: NodeJS.Timeout | undefined;
  readonly saved: string[] = [];

  constructor(
    private readonly discord: DiscordStandIn,
    private readonly outputDir: string,
    private readonly print: (line: string) => void = (line) => console.log(line),
  ) {}

  /** Names the message of an interaction, e.g. `alice: /generate a red fox`. */
  label(token: string, label: string): void {
    this.#labels.set(token, label);
  }

  say(line: string): void {
    this.print(`${this.#clock()} ${line}`);
  }

  start(intervalMs = 100): void {
    this.#timer = setInterval(() => this.flush(), intervalMs);
  }

  stop(): void {
    clearInterval(this.#timer);
    this.flush();
  }

  flush(): void {
    const calls = this.discord.calls;
    for (; this.#seen < calls.length; this.#seen += 1) {
      const call = calls[this.#seen];
      if (call !== undefined) {
        this.#show(call);
      }
    }
  }

  #show(call: RecordedCall): void {
    const who = (call.token !== null ? this.#labels.get(call.token) : undefined) ?? call.route;
    if (call.status >= 400) {
      this.print(
        `${this.#clock(call.at)} [${who}] Discord refused ${call.method} with ${call.status} (the bot retries)`,
      );
      return;
    }

    const body = (call.body ?? {}) as { content?: string; embeds?: EmbedView[] };
    const lines: string[] = [];
    if (body.content !== undefined && body.content !== '') {
      lines.push(...body.content.split('\n'));
    }

    for (const embed of body.embeds ?? []) {
      lines.push(`┃ ${embed.title ?? ''}${embed.description === undefined ? '' : `: ${embed.description}`}`);
      const fields = (embed.fields ?? []).map((field) => `${field.name}: ${field.value}`);
      if (fields.length > 0) {
        lines.push(`┃ ${fields.join(' · ')}`);
      }
    }

    for (const file of call.files) {
      mkdirSync(this.outputDir, { recursive: true });
      const path = join(this.outputDir, file.filename);
      writeFileSync(path, file.data);
      this.saved.push(path);
      lines.push(`┃ 🖼  ${file.filename} (${Math.round(file.data.length / 1_024)} KiB) saved to ${path}`);
    }

    const verb = call.method === 'PATCH' ? 'message now reads' : 'new message';
    this.print(`${this.#clock(call.at)} [${who}] ${verb}:`);
    for (const line of lines) {
      this.print(`      ${line}`);
    }
  }

  #clock(at = Date.now()): string {
    return `+${((at - this.#started) / 1_000).toFixed(1).padStart(5)}s`;
  }
}
