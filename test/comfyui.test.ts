import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { ComfyUIBackend, toComfyUISampler } from '../src/backends/comfyui';
import template from '../src/backends/comfyui-txt2img.json';
import { ImageServerError, type GenerationProgress, type GenerationRequest } from '../src/backends/image-backend';
import { startComfyUIServer, type ComfyUIStandIn, type ComfyUIStandInOptions } from '../src/standins/comfyui-server';
import { encodePng, readPngSize } from '../src/standins/png';

const MODEL = 'sd_xl_base_1.0.safetensors';

/** A request naming no checkpoint, so the template's must do. */
function withoutModel(request: GenerationRequest): GenerationRequest {
  const copy = { ...request };
  delete copy.model;
  return copy;
}

const lighthouse: GenerationRequest = {
  prompt: 'a lighthouse at dusk, oil painting',
  negativePrompt: 'blurry',
  seed: 1234,
  sampler: 'Euler a',
  steps: 8,
  cfgScale: 7,
  width: 512,
  height: 768,
  model: MODEL,
};

async function startStandIn(t: TestContext, options: ComfyUIStandInOptions = {}): Promise<ComfyUIStandIn> {
  const server = await startComfyUIServer({ delayMs: 50, ...options });
  t.after(() => server.close());
  return server;
}

function isImageServerError(expected: Partial<ImageServerError>, message?: RegExp): (error: unknown) => boolean {
  return (error) => {
    assert.ok(error instanceof ImageServerError, `expected an ImageServerError, got ${String(error)}`);
    for (const [key, value] of Object.entries(expected)) {
      assert.equal(error[key as keyof ImageServerError], value, `ImageServerError.${key}`);
    }

    if (message !== undefined) {
      assert.match(error.message, message);
    }

    return true;
  };
}

test('a txt2img returns a PNG of the requested size and the seed it used', async (t) => {
  const server = await startStandIn(t);
  const backend = new ComfyUIBackend(server.url, { template });

  const image = await backend.generate(lighthouse);

  assert.deepEqual(readPngSize(image.png), { width: 512, height: 768 });
  assert.equal(image.width, 512);
  assert.equal(image.height, 768);
  assert.equal(image.seed, 1234);
  assert.equal(image.model, MODEL);
  assert.equal(server.prompts.length, 1);
  assert.equal(server.prompts[0]?.prompt, lighthouse.prompt);
  assert.equal(server.prompts[0]?.negative, 'blurry');
  assert.equal(server.prompts[0]?.steps, 8);
  assert.equal(server.prompts[0]?.model, MODEL);
  assert.equal(server.prompts[0]?.initImage, null);
  assert.equal(server.prompts[0]?.denoise, null);
  assert.notEqual(server.prompts[0]?.finishedAt, null);
});

test('progress rises while sampling and carries a PNG preview', async (t) => {
  const server = await startStandIn(t, { delayMs: 600 });
  const backend = new ComfyUIBackend(server.url, { template });
  const reports: GenerationProgress[] = [];

  await backend.generate(
    { ...lighthouse, steps: 12, width: 256, height: 256 },
    { onProgress: (progress) => reports.push(progress), progressIntervalMs: 0 },
  );

  assert.ok(reports.length >= 3, `only ${reports.length} progress reports`);
  const fractions = reports.map((progress) => progress.fraction);
  assert.deepEqual(
    fractions,
    [...fractions].sort((a, b) => a - b),
  );
  assert.ok(fractions[0]! < fractions.at(-1)!, `fractions did not rise: ${fractions.join(', ')}`);
  assert.ok(reports.every((progress) => progress.active && progress.steps === 12));
  assert.ok(reports.some((progress) => progress.etaSeconds !== null && progress.etaSeconds > 0));
  const preview = reports.find((progress) => progress.previewPng !== null)?.previewPng;
  assert.ok(preview, 'no report carried a preview');
  assert.deepEqual(readPngSize(preview), { width: 64, height: 64 });
});

test('a seed of -1 is replaced by a random 32-bit seed that is reported back', async (t) => {
  const server = await startStandIn(t);
  const backend = new ComfyUIBackend(server.url, { template });

  const first = await backend.generate({ ...lighthouse, seed: -1, width: 64, height: 64 });
  const second = await backend.generate({ ...lighthouse, seed: -1, width: 64, height: 64 });

  for (const [index, image] of [first, second].entries()) {
    assert.ok(Number.isInteger(image.seed) && image.seed >= 0 && image.seed < 2 ** 32, `seed ${image.seed}`);
    assert.equal(server.prompts[index]?.seed, image.seed);
  }

  assert.notEqual(first.seed, second.seed);
});

