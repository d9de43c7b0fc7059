import {
  allHandlersFinished,
  condition,
  continueAsNew,
  getExternalWorkflowHandle,
  log,
  proxyActivities,
  setHandler,
  workflowInfo,
} from '@temporalio/workflow';

import type { BotActivities } from '../activities';
import {
  acquireLeaseSignal,
  leaseGrantedSignal,
  releaseLeaseSignal,
  serversQuery,
  type LeaseRequest,
  type ServerState,
} from '../shared';

export interface ImageServersInput {
  carried?: {
    servers: ServerRecord[];
    holders: Array<[string, Holder]>;
    waiting: LeaseRequest[];
    /** Holders that asked again and have not been told yet. */
    regrants?: string[];
  };
}

interface Holder {
  holderWorkflowId: string;
  server: string;
  grantedAt: number;
}

interface ServerRecord {
  name: string;
  capacity: number;
  consecutiveFailures: number;
  /** Null while healthy; when taken out, the time of the next health probe. */
  probeAt: number | null;
  /** How long the next wait before a probe is, doubling while probes fail. */
  cooldownMs: number;
}

/** Failures in a row that take a server out of rotation. */
const FAILURES_TO_TRIP = 2;
const FIRST_COOLDOWN_MS = 3_000; // 3 s
const MAX_COOLDOWN_MS = 300_000; // 5 min
/** A lease nobody gave back in this long belongs to a channel workflow that was terminated. */
const LEASE_TTL_MS = 3 * 60 * 60 * 1_000; // 3 h
const IDLE_END_MS = 60 * 60 * 1_000; // 1 h
/** While requests wait and every slot is taken, how often to check that the holders are still alive. */
const HOLDER_CHECK_MS = 15_000; // 15 s

const { findClosedWorkflows, probeImageServer } = proxyActivities<BotActivities>({
  startToCloseTimeout: '30s',
  retry: { maximumAttempts: 1 },
});

/**
 * One workflow for every image server: a counting semaphore per server (its `capacity`) shared by
 * every channel and worker, so that no server is asked for more than it runs at once, and a circuit
 * breaker that takes failing servers out of rotation until a health probe finds them answering.
 * A job goes to the least busy healthy server of its pool with a free slot. Waiting for a slot
 * happens here, in order (retries first), not inside an activity with a timeout.
 */
