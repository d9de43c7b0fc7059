import { randomUUID } from 'node:crypto';
import { STATUS_CODES } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import multipart from '@fastify/multipart';
import Fastify from 'fastify';
import { WebSocketServer, type WebSocket } from 'ws';
import { encodePng, readPngSize } from './png';
import { runStandInFromCommandLine } from './standalone';

/**
 * A stand-in for ComfyUI's HTTP and websocket API, for tests and an offline demo without a GPU. It validates
 * API-format graphs against the few node classes a txt2img or img2img graph needs (with ComfyUI's error shapes),
 * runs one prompt at a time for all clients like ComfyUI, streams progress and PNG previews to the websocket of
 * the prompt's `client_id`, and draws placeholder gradients instead of pictures.
 *
 * Differences from ComfyUI worth knowing: only the node classes listed in `defineNodes` exist; a graph must end
 * in a SaveImage fed by a KSampler; a latent above 16 megapixels fails with an out-of-memory `execution_error`,
 * as a real GPU would; previews are always sent, as PNG.
 *
 * Run it alone with `npx tsx src/standins/comfyui-server.ts --port 8188`.
 */

export interface ComfyUIStandInOptions {
  /** TCP port on 127.0.0.1; 0 (the default) picks a free one. */
  port?: number;
  /** Milliseconds one prompt spends sampling, spread over its steps; default 1_500. */
  delayMs?: number;
  /** Checkpoint file names CheckpointLoaderSimple offers, e.g. `'sd_xl_base_1.0.safetensors'`. */
  models?: string[];
}

/** One prompt that started running. Times are epoch milliseconds. */
export interface ComfyUIPromptRecord {
  promptId: string;
  /** The `client_id` it was queued with, whose websocket gets its events; `null` when none was given. */
  clientId: string | null;
  seed: number;
  /** The size of the saved image. */
  width: number;
  height: number;
  steps: number;
  /** The positive and negative CLIPTextEncode texts. */
  prompt: string;
  negative: string;
  /** The KSampler `sampler_name`, e.g. `euler_ancestral`. */
  sampler: string;
  /** The CheckpointLoaderSimple `ckpt_name`. */
  model: string;
  /** img2img: the LoadImage file name; `null` for txt2img. */
  initImage: string | null;
  /** img2img: the KSampler `denoise`; `null` for txt2img. */
  denoise: number | null;
  startedAt: number;
  finishedAt: number | null;
}

export interface ComfyUIStandIn {
  /** Base URL without a trailing slash, e.g. `http://127.0.0.1:54321`. */
  readonly url: string;
  /** Every prompt that started, in start order; the live list, updated as prompts finish. */
  readonly prompts: ComfyUIPromptRecord[];
  /** Makes the next `count` valid `POST /prompt` calls answer `status` (default 500) instead of queueing. */
  failNext(count: number, status?: number): void;
  /** Changes how long the next prompts take, in milliseconds. */
  setDelay(ms: number): void;
  /** Stops listening and closes every websocket; a running prompt is interrupted and queued ones dropped. */
  close(): Promise<void>;
}

const DEFAULTS = {
  port: 0,
  delayMs: 1_500, // 1.5 s: long enough to watch progress, short enough for tests
  models: ['sd_xl_base_1.0.safetensors', 'v1-5-pruned-emaonly.safetensors'],
} as const;

const HOST = '127.0.0.1';
const STANDALONE_PORT = 8188;
const MAX_RESOLUTION = 16_384;
const OUT_OF_MEMORY_PIXELS = 4_096 * 4_096;
const PREVIEW_SIZE = 64;
const PREVIEW_EVERY_STEPS = 4;
const UPLOAD_LIMIT_BYTES = 50 * 1024 * 1024;

/** Binary websocket frames start with a big-endian event type, then (for previews) the image format. */
const PREVIEW_EVENT = 1;
const PREVIEW_FORMAT_PNG = 2;

const SAMPLERS = [
  'euler',
  'euler_ancestral',
  'heun',
  'dpm_2',
  'dpm_2_ancestral',
  'lms',
  'dpm_fast',
  'dpm_adaptive',
  'dpmpp_2s_ancestral',
  'dpmpp_sde',
  'dpmpp_2m',
  'dpmpp_2m_sde',
  'dpmpp_3m_sde',
  'ddpm',
  'lcm',
  'ddim',
  'uni_pc',
];

