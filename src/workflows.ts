// Every workflow type the workers run; bundled for the workflow sandbox.
export { channelQueueWorkflow } from './workflows/channel-queue';
export { imageServersWorkflow } from './workflows/image-servers';
