import type { BotConfig } from '../config';
import type { Logger } from '../logger';
import { createBackend } from './create-backend';
import type { ImageBackend } from './image-backend';

interface Entry {
  models: string[] | null;
  samplers: string[] | null;
  fetchedAt: number;
  refreshing: Promise<void> | null;
}

export interface CatalogOptions {
  /** How long a listing is fresh, in ms. Default 5 min. */
  ttlMs?: number;
  /** How long an autocomplete may wait for a first listing, in ms. Default 1500: Discord allows 3 s. */
  firstFetchBudgetMs?: number;
  now?: () => number;
}

/**
 * Models and samplers offered by each image server, cached for autocomplete and for checking a
 * submitted name. Answers from the cache at once; a stale entry is refreshed in the background, and
 * only a server never listed before is waited for, briefly.
 */
export class BackendCatalog {
  readonly #entries = new Map<string, Entry>();
  readonly #backends = new Map<string, ImageBackend>();
  readonly #ttlMs: number;
  readonly #budgetMs: number;
  readonly #now: () => number;

  constructor(
    private readonly config: BotConfig,
    private readonly logger: Logger,
    options: CatalogOptions = {},
  ) {
    this.#ttlMs = options.ttlMs ?? 300_000;
    this.#budgetMs = options.firstFetchBudgetMs ?? 1_500;
    this.#now = options.now ?? Date.now;
  }

  /** The union over a pool; null where no server of the pool has been listed yet. */
  async lookup(pool: readonly string[], wait = true): Promise<{ models: string[] | null; samplers: string[] | null }> {
    const entries = await Promise.all(pool.map((name) => this.#entry(name, wait)));
    const union = (pick: (entry: Entry) => string[] | null): string[] | null => {
      const lists = entries.map(pick).filter((list): list is string[] => list !== null);
      return lists.length === 0 ? null : [...new Set(lists.flat())];
    };
    return { models: union((entry) => entry.models), samplers: union((entry) => entry.samplers) };
  }

  async #entry(name: string, wait: boolean): Promise<Entry> {
    let entry = this.#entries.get(name);
    if (entry === undefined) {
      entry = { models: null, samplers: null, fetchedAt: 0, refreshing: null };
      this.#entries.set(name, entry);
    }

    if (this.#now() - entry.fetchedAt > this.#ttlMs && entry.refreshing === null) {
      entry.refreshing = this.#refresh(name, entry).finally(() => {
        (entry as Entry).refreshing = null;
      });
    }

    if (wait && entry.fetchedAt === 0 && entry.refreshing !== null) {
      await Promise.race([entry.refreshing, new Promise((resolve) => setTimeout(resolve, this.#budgetMs))]);
    }

    return entry;
  }

  async #refresh(name: string, entry: Entry): Promise<void> {
    const config = this.config.backends[name];
    if (config === undefined) {
      return;
    }

    let backend = this.#backends.get(name);
    if (backend === undefined) {
      backend = createBackend(config);
      this.#backends.set(name, backend);
    }

    const [models, samplers] = await Promise.allSettled([backend.models(), backend.samplers()]);
    if (models.status === 'fulfilled') {
      entry.models = models.value;
    }

    if (samplers.status === 'fulfilled') {
      entry.samplers = samplers.value;
    }

    if (models.status === 'rejected' || samplers.status === 'rejected') {
      this.logger.warn({ backend: name }, 'image server listing failed; autocomplete uses what it had');
    } else {
      entry.fetchedAt = this.#now();
    }
  }
}

/** Up to 25 choices that contain what the user typed (case-insensitive), shortest first. */
export function autocompleteChoices(values: string[], typed: string): Array<{ name: string; value: string }> {
  const needle = typed.trim().toLowerCase();
  return values
    .filter((value) => value.length <= 100 && value.toLowerCase().includes(needle))
    .sort(
      (a, b) =>
        Number(!a.toLowerCase().startsWith(needle)) - Number(!b.toLowerCase().startsWith(needle)) ||
        a.length - b.length,
    )
    .slice(0, 25)
    .map((value) => ({ name: value, value }));
}