const SCHEDULERS = ['normal', 'karras', 'exponential', 'sgm_uniform', 'simple', 'ddim_uniform', 'beta'];

type ApiGraph = Record<string, { class_type: string; inputs: Record<string, unknown> }>;

/** One input of a node class: a link type such as `MODEL`, or a widget (`INT`, `FLOAT`, `STRING`, `COMBO`). */
interface InputSpec {
  type: string;
  default?: number | string;
  min?: number;
  max?: number;
  choices?: () => string[];
  /** LoadImage's `image`: checked against uploaded files rather than listed choices. */
  upload?: boolean;
}

interface NodeClass {
  category: string;
  inputs: Record<string, InputSpec>;
  outputs: string[];
  outputNode?: boolean;
}

/** ComfyUI's shape for one validation problem. */
interface NodeIssue {
  type: string;
  message: string;
  details: string;
  extra_info: Record<string, unknown>;
}

interface QueuedPrompt {
  promptId: string;
  number: number;
  clientId: string | null;
  graph: ApiGraph;
  plan: PromptPlan;
}

/** What the stand-in needs to know to run a validated graph. */
interface PromptPlan {
  order: string[];
  samplerId: string;
  saveId: string;
  prefix: string;
  record: Omit<ComfyUIPromptRecord, 'promptId' | 'clientId' | 'startedAt' | 'finishedAt'>;
}

interface ImageRef {
  filename: string;
  subfolder: string;
  type: string;
}

/**
 * Starts the stand-in on `options.port` (default: a free port) and resolves once it is listening.
 * Throws a `RangeError` for a negative delay or an empty model list, and the listen error when the port is taken.
 */
export async function startComfyUIServer(options: ComfyUIStandInOptions = {}): Promise<ComfyUIStandIn> {
  const models = options.models ?? [...DEFAULTS.models];
  if (models.length === 0) {
    throw new RangeError('the ComfyUI stand-in needs at least one model');
  }

  const state = new ComfyState(options.delayMs ?? DEFAULTS.delayMs);
  const nodes = defineNodes({ models: () => models, inputs: () => state.inputFiles() });
  const app = Fastify({ logger: false });
  await app.register(multipart, { limits: { fileSize: UPLOAD_LIMIT_BYTES } });

  app.post('/prompt', async (request, reply) => {
    const body = (request.body ?? {}) as Record<string, unknown>;
    const checked = validatePrompt(body['prompt'], nodes, state);
    if ('error' in checked) {
      return reply.code(400).send(checked);
    }

    const injected = state.takeInjectedFailure();
    if (injected !== undefined) {
      return reply
        .code(injected)
        .type('text/plain')
        .send(`${injected}: ${STATUS_CODES[injected] ?? 'Error'}`);
    }

    const clientId = typeof body['client_id'] === 'string' && body['client_id'] !== '' ? body['client_id'] : null;
    const queued = state.enqueue(checked.graph, checked.plan, clientId);
    return { prompt_id: queued.promptId, number: queued.number, node_errors: {} };
  });

  app.get('/prompt', async () => ({ exec_info: { queue_remaining: state.queueRemaining() } }));

  app.get('/history/:promptId', async (request) => {
    const { promptId } = request.params as { promptId: string };
    const entry = state.history.get(promptId);
    return entry === undefined ? {} : { [promptId]: entry };
  });

  app.get('/view', async (request, reply) => {
    const query = request.query as Record<string, string | undefined>;
    const file = state.files.get(fileKey(query['type'] ?? 'output', query['subfolder'] ?? '', query['filename'] ?? ''));
    if (file === undefined) {
      return reply.code(404).type('text/plain').send('404: Not Found');
    }

    return reply.type(contentTypeOf(query['filename'] ?? '')).send(file);
  });

  app.post('/upload/image', async (request, reply) => {
    if (!request.isMultipart()) {
      return reply.code(400).send();
    }

    const fields: Record<string, string> = {};
    let image: { filename: string; data: Buffer } | undefined;
    for await (const part of request.parts()) {
      if (part.type === 'file') {
        const data = await part.toBuffer();
        image = part.fieldname === 'image' ? { filename: part.filename, data } : image;
      } else {
        fields[part.fieldname] = String(part.value);
      }
    }

    if (image === undefined || image.filename === '') {
      return reply.code(400).send();
    }

    const type = fields['type'] ?? 'input';
    const subfolder = fields['subfolder'] ?? '';
    const overwrite = fields['overwrite'] === 'true' || fields['overwrite'] === '1';
    const name = state.storeUpload(type, subfolder, image.filename, image.data, overwrite);
    return { name, subfolder, type };
  });

  app.post('/interrupt', async (request, reply) => {
    const body = request.body as Record<string, unknown> | undefined;
    const promptId = typeof body?.['prompt_id'] === 'string' ? body['prompt_id'] : undefined;
    state.interrupt(promptId);
    return reply.send();
  });

  app.get('/object_info', async () =>
    Object.fromEntries(Object.entries(nodes).map(([name, node]) => [name, describeNode(name, node)])),
  );

  app.get('/object_info/:nodeClass', async (request) => {
    const { nodeClass } = request.params as { nodeClass: string };
    const node = nodes[nodeClass];
    return node === undefined ? {} : { [nodeClass]: describeNode(nodeClass, node) };
  });

  app.get('/system_stats', async () => describeSystem());

  await app.listen({ port: options.port ?? DEFAULTS.port, host: HOST });
  // Attached only once listening: before that, a listen error would surface as an unhandled 'error' on it.
  const sockets = new WebSocketServer({ server: app.server, path: '/ws' });
  sockets.on('connection', (socket, request) => {
    const query = new URL(request.url ?? '/', 'http://localhost').searchParams;
    state.connect(query.get('clientId') || randomUUID().replace(/-/g, ''), socket);
  });

  const address = app.server.address();
  const port = typeof address === 'object' && address !== null ? address.port : options.port;

  return {
    url: `http://${HOST}:${port}`,
    prompts: state.prompts,
    failNext: (count, status = 500) => state.failNext(count, status),
    setDelay: (ms) => state.setDelay(ms),
    close: async () => {
      state.shutDown();
      for (const socket of sockets.clients) {
        socket.terminate();
      }

      await new Promise<void>((resolve) => sockets.close(() => resolve()));
      await app.close();
    },
  };
}