export async function imageServersWorkflow(input: ImageServersInput = {}): Promise<void> {
  const servers = new Map<string, ServerRecord>((input.carried?.servers ?? []).map((s) => [s.name, s]));
  const holders = new Map<string, Holder>(input.carried?.holders ?? []);
  const waiting: LeaseRequest[] = input.carried?.waiting ?? [];
  const regrants: string[] = [...(input.carried?.regrants ?? [])];
  const probing = new Set<string>();
  let version = 0;
  let lastActivityAt = Date.now();

  const serverNamed = (name: string, capacity: number): ServerRecord => {
    let server = servers.get(name);
    if (server === undefined) {
      server = { name, capacity, consecutiveFailures: 0, probeAt: null, cooldownMs: FIRST_COOLDOWN_MS };
      servers.set(name, server);
    }

    server.capacity = capacity;
    return server;
  };
  const busy = (name: string) => [...holders.values()].filter((h) => h.server === name).length;

  setHandler(acquireLeaseSignal, (request) => {
    for (const member of request.pool) {
      serverNamed(member.name, member.capacity);
    }

    if (holders.has(request.leaseId)) {
      // The holder asked again (it continued as new, or the grant was lost): tell it again.
      regrants.push(request.leaseId);
    } else if (!waiting.some((w) => w.leaseId === request.leaseId)) {
      if (request.priority) {
        const firstNew = waiting.findIndex((w) => !w.priority);
        waiting.splice(firstNew === -1 ? waiting.length : firstNew, 0, request);
      } else {
        waiting.push(request);
      }
    }

    version += 1;
    lastActivityAt = Date.now();
  });

  setHandler(releaseLeaseSignal, ({ leaseId, outcome }) => {
    const holder = holders.get(leaseId);
    holders.delete(leaseId);
    const index = waiting.findIndex((w) => w.leaseId === leaseId);
    if (index !== -1) {
      waiting.splice(index, 1);
    }

    const server = holder === undefined ? undefined : servers.get(holder.server);
    if (server !== undefined && (outcome === 'failed' || outcome === 'unreachable')) {
      server.consecutiveFailures += 1;
      const trips = outcome === 'unreachable' || server.consecutiveFailures >= FAILURES_TO_TRIP;
      if (trips && server.probeAt === null) {
        log.warn('image server taken out of rotation', { server: server.name, failures: server.consecutiveFailures });
        server.probeAt = Date.now() + server.cooldownMs;
      }
    } else if (server !== undefined && outcome === 'ok') {
      server.consecutiveFailures = 0;
    }

    version += 1;
    lastActivityAt = Date.now();
  });

  setHandler(serversQuery, () => ({
    servers: [...servers.values()].map((server): ServerState => ({
      name: server.name,
      capacity: server.capacity,
      busy: busy(server.name),
      healthy: server.probeAt === null,
      consecutiveFailures: server.consecutiveFailures,
      probeAt: server.probeAt,
    })),
    waiting: waiting.map((w) => w.leaseId),
  }));

  /** The least busy healthy server of the pool with a free slot, preferring not `avoid`. */
  function pick(request: LeaseRequest): string | undefined {
    const candidates = request.pool
      .map((member) => servers.get(member.name))
      .filter((server): server is ServerRecord => server !== undefined && server.probeAt === null)
      .filter((server) => busy(server.name) < server.capacity)
      .sort(
        (a, b) =>
          Number(a.name === request.avoid) - Number(b.name === request.avoid) ||
          busy(a.name) / a.capacity - busy(b.name) / b.capacity ||
          a.consecutiveFailures - b.consecutiveFailures,
      );
    return candidates[0]?.name;
  }

  const grantable = () => regrants.length > 0 || waiting.some((request) => pick(request) !== undefined);
  const contended = () => waiting.length > 0 && !grantable();

  for (;;) {
    const now = Date.now();
    const probeDue = [...servers.values()]
      .filter((s) => s.probeAt !== null && !probing.has(s.name))
      .map((s) => s.probeAt as number);
    const oldestLease = Math.min(...[...holders.values()].map((h) => h.grantedAt));
    const deadlines = [
      ...probeDue,
      holders.size > 0 ? oldestLease + LEASE_TTL_MS : lastActivityAt + IDLE_END_MS,
      contended() ? now + HOLDER_CHECK_MS : Number.POSITIVE_INFINITY,
    ];
    const seen = version;
    const woke = await condition(() => grantable() || version !== seen, Math.max(1, Math.min(...deadlines) - now));

    if (!woke) {
      startDueProbes();
      if (contended()) {
        await takeBackFromClosedHolders();
      }

      expireStaleLeases();
      const idle = holders.size === 0 && waiting.length === 0 && probing.size === 0;
      if (idle && Date.now() - lastActivityAt >= IDLE_END_MS) {
        await condition(allHandlersFinished);
        if (holders.size === 0 && waiting.length === 0) {
          return;
        }
      }
    }

    for (const leaseId of regrants.splice(0)) {
      const holder = holders.get(leaseId);
      if (holder !== undefined) {
        await notify(leaseId, holder.holderWorkflowId, holder.server);
      }
    }

    // In queue order; a request none of whose servers is free waits without blocking the others.
    for (const request of [...waiting]) {
      const server = pick(request);
      if (server === undefined) {
        continue;
      }

      waiting.splice(waiting.indexOf(request), 1);
      holders.set(request.leaseId, { holderWorkflowId: request.holderWorkflowId, server, grantedAt: Date.now() });
      await notify(request.leaseId, request.holderWorkflowId, server);
    }

    if (workflowInfo().continueAsNewSuggested && probing.size === 0) {
      await condition(allHandlersFinished);
      await continueAsNew<typeof imageServersWorkflow>({
        carried: { servers: [...servers.values()], holders: [...holders.entries()], waiting, regrants },
      });
    }
  }

  function startDueProbes(): void {
    for (const server of servers.values()) {
      if (server.probeAt === null || server.probeAt > Date.now() || probing.has(server.name)) {
        continue;
      }

      probing.add(server.name);
      probeImageServer(server.name)
        .then(
          () => {
            log.info('image server back in rotation', { server: server.name });
            server.probeAt = null;
            server.consecutiveFailures = 0;
            server.cooldownMs = FIRST_COOLDOWN_MS;
          },
          () => {
            server.cooldownMs = Math.min(server.cooldownMs * 2, MAX_COOLDOWN_MS);
            server.probeAt = Date.now() + server.cooldownMs;
          },
        )
        .finally(() => {
          probing.delete(server.name);
          version += 1;
        });
    }
  }

  function expireStaleLeases(): void {
    for (const [leaseId, holder] of holders) {
      if (Date.now() - holder.grantedAt >= LEASE_TTL_MS) {
        log.warn('lease expired without release', { leaseId, holder: holder.holderWorkflowId });
        holders.delete(leaseId);
      }
    }
  }

  async function takeBackFromClosedHolders(): Promise<void> {
    const holderIds = [...new Set([...holders.values()].map((h) => h.holderWorkflowId))];
    let closed: string[];
    try {
      closed = await findClosedWorkflows(holderIds);
    } catch (error) {
      log.warn('could not check lease holders', { error: String(error) });
      return;
    }

    for (const [leaseId, holder] of holders) {
      if (closed.includes(holder.holderWorkflowId)) {
        log.warn('lease taken back from a closed workflow', { leaseId, holder: holder.holderWorkflowId });
        holders.delete(leaseId);
      }
    }
  }

  async function notify(leaseId: string, holderWorkflowId: string, server: string): Promise<void> {
    try {
      await getExternalWorkflowHandle(holderWorkflowId).signal(leaseGrantedSignal, { leaseId, server });
    } catch (error) {
      // The channel workflow is gone; its slot is free again.
      log.warn('lease holder unreachable', { leaseId, error: String(error) });
      holders.delete(leaseId);
    }
  }
}
