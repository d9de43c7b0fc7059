import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { PNG } from 'pngjs';
import { A1111Client, ImageServerError, type Txt2ImgParams } from '../src/backends/a1111';
import {
  startImageServer,
  type ImageServerStandIn,
  type ImageServerStandInOptions,
} from '../src/standins/image-server';
import { encodePng, readPngSize } from '../src/standins/png';

const portrait: Txt2ImgParams = {
  prompt: 'a lighthouse at dusk, oil painting',
  negativePrompt: 'blurry',
  seed: 1234,
  sampler: 'Euler a',
  steps: 20,
  cfgScale: 7,
  width: 512,
  height: 768,
};

async function startStandIn(t: TestContext, options: ImageServerStandInOptions = {}): Promise<ImageServerStandIn> {
  const server = await startImageServer({ delayMs: 50, ...options });
  t.after(() => server.close());
  return server;
}

function isImageServerError(expected: Partial<ImageServerError>): (error: unknown) => boolean {
  return (error) => {
    assert.ok(error instanceof ImageServerError, `expected an ImageServerError, got ${String(error)}`);
    for (const [key, value] of Object.entries(expected)) {
      assert.equal(error[key as keyof ImageServerError], value, `ImageServerError.${key}`);
    }

    return true;
  };
}

test('a txt2img returns a real PNG of the requested size with the seed given back', async (t) => {
  const server = await startStandIn(t);
  const client = new A1111Client(server.url);

  const image = await client.txt2img(portrait);

  assert.deepEqual(readPngSize(image.png), { width: 512, height: 768 });
  const decoded = PNG.sync.read(image.png);
  assert.equal(decoded.width, 512);
  assert.equal(decoded.height, 768);
  assert.equal(image.seed, 1234);
  assert.equal(image.width, 512);
  assert.equal(image.height, 768);
  assert.equal(image.model, 'sd_xl_base_1.0');
  assert.equal(server.requests.length, 1);
  assert.equal(server.requests[0]?.prompt, portrait.prompt);
  assert.equal(server.requests[0]?.negativePrompt, 'blurry');
  assert.equal(server.requests[0]?.sampler, 'Euler a');
});

test('the same seed and prompt draw the same picture', async (t) => {
  const server = await startStandIn(t, { delayMs: 0 });
  const client = new A1111Client(server.url);

  const first = await client.txt2img({ ...portrait, width: 128, height: 128 });
  const second = await client.txt2img({ ...portrait, width: 128, height: 128 });
  const otherSeed = await client.txt2img({ ...portrait, width: 128, height: 128, seed: 99 });

  assert.ok(first.png.equals(second.png));
  assert.ok(!first.png.equals(otherSeed.png));
});

test('a seed of -1 is replaced by a random 32-bit seed that the reply reports', async (t) => {
  const server = await startStandIn(t, { delayMs: 0 });
  const client = new A1111Client(server.url);

  const first = await client.txt2img({ ...portrait, seed: -1, width: 64, height: 64 });
  const second = await client.txt2img({ ...portrait, seed: -1, width: 64, height: 64 });

  for (const [index, image] of [first, second].entries()) {
    assert.ok(Number.isInteger(image.seed) && image.seed >= 0 && image.seed < 2 ** 32, `seed ${image.seed}`);
    assert.equal(server.requests[index]?.seed, image.seed);
  }

  assert.notEqual(first.seed, second.seed);
});

test('a model override reaches the server and comes back in the result', async (t) => {
  const server = await startStandIn(t, { delayMs: 0 });
  const client = new A1111Client(server.url);
  const [, otherModel] = await client.models();
  assert.ok(otherModel !== undefined);

  const image = await client.txt2img({ ...portrait, width: 64, height: 64, model: otherModel });

  assert.equal(server.requests[0]?.model, otherModel);
  assert.equal(image.model, 'v1-5-pruned-emaonly');
});

test('two concurrent requests take turns and never overlap on the server', async (t) => {
  const server = await startStandIn(t, { delayMs: 300 });
  const first = new A1111Client(server.url);
  const second = new A1111Client(server.url);

  await Promise.all([
    first.txt2img({ ...portrait, width: 64, height: 64, prompt: 'first' }),
    second.txt2img({ ...portrait, width: 64, height: 64, prompt: 'second' }),
  ]);

  const intervals = server.busyIntervals();
  assert.equal(intervals.length, 2);
  const [earlier, later] = intervals as [{ start: number; end: number }, { start: number; end: number }];
  assert.ok(earlier.end - earlier.start >= 250, `the first job ran ${earlier.end - earlier.start} ms`);
  assert.ok(later.start >= earlier.end, `the second job started at ${later.start}, before ${earlier.end}`);
});