/** What ComfyUI keeps in memory: the connected clients, the prompt queue, the history and the files. */
class ComfyState {
  readonly prompts: ComfyUIPromptRecord[] = [];
  readonly history = new Map<string, object>();
  /** Uploaded inputs and saved outputs, by {@link fileKey}. */
  readonly files = new Map<string, Buffer>();
  readonly #clients = new Map<string, WebSocket>();
  readonly #pending: QueuedPrompt[] = [];
  #running: { promptId: string; stop: AbortController } | null = null;
  #pumping = false;
  #delayMs: number;
  #injectedFailures: number[] = [];
  #nextNumber = 0;
  #nextOutput = 1;
  #closing = false;

  constructor(delayMs: number) {
    this.#delayMs = checkDelay(delayMs);
  }

  connect(clientId: string, socket: WebSocket): void {
    // A reconnect with the same client id takes over, as in ComfyUI.
    this.#clients.set(clientId, socket);
    socket.on('error', () => socket.terminate());
    socket.on('close', () => {
      if (this.#clients.get(clientId) === socket) {
        this.#clients.delete(clientId);
      }
    });
    this.#send(clientId, 'status', { status: this.#queueStatus(), sid: clientId });
  }

  failNext(count: number, status: number): void {
    if (!Number.isInteger(count) || count < 0) {
      throw new RangeError(`failNext needs a count of zero or more, got ${count}`);
    }

    if (!Number.isInteger(status) || status < 400 || status > 599) {
      throw new RangeError(`failNext needs an HTTP error status (400-599), got ${status}`);
    }

    for (let i = 0; i < count; i++) {
      this.#injectedFailures.push(status);
    }
  }

  takeInjectedFailure(): number | undefined {
    return this.#injectedFailures.shift();
  }

  setDelay(ms: number): void {
    this.#delayMs = checkDelay(ms);
  }

  queueRemaining(): number {
    return this.#pending.length + (this.#running === null ? 0 : 1);
  }

  inputFiles(): string[] {
    const prefix = fileKey('input', '', '');
    return [...this.files.keys()].filter((key) => key.startsWith(prefix)).map((key) => key.slice(prefix.length));
  }

