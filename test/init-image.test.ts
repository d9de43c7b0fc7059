import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import Fastify, { type FastifyInstance } from 'fastify';
import {
  checkInitImageUrl,
  DEFAULT_INIT_IMAGE_POLICY,
  DISCORD_ATTACHMENT_HOSTS,
  fetchInitImage,
  InitImageError,
  type InitImageErrorCode,
  type InitImagePolicy,
} from '../src/backends/init-image';
import { encodePng } from '../src/standins/png';

// Discord signs attachment URLs with query parameters; none of them may show up in an error.
const SIGNED_QUERY = '?ex=6650c0de&is=664f6f5e&hm=secretsignature0123456789';

const NOT_FROM_DISCORD = 'Images can only come from Discord attachments.';

const attachment = encodePng(32, 24, 7, 'a cat');
const oversize = Buffer.concat([attachment, Buffer.alloc(8_192)]);
const jpeg = Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0]), Buffer.alloc(64, 1)]);

/** A loopback server posing as Discord's CDN. */
interface FakeCdn {
  app: FastifyInstance;
  origin: string;
  policy: InitImagePolicy;
  requestCount: () => number;
  /** Resolves when the endless body of `/endless.png` has been torn down. */
  endlessClosed: Promise<unknown>;
}

let cdn: FakeCdn;

before(async () => {
  cdn = await startFakeCdn();
});

after(async () => {
  await cdn.app.close();
});

async function startFakeCdn(): Promise<FakeCdn> {
  const app = Fastify({ logger: false });
  let requests = 0;
  let markEndlessClosed: (value: unknown) => void = () => undefined;
  const endlessClosed = new Promise((resolve) => {
    markEndlessClosed = resolve;
  });

  app.addHook('onRequest', async () => {
    requests += 1;
  });

  app.get('/attachments/1/2/a.png', async (_request, reply) => reply.type('image/png').send(attachment));
  app.get('/attachments/1/2/b.jpg', async (_request, reply) => reply.type('image/jpeg; charset=binary').send(jpeg));
  app.get('/hop/:left', async (request, reply) => {
    const left = Number((request.params as { left: string }).left);
    const next = left === 0 ? '/attachments/1/2/a.png' : `/hop/${left - 1}`;
    return reply.redirect(`${next}${SIGNED_QUERY}`, 302);
  });
  app.get('/away', async (_request, reply) => reply.redirect(`https://evil.example/a.png${SIGNED_QUERY}`, 302));
  app.get('/big.png', async (_request, reply) => reply.type('image/png').send(oversize));
  app.get('/endless.png', async (_request, reply) => {
    const body = Readable.from(endlessPng());
    body.once('close', () => markEndlessClosed(true));
    return reply.type('image/png').send(body);
  });
  app.get('/page.png', async (_request, reply) =>
    reply.type('image/png').send('<!doctype html><title>Sign in</title><p>Please sign in'),
  );
  app.get('/typed-as-html', async (_request, reply) => reply.type('text/html').send(attachment));
  app.get('/gone.png', async (_request, reply) => reply.code(404).send('This content is no longer available.'));
  app.get('/down.png', async (_request, reply) => reply.code(503).send('upstream unavailable'));
  app.get('/slow.png', async (_request, reply) => {
    await sleep(500);
    return reply.type('image/png').send(attachment);
  });

  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address();
  assert.ok(typeof address === 'object' && address !== null);
  return {
    app,
    origin: `http://127.0.0.1:${address.port}`,
    policy: { ...DEFAULT_INIT_IMAGE_POLICY, allowedHosts: ['127.0.0.1'], allowHttp: true, maxBytes: 4_096 },
    requestCount: () => requests,
    endlessClosed,
  };
}

/** A PNG signature followed by zeros, forever. */
function* endlessPng(): Generator<Buffer> {
  yield attachment.subarray(0, 8);
  for (;;) {
    yield Buffer.alloc(16_384);
  }
}

