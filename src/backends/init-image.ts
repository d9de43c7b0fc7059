import { describeNetworkError } from './http-util';

/**
 * Fetching the starting image of an img2img request. Its URL comes from a Discord user, so it is treated as
 * hostile: only Discord's attachment hosts, no redirects anywhere else, a size cap enforced while the bytes
 * arrive, and bytes that really are a PNG, JPEG or WebP image.
 */

/** The hosts Discord serves message attachments from. */
export const DISCORD_ATTACHMENT_HOSTS = ['cdn.discordapp.com', 'media.discordapp.net'] as const;

/** Where an init image may come from and how much of it is accepted. */
export interface InitImagePolicy {
  /** Hostnames matched exactly and case-insensitively; an IP address is allowed only when it is listed. */
  allowedHosts: readonly string[];
  /** Allows `http:` and non-default ports: only for tests against loopback stand-ins. */
  allowHttp: boolean;
  /** The largest image accepted, in bytes. */
  maxBytes: number;
  /** How long the whole fetch may take, redirects and body included, in milliseconds. */
  timeoutMs: number;
}

/** Discord attachments over https, up to 8 MiB, within 15 s. Frozen: copy it to change a field. */
export const DEFAULT_INIT_IMAGE_POLICY: Readonly<InitImagePolicy> = Object.freeze({
  allowedHosts: DISCORD_ATTACHMENT_HOSTS,
  allowHttp: false,
  maxBytes: 8 * 1_024 * 1_024, // 8 MiB
  timeoutMs: 15_000, // 15 s
});

export type InitImageErrorCode = 'INIT_IMAGE_REFUSED' | 'INIT_IMAGE_UNAVAILABLE';

/**
 * Thrown when an init image cannot be used.
 *
 * `INIT_IMAGE_REFUSED` (not retryable): the URL or a redirect target is not allowed, there were too many
 * redirects, the image is too big or is not a PNG, JPEG or WebP, or the host answered 4xx (except 408 and 429).
 * `INIT_IMAGE_UNAVAILABLE` (retryable): a network failure, the timeout, a 5xx, 408 or 429.
 *
 * `url` and the message carry the scheme, host and path only: Discord signs attachment URLs with query
 * parameters, which must not end up in logs.
 */
export class InitImageError extends Error {
  override readonly name = 'InitImageError';
  readonly code: InitImageErrorCode;
  readonly retryable: boolean;
  /** The URL concerned, without credentials, query or fragment. */
  readonly url: string;
  /** The HTTP status that caused the error, if any. */
  readonly status: number | undefined;

  constructor(code: InitImageErrorCode, message: string, context: { url: string; status?: number; cause?: unknown }) {
    super(message, context.cause === undefined ? undefined : { cause: context.cause });
    this.code = code;
    this.retryable = code === 'INIT_IMAGE_UNAVAILABLE';
    this.url = redactUrl(context.url);
    this.status = context.status;
  }
}

const NOT_FROM_DISCORD = 'Images can only come from Discord attachments.';

const MAX_REDIRECTS = 3;

const REDIRECT_STATUSES: ReadonlySet<number> = new Set([301, 302, 303, 307, 308]);

/** 4xx statuses that say "later", not "never". */
const RETRYABLE_CLIENT_STATUSES: ReadonlySet<number> = new Set([408, 429]);

const IMAGE_TYPES: ReadonlySet<string> = new Set(['image/png', 'image/jpeg', 'image/webp']);

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const JPEG_SIGNATURE = Buffer.from([0xff, 0xd8, 0xff]);

/**
 * Checks, without any I/O, that `url` may be fetched under `policy` (default {@link DEFAULT_INIT_IMAGE_POLICY}):
 * it parses, uses https (or http when `allowHttp`), has no credentials, names one of `allowedHosts` exactly,
 * and uses the scheme's default port unless `allowHttp`. The refusal `reason` is written for the Discord user.
 */
