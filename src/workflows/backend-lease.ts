import {
  allHandlersFinished,
  condition,
  proxyActivities,
  continueAsNew,
  getExternalWorkflowHandle,
  log,
  setHandler,
  workflowInfo,
} from '@temporalio/workflow';

import type { BotActivities } from '../activities';
import {
  acquireLeaseSignal,
  leaseGrantedSignal,
  leaseStateQuery,
  releaseLeaseSignal,
  type LeaseRequest,
} from '../shared';

export interface BackendLeaseInput {
  backend: string;
  capacity: number;
  carried?: { holders: Array<[string, Holder]>; waiting: LeaseRequest[] };
}

interface Holder {
  holderWorkflowId: string;
  grantedAt: number;
}

/** A lease nobody gave back in this long belongs to a channel workflow that was terminated. */
const LEASE_TTL_MS = 3 * 60 * 60 * 1_000; // 3 h
const IDLE_END_MS = 60 * 60 * 1_000; // 1 h
/** While requests wait and every slot is taken, how often to check that the holders are still alive. */
const HOLDER_CHECK_MS = 15_000; // 15 s

const { findClosedWorkflows } = proxyActivities<BotActivities>({
  startToCloseTimeout: '30s',
  retry: { maximumAttempts: 3 },
});

/**
 * One workflow per image server: a counting semaphore over its `capacity`, shared by every channel
 * and every worker, so that a server is never asked for more generations than it runs at once.
 * Waiting for a slot happens here, in queue order, not inside an activity with a timeout.
 */
export async function backendLeaseWorkflow(input: BackendLeaseInput): Promise<void> {
  let capacity = input.capacity;
  const holders = new Map<string, Holder>(input.carried?.holders ?? []);
  const waiting: LeaseRequest[] = input.carried?.waiting ?? [];
  const regrants: LeaseRequest[] = [];

  setHandler(acquireLeaseSignal, (request) => {
    capacity = request.capacity;
    if (holders.has(request.leaseId)) {
      // The holder asked again (it continued as new, or its first grant was lost): tell it again.
      regrants.push(request);
    } else if (!waiting.some((w) => w.leaseId === request.leaseId)) {
      waiting.push(request);
    }
  });

  setHandler(releaseLeaseSignal, (leaseId) => {
    holders.delete(leaseId);
    const index = waiting.findIndex((w) => w.leaseId === leaseId);
    if (index !== -1) {
      waiting.splice(index, 1);
    }
  });

  setHandler(leaseStateQuery, () => ({
    capacity,
    holders: [...holders.keys()],
    waiting: waiting.map((w) => w.leaseId),
  }));

  const grantable = () => regrants.length > 0 || (holders.size < capacity && waiting.length > 0);
  const contended = () => waiting.length > 0 && holders.size >= capacity;

  for (;;) {
    const oldest = Math.min(...[...holders.values()].map((h) => h.grantedAt));
    const untilExpiry = holders.size > 0 ? Math.max(1, oldest + LEASE_TTL_MS - Date.now()) : IDLE_END_MS;
    const woke = await condition(grantable, contended() ? Math.min(HOLDER_CHECK_MS, untilExpiry) : untilExpiry);

    if (!woke && contended()) {
      await takeBackFromClosedHolders();
    }

    if (!woke) {
      for (const [leaseId, holder] of holders) {
        if (Date.now() - holder.grantedAt >= LEASE_TTL_MS) {
          log.warn('lease expired without release', { leaseId, holder: holder.holderWorkflowId });
          holders.delete(leaseId);
        }
      }

      if (holders.size === 0 && waiting.length === 0) {
        await condition(allHandlersFinished);
        if (holders.size === 0 && waiting.length === 0) {
          return;
        }
      }
    }

    for (const request of regrants.splice(0)) {
      await notify(request);
    }

    while (holders.size < capacity && waiting.length > 0) {
      const request = waiting.shift() as LeaseRequest;
      holders.set(request.leaseId, { holderWorkflowId: request.holderWorkflowId, grantedAt: Date.now() });
      await notify(request);
    }

    if (workflowInfo().continueAsNewSuggested) {
      await condition(allHandlersFinished);
      await continueAsNew<typeof backendLeaseWorkflow>({
        backend: input.backend,
        capacity,
        carried: { holders: [...holders.entries()], waiting },
      });
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

  async function notify(request: LeaseRequest): Promise<void> {
    try {
      await getExternalWorkflowHandle(request.holderWorkflowId).signal(leaseGrantedSignal, request.leaseId);
    } catch (error) {
      // The channel workflow is gone; its slot is free again.
      log.warn('lease holder unreachable', { leaseId: request.leaseId, error: String(error) });
      holders.delete(request.leaseId);
    }
  }
}