function isInitImageError(code: InitImageErrorCode, status?: number): (error: unknown) => boolean {
  return (error) => {
    assert.ok(error instanceof InitImageError, `expected an InitImageError, got ${String(error)}`);
    assert.equal(error.code, code);
    assert.equal(error.retryable, code === 'INIT_IMAGE_UNAVAILABLE');
    assert.equal(error.status, status);
    for (const text of [error.message, error.url]) {
      assert.doesNotMatch(text, /secretsignature|\?ex=/, `the signed query leaked into "${text}"`);
    }

    return true;
  };
}

test('a PNG attachment is fetched byte for byte', async () => {
  const image = await fetchInitImage(`${cdn.origin}/attachments/1/2/a.png${SIGNED_QUERY}`, cdn.policy);

  assert.ok(image.equals(attachment));
});

test('a JPEG is accepted, whatever parameters follow its content type', async () => {
  const image = await fetchInitImage(`${cdn.origin}/attachments/1/2/b.jpg`, cdn.policy);

  assert.ok(image.equals(jpeg));
});

test('up to three redirects within the allowed hosts are followed', async () => {
  const image = await fetchInitImage(`${cdn.origin}/hop/2${SIGNED_QUERY}`, cdn.policy);

  assert.ok(image.equals(attachment));
});

test('a fourth redirect is refused', async () => {
  await assert.rejects(fetchInitImage(`${cdn.origin}/hop/3`, cdn.policy), isInitImageError('INIT_IMAGE_REFUSED'));
});

test('a redirect to another host is refused without following it', async () => {
  await assert.rejects(fetchInitImage(`${cdn.origin}/away${SIGNED_QUERY}`, cdn.policy), (error: unknown) => {
    isInitImageError('INIT_IMAGE_REFUSED')(error);
    assert.match((error as Error).message, /redirect refused: host evil\.example is not allowed/);
    assert.equal((error as InitImageError).url, 'https://evil.example/a.png');
    return true;
  });
});

test('another host is refused before any request is made', async () => {
  const before = cdn.requestCount();
  const otherHost = cdn.origin.replace('127.0.0.1', 'localhost');

  await assert.rejects(
    fetchInitImage(`${otherHost}/attachments/1/2/a.png${SIGNED_QUERY}`, cdn.policy),
    isInitImageError('INIT_IMAGE_REFUSED'),
  );
  assert.equal(cdn.requestCount(), before);
});

test('a plain http URL is refused under the default policy', async () => {
  const url = `http://cdn.discordapp.com/attachments/1/2/a.png${SIGNED_QUERY}`;

  assert.deepEqual(checkInitImageUrl(url), { ok: false, reason: NOT_FROM_DISCORD });
  await assert.rejects(fetchInitImage(url), isInitImageError('INIT_IMAGE_REFUSED'));
});

test('IP literals are refused unless they are listed', async () => {
  assert.deepEqual(checkInitImageUrl('https://162.159.130.233/attachments/1/2/a.png', DEFAULT_INIT_IMAGE_POLICY), {
    ok: false,
    reason: NOT_FROM_DISCORD,
  });
  const ipv6 = cdn.origin.replace('127.0.0.1', '[::1]');

  await assert.rejects(
    fetchInitImage(`${ipv6}/attachments/1/2/a.png`, cdn.policy),
    isInitImageError('INIT_IMAGE_REFUSED'),
  );
});

test('credentials in the URL are refused and never repeated', async () => {
  const url = cdn.origin.replace('http://', 'http://bot:hunter2@');

  assert.deepEqual(checkInitImageUrl(`${url}/attachments/1/2/a.png`, cdn.policy), {
    ok: false,
    reason: NOT_FROM_DISCORD,
  });
  await assert.rejects(fetchInitImage(`${url}/attachments/1/2/a.png`, cdn.policy), (error: unknown) => {
    isInitImageError('INIT_IMAGE_REFUSED')(error);
    assert.doesNotMatch(`${(error as Error).message} ${(error as InitImageError).url}`, /hunter2|bot:/);
    return true;
  });
});

