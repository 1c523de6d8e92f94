// The streamed chat-completions request, made with undici's `request` on an `openai` client: the URL
// and headers the SDK builds (once per client), its timeout and retry rules, and its error classes.
// The SDK's own request path cost about 190 us of CPU per request over fetch with the same body
// (headers built and validated per request, debug details formatted even with logging off, a second
// abort controller and timer), and fetch itself (WHATWG Request, Response and streams, an abort
// signal followed per request) about 300 us more than undici's `request`, which fetch is built on:
// together most of what the relay spent per turn beyond the floor. Retried as the SDK documents: connection errors,
// 408, 409, 429 and 5xx, maxRetries times, obeying `x-should-retry`, `retry-after-ms` and
// `retry-after`. Not supported (the server never sets them): a custom `fetch` or `fetchOptions`, an
// `apiKey` function, a provider, and the SDK's OPENAI_LOG request logging.
import type OpenAI from 'openai';
import { APIConnectionError, APIConnectionTimeoutError, APIError, APIUserAbortError } from 'openai';
import { pipeline, type Readable } from 'node:stream';
import { text as streamText } from 'node:stream/consumers';
import zlib from 'node:zlib';
import { request, type Dispatcher } from 'undici';
import type { Clock } from '../clock.js';

export interface ChatRequestOptions {
  client: OpenAI;
  /** Waits between retries and times each attempt out. */
  clock: Clock;
  /** Aborts the request (an interrupt); the caller then ignores what follows. */
  signal: AbortSignal;
}

const INITIAL_RETRY_DELAY_S = 0.5;
const MAX_RETRY_DELAY_S = 8;
/**
 * A wait the server asks for beyond this fails the request instead: a caller on the line should hear
 * the agent's failure line, not minutes of silence.
 */
const MAX_ASKED_WAIT_MS = 60_000;

interface Target {
  url: string;
  headers: Record<string, string>;
}

/**
 * The URL and headers the SDK itself would send (its public buildRequest: key, organization, project,
 * default headers and query, OPENAI_CUSTOM_HEADERS, User-Agent), built once per client: building them
 * is most of the SDK's cost per request. Its X-Stainless-* telemetry headers are left out: no endpoint
 * needs them, and every header is checked again on every request. A base URL the SDK rejects fails
 * here, as every request, the same way.
 */
const targets = new WeakMap<OpenAI, Promise<Target>>();

function targetOf(client: OpenAI): Promise<Target> {
  let target = targets.get(client);
  if (!target) {
    target = client.buildRequest({ method: 'post', path: '/chat/completions', body: {} }).then(({ url, req }) => ({
      url,
      headers: Object.fromEntries([...new Headers(req.headers as HeadersInit)].filter(([name]) => !name.startsWith('x-stainless-'))),
    }));
    targets.set(client, target);
  }
  return target;
}

/** A 2xx streamed response: its status, its body as it arrives, and its headers for the SDK's errors. */
export type ChatStream = Dispatcher.ResponseData;

/** A response's headers as the SDK's errors take them. */
export function headersOf(response: Pick<ChatStream, 'headers'>): Headers {
  const headers = new Headers();
  for (const [name, value] of Object.entries(response.headers)) {
    for (const one of Array.isArray(value) ? value : value === undefined ? [] : [value]) headers.append(name, one);
  }
  return headers;
}

const SYNC = { flush: zlib.constants.Z_SYNC_FLUSH, finishFlush: zlib.constants.Z_SYNC_FLUSH };
const BROTLI_SYNC = { flush: zlib.constants.BROTLI_OPERATION_FLUSH, finishFlush: zlib.constants.BROTLI_OPERATION_FLUSH };
const decoders: Record<string, () => zlib.Gunzip | zlib.Inflate | zlib.BrotliDecompress> = {
  gzip: () => zlib.createGunzip(SYNC),
  'x-gzip': () => zlib.createGunzip(SYNC),
  deflate: () => zlib.createInflate(SYNC),
  br: () => zlib.createBrotliDecompress(BROTLI_SYNC),
};

/**
 * A response's body with its Content-Encoding undone. fetch undid it itself and undici's `request`
 * does not; a request without Accept-Encoding accepts any coding (RFC 9110), so a server may compress
 * even unasked, and compressed bytes read as SSE are no events: a silent empty reply. A coding that
 * cannot be undone fails clearly (and frees the connection). Destroying what is returned destroys the body.
 */
export function bodyOf(response: ChatStream): Readable {
  const coding = header(response, 'content-encoding');
  if (!coding) return response.body;
  const codings = coding.toLowerCase().split(',').map((one) => one.trim()).filter((one) => one && one !== 'identity');
  if (!codings.every((one) => one in decoders)) {
    response.body.on('error', () => undefined).destroy();
    throw new Error(`the LLM answered in a content coding that cannot be read: ${coding}`);
  }
  // Undone in the reverse of the order applied; pipeline destroys both sides when either fails or is destroyed.
  return codings.reverse().reduce<Readable>((from, one) => pipeline(from, decoders[one]!(), () => undefined), response.body);
}