  /** Stores an upload and returns its name, renamed `name (1).png` when taken and not to be overwritten. */
  storeUpload(type: string, subfolder: string, filename: string, data: Buffer, overwrite: boolean): string {
    const base = filename.split(/[\\/]/).pop() ?? filename;
    const dot = base.lastIndexOf('.');
    const stem = dot > 0 ? base.slice(0, dot) : base;
    const extension = dot > 0 ? base.slice(dot) : '';
    let name = base;
    for (let copy = 1; !overwrite && this.files.has(fileKey(type, subfolder, name)); copy++) {
      name = `${stem} (${copy})${extension}`;
    }

    this.files.set(fileKey(type, subfolder, name), data);
    return name;
  }

  enqueue(graph: ApiGraph, plan: PromptPlan, clientId: string | null): QueuedPrompt {
    const queued: QueuedPrompt = { promptId: randomUUID(), number: this.#nextNumber++, clientId, graph, plan };
    this.#pending.push(queued);
    this.#broadcastStatus();
    void this.#pump();
    return queued;
  }

  /** Stops the running prompt; with `promptId`, only when that is the one running. */
  interrupt(promptId?: string): void {
    if (this.#running !== null && (promptId === undefined || promptId === this.#running.promptId)) {
      this.#running.stop.abort();
    }
  }

  shutDown(): void {
    this.#closing = true;
    this.#pending.length = 0;
    this.#running?.stop.abort();
    this.#clients.clear();
  }

  async #pump(): Promise<void> {
    if (this.#pumping) {
      return;
    }

    this.#pumping = true;
    try {
      for (let next = this.#pending.shift(); next !== undefined; next = this.#pending.shift()) {
        await this.#run(next);
      }
    } finally {
      this.#pumping = false;
    }
  }

  /** Runs one prompt, sending the events ComfyUI sends, in its order, to the prompt's client. */
  async #run(queued: QueuedPrompt): Promise<void> {
    const { promptId, clientId, plan } = queued;
    const stop = new AbortController();
    this.#running = { promptId, stop };
    const record: ComfyUIPromptRecord = { promptId, clientId, ...plan.record, startedAt: Date.now(), finishedAt: null };
    this.prompts.push(record);

    const messages: Array<[string, object]> = [];
    const emit = (type: string, data: Record<string, unknown>): void => {
      const stamped = { ...data, prompt_id: promptId, timestamp: Date.now() };
      if (type.startsWith('execution_')) {
        messages.push([type, stamped]);
      }

      this.#send(clientId, type, type.startsWith('execution_') ? stamped : { ...data, prompt_id: promptId });
    };

    emit('execution_start', {});
    emit('execution_cached', { nodes: [] });
    const executed: string[] = [];
    let outputs: Record<string, { images: ImageRef[] }> = {};
    let failure: { type: string; data: Record<string, unknown> } | null = null;
    for (const nodeId of plan.order) {
      const nodeType = queued.graph[nodeId]?.class_type ?? '';
      emit('executing', { node: nodeId, display_node: nodeId });
      if (nodeId === plan.samplerId) {
        failure = await this.#sample(plan, nodeId, clientId, stop.signal, emit);
      }

      if (failure !== null) {
        failure.data = { ...failure.data, node_id: nodeId, node_type: nodeType, executed: [...executed] };
        break;
      }

      if (nodeId === plan.saveId) {
        const image = this.#saveImage(plan, record);
        outputs = { [nodeId]: { images: [image] } };
        emit('executed', { node: nodeId, display_node: nodeId, output: { images: [image] } });
      }

      executed.push(nodeId);
    }

    if (failure === null) {
      emit('execution_success', {});
    } else {
      emit(failure.type, failure.data);
      outputs = {};
    }

