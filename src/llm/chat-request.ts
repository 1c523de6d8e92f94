// The streamed chat-completions request, made with fetch on the settings of an `openai` client (API
// key, base URL, organization, project, timeout, retries), failing with the SDK's own error classes.
// The SDK's request path cost about 190 us of CPU per request over fetch with the same body (headers
// built and validated per request, debug details formatted even with logging off, a second abort
// controller and timer): a tenth of the relay's whole cost per turn. Its retry rules are kept as it
// documents them: connection errors, 408, 409, 429 and 5xx are retried (maxRetries times), with
// `x-should-retry`, `retry-after-ms` and `retry-after` obeyed, else backoff from 0.5 s to 8 s.
import type OpenAI from 'openai';
import { APIConnectionError, APIConnectionTimeoutError, APIError, APIUserAbortError } from 'openai';
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

/** Headers fixed for a client's lifetime, built once. */
const headersOf = new WeakMap<OpenAI, Record<string, string>>();

function headers(client: OpenAI): Record<string, string> {
  let h = headersOf.get(client);
  if (!h) {
    h = { 'content-type': 'application/json', accept: 'application/json' };
    if (client.apiKey) h.authorization = `Bearer ${client.apiKey}`;
    if (client.organization) h['openai-organization'] = client.organization;
    if (client.project) h['openai-project'] = client.project;
    headersOf.set(client, h);
  }
  return h;
}

/** POSTs `body` to the client's /chat/completions; resolves with the (2xx) streamed response. */
export async function requestChatStream(body: object, o: ChatRequestOptions): Promise<Response> {
  const url = `${o.client.baseURL.replace(/\/+$/, '')}/chat/completions`;
  const init = { method: 'POST', headers: headers(o.client), body: JSON.stringify(body) };
  const maxRetries = o.client.maxRetries;
  for (let retriesLeft = maxRetries; ; retriesLeft--) {
    const attempt = await fetchWithTimeout(url, init, o);
    if (attempt instanceof Response) {
      if (attempt.ok) return attempt;
      if (retriesLeft > 0 && shouldRetry(attempt)) {
        await attempt.body?.cancel().catch(() => undefined);
        await sleep(retryDelayMs(attempt.headers, retriesLeft, maxRetries, o.clock), o);
        continue;
      }
      const text = await attempt.text().catch((err: unknown) => (err instanceof Error ? err.message : String(err)));
      const json = safeJson(text);
      throw APIError.generate(attempt.status, json, json ? undefined : text, attempt.headers);
    }
    if (o.signal.aborted) throw new APIUserAbortError();
    if (retriesLeft > 0) {
      await sleep(retryDelayMs(undefined, retriesLeft, maxRetries, o.clock), o);
      continue;
    }
    throw attempt;
  }
}

/** One attempt: the response, or the SDK's connection error (timed out or not). */
async function fetchWithTimeout(url: string, init: RequestInit, o: ChatRequestOptions): Promise<Response | APIConnectionError> {
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
    return await fetch(url, { ...init, signal: controller.signal });
  } catch (err) {
    o.signal.removeEventListener('abort', abort);
    return timedOut ? new APIConnectionTimeoutError() : new APIConnectionError({ cause: err instanceof Error ? err : new Error(String(err)) });
  } finally {
    o.clock.clearTimeout(timer);
  }
}

function shouldRetry(response: Response): boolean {
  const header = response.headers.get('x-should-retry');
  if (header === 'true') return true;
  if (header === 'false') return false;
  return response.status === 408 || response.status === 409 || response.status === 429 || response.status >= 500;
}

/** What the server asks for (`retry-after-ms`, then `retry-after` in seconds or as a date), else backoff with jitter. */
function retryDelayMs(responseHeaders: Headers | undefined, retriesLeft: number, maxRetries: number, clock: Clock): number {
  const ms = Number.parseFloat(responseHeaders?.get('retry-after-ms') ?? '');
  if (!Number.isNaN(ms) && ms) return ms;
  const after = responseHeaders?.get('retry-after');
  if (after) {
    const seconds = Number.parseFloat(after);
    return Number.isNaN(seconds) ? Date.parse(after) - clock.now() : seconds * 1000;
  }
  const seconds = Math.min(INITIAL_RETRY_DELAY_S * 2 ** (maxRetries - retriesLeft), MAX_RETRY_DELAY_S);
  return seconds * (1 - Math.random() * 0.25) * 1000;
}

function sleep(ms: number, o: ChatRequestOptions): Promise<void> {
  return new Promise((resolve, reject) => {
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

function safeJson(text: string): object | undefined {
  try {
    return JSON.parse(text) as object;
  } catch {
    return undefined;
  }
}