test('models and samplers are listed from object_info, and ping succeeds', async (t) => {
  const server = await startStandIn(t, { models: ['one.safetensors', 'two.ckpt'] });
  const backend = new ComfyUIBackend(server.url, { template });

  assert.deepEqual(await backend.models(), ['one.safetensors', 'two.ckpt']);
  const samplers = await backend.samplers();
  assert.ok(samplers.includes('euler_ancestral') && samplers.includes('dpmpp_2m'), samplers.join(', '));
  await backend.ping();
});

test('an A1111 sampler name is sent under its ComfyUI name', async (t) => {
  const server = await startStandIn(t, { delayMs: 0 });
  const backend = new ComfyUIBackend(server.url, { template });

  await backend.generate({ ...lighthouse, sampler: 'Euler a', width: 64, height: 64 });
  await backend.generate({ ...lighthouse, sampler: 'DPM++ 2M Karras', width: 64, height: 64 });

  assert.deepEqual(
    server.prompts.map((prompt) => prompt.sampler),
    ['euler_ancestral', 'dpmpp_2m'],
  );
  assert.equal(toComfyUISampler('UniPC'), 'uni_pc');
  assert.equal(toComfyUISampler('dpmpp_2m_sde'), 'dpmpp_2m_sde');
  assert.equal(toComfyUISampler('Some New Sampler'), 'some_new_sampler');
});

test('interrupting a running prompt fails its generation without a retry', async (t) => {
  const server = await startStandIn(t, { delayMs: 5_000 });
  const backend = new ComfyUIBackend(server.url, { template });
  let interrupted = false;

  const startedAt = Date.now();
  await assert.rejects(
    backend.generate(
      { ...lighthouse, steps: 20, width: 64, height: 64 },
      {
        progressIntervalMs: 0,
        onProgress: () => {
          if (!interrupted) {
            interrupted = true;
            void backend.interrupt();
          }
        },
      },
    ),
    isImageServerError({ retryable: false }, /interrupted/),
  );

  assert.ok(Date.now() - startedAt < 3_000, 'the prompt ran to the end');
  assert.notEqual(server.prompts[0]?.finishedAt, null);
});

test('a 500 from POST /prompt is a retryable ImageServerError', async (t) => {
  const server = await startStandIn(t);
  const backend = new ComfyUIBackend(server.url, { template });
  server.failNext(1);

  await assert.rejects(
    backend.generate({ ...lighthouse, width: 64, height: 64 }),
    isImageServerError({ code: 'IMAGE_SERVER_HTTP', status: 500, retryable: true }, /POST \/prompt/),
  );

  const image = await backend.generate({ ...lighthouse, width: 64, height: 64 });
  assert.equal(image.width, 64);
});

test('a graph ComfyUI rejects names the failing node and is not retried', async (t) => {
  const server = await startStandIn(t);
  const backend = new ComfyUIBackend(server.url, { template });

  await assert.rejects(
    backend.generate({ ...lighthouse, model: 'missing.safetensors' }),
    isImageServerError(
      { code: 'IMAGE_SERVER_HTTP', status: 400, retryable: false },
      /node 1 \(CheckpointLoaderSimple\): Value not in list: ckpt_name: 'missing.safetensors'/,
    ),
  );

  assert.equal(server.prompts.length, 0);
});

test('a node that fails while running is a retryable error carrying its message', async (t) => {
  const server = await startStandIn(t);
  const backend = new ComfyUIBackend(server.url, { template });

  await assert.rejects(
    backend.generate({ ...lighthouse, width: 8_192, height: 8_192 }),
    isImageServerError({ retryable: true }, /node 5 \(KSampler\).*out of memory/),
  );
});

test('img2img uploads the init image and the server samples it with the denoise asked for', async (t) => {
  const server = await startStandIn(t);
  const backend = new ComfyUIBackend(server.url, { template });
  const initImage = { data: encodePng(320, 200, 7, 'a sketch'), denoisingStrength: 0.55 };

  const image = await backend.generate({ ...lighthouse, width: 256, height: 256, initImage });

  assert.deepEqual(readPngSize(image.png), { width: 256, height: 256 });
  assert.match(server.prompts[0]?.initImage ?? '', /^discord-[0-9a-f-]+\.png$/);
  assert.equal(server.prompts[0]?.denoise, 0.55);
});