export function checkInitImageUrl(
  url: string,
  policy: InitImagePolicy = DEFAULT_INIT_IMAGE_POLICY,
): { ok: true; url: URL } | { ok: false; reason: string } {
  const result = inspectUrl(url, policy);
  return 'problem' in result ? { ok: false, reason: NOT_FROM_DISCORD } : { ok: true, url: result.url };
}

/**
 * Downloads an init image allowed by `policy` (default {@link DEFAULT_INIT_IMAGE_POLICY}) and resolves with
 * its bytes, which are a PNG, JPEG or WebP image no larger than `policy.maxBytes`.
 *
 * Redirects are followed only when each target passes {@link checkInitImageUrl}, at most 3 of them.
 * Aborting `options.signal` rejects with the signal's reason. Throws {@link InitImageError} for every other
 * failure, and a `RangeError` when `maxBytes` or `timeoutMs` is not positive.
 */
export async function fetchInitImage(
  url: string,
  policy: InitImagePolicy = DEFAULT_INIT_IMAGE_POLICY,
  options: { signal?: AbortSignal } = {},
): Promise<Buffer> {
  if (!(policy.maxBytes > 0) || !(policy.timeoutMs > 0)) {
    throw new RangeError('an init image policy needs a positive maxBytes and timeoutMs');
  }

  const timeout = AbortSignal.timeout(policy.timeoutMs);
  const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
  const transportFailure = (error: unknown, target: URL): unknown => {
    if (timeout.aborted) {
      return new InitImageError('INIT_IMAGE_UNAVAILABLE', `init image took longer than ${policy.timeoutMs} ms`, {
        url: target.href,
        cause: error,
      });
    }

    if (options.signal?.aborted) {
      return options.signal.reason;
    }

    return new InitImageError(
      'INIT_IMAGE_UNAVAILABLE',
      `init image unreachable at ${redactUrl(target.href)} (${describeNetworkError(error)})`,
      { url: target.href, cause: error },
    );
  };

  let target = requireAllowed(url, policy, 'init image');
  for (let redirects = 0; ; redirects++) {
    let response: Response;
    try {
      response = await fetch(target, {
        redirect: 'manual',
        headers: { accept: [...IMAGE_TYPES].join(', ') },
        signal,
      });
    } catch (error) {
      throw transportFailure(error, target);
    }

    if (!REDIRECT_STATUSES.has(response.status)) {
      checkResponse(response, target, policy);
      let bytes: Buffer | undefined;
      try {
        bytes = await readCapped(response, policy.maxBytes);
      } catch (error) {
        throw transportFailure(error, target);
      }

      if (bytes === undefined) {
        throw refused(`init image is larger than ${policy.maxBytes} bytes`, target);
      }

      if (sniffImageType(bytes) === undefined) {
        throw refused('init image is not a PNG, JPEG or WebP image', target);
      }

      return bytes;
    }

    await discardBody(response);
    if (redirects === MAX_REDIRECTS) {
      throw refused(`init image redirected more than ${MAX_REDIRECTS} times`, target);
    }

    const location = response.headers.get('location');
    if (location === null || !URL.canParse(location, target.href)) {
      throw refused(`init image answered ${response.status} without a usable Location`, target);
    }

    target = requireAllowed(new URL(location, target).href, policy, 'init image redirect');
  }
}

function inspectUrl(url: string, policy: InitImagePolicy): { url: URL } | { problem: string } {
  if (!URL.canParse(url)) {
    return { problem: 'not a URL' };
  }

  const parsed = new URL(url);
  if (parsed.protocol !== 'https:' && !(policy.allowHttp && parsed.protocol === 'http:')) {
    return { problem: `scheme ${parsed.protocol} is not allowed` };
  }

  if (parsed.username !== '' || parsed.password !== '') {
    return { problem: 'credentials in the URL are not allowed' };
  }

  // An exact match also keeps out IP literals that are not listed, in every spelling: the URL parser has
  // already normalized `0x7f.1` or `2130706433` to `127.0.0.1`, and lowercased the hostname.
  const host = unbracket(parsed.hostname);
  if (!policy.allowedHosts.some((allowed) => unbracket(allowed.toLowerCase()) === host)) {
    return { problem: `host ${parsed.hostname} is not allowed` };
  }

  // `port` is empty when it is the scheme's default.
  if (parsed.port !== '' && !policy.allowHttp) {
    return { problem: `port ${parsed.port} is not allowed` };
  }

  return { url: parsed };
}

