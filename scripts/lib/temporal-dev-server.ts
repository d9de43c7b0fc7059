import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { dirname } from 'node:path';

import { Connection } from '@temporalio/client';

import { ensureTemporalCli } from '../../src/temporal-cli';

export interface DevServerOptions {
  /** SQLite file that keeps workflows across restarts; in memory when left out. */
  dbFile?: string;
  /** gRPC port; a free one when 0. */
  port?: number;
  /** Web UI port; a free one when 0. */
  uiPort?: number;
  /** Extra search attributes to register, as `Name=Type`. */
  searchAttributes?: string[];
}

export interface DevServer {
  address: string;
  uiUrl: string;
  stop(): Promise<void>;
}

/** Starts `temporal server start-dev` (the real server, SQLite, Web UI) and waits until it answers. */
export async function startTemporalDevServer(options: DevServerOptions = {}): Promise<DevServer> {
  const cli = ensureTemporalCli((line) => console.log(line));
  const port = options.port === undefined || options.port === 0 ? await freePort() : options.port;
  const uiPort = options.uiPort === undefined || options.uiPort === 0 ? await freePort() : options.uiPort;
  const args = ['server', 'start-dev', '--ip', '127.0.0.1', '--port', String(port), '--ui-port', String(uiPort)];
  args.push('--log-level', 'error');
  if (options.dbFile !== undefined) {
    mkdirSync(dirname(options.dbFile), { recursive: true });
    args.push('--db-filename', options.dbFile);
  }

  for (const attribute of options.searchAttributes ?? []) {
    args.push('--search-attribute', attribute);
  }

  const child = spawn(cli, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-4_000);
  });

  const address = `127.0.0.1:${port}`;
  try {
    await waitUntilReady(address, child, () => stderr);
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  }

  return {
    address,
    uiUrl: `http://127.0.0.1:${uiPort}`,
    stop: () => stopChild(child),
  };
}

async function waitUntilReady(address: string, child: ChildProcess, stderr: () => string): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) {
      throw new Error(`temporal server exited with code ${child.exitCode}: ${stderr().trim()}`);
    }

    try {
      const connection = await Connection.connect({ address, connectTimeout: 1_000 });
      await connection.workflowService.describeNamespace({ namespace: 'default' });
      await connection.close();
      return;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }

  throw new Error(`temporal server did not answer on ${address} within 60 s`);
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) {
    return Promise.resolve();
  }

  return new Promise((resolve) => {
    const kill = setTimeout(() => child.kill('SIGKILL'), 5_000);
    child.once('exit', () => {
      clearTimeout(kill);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

/** A TCP port nobody listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** True when something accepts TCP connections on host:port. */
export function isListening(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    socket.setTimeout(500);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
    socket.once('timeout', () => {
      socket.destroy();
      resolve(false);
    });
  });
}