test('a template that cannot serve the request is refused before anything is queued', async (t) => {
  const server = await startStandIn(t);
  const txt2imgOnly = new ComfyUIBackend(server.url, { template: template.txt2img });
  const initImage = { data: encodePng(64, 64, 1), denoisingStrength: 0.5 };

  await assert.rejects(
    txt2imgOnly.generate({ ...lighthouse, initImage }),
    isImageServerError({ retryable: false }, /img2img/),
  );
  await assert.rejects(
    txt2imgOnly.generate(withoutModel(lighthouse)),
    isImageServerError({ retryable: false }, /default model/),
  );
  assert.equal(server.prompts.length, 0);
  assert.throws(() => new ComfyUIBackend(server.url, { template: { nodes: [] } }), TypeError);
});

test('a template with its own checkpoint needs no model in the request', async (t) => {
  const server = await startStandIn(t);
  const graph = structuredClone(template.txt2img);
  graph['1'].inputs.ckpt_name = 'v1-5-pruned-emaonly.safetensors';
  const backend = new ComfyUIBackend(server.url, { template: graph });

  const image = await backend.generate({ ...withoutModel(lighthouse), width: 64, height: 64 });

  assert.equal(image.model, 'v1-5-pruned-emaonly.safetensors');
  assert.equal(server.prompts[0]?.model, 'v1-5-pruned-emaonly.safetensors');
});

test('aborting stops waiting with the signal reason and reports no more progress', async (t) => {
  const server = await startStandIn(t, { delayMs: 1_000 });
  const backend = new ComfyUIBackend(server.url, { template });
  const controller = new AbortController();
  const reason = new Error('user pressed cancel');
  let reportsAfterAbort = 0;

  await assert.rejects(
    backend.generate(
      { ...lighthouse, steps: 10, width: 64, height: 64 },
      {
        signal: controller.signal,
        progressIntervalMs: 0,
        onProgress: () => {
          if (controller.signal.aborted) {
            reportsAfterAbort += 1;
          }

          controller.abort(reason);
        },
      },
    ),
    (error) => error === reason,
  );

  assert.equal(server.prompts[0]?.finishedAt, null, 'the server should still be running the prompt');
  await backend.interrupt();
  assert.equal(reportsAfterAbort, 0);
});

test('a prompt that outlasts requestTimeoutMs is a retryable timeout', async (t) => {
  const server = await startStandIn(t, { delayMs: 3_000 });
  const backend = new ComfyUIBackend(server.url, { template, requestTimeoutMs: 300 });

  await assert.rejects(
    backend.generate({ ...lighthouse, width: 64, height: 64 }),
    isImageServerError({ code: 'IMAGE_SERVER_TIMEOUT', retryable: true }, /within 300 ms/),
  );
});

test('two generations at once each hear only their own prompt', async (t) => {
  const server = await startStandIn(t, { delayMs: 200 });
  const backend = new ComfyUIBackend(server.url, { template });
  const steps: { first: Set<number>; second: Set<number> } = { first: new Set(), second: new Set() };

  const [first, second] = await Promise.all([
    backend.generate(
      { ...lighthouse, steps: 6, width: 64, height: 64 },
      { progressIntervalMs: 0, onProgress: (progress) => steps.first.add(progress.steps) },
    ),
    backend.generate(
      { ...lighthouse, seed: 99, steps: 9, width: 128, height: 128 },
      { progressIntervalMs: 0, onProgress: (progress) => steps.second.add(progress.steps) },
    ),
  ]);

  assert.deepEqual([...steps.first], [6]);
  assert.deepEqual([...steps.second], [9]);
  assert.equal(first.width, 64);
  assert.equal(second.seed, 99);
  const [earlier, later] = server.prompts;
  assert.ok(earlier?.finishedAt != null && later !== undefined && later.startedAt >= earlier.finishedAt);
});

test('a server that is not listening is unreachable and retryable', async () => {
  const server = await startComfyUIServer();
  const url = server.url;
  await server.close();
  const backend = new ComfyUIBackend(url, { template });

  await assert.rejects(
    backend.generate(lighthouse),
    isImageServerError({ code: 'IMAGE_SERVER_UNREACHABLE', retryable: true }, /ECONNREFUSED/),
  );
  await assert.rejects(backend.ping(), isImageServerError({ code: 'IMAGE_SERVER_UNREACHABLE', retryable: true }));
});
