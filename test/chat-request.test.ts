// The streamed chat-completions request is made with undici on an `openai` client's settings. These
// tests hold it to what the SDK does with the same client, against a loopback HTTP server: the same
// headers, the same retry rules and waits (on an injected clock), and the SDK's own error classes.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import OpenAI, { APIConnectionError, APIConnectionTimeoutError, APIUserAbortError, BadRequestError, InternalServerError, RateLimitError } from 'openai';
import { afterEach, describe, expect, it } from 'vitest';
import { requestChatStream } from '../src/llm/chat-request.js';
import { TestClock } from './support/test-clock.js';

interface Seen {
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}

type Answer = { status: number; headers?: Record<string, string>; body?: string } | 'hold';

const servers: http.Server[] = [];
afterEach(async () => {
  await Promise.all(
    servers.splice(0).map((s) => {
      const closed = new Promise((resolve) => s.close(resolve));
      s.closeAllConnections();
      return closed;
    }),
  );
});

/** Answers the n-th request with answers[n] (the last one again after that); 'hold' never answers. */
async function server(answers: Answer[]): Promise<{ baseURL: string; seen: Seen[] }> {
  const seen: Seen[] = [];
  const s = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      seen.push({ url: req.url ?? '', headers: req.headers, body });
      const answer = answers[Math.min(seen.length - 1, answers.length - 1)]!;
      if (answer === 'hold') return;
      res.writeHead(answer.status, { 'content-type': answer.status === 200 ? 'text/event-stream' : 'application/json', ...answer.headers });
      res.end(answer.body ?? (answer.status === 200 ? 'data: [DONE]\n\n' : JSON.stringify({ error: { message: `status ${answer.status}`, type: 'x' } })));
    });
  });
  servers.push(s);
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  return { baseURL: `http://127.0.0.1:${(s.address() as AddressInfo).port}/v1/`, seen };
}

/** A manual clock that also records every wait asked of it. */
class RecordingClock extends TestClock {
  readonly waits: number[] = [];
  override setTimeout(fn: () => void, ms: number): number {
    this.waits.push(ms);
    return super.setTimeout(fn, ms);
  }
}

const TIMEOUT_MS = 30_000;
const body = { model: 'm', messages: [{ role: 'user', content: 'hi' }], stream: true };

function setup(baseURL: string, extra: Partial<ConstructorParameters<typeof OpenAI>[0]> = {}) {
  const client = new OpenAI({ apiKey: 'sk-test', baseURL, timeout: TIMEOUT_MS, maxRetries: 2, ...extra });
  const clock = new RecordingClock();
  const abort = new AbortController();
  return { client, clock, abort, request: () => requestChatStream(body, { client, clock, signal: abort.signal }) };
}

/** Waits until the request sleeps (a wait other than its attempt timeout), then lets that wait pass. */
async function passBackoff(clock: RecordingClock, count: number): Promise<number> {
  await expect.poll(() => clock.waits.filter((ms) => ms !== TIMEOUT_MS).length).toBe(count);
  const wait = clock.waits.filter((ms) => ms !== TIMEOUT_MS)[count - 1]!;
  clock.advance(wait);
  return wait;
}

