import type { KeyObject } from 'node:crypto';

import type { Client } from '@temporalio/client';
import type { APIInteraction } from 'discord-api-types/v10';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';

import type { BotConfig } from './config';
import { verifyInteractionSignature } from './discord/signature';
import { InteractionHandler } from './interactions';
import type { Logger } from './logger';
import type { TokenSealer } from './token-seal';

export interface ServerDependencies {
  config: BotConfig;
  /** Discord's application public key, parsed once with `parsePublicKey`. */
  publicKey: KeyObject;
  temporal: Client;
  logger: Logger;
  /** How long Temporal may take to accept a request before Discord is told it failed, in ms. Default 2000. */
  enqueueTimeoutMs?: number;
  /** Whether the bot's search attributes are registered (see `ensureSearchAttributes`). */
  searchAttributes?: boolean;
  /** Seals interaction tokens before they enter Temporal. */
  tokenSealer?: TokenSealer | undefined;
  now?: () => number;
}

/**
 * The Interactions Endpoint: `POST /interactions` (signed by Discord), `GET /healthz` and `GET /readyz`.
 * Not listening yet; the caller decides the address.
 */
export function buildServer(deps: ServerDependencies): FastifyInstance {
  const app = Fastify({
    loggerInstance: deps.logger as FastifyBaseLogger,
    // Request logs would carry interaction URLs and bodies; the handlers log ids instead.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: 1_048_576, // 1 MiB
  });
  const handler = new InteractionHandler(deps);
  const now = deps.now ?? Date.now;

  // The signature covers the exact bytes Discord sent, so keep them rather than a re-serialized object.
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (_request, body, done) => done(null, body));

  app.post('/interactions', async (request, reply) => {
    const rawBody = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0);
    const verdict = verifyInteractionSignature(
      deps.publicKey,
      rawBody,
      headerValue(request.headers['x-signature-ed25519']),
      headerValue(request.headers['x-signature-timestamp']),
      now(),
    );
    if (verdict !== 'valid') {
      request.log.info({ verdict }, 'interaction refused: bad signature');
      return reply.code(401).send({ error: 'invalid request signature' });
    }

    let interaction: APIInteraction;
    try {
      interaction = JSON.parse(rawBody.toString('utf8')) as APIInteraction;
    } catch {
      return reply.code(400).send({ error: 'body is not JSON' });
    }

    const started = performance.now();
    const response = await handler.handle(interaction);
    request.log.debug(
      { interactionId: interaction.id, type: interaction.type, ms: Math.round(performance.now() - started) },
      'interaction answered',
    );
    return reply.code(200).send(response);
  });

  app.get('/healthz', async () => ({ status: 'ok' }));

  app.get('/readyz', async (_request, reply) => {
    try {
      await deps.temporal.connection.withDeadline(Date.now() + 2_000, () =>
        deps.temporal.connection.workflowService.getSystemInfo({}),
      );
      return { status: 'ready' };
    } catch (error) {
      deps.logger.warn({ err: error instanceof Error ? error.message : String(error) }, 'temporal not ready');
      return reply.code(503).send({ status: 'temporal unavailable' });
    }
  });

  return app;
}

function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}