    record.finishedAt = Date.now();
    this.history.set(promptId, {
      prompt: [queued.number, promptId, queued.graph, { client_id: clientId }, [plan.saveId]],
      outputs,
      status: { status_str: failure === null ? 'success' : 'error', completed: failure === null, messages },
    });
    this.#running = null;
    this.#send(clientId, 'executing', { node: null, prompt_id: promptId });
    this.#broadcastStatus();
  }

  /** The KSampler's steps: progress each step, a preview every few, or how it failed. */
  async #sample(
    plan: PromptPlan,
    nodeId: string,
    clientId: string | null,
    stop: AbortSignal,
    emit: (type: string, data: Record<string, unknown>) => void,
  ): Promise<{ type: string; data: Record<string, unknown> } | null> {
    const { width, height, steps, seed, prompt } = plan.record;
    if (width * height > OUT_OF_MEMORY_PIXELS) {
      return {
        type: 'execution_error',
        data: {
          exception_type: 'torch.OutOfMemoryError',
          exception_message: `Allocation on device would exceed allowed memory. (out of memory) at ${width}x${height}`,
          traceback: [],
          current_inputs: {},
          current_outputs: {},
        },
      };
    }

    const scale = PREVIEW_SIZE / Math.max(width, height);
    const preview = encodePng(
      Math.max(1, Math.round(width * scale)),
      Math.max(1, Math.round(height * scale)),
      seed,
      prompt,
    );
    const frame = Buffer.alloc(8);
    frame.writeUInt32BE(PREVIEW_EVENT, 0);
    frame.writeUInt32BE(PREVIEW_FORMAT_PNG, 4);
    for (let step = 1; step <= steps; step++) {
      if (!this.#closing) {
        await sleep(this.#delayMs / steps, undefined, { signal: stop }).catch(() => undefined);
      }

      if (stop.aborted) {
        return { type: 'execution_interrupted', data: {} };
      }

      emit('progress', { value: step, max: steps, node: nodeId });
      if (step % PREVIEW_EVERY_STEPS === 0 || step === steps) {
        this.#sendFrame(clientId, Buffer.concat([frame, preview]));
      }
    }

    return null;
  }

  #saveImage(plan: PromptPlan, record: ComfyUIPromptRecord): ImageRef {
    const filename = `${plan.prefix}_${String(this.#nextOutput++).padStart(5, '0')}_.png`;
    this.files.set(fileKey('output', '', filename), encodePng(record.width, record.height, record.seed, record.prompt));
    return { filename, subfolder: '', type: 'output' };
  }

  #queueStatus(): object {
    return { exec_info: { queue_remaining: this.queueRemaining() } };
  }

  #broadcastStatus(): void {
    for (const clientId of this.#clients.keys()) {
      this.#send(clientId, 'status', { status: this.#queueStatus() });
    }
  }

  #send(clientId: string | null, type: string, data: object): void {
    this.#sendFrame(clientId, JSON.stringify({ type, data }));
  }

  /** Sends to the client's websocket if it is connected; like ComfyUI, a disconnected client misses events. */
  #sendFrame(clientId: string | null, frame: string | Buffer): void {
    const socket = clientId === null ? undefined : this.#clients.get(clientId);
    if (socket !== undefined && socket.readyState === socket.OPEN) {
      socket.send(frame, { binary: typeof frame !== 'string' });
    }
  }
}

/** The node classes the stand-in knows, with ComfyUI's input names, types and limits. */
function defineNodes(choices: { models: () => string[]; inputs: () => string[] }): Record<string, NodeClass> {
  const link = (type: string): InputSpec => ({ type });
  const int = (value: number, min: number, max: number): InputSpec => ({ type: 'INT', default: value, min, max });
  const float = (value: number, min: number, max: number): InputSpec => ({ type: 'FLOAT', default: value, min, max });
  const combo = (list: () => string[]): InputSpec => ({ type: 'COMBO', choices: list });
  const size = int(512, 16, MAX_RESOLUTION);

  return {
    CheckpointLoaderSimple: {
      category: 'loaders',
      inputs: { ckpt_name: combo(choices.models) },
      outputs: ['MODEL', 'CLIP', 'VAE'],
    },
    CLIPTextEncode: {
      category: 'conditioning',
      inputs: { text: { type: 'STRING' }, clip: link('CLIP') },
      outputs: ['CONDITIONING'],
    },
    EmptyLatentImage: {
      category: 'latent',
      inputs: { width: size, height: size, batch_size: int(1, 1, 4_096) },
      outputs: ['LATENT'],
    },
    LoadImage: {
      category: 'image',
      inputs: { image: { type: 'COMBO', choices: choices.inputs, upload: true } },
      outputs: ['IMAGE', 'MASK'],
    },
    ImageScale: {
      category: 'image/upscaling',
      inputs: {
        image: link('IMAGE'),
        upscale_method: combo(() => ['nearest-exact', 'bilinear', 'area', 'bicubic', 'lanczos']),
        width: int(512, 0, MAX_RESOLUTION),
        height: int(512, 0, MAX_RESOLUTION),
        crop: combo(() => ['disabled', 'center']),
      },
      outputs: ['IMAGE'],
    },
    VAEEncode: { category: 'latent', inputs: { pixels: link('IMAGE'), vae: link('VAE') }, outputs: ['LATENT'] },
    KSampler: {
      category: 'sampling',
      inputs: {
        model: link('MODEL'),
        seed: int(0, 0, Number.MAX_SAFE_INTEGER),
        steps: int(20, 1, 10_000),
        cfg: float(8, 0, 100),
        sampler_name: combo(() => SAMPLERS),
        scheduler: combo(() => SCHEDULERS),
        positive: link('CONDITIONING'),
        negative: link('CONDITIONING'),
        latent_image: link('LATENT'),
        denoise: float(1, 0, 1),
      },
      outputs: ['LATENT'],
    },
    VAEDecode: { category: 'latent', inputs: { samples: link('LATENT'), vae: link('VAE') }, outputs: ['IMAGE'] },
    SaveImage: {
      category: 'image',
      inputs: { images: link('IMAGE'), filename_prefix: { type: 'STRING', default: 'ComfyUI' } },
      outputs: [],
      outputNode: true,
    },
  };
}

