// Names and message definitions shared by the endpoint, the workers and the workflow.
// Imported by workflow code, so it must stay free of Node built-ins and I/O.
import { defineQuery, defineUpdate } from '@temporalio/workflow';

/** The task queue that every worker polls for channel workflows and their activities. */
export const TASK_QUEUE = 'sd-discord-bot';

/** One channel, one workflow: the id is derived from the Discord channel id. */
export function channelWorkflowId(channelId: string): string {
  return `channel-${channelId}`;
}

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
  backend: string;
  settings: GenerationSettings;
  /** Epoch ms when the endpoint received the interaction. */
  receivedAt: number;
  /** Epoch ms after which the workflow must refuse the request: the endpoint has already answered with an error. */
  acceptBefore: number;
}

/** Queue tuning handed to the workflow when it starts, taken from config.json. */
export interface ChannelQueueSettings {
  maxConcurrentPerUser: number;
  interactionTokenLifetimeMs: number;
  idleTimeoutMs: number;
  generationTimeoutMs: number;
  generationAttempts: number;
  retryInitialIntervalMs: number;
}

export type EnqueueResult =
  { status: 'queued'; position: number; duplicate: boolean } | { status: 'rejected'; reason: string };

export interface QueueSnapshot {
  running: Array<{ requestId: string; userId: string; prompt: string }>;
  waiting: Array<{ requestId: string; userId: string; position: number }>;
  completed: number;
}

/**
 * Adds a request to the channel's queue. An update rather than a signal because the endpoint must
 * know, before it answers Discord, whether the request was accepted or refused (per-user limit).
 */
export const enqueueUpdate = defineUpdate<EnqueueResult, [GenerateRequest]>('enqueue');

/** The channel's queue as it stands, answered from workflow state without touching any image server. */
export const queueQuery = defineQuery<QueueSnapshot>('queue');
