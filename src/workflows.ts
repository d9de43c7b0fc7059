export { channelQueueWorkflow } from './workflows/channel-queue';