/**
 * Checks a `POST /prompt` graph the way ComfyUI does (unknown classes, missing outputs, then each node upstream of
 * an output) and returns ComfyUI's 400 body, or the graph and what running it takes.
 */
function validatePrompt(
  prompt: unknown,
  nodes: Record<string, NodeClass>,
  state: ComfyState,
): { graph: ApiGraph; plan: PromptPlan } | { error: NodeIssue; node_errors: object } {
  if (typeof prompt !== 'object' || prompt === null || Array.isArray(prompt)) {
    return { error: issue('no_prompt', 'No prompt provided', 'No prompt provided'), node_errors: [] };
  }

  for (const [id, node] of Object.entries(prompt)) {
    const classType: unknown = typeof node === 'object' && node !== null ? Reflect.get(node, 'class_type') : undefined;
    if (typeof classType !== 'string') {
      const message = 'Cannot execute because a node is missing the class_type property.';
      return { error: issue('invalid_prompt', message, `Node ID '#${id}'`), node_errors: [] };
    }

    if (nodes[classType] === undefined) {
      const message = `Cannot execute because node ${classType} does not exist.`;
      return { error: issue('invalid_prompt', message, `Node ID '#${id}'`), node_errors: [] };
    }
  }

  const graph = prompt as ApiGraph;
  const outputIds = Object.keys(graph).filter((id) => nodes[graph[id]?.class_type ?? '']?.outputNode === true);
  if (outputIds.length === 0) {
    return { error: issue('prompt_no_outputs', 'Prompt has no outputs', ''), node_errors: [] };
  }

  const errors = new Map<string, NodeIssue[]>();
  const order: string[] = [];
  for (const outputId of outputIds) {
    validateNode(outputId, graph, nodes, state, errors, order);
  }

  const saveId = outputIds[0] ?? '';
  const samplerId = order.find((id) => graph[id]?.class_type === 'KSampler');
  if (errors.size === 0 && !order.includes(saveId)) {
    errors.set(saveId, [issue('dependency_cycle_detected', 'Dependency cycle detected', saveId)]);
  } else if (errors.size === 0 && samplerId === undefined) {
    errors.set(saveId, [issue('stand_in_unsupported', 'The ComfyUI stand-in needs a KSampler before SaveImage', '')]);
  }

  if (errors.size > 0 || samplerId === undefined) {
    const nodeErrors = Object.fromEntries(
      [...errors].map(([id, list]) => [
        id,
        { errors: list, dependent_outputs: outputIds, class_type: graph[id]?.class_type ?? '' },
      ]),
    );
    const error = issue('prompt_outputs_failed_validation', 'Prompt outputs failed validation', '');
    return { error, node_errors: nodeErrors };
  }

  return { graph, plan: planRun(graph, order, samplerId, saveId, state) };
}