/** Returns the parsed URL when allowed; otherwise throws a refusal naming `what` and the problem. */
function requireAllowed(url: string, policy: InitImagePolicy, what: string): URL {
  const result = inspectUrl(url, policy);
  if ('problem' in result) {
    const where = URL.canParse(url) ? ` (${redactUrl(url)})` : '';
    throw new InitImageError('INIT_IMAGE_REFUSED', `${what} refused: ${result.problem}${where}`, { url });
  }

  return result.url;
}

/** Throws for an error status, a type that is not an image, or a declared length past the cap. */
function checkResponse(response: Response, target: URL, policy: InitImagePolicy): void {
  const { status } = response;
  if (status < 200 || status > 299) {
    void discardBody(response);
    const retryable = status >= 500 || RETRYABLE_CLIENT_STATUSES.has(status);
    throw new InitImageError(
      retryable ? 'INIT_IMAGE_UNAVAILABLE' : 'INIT_IMAGE_REFUSED',
      `init image host answered ${status} for ${redactUrl(target.href)}`,
      { url: target.href, status },
    );
  }

  const contentType = (response.headers.get('content-type') ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
  if (!IMAGE_TYPES.has(contentType)) {
    void discardBody(response);
    throw refused(`init image has content type ${contentType || '(none)'}, not PNG, JPEG or WebP`, target);
  }

  const declaredLength = Number(response.headers.get('content-length') ?? Number.NaN);
  if (declaredLength > policy.maxBytes) {
    void discardBody(response);
    throw refused(`init image declares ${declaredLength} bytes, more than ${policy.maxBytes}`, target);
  }
}

/** Reads the body, or stops reading and resolves `undefined` as soon as it grows past `maxBytes`. */
async function readCapped(response: Response, maxBytes: number): Promise<Buffer | undefined> {
  if (response.body === null) {
    return Buffer.alloc(0);
  }

  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) {
      return Buffer.concat(chunks, total);
    }

    total += value.byteLength;
    if (total > maxBytes) {
      // Cancelling the stream also closes the connection, so a huge body is not downloaded in the background.
      await reader.cancel().catch(() => undefined);
      return undefined;
    }

    chunks.push(value);
  }
}

async function discardBody(response: Response): Promise<void> {
  await response.body?.cancel().catch(() => undefined);
}

/** The image type the leading bytes announce, whatever the server claimed. */
function sniffImageType(bytes: Buffer): 'image/png' | 'image/jpeg' | 'image/webp' | undefined {
  if (bytes.subarray(0, PNG_SIGNATURE.length).equals(PNG_SIGNATURE)) {
    return 'image/png';
  }

  if (bytes.subarray(0, JPEG_SIGNATURE.length).equals(JPEG_SIGNATURE)) {
    return 'image/jpeg';
  }

  if (bytes.length >= 12 && bytes.toString('latin1', 0, 4) === 'RIFF' && bytes.toString('latin1', 8, 12) === 'WEBP') {
    return 'image/webp';
  }

  return undefined;
}

function refused(reason: string, target: URL): InitImageError {
  return new InitImageError('INIT_IMAGE_REFUSED', `${reason} (${redactUrl(target.href)})`, { url: target.href });
}

/** Scheme, host, port and path only: no credentials, no signed query parameters, no fragment. */
function redactUrl(url: string): string {
  if (!URL.canParse(url)) {
    return '(not a URL)';
  }

  const parsed = new URL(url);
  return parsed.origin === 'null' ? `${parsed.protocol}(opaque URL)` : `${parsed.origin}${parsed.pathname}`;
}

function unbracket(host: string): string {
  return host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
}