test('a body whose Content-Length is past the cap is refused', async () => {
  await assert.rejects(fetchInitImage(`${cdn.origin}/big.png${SIGNED_QUERY}`, cdn.policy), (error: unknown) => {
    isInitImageError('INIT_IMAGE_REFUSED')(error);
    assert.match((error as Error).message, new RegExp(`declares ${oversize.length} bytes, more than 4096`));
    return true;
  });
});

test('a body without Content-Length is cut off as soon as it passes the cap', async () => {
  await assert.rejects(fetchInitImage(`${cdn.origin}/endless.png${SIGNED_QUERY}`, cdn.policy), (error: unknown) => {
    isInitImageError('INIT_IMAGE_REFUSED')(error);
    assert.match((error as Error).message, /larger than 4096 bytes/);
    return true;
  });

  const closed = await Promise.race([cdn.endlessClosed, sleep(2_000, false)]);
  assert.equal(closed, true, 'the server kept sending the endless body');
});

test('an HTML page claiming to be image/png is refused', async () => {
  await assert.rejects(fetchInitImage(`${cdn.origin}/page.png`, cdn.policy), (error: unknown) => {
    isInitImageError('INIT_IMAGE_REFUSED')(error);
    assert.match((error as Error).message, /not a PNG, JPEG or WebP/);
    return true;
  });
});

test('PNG bytes served as text/html are refused', async () => {
  await assert.rejects(
    fetchInitImage(`${cdn.origin}/typed-as-html`, cdn.policy),
    isInitImageError('INIT_IMAGE_REFUSED'),
  );
});

test('a 404 is refused and not worth retrying', async () => {
  await assert.rejects(
    fetchInitImage(`${cdn.origin}/gone.png${SIGNED_QUERY}`, cdn.policy),
    isInitImageError('INIT_IMAGE_REFUSED', 404),
  );
});

test('a 503 is unavailable and worth retrying', async () => {
  await assert.rejects(
    fetchInitImage(`${cdn.origin}/down.png${SIGNED_QUERY}`, cdn.policy),
    isInitImageError('INIT_IMAGE_UNAVAILABLE', 503),
  );
});

test('a host slower than the timeout is unavailable and worth retrying', async () => {
  await assert.rejects(
    fetchInitImage(`${cdn.origin}/slow.png${SIGNED_QUERY}`, { ...cdn.policy, timeoutMs: 100 }),
    isInitImageError('INIT_IMAGE_UNAVAILABLE'),
  );
});

test('a host that is not listening is unavailable and worth retrying', async () => {
  const closed = await startFakeCdn();
  await closed.app.close();

  await assert.rejects(
    fetchInitImage(`${closed.origin}/attachments/1/2/a.png${SIGNED_QUERY}`, closed.policy),
    isInitImageError('INIT_IMAGE_UNAVAILABLE'),
  );
});

test("aborting the caller's signal rejects with its reason", async () => {
  const controller = new AbortController();
  const reason = new Error('the job was cancelled');
  const fetching = fetchInitImage(`${cdn.origin}/slow.png`, cdn.policy, { signal: controller.signal });
  controller.abort(reason);

  await assert.rejects(fetching, (error: unknown) => error === reason);
});

test('the default policy accepts Discord attachment URLs, signed query included', () => {
  for (const host of [...DISCORD_ATTACHMENT_HOSTS, 'CDN.DiscordApp.com']) {
    const result = checkInitImageUrl(`https://${host}/attachments/1/2/a.png?ex=..`, DEFAULT_INIT_IMAGE_POLICY);

    assert.ok(result.ok, `${host} was refused`);
    assert.equal(result.url.hostname, host.toLowerCase());
  }
});

test('the default policy refuses look-alike hosts, other ports and non-URLs', () => {
  for (const url of [
    'https://evil.example/a.png',
    'https://cdn.discordapp.com.evil.example/a.png',
    'https://evil.example/cdn.discordapp.com/a.png',
    'https://cdn.discordapp.com:8443/attachments/1/2/a.png',
    'file:///etc/passwd',
    'not a url',
  ]) {
    assert.deepEqual(checkInitImageUrl(url, DEFAULT_INIT_IMAGE_POLICY), { ok: false, reason: NOT_FROM_DISCORD }, url);
  }
});
