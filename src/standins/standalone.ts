import { parseArgs } from 'node:util';

/**
 * Runs a stand-in from the command line (`tsx src/standins/<name>.ts [--port N]`) until Ctrl-C.
 * Errors are printed and set a failing exit code.
 */
export function runStandInFromCommandLine(
  label: string,
  defaultPort: number,
  start: (port: number) => Promise<{ url: string; close(): Promise<void> }>,
): void {
  const run = async (): Promise<void> => {
    const { values } = parseArgs({ options: { port: { type: 'string' } } });
    const port = values.port === undefined ? defaultPort : Number(values.port);
    if (!Number.isInteger(port) || port < 0 || port > 65_535) {
      throw new RangeError(`--port needs a TCP port number, got ${values.port}`);
    }

    const server = await start(port);
    process.stdout.write(`${label} listening on ${server.url}\n`);
    const stop = (): void => {
      void server.close();
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  };

  run().catch((error: unknown) => {
    process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  });
}