/** POSTs `body` to the client's /chat/completions; resolves with the (2xx) streamed response. */
export async function requestChatStream(body: object, o: ChatRequestOptions): Promise<ChatStream> {
  let { url, headers } = await targetOf(o.client);
  const json = JSON.stringify(body);
  const maxRetries = o.client.maxRetries;
  let redirects = 0;
  for (let retriesLeft = maxRetries; ; retriesLeft--) {
    if (o.signal.aborted) throw new APIUserAbortError();
    const attempt = await requestWithTimeout(url, headers, json, o);
    if (!(attempt instanceof APIConnectionError)) {
      if (attempt.statusCode >= 200 && attempt.statusCode < 300) return attempt;
      const location = (attempt.statusCode === 307 || attempt.statusCode === 308) && redirects < MAX_REDIRECTS ? header(attempt, 'location') : undefined;
      if (location) {
        // Followed as fetch follows them (undici's request follows none): the same POST and body to
        // where it points, the key left behind on another origin. Not a retry.
        await attempt.body.dump().catch(() => undefined);
        const next = new URL(location, url);
        if (next.origin !== new URL(url).origin) headers = withoutCredentials(headers);
        url = next.toString();
        redirects++;
        retriesLeft++;
        continue;
      }
      const wait = retriesLeft > 0 && shouldRetry(attempt) ? retryDelayMs(attempt, retriesLeft, maxRetries, o.clock) : undefined;
      if (wait !== undefined && wait <= MAX_ASKED_WAIT_MS) {
        await attempt.body.dump().catch(() => undefined);
        await sleep(wait, o);
        continue;
      }
      const text = await errorText(attempt);
      const parsed = safeJson(text);
      throw APIError.generate(attempt.statusCode, parsed, parsed ? undefined : text, headersOf(attempt));
    }
    if (o.signal.aborted) throw new APIUserAbortError();
    if (retriesLeft > 0) {
      await sleep(retryDelayMs(undefined, retriesLeft, maxRetries, o.clock), o);
      continue;
    }
    throw attempt;
  }
}

/** As many as fetch follows. */
const MAX_REDIRECTS = 20;

/** The headers fetch drops when a redirect changes origin. */
function withoutCredentials(headers: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(headers).filter(([name]) => !['authorization', 'cookie', 'proxy-authorization'].includes(name.toLowerCase())));
}

/** One attempt: the response, or the SDK's connection error (timed out or not). */
async function requestWithTimeout(url: string, headers: Record<string, string>, body: string, o: ChatRequestOptions): Promise<ChatStream | APIConnectionError> {
  const controller = new AbortController();
  let timedOut = false;
  const abort = () => controller.abort();
  o.signal.addEventListener('abort', abort, { once: true });
  const timer = o.clock.setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, o.client.timeout);
  try {
    // The caller's abort stays linked after the headers: it is what stops the body's stream.
    return await request(url, { method: 'POST', headers, body, signal: controller.signal });
  } catch (err) {
    o.signal.removeEventListener('abort', abort);
    const cause = err instanceof Error ? err : new Error(String(err));
    // undici's own connect and headers timeouts are timeouts too; the SDK tells them by their message, as here.
    const timeout = timedOut || /timed? ?out/i.test(`${String(cause)}${'cause' in cause ? String(cause.cause) : ''}`);
    return timeout ? new APIConnectionTimeoutError() : new APIConnectionError({ cause });
  } finally {
    o.clock.clearTimeout(timer);
  }
}

/** A response header's (first) value; undici gives them by lower-case name. */
function header(response: ChatStream, name: string): string | undefined {
  const value = response.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

function shouldRetry(response: ChatStream): boolean {
  const asked = header(response, 'x-should-retry');
  if (asked === 'true') return true;
  if (asked === 'false') return false;
  const status = response.statusCode;
  return status === 408 || status === 409 || status === 429 || status >= 500;
}

/**
 * As the SDK waits: what the server asks for (`retry-after-ms`, then `retry-after` in seconds or as a
 * date), else exponential backoff from 0.5 s to 8 s, less up to a quarter of jitter.
 */
function retryDelayMs(response: ChatStream | undefined, retriesLeft: number, maxRetries: number, clock: Clock): number {
  let asked: number | undefined;
  const ms = Number.parseFloat((response && header(response, 'retry-after-ms')) ?? '');
  if (!Number.isNaN(ms)) asked = ms;
  const after = response && header(response, 'retry-after');
  if (after && !asked) {
    const seconds = Number.parseFloat(after);
    asked = Number.isNaN(seconds) ? Date.parse(after) - clock.now() : seconds * 1000;
  }
  // A date that does not parse waits no time, as the SDK's NaN does.
  if (asked !== undefined) return Number.isFinite(asked) ? Math.max(0, asked) : 0;
  const seconds = Math.min(INITIAL_RETRY_DELAY_S * 2 ** (maxRetries - retriesLeft), MAX_RETRY_DELAY_S);
  return seconds * (1 - Math.random() * 0.25) * 1000;
}

function sleep(ms: number, o: ChatRequestOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    if (o.signal.aborted) {
      reject(new APIUserAbortError());
      return;
    }
    const onAbort = () => {
      o.clock.clearTimeout(timer);
      reject(new APIUserAbortError());
    };
    const timer = o.clock.setTimeout(() => {
      o.signal.removeEventListener('abort', onAbort);
      resolve();
    }, Math.max(0, ms));
    o.signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** A failed response's body as text, or why it could not be read (bodyOf throws on a coding it cannot undo). */
async function errorText(response: ChatStream): Promise<string> {
  try {
    return await streamText(bodyOf(response));
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
}

function safeJson(text: string): object | undefined {
  try {
    return JSON.parse(text) as object;
  } catch {
    return undefined;
  }
}