/** Validates a node and, first, the nodes it links to; appends each valid node to `order` once. */
function validateNode(
  id: string,
  graph: ApiGraph,
  nodes: Record<string, NodeClass>,
  state: ComfyState,
  errors: Map<string, NodeIssue[]>,
  order: string[],
): boolean {
  if (order.includes(id)) {
    return true;
  }

  if (errors.has(id)) {
    return false;
  }

  const node = graph[id];
  const nodeClass = nodes[node?.class_type ?? ''];
  if (node === undefined || nodeClass === undefined) {
    return false;
  }

  const inputs: object = typeof node.inputs === 'object' && node.inputs !== null ? node.inputs : {};
  const problems: NodeIssue[] = [];
  errors.set(id, problems); // marks the node as being checked, which also stops a cycle
  let upstreamValid = true;
  for (const [name, spec] of Object.entries(nodeClass.inputs)) {
    const value: unknown = Reflect.get(inputs, name);
    if (value === undefined) {
      problems.push(issue('required_input_missing', 'Required input is missing', name, { input_name: name }));
    } else if (Array.isArray(value)) {
      const [sourceId, slot] = value as unknown[];
      const source = graph[String(sourceId)];
      const produced = nodes[source?.class_type ?? '']?.outputs[Number(slot)];
      if (value.length !== 2 || source === undefined || produced === undefined) {
        const message = 'Bad linked input, must be a length-2 list of [node_id, slot_index]';
        problems.push(issue('bad_linked_input', message, name, { input_name: name }));
      } else if (produced !== spec.type) {
        const details = `${name}, received_type(${produced}) mismatch input_type(${spec.type})`;
        problems.push(issue('return_type_mismatch', 'Return type mismatch between linked nodes', details));
      } else {
        upstreamValid = validateNode(String(sourceId), graph, nodes, state, errors, order) && upstreamValid;
      }
    } else {
      const problem = checkWidget(name, spec, value, state);
      if (problem !== null) {
        problems.push(problem);
      }
    }
  }

  if (problems.length > 0) {
    return false;
  }

  errors.delete(id);
  if (upstreamValid) {
    order.push(id);
  }

  return upstreamValid;
}

/** Checks a literal input value as ComfyUI converts and bounds it. */
function checkWidget(name: string, spec: InputSpec, value: unknown, state: ComfyState): NodeIssue | null {
  if (spec.type === 'INT' || spec.type === 'FLOAT') {
    const number = typeof value === 'number' || typeof value === 'string' ? Number(value) : NaN;
    if (!Number.isFinite(number) || (spec.type === 'INT' && typeof value === 'string' && !/^-?\d+$/.test(value))) {
      const message = `Failed to convert an input value to a ${spec.type} value`;
      return issue('invalid_input_type', message, `${name}, ${String(value)}`, { input_name: name });
    }

    if (spec.min !== undefined && number < spec.min) {
      return issue('value_smaller_than_min', `Value ${number} smaller than min of ${spec.min}`, name);
    }

    if (spec.max !== undefined && number > spec.max) {
      return issue('value_bigger_than_max', `Value ${number} bigger than max of ${spec.max}`, name);
    }

    return null;
  }

  if (spec.type === 'COMBO') {
    const choices = spec.choices?.() ?? [];
    if (spec.upload && !state.files.has(fileKey('input', '', String(value)))) {
      const details = `${name} - Invalid image file: ${String(value)}`;
      return issue('custom_validation_failed', 'Custom validation failed for node', details);
    }

    if (!spec.upload && !choices.includes(String(value))) {
      const list = `[${choices.map((choice) => `'${choice}'`).join(', ')}]`;
      return issue('value_not_in_list', 'Value not in list', `${name}: '${String(value)}' not in ${list}`);
    }
  }

  return null;
}

/** Reads what the run and its record need from a validated graph. */
function planRun(graph: ApiGraph, order: string[], samplerId: string, saveId: string, state: ComfyState): PromptPlan {
  const sampler = graph[samplerId]?.inputs ?? {};
  const linked = (inputs: Record<string, unknown>, name: string): ApiGraph[string] | undefined => {
    const value = inputs[name];
    return Array.isArray(value) ? graph[String(value[0])] : undefined;
  };
  const text = (name: string): string => String(linked(sampler, name)?.inputs['text'] ?? '');

  const loadImage = order.map((id) => graph[id]).find((node) => node?.class_type === 'LoadImage');
  const initImage = loadImage === undefined ? null : String(loadImage.inputs['image']);
  const size = sizeOf(graph[saveId], graph, state) ?? { width: 512, height: 512 };

  return {
    order,
    samplerId,
    saveId,
    prefix: String(graph[saveId]?.inputs['filename_prefix'] ?? 'ComfyUI'),
    record: {
      seed: Number(sampler['seed']),
      ...size,
      steps: Number(sampler['steps']),
      prompt: text('positive'),
      negative: text('negative'),
      sampler: String(sampler['sampler_name']),
      model: String(linked(sampler, 'model')?.inputs['ckpt_name'] ?? ''),
      initImage,
      denoise: initImage === null ? null : Number(sampler['denoise'] ?? 1),
    },
  };
}