test('progress rises during a slow job and carries a preview, then reads idle', async (t) => {
  const server = await startStandIn(t, { delayMs: 1_200 });
  const client = new A1111Client(server.url);

  const generation = client.txt2img({ ...portrait, width: 512, height: 512, steps: 30 });
  await sleep(300);
  const early = await client.progress();
  await sleep(400);
  const later = await client.progress();
  await generation;
  const idle = await client.progress();

  assert.equal(early.active, true);
  assert.ok(early.fraction > 0 && early.fraction < 1, `early fraction ${early.fraction}`);
  assert.ok(later.fraction > early.fraction, `progress went from ${early.fraction} to ${later.fraction}`);
  assert.ok(later.step > early.step, `steps went from ${early.step} to ${later.step}`);
  assert.equal(later.steps, 30);
  assert.ok(early.etaSeconds !== null && later.etaSeconds !== null);
  assert.ok(later.etaSeconds < early.etaSeconds);
  assert.ok(early.previewPng !== null);
  const preview = readPngSize(early.previewPng);
  assert.ok(preview.width <= 64 && preview.height <= 64, `preview is ${preview.width}x${preview.height}`);

  assert.deepEqual(idle, { active: false, fraction: 0, etaSeconds: null, step: 0, steps: 0, previewPng: null });
});

test('an interrupt cuts a running job short and still yields an image', async (t) => {
  const server = await startStandIn(t, { delayMs: 5_000 });
  const client = new A1111Client(server.url);
  const startedAt = Date.now();

  const generation = client.txt2img({ ...portrait, width: 64, height: 64 });
  await sleep(200);
  await client.interrupt();
  const image = await generation;

  assert.ok(Date.now() - startedAt < 2_000, `the interrupted job took ${Date.now() - startedAt} ms`);
  assert.deepEqual(readPngSize(image.png), { width: 64, height: 64 });
  assert.equal(server.interrupts, 1);
  assert.equal(server.requests[0]?.interrupted, true);
});

test('an injected 500 surfaces as a retryable ImageServerError, and the next call succeeds', async (t) => {
  const server = await startStandIn(t);
  const client = new A1111Client(server.url);
  server.failNext(1);

  await assert.rejects(
    client.txt2img(portrait),
    isImageServerError({
      code: 'IMAGE_SERVER_HTTP',
      status: 500,
      retryable: true,
      url: `${server.url}/sdapi/v1/txt2img`,
    }),
  );
  const image = await client.txt2img({ ...portrait, width: 64, height: 64 });

  assert.equal(image.seed, 1234);
  assert.deepEqual(
    server.requests.map((record) => record.failedWith),
    [500, null],
  );
});

test('a 422 validation error is not retryable and names the path and status', async (t) => {
  const server = await startStandIn(t);
  const client = new A1111Client(server.url);

  await assert.rejects(client.txt2img({ ...portrait, width: 500 }), (error: unknown) => {
    isImageServerError({ code: 'IMAGE_SERVER_HTTP', status: 422, retryable: false })(error);
    assert.match((error as Error).message, /422/);
    assert.match((error as Error).message, /\/sdapi\/v1\/txt2img/);
    assert.match((error as Error).message, /width/);
    return true;
  });
  assert.equal(server.requests.length, 0);
});

test('credentials in the base URL stay out of errors', async (t) => {
  const server = await startStandIn(t);
  const client = new A1111Client(server.url.replace('http://', 'http://bot:hunter2@'));
  server.failNext(1, 503);

  await assert.rejects(client.txt2img(portrait), (error: unknown) => {
    isImageServerError({ status: 503, retryable: true })(error);
    assert.doesNotMatch(
      JSON.stringify({ ...(error as ImageServerError), message: (error as Error).message }),
      /hunter2/,
    );
    return true;
  });
});

test('models and samplers are listed', async (t) => {
  const server = await startStandIn(t, {
    models: ['dreamshaper_8.safetensors [879db523c3]', 'juggernautXL.safetensors'],
    samplers: ['Euler a', 'DPM++ 2M Karras'],
  });
  const client = new A1111Client(server.url);

  assert.deepEqual(await client.models(), ['dreamshaper_8.safetensors [879db523c3]', 'juggernautXL.safetensors']);
  assert.deepEqual(await client.samplers(), ['Euler a', 'DPM++ 2M Karras']);
});

test('a reply slower than the timeout is a retryable IMAGE_SERVER_TIMEOUT', async (t) => {
  const server = await startStandIn(t, { delayMs: 1_000 });
  const client = new A1111Client(server.url, { requestTimeoutMs: 150 });

  await assert.rejects(client.txt2img(portrait), isImageServerError({ code: 'IMAGE_SERVER_TIMEOUT', retryable: true }));
});

test('a server that is not listening is unreachable and retryable', async () => {
  const server = await startImageServer();
  await server.close();
  const client = new A1111Client(server.url);

  await assert.rejects(
    client.progress(),
    isImageServerError({ code: 'IMAGE_SERVER_UNREACHABLE', status: undefined, retryable: true }),
  );
});

