// Names and message definitions shared by the endpoint, the workers and the workflow.
// Imported by workflow code, so it must stay free of Node built-ins and I/O.
import { defineSearchAttributeKey } from '@temporalio/common';
import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';

/** The task queue that every worker polls for channel workflows and their activities. */
export const TASK_QUEUE = 'sd-discord-bot';

/** One channel, one workflow: the id is derived from the Discord channel id. */
export function channelWorkflowId(channelId: string): string {
  return `channel-${channelId}`;
}

/**
 * The single workflow that hands out image-server capacity to every channel and worker, keeps track
 * of which servers are healthy, and probes the ones taken out until they answer again.
 */
export const IMAGE_SERVERS_WORKFLOW_ID = 'image-servers';

/** Search attributes that let an operator find a channel's workflow, and the channels a user is waiting in. */
export const SEARCH_ATTRIBUTES = {
  channelId: defineSearchAttributeKey('SdChannelId', 'KEYWORD'),
  guildId: defineSearchAttributeKey('SdGuildId', 'KEYWORD'),
  userIds: defineSearchAttributeKey('SdUserIds', 'KEYWORD_LIST'),
} as const;

/** What the image server is asked to draw. A seed of -1 never reaches a job: the workflow picks one. */
export interface GenerationSettings {
  prompt: string;
  negativePrompt: string;
  width: number;
  height: number;
  steps: number;
  cfgScale: number;
  sampler: string;
  seed: number;
  model?: string;
  /** img2img: a Discord attachment to start from, and how far to move away from it (0..1). */
  initImage?: { url: string; strength: number };
}

/** A /generate request as handed to the channel workflow by the endpoint. */
export interface GenerateRequest {
  /** The Discord interaction id: it identifies the request, so a repeated POST queues nothing twice. */
  requestId: string;
  applicationId: string;
  /** Valid for the interaction token lifetime from `receivedAt`. Never logged. */
  interactionToken: string;
  channelId: string;
  guildId: string | null;
  userId: string;
  userName: string;
  /** The image servers this channel may use, with how many generations each runs at once. */
  pool: PoolMember[];
  settings: GenerationSettings;
  /** Epoch ms when the endpoint received the interaction. */
  receivedAt: number;
  /** Epoch ms after which the workflow must refuse the request: the endpoint has already answered with an error. */
  acceptBefore: number;
  /** The endpoint's current queue settings; the channel workflow adopts the newest it receives. */
  queueSettings?: ChannelQueueSettings;
}

export interface PoolMember {
  name: string;
  capacity: number;
}

/** Queue tuning handed to the workflow when it starts, taken from config.json. */
export interface ChannelQueueSettings {
  maxConcurrentPerUser: number;
  interactionTokenLifetimeMs: number;
  idleTimeoutMs: number;
  generationTimeoutMs: number;
  generationAttempts: number;
  retryInitialIntervalMs: number;
  /** A generation that has not heartbeated for this long is taken to be on a dead worker. */
  heartbeatTimeoutMs: number;
  /** Whether the SdUserIds search attribute is registered and kept up to date. */
  searchAttributes: boolean;
}

export type EnqueueResult =
  { status: 'queued'; position: number; duplicate: boolean } | { status: 'rejected'; reason: string };

export interface QueueSnapshot {
  running: Array<{ requestId: string; userId: string; prompt: string; startedAt: number }>;
  waiting: Array<{ requestId: string; userId: string; position: number }>;
  completed: number;
  /** Recent requests whose image could not be delivered (token expired and no bot token, or Discord refused). */
  undeliverable: Array<{ requestId: string; userId: string; reason: string }>;
  /** Estimated wait for the next request to start, in ms, or null before anything was measured. */
  etaMs: number | null;
}

export interface CancelRequest {
  requestId: string;
  /** Who pressed Cancel. */
  userId: string;
  /** Whether that member has Manage Messages in the channel (checked by the endpoint from the interaction). */
  canManageMessages: boolean;
}

export type CancelResult =
  { status: 'cancelled'; wasRunning: boolean } | { status: 'forbidden' } | { status: 'not-found' };

export interface LeaseRequest {
  leaseId: string;
  /** The workflow to signal with {@link leaseGrantedSignal} when the lease is granted. */
  holderWorkflowId: string;
  /** Servers the job may run on; the least busy healthy one with a free slot is chosen. */
  pool: PoolMember[];
  /** A retry of a job that already waited its turn: served before new requests. */
  priority: boolean;
  /** A server to stay away from if another one can take the job (it just failed this job). */
  avoid: string | null;
}

export interface LeaseGrant {
  leaseId: string;
  server: string;
}

export interface LeaseRelease {
  leaseId: string;
  /**
   * `failed`: the server failed this job; two in a row take it out of rotation. `unreachable`: it
   * could not be reached or stopped answering; that takes it out at once.
   */
  outcome: 'ok' | 'failed' | 'unreachable' | 'withdrawn';
}

export interface ServerState {
  name: string;
  capacity: number;
  busy: number;
  healthy: boolean;
  consecutiveFailures: number;
  /** When a taken-out server is probed next, epoch ms. */
  probeAt: number | null;
}

/**
 * Adds a request to the channel's queue. An update rather than a signal because the endpoint must
 * know, before it answers Discord, whether the request was accepted or refused (per-user limit).
 */
export const enqueueUpdate = defineUpdate<EnqueueResult, [GenerateRequest]>('enqueue');

/** The channel's queue as it stands, answered from workflow state without touching any image server. */
export const queueQuery = defineQuery<QueueSnapshot>('queue');

/** Removes a queued request, or interrupts a running one. Only its requester or a moderator may. */
export const cancelUpdate = defineUpdate<CancelResult, [CancelRequest]>('cancel');

/** Sent by the image-servers workflow to the channel workflow whose lease it granted. */
export const leaseGrantedSignal = defineSignal<[LeaseGrant]>('leaseGranted');

/** Asks for a generation slot; repeated asks for the same lease id are harmless. */
export const acquireLeaseSignal = defineSignal<[LeaseRequest]>('acquireLease');

/** Gives a slot back (or withdraws a request still waiting for one), saying how the job went. */
export const releaseLeaseSignal = defineSignal<[LeaseRelease]>('releaseLease');

/** The image servers' state, for operators (Temporal UI) and tests. */
export const serversQuery = defineQuery<{ servers: ServerState[]; waiting: string[] }>('servers');

/** Button custom ids. They carry the request id; the channel comes from the interaction. */
export const CUSTOM_ID = {
  cancel: (requestId: string) => `sd:cancel:${requestId}`,
  reroll: (requestId: string) => `sd:reroll:${requestId}`,
} as const;

export function parseCustomId(customId: string): { action: 'cancel' | 'reroll'; requestId: string } | undefined {
  const match = /^sd:(cancel|reroll):(\d{1,25})$/.exec(customId);
  if (match === null) {
    return undefined;
  }

  return { action: match[1] as 'cancel' | 'reroll', requestId: match[2] as string };
}