/** The pixel size a node's image or latent output has, following links back to where it was made. */
function sizeOf(
  node: ApiGraph[string] | undefined,
  graph: ApiGraph,
  state: ComfyState,
): { width: number; height: number } | undefined {
  const inputs = node?.inputs ?? {};
  const from = (name: string): { width: number; height: number } | undefined => {
    const value = inputs[name];
    return Array.isArray(value) ? sizeOf(graph[String(value[0])], graph, state) : undefined;
  };

  switch (node?.class_type) {
    case 'EmptyLatentImage':
      return { width: Number(inputs['width']), height: Number(inputs['height']) };
    case 'LoadImage': {
      // Limitation: only PNG uploads are measured; anything else counts as 512x512.
      const file = state.files.get(fileKey('input', '', String(inputs['image'])));
      try {
        return file === undefined ? undefined : readPngSize(file);
      } catch {
        return { width: 512, height: 512 };
      }
    }

    case 'ImageScale': {
      const source = from('image');
      let width = Number(inputs['width']);
      let height = Number(inputs['height']);
      if (source !== undefined && width === 0) {
        width = Math.round((source.width * height) / source.height);
      } else if (source !== undefined && height === 0) {
        height = Math.round((source.height * width) / source.width);
      }

      return { width: Math.max(width, 1), height: Math.max(height, 1) };
    }

    case 'VAEEncode': {
      // The VAE works on 8x8 blocks and drops the remainder (keeping at least one block).
      const source = from('pixels');
      const blocks = (pixels: number): number => Math.max(8, pixels - (pixels % 8));
      return source && { width: blocks(source.width), height: blocks(source.height) };
    }

    case 'KSampler':
      return from('latent_image');
    case 'VAEDecode':
      return from('samples');
    case 'SaveImage':
      return from('images');
    default:
      return undefined;
  }
}

function issue(type: string, message: string, details: string, extraInfo: Record<string, unknown> = {}): NodeIssue {
  return { type, message, details, extra_info: extraInfo };
}

/** Where an uploaded or saved file lives: its folder type, subfolder and name, as `/view` addresses it. */
function fileKey(type: string, subfolder: string, filename: string): string {
  return `${type}:${subfolder === '' ? '' : `${subfolder}/`}${filename}`;
}

function contentTypeOf(filename: string): string {
  const extension = filename.slice(filename.lastIndexOf('.') + 1).toLowerCase();
  return { jpg: 'image/jpeg', jpeg: 'image/jpeg', webp: 'image/webp' }[extension] ?? 'image/png';
}

/** The `/object_info` entry of a node class, in ComfyUI's `[type, options]` input format. */
function describeNode(name: string, node: NodeClass): object {
  const required = Object.fromEntries(
    Object.entries(node.inputs).map(([input, spec]) => {
      if (spec.type === 'COMBO') {
        return [input, [spec.choices?.() ?? [], spec.upload ? { image_upload: true } : {}]];
      }

      const options = Object.fromEntries(
        Object.entries({ default: spec.default, min: spec.min, max: spec.max }).filter(([, v]) => v !== undefined),
      );
      return [input, Object.keys(options).length === 0 ? [spec.type] : [spec.type, options]];
    }),
  );

  return {
    input: { required },
    input_order: { required: Object.keys(node.inputs) },
    output: node.outputs,
    output_is_list: node.outputs.map(() => false),
    output_name: node.outputs,
    name,
    display_name: name,
    description: '',
    python_module: 'nodes',
    category: node.category,
    output_node: node.outputNode === true,
  };
}

function describeSystem(): object {
  return {
    system: {
      os: process.platform,
      ram_total: 0,
      ram_free: 0,
      comfyui_version: 'stand-in',
      python_version: 'none',
      pytorch_version: 'none',
      embedded_python: false,
      argv: ['main.py'],
    },
    devices: [
      {
        name: 'stand-in (no GPU)',
        type: 'cpu',
        index: null,
        vram_total: 0,
        vram_free: 0,
        torch_vram_total: 0,
        torch_vram_free: 0,
      },
    ],
  };
}

function checkDelay(ms: number): number {
  if (!Number.isFinite(ms) || ms < 0) {
    throw new RangeError(`the stand-in delay must be zero or more milliseconds, got ${ms}`);
  }

  return ms;
}

if (require.main === module) {
  runStandInFromCommandLine('ComfyUI stand-in', STANDALONE_PORT, (port) => startComfyUIServer({ port }));
}
