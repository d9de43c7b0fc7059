/** An image server's base URL with any `user:password@` taken out and turned into a Basic header. */
export interface ServerAddress {
  /** Without credentials, query or fragment, and ending in `/` so that relative paths resolve below it. */
  base: URL;
  authorization: string | undefined;
}

/**
 * Parses an image server's base URL. Credentials in it are kept out of the URL (so they never reach an
 * error message) and returned as an HTTP Basic header. Throws a TypeError naming `client` and `example`
 * for anything that is not an http(s) URL.
 */
export function parseServerAddress(baseUrl: string, client: string, example: string): ServerAddress {
  const base = URL.canParse(baseUrl) ? new URL(baseUrl) : undefined;
  if (base === undefined || (base.protocol !== 'http:' && base.protocol !== 'https:')) {
    throw new TypeError(`${client} needs an http(s) base URL, such as ${example}`);
  }

  let authorization: string | undefined;
  if (base.username !== '' || base.password !== '') {
    const credentials = `${decodeURIComponent(base.username)}:${decodeURIComponent(base.password)}`;
    authorization = `Basic ${Buffer.from(credentials).toString('base64')}`;
  }

  base.username = '';
  base.password = '';
  base.search = '';
  base.hash = '';
  if (!base.pathname.endsWith('/')) {
    base.pathname += '/';
  }

  return { base, authorization };
}

/** A short reason for a failed fetch: the system error code (ECONNREFUSED…) when there is one. */
export function describeNetworkError(error: unknown): string {
  const cause = error instanceof Error ? error.cause : undefined;
  for (const candidate of [cause, error]) {
    if (candidate instanceof Error) {
      const code = (candidate as NodeJS.ErrnoException).code;
      if (typeof code === 'string') {
        return code;
      }
    }
  }

  return cause instanceof Error ? cause.message : error instanceof Error ? error.message : 'unknown error';
}
