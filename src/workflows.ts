export { channelQueueWorkflow } from './workflows/channel-queue';
export { backendLeaseWorkflow } from './workflows/backend-lease';