describe('the streamed chat request, on the openai client settings', () => {
  it('posts the body to the base URL with the headers the SDK sends: key, organization, project, default headers, User-Agent', async () => {
    const { baseURL, seen } = await server([{ status: 200 }]);
    const { request } = setup(baseURL, { organization: 'org-1', project: 'proj-1', defaultHeaders: { 'x-gateway-key': 'gw-1' } });
    const response = await request();
    expect(await response.body.text()).toBe('data: [DONE]\n\n');
    expect(seen).toHaveLength(1);
    expect(seen[0]!.url).toBe('/v1/chat/completions');
    expect(JSON.parse(seen[0]!.body)).toEqual(body);
    expect(seen[0]!.headers).toMatchObject({
      authorization: 'Bearer sk-test',
      'openai-organization': 'org-1',
      'openai-project': 'proj-1',
      'content-type': 'application/json',
      'x-gateway-key': 'gw-1',
      'user-agent': expect.stringMatching(/^OpenAI\/JS /),
    });
    expect(Object.keys(seen[0]!.headers).filter((name) => name.startsWith('x-stainless-'))).toEqual([]);
  });

  it('follows a redirect as fetch did: a 307 or 308 is posted again, same body and key, to where it points', async () => {
    const { baseURL, seen } = await server([{ status: 307, headers: { location: '/v2/chat/completions' } }, { status: 308, headers: { location: '/v3/chat/completions' } }, { status: 200 }]);
    const response = await setup(baseURL).request();
    expect(response.statusCode).toBe(200);
    expect(seen.map((s) => s.url)).toEqual(['/v1/chat/completions', '/v2/chat/completions', '/v3/chat/completions']);
    expect(seen.map((s) => JSON.parse(s.body))).toEqual([body, body, body]);
    expect(seen[2]!.headers.authorization).toBe('Bearer sk-test');
  });

  it('a redirect to another origin is followed without the key', async () => {
    const other = await server([{ status: 200 }]);
    const { baseURL, seen } = await server([{ status: 307, headers: { location: `${other.baseURL}chat/completions` } }]);
    expect((await setup(baseURL).request()).statusCode).toBe(200);
    expect(seen).toHaveLength(1);
    expect(other.seen).toHaveLength(1);
    expect(other.seen[0]!.headers.authorization).toBeUndefined();
    expect(JSON.parse(other.seen[0]!.body)).toEqual(body);
  });

  it('a base URL the SDK rejects fails every request the same way, at once', async () => {
    const baseURL = '127.0.0.1:1234/v1'; // no scheme
    const sdk = (await new OpenAI({ apiKey: 'k', baseURL, maxRetries: 0 }).chat.completions.create({ model: 'm', messages: [], stream: true }).catch((err: unknown) => err)) as Error;
    expect(sdk).toBeInstanceOf(TypeError);
    const { request, clock } = setup(baseURL);
    await expect(request()).rejects.toThrow(sdk.message);
    await expect(request()).rejects.toBeInstanceOf(TypeError);
    expect(clock.waits).toEqual([]); // no attempt, no retry
  });

  it.each<{ asked: string; status: number; headers: Record<string, string>; waitMs: number }>([
    { asked: 'retry-after-ms on a 5xx', status: 503, headers: { 'retry-after-ms': '1500' }, waitMs: 1500 },
    { asked: 'retry-after-ms: 0 (at once)', status: 503, headers: { 'retry-after-ms': '0' }, waitMs: 0 },
    { asked: 'retry-after in seconds on a 429', status: 429, headers: { 'retry-after': '3' }, waitMs: 3000 },
  ])('retries after the wait the server asks for: $asked, then streams', async ({ status, headers, waitMs }) => {
    const { baseURL, seen } = await server([{ status, headers }, { status: 200 }]);
    const { request, clock } = setup(baseURL);
    const pending = request();
    expect(await passBackoff(clock, 1)).toBe(waitMs);
    expect((await pending).statusCode).toBe(200);
    expect(seen).toHaveLength(2);
  });

  it('a server asking for more than a minute gets no retry: the request fails now with its error', async () => {
    const { baseURL, seen } = await server([{ status: 429, headers: { 'retry-after': '3600' } }, { status: 200 }]);
    await expect(setup(baseURL).request()).rejects.toBeInstanceOf(RateLimitError);
    expect(seen).toHaveLength(1);
  });

  it('without a server hint, backs off 0.5 s then 1 s (less up to a quarter of jitter), then fails as the SDK would', async () => {
    const { baseURL, seen } = await server([{ status: 500 }]);
    const { request, clock } = setup(baseURL);
    const pending = request();
    const failed = expect(pending).rejects.toBeInstanceOf(InternalServerError);
    const first = await passBackoff(clock, 1);
    const second = await passBackoff(clock, 2);
    await failed;
    expect(first).toBeGreaterThanOrEqual(375);
    expect(first).toBeLessThanOrEqual(500);
    expect(second).toBeGreaterThanOrEqual(750);
    expect(second).toBeLessThanOrEqual(1000);
    expect(seen).toHaveLength(3);
    await expect(pending).rejects.toMatchObject({ status: 500, message: '500 status 500' });
  });

  it('a client error is not retried and keeps the server message; x-should-retry: false stops a retry', async () => {
    const bad = await server([{ status: 400, body: JSON.stringify({ error: { message: 'bad model', type: 'invalid_request_error' } }) }]);
    await expect(setup(bad.baseURL).request()).rejects.toSatisfy((err) => err instanceof BadRequestError && err.message === '400 bad model');
    expect(bad.seen).toHaveLength(1);

    const limited = await server([{ status: 429, headers: { 'x-should-retry': 'false' } }]);
    await expect(setup(limited.baseURL).request()).rejects.toBeInstanceOf(RateLimitError);
    expect(limited.seen).toHaveLength(1);
  });

  it('maxRetries 0 makes one attempt', async () => {
    const { baseURL, seen } = await server([{ status: 503 }]);
    await expect(setup(baseURL, { maxRetries: 0 }).request()).rejects.toBeInstanceOf(InternalServerError);
    expect(seen).toHaveLength(1);
  });

  it('a connection that fails is retried, then is the SDK connection error', async () => {
    const { baseURL } = await server([{ status: 200 }]);
    await new Promise((resolve) => servers.pop()!.close(resolve)); // nobody listens there now
    const { request, clock } = setup(baseURL);
    const pending = request();
    const failed = expect(pending).rejects.toSatisfy((err) => err instanceof APIConnectionError && !(err instanceof APIConnectionTimeoutError));
    await passBackoff(clock, 1);
    await passBackoff(clock, 2);
    await failed;
  });

  it('an attempt with no answer times out on the clock: the SDK timeout error once retries are spent', async () => {
    const { baseURL, seen } = await server(['hold']);
    const { request, clock } = setup(baseURL, { maxRetries: 0 });
    const pending = request();
    const failed = expect(pending).rejects.toBeInstanceOf(APIConnectionTimeoutError);
    await expect.poll(() => seen.length).toBe(1);
    clock.advance(TIMEOUT_MS);
    await failed;
  });

  it('an abort before the request makes none', async () => {
    const { baseURL, seen } = await server([{ status: 200 }]);
    const { request, abort } = setup(baseURL);
    abort.abort();
    await expect(request()).rejects.toBeInstanceOf(APIUserAbortError);
    expect(seen).toHaveLength(0);
  });

  it('an abort while waiting to retry ends it at once, with no further attempt', async () => {
    const { baseURL, seen } = await server([{ status: 503 }]);
    const { request, clock, abort } = setup(baseURL);
    const pending = request();
    await expect.poll(() => clock.waits.filter((ms) => ms !== TIMEOUT_MS).length).toBe(1);
    abort.abort();
    await expect(pending).rejects.toBeInstanceOf(APIUserAbortError);
    expect(seen).toHaveLength(1);
    expect(clock.pending).toBe(0);
  });
});