test('an img2img from a real PNG yields a PNG of the requested size, recorded with its strength', async (t) => {
  const server = await startStandIn(t, { delayMs: 0 });
  const client = new A1111Client(server.url);
  const initImage = encodePng(64, 48, 5, 'a sketch of a lighthouse');

  const image = await client.img2img({ ...portrait, width: 128, height: 96, initImage, denoisingStrength: 0.6 });

  const decoded = PNG.sync.read(image.png);
  assert.equal(decoded.width, 128);
  assert.equal(decoded.height, 96);
  assert.equal(image.seed, 1234);
  assert.equal(server.requests.length, 1);
  assert.equal(server.requests[0]?.mode, 'img2img');
  assert.equal(server.requests[0]?.denoisingStrength, 0.6);
  assert.equal(server.requests[0]?.initImageBytes, initImage.length);
  assert.equal(server.requests[0]?.prompt, portrait.prompt);
});

test('a txt2img is recorded as txt2img, with no strength and no init image', async (t) => {
  const server = await startStandIn(t, { delayMs: 0 });
  const client = new A1111Client(server.url);

  await client.txt2img({ ...portrait, width: 64, height: 64 });

  assert.equal(server.requests[0]?.mode, 'txt2img');
  assert.equal(server.requests[0]?.denoisingStrength, null);
  assert.equal(server.requests[0]?.initImageBytes, null);
});

test('an img2img without an init image is a 422 that names init_images', async (t) => {
  const server = await startStandIn(t);
  const withoutImage = { prompt: portrait.prompt, width: 64, height: 64, denoising_strength: 0.5 };

  const response = await fetch(`${server.url}/sdapi/v1/img2img`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(withoutImage),
  });

  assert.equal(response.status, 422);
  const body = (await response.json()) as { detail: Array<{ loc: string[] }> };
  assert.deepEqual(
    body.detail.map((issue) => issue.loc.join('.')),
    ['body.init_images'],
  );
  assert.equal(server.requests.length, 0);
});

test('an img2img whose init image is not an image is a non-retryable 422', async (t) => {
  const server = await startStandIn(t);
  const client = new A1111Client(server.url);
  const initImage = Buffer.from('<!doctype html><p>not a picture');

  await assert.rejects(client.img2img({ ...portrait, initImage, denoisingStrength: 0.5 }), (error: unknown) => {
    isImageServerError({ code: 'IMAGE_SERVER_HTTP', status: 422, retryable: false })(error);
    assert.match((error as Error).message, /\/sdapi\/v1\/img2img/);
    assert.match((error as Error).message, /init_images/);
    return true;
  });
  assert.equal(server.requests.length, 0);
});

test('an img2img with a denoising strength outside 0..1 is a non-retryable 422', async (t) => {
  const server = await startStandIn(t);
  const client = new A1111Client(server.url);
  const initImage = encodePng(64, 64, 5);

  await assert.rejects(client.img2img({ ...portrait, initImage, denoisingStrength: 1.5 }), (error: unknown) => {
    isImageServerError({ code: 'IMAGE_SERVER_HTTP', status: 422, retryable: false })(error);
    assert.match((error as Error).message, /denoising_strength/);
    return true;
  });
  assert.equal(server.requests.length, 0);
});

test('an init image larger than a default 1 MiB request body is accepted', async (t) => {
  const server = await startStandIn(t, { delayMs: 0 });
  const client = new A1111Client(server.url);
  const noise = new PNG({ width: 640, height: 640 });
  randomBytes(noise.data.length).copy(noise.data);
  const initImage = PNG.sync.write(noise);
  assert.ok(initImage.length > 1_048_576, `the noise PNG is only ${initImage.length} bytes`);

  const image = await client.img2img({ ...portrait, width: 64, height: 64, initImage, denoisingStrength: 0.3 });

  assert.deepEqual(readPngSize(image.png), { width: 64, height: 64 });
  assert.equal(server.requests[0]?.initImageBytes, initImage.length);
});

test('img2img and txt2img share the lock and never overlap', async (t) => {
  const server = await startStandIn(t, { delayMs: 200 });
  const client = new A1111Client(server.url);
  const initImage = encodePng(64, 64, 5);

  await Promise.all([
    client.img2img({ ...portrait, width: 64, height: 64, initImage, denoisingStrength: 0.5 }),
    client.txt2img({ ...portrait, width: 64, height: 64 }),
  ]);

  const [earlier, later] = server.busyIntervals() as [{ start: number; end: number }, { start: number; end: number }];
  assert.ok(later.start >= earlier.end, `the second job started at ${later.start}, before ${earlier.end}`);
  assert.equal(server.peakConcurrentRequests, 2);
});

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
