// ConversationRelayClient against the real server: a turn, and the ways a call's connection breaks
// (the network drops mid-reply or mid-keypad-entry, the server restarts, refuses, or never returns).
// Network drops go through a TCP proxy that resets every connection at once, as a failing network
// does. Backoff waits are a few ms here (configurable), so nothing waits on wall-clock margins.
import { build } from 'esbuild';
import { WebSocket, WebSocketServer } from 'ws';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { backoffDelay } from '../src/client/backoff.js';
import { ConversationRelayClient, type ClientEvents, type ClientOptions } from '../src/client/relay-client.js';
import { resumeLine } from '../src/machines/phrases.js';
import { startFakeOpenAI, type FakeOpenAI } from '../src/testing/fake-openai-server.js';
import type { Config } from '../src/config.js';
import { RESUME_SETTLE_MS } from '../src/server/sessions/resume-rules.js';
import { startTestServer, tempSqlitePath, type TestServer } from './support/harness.js';
import { DIGITS_OK, holdNextStory, scenarioScript, storedDtmfBuffer, STORY, waitForRecord } from './support/resume-scenario.js';
import { TcpProxy } from './support/tcp-proxy.js';
import { TestClock } from './support/test-clock.js';

const script = scenarioScript({ storyDelayMs: 5 });
let llm: FakeOpenAI;
beforeAll(async () => {
  llm = await startFakeOpenAI({ script });
});
afterAll(() => llm.close());

const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  vi.restoreAllMocks();
  llm.setScript(script);
  for (const step of cleanup.splice(0).reverse()) await step();
});

async function server(config: Partial<Config> = {}): Promise<TestServer> {
  const ts = await startTestServer({ sharedLlm: llm, clock: new TestClock(), config: { graceMs: 60_000, ...config } });
  cleanup.push(() => ts.close());
  return ts;
}

/** A client that records every event it emits, in order. */
function client(url: string, opts: Partial<ClientOptions> = {}) {
  const c = new ConversationRelayClient({ url, WebSocket: WebSocket as unknown as ClientOptions['WebSocket'], backoff: { baseMs: 5, capMs: 20, maxAttempts: 5 }, ...opts });
  const seen: Array<{ type: keyof ClientEvents; event: unknown }> = [];
  for (const type of ['token', 'replyDone', 'language', 'end', 'state', 'reconnecting', 'resumed', 'restarted', 'gaveUp'] as const) {
    c.on(type, (event) => seen.push({ type, event }));
  }
  cleanup.push(() => c.close());
  const all = <K extends keyof ClientEvents>(type: K) => seen.filter((s) => s.type === type).map((s) => s.event as ClientEvents[K]);
  /** Resolves with the next reply's whole text (after the ones already done). */
  const nextReply = async () => {
    const done = all('replyDone').length;
    await expect.poll(() => all('replyDone').length, { timeout: 10_000 }).toBeGreaterThan(done);
    return all('replyDone')[done]!.text;
  };
  return { c, all, nextReply };
}

/** A connected call to a fresh server, through a proxy the test can cut. */
async function callBehindProxy(config: Partial<Config> = {}, opts: Partial<ClientOptions> = {}) {
  const ts = await server(config);
  const proxy = await TcpProxy.start(ts.server.port);
  cleanup.push(() => proxy.close());
  const call = client(proxy.url(ts.server.relayUrl), opts);
  await call.c.connect();
  return { ts, proxy, ...call };
}

/** A proxied call in the middle of a phone-number entry: 4 of its 10 digits typed and stored. */
async function midPhoneNumber() {
  const call = await callBehindProxy();
  const { ts, c, nextReply } = call;
  c.prompt('my phone number');
  expect(await nextReply()).toMatch(/10-digit phone number/);
  for (const d of '5551') c.dtmf(d as '5');
  // Stored, so the resume finds it: what a restore would read.
  await waitForRecord(ts.server.store, c.callSid, (r) => storedDtmfBuffer(r) === '5551');
  return call;
}


describe('relay-actors/client in a browser bundle', () => {
  it('bundles for the browser with nothing from Node and no runtime dependency', async () => {
    const out = await build({ entryPoints: ['src/client/index.ts'], bundle: true, platform: 'browser', format: 'esm', write: false, metafile: true, logLevel: 'silent' });
    const inputs = Object.keys(out.metafile.inputs);
    expect(inputs.every((path) => path.startsWith('src/client/'))).toBe(true);
    expect(out.outputFiles[0]!.text).toMatch(/ConversationRelayClient = class|class ConversationRelayClient/);
  });
});

describe('reconnect delays (full jitter)', () => {
  it('wait a random part of min(cap, base * 2^(attempt-1))', () => {
    const opts = { baseMs: 1000, capMs: 30_000 };
    expect([1, 2, 3, 4, 5, 6, 7].map((n) => backoffDelay(n, opts, () => 0.999999))).toEqual([999, 1999, 3999, 7999, 15_999, 29_999, 29_999]);
    expect(backoffDelay(3, opts, () => 0)).toBe(0);
    expect(backoffDelay(2, opts, () => 0.5)).toBe(1000);
    // The defaults are those of the issue: base 1 s, cap 30 s.
    expect(backoffDelay(10, {}, () => 0.999999)).toBe(29_999);
    expect(backoffDelay(1, {}, () => 0.999999)).toBe(999);
  });
});

describe('ConversationRelayClient against the real server', () => {
  it('a turn: the reply streams token by token, then replyDone with the whole text', async () => {
    const ts = await server();
    const { c, all, nextReply } = client(ts.server.relayUrl);
    await c.connect();
    expect(c.state).toBe('open');
    c.prompt('hello there');
    expect(await nextReply()).toBe('You said: hello there');
    const tokens = all('token');
    expect(tokens.length).toBeGreaterThan(1);
    expect(tokens.at(-1)).toMatchObject({ last: true });
    expect(tokens.map((t) => t.token).join('')).toBe('You said: hello there');
  });

  it('a network drop mid-reply: reconnects, resumes the same call and hears the whole reply after the resume line', async () => {
    const { ts, proxy, c, all, nextReply } = await callBehindProxy();
    c.prompt('hello');
    await nextReply();
    const release = holdNextStory(llm, script, 3);
    const before = all('token').length;
    c.prompt('tell me a story');
    await expect.poll(() => all('token').length).toBe(before + 3);
    proxy.cut();
    await expect.poll(() => all('resumed').length).toBe(1);
    release();
    const afterResume = await nextReply();
    expect(afterResume.startsWith(resumeLine('en-US'))).toBe(true);
    expect(afterResume.slice(resumeLine('en-US').length).trim()).toBe(STORY);
    expect(all('reconnecting')[0]).toMatchObject({ attempt: 1, code: 1006 });
    expect(all('state').map((s) => s.state)).toEqual(['connecting', 'open', 'reconnecting', 'open']);
    // The same call: the model saw the whole conversation once.
    const last = ts.llm.requests.at(-1)!;
    expect(last.messages.filter((m) => m.role === 'user').map((m) => m.content)).toEqual(['hello', 'tell me a story']);
  });

  it('a drop in the middle of a keypad entry: digits typed while away are sent after the resume and the entry completes', async () => {
    const { ts, proxy, c, all } = await midPhoneNumber();
    // Typed while the client is away: kept, and sent once the call is back.
    c.on('reconnecting', () => {
      for (const d of '234567') c.dtmf(d as '5');
    });
    proxy.cut();
    await expect.poll(() => all('resumed').length).toBe(1);
    await expect.poll(() => all('replyDone').map((r) => r.text)).toContain(DIGITS_OK);
    const toolResult = ts.llm.requests.at(-1)!.messages.at(-1)!;
    expect(JSON.parse(String(toolResult.content))).toEqual({ status: 'ok', kind: 'phoneNumber', value: '5551234567' });
  });

  it('a server restart: the client reconnects to the new process, which restores the call from the store', async () => {
    const sqlitePath = tempSqlitePath();
    const first = await startTestServer({ sharedLlm: llm, config: { store: 'sqlite', sqlitePath, graceMs: 60_000 } });
    const port = first.server.port;
    const { c, all, nextReply } = client(first.server.relayUrl, { backoff: { baseMs: 20, capMs: 100, maxAttempts: 10 } });
    await c.connect();
    c.prompt('remember the word banana');
    await nextReply();
    await first.close();
    await expect.poll(() => all('reconnecting').length).toBeGreaterThanOrEqual(1);
    expect(all('reconnecting')[0]!.code).toBe(1001); // the stopping server said it was going away
    const second = await startTestServer({ sharedLlm: llm, config: { store: 'sqlite', sqlitePath, port, graceMs: 60_000 } });
    cleanup.push(() => second.close());
    await expect.poll(() => all('resumed').length, { timeout: 10_000 }).toBe(1);
    c.prompt('what was the word');
    expect(await nextReply()).toBe('You said: what was the word');
    const users = llm.requests.at(-1)!.messages.filter((m) => m.role === 'user').map((m) => m.content);
    expect(users).toEqual(['remember the word banana', 'what was the word']);
  });

  it('the server refusing the resume (its resume limit): gives up at once with the reason', async () => {
    const { ts, proxy, c, all, nextReply } = await callBehindProxy({ maxResumes: 1 });
    c.prompt('hello');
    await nextReply();
    proxy.cut();
    await expect.poll(() => all('resumed').length).toBe(1);
    proxy.cut();
    await expect.poll(() => c.state).toBe('gaveUp');
    expect(all('gaveUp')).toEqual([{ attempts: 1, reason: 'refused', code: 1008, detail: 'resume limit reached' }]);
    expect(all('reconnecting')).toHaveLength(2);
    expect(() => c.prompt('anyone?')).toThrow(/gaveUp/);
  });

  it('a server that never comes back: maxAttempts attempts with growing waits, then gave up', async () => {
    const ts = await startTestServer({ sharedLlm: llm });
    const random = () => 0.5;
    const { c, all } = client(ts.server.relayUrl, { random, backoff: { baseMs: 4, capMs: 16, maxAttempts: 4 } });
    await c.connect();
    await ts.close();
    await expect.poll(() => c.state, { timeout: 10_000 }).toBe('gaveUp');
    expect(all('reconnecting').map((r) => [r.attempt, r.delayMs])).toEqual([
      [1, 2],
      [2, 4],
      [3, 8],
      [4, 8],
    ]);
    expect(all('gaveUp')).toEqual([expect.objectContaining({ attempts: 4, reason: 'attempts' })]);
    expect(all('resumed')).toEqual([]);
  });

  it('connect() rejects when nothing listens, and the client is closed', async () => {
    const ts = await startTestServer({ sharedLlm: llm });
    const url = ts.server.relayUrl;
    await ts.close();
    const { c, all } = client(url);
    await expect(c.connect()).rejects.toThrow(/could not connect/);
    expect(c.state).toBe('closed');
    expect(all('reconnecting')).toEqual([]);
  });

  it('hanging up closes the call for good: nothing reconnects', async () => {
    const ts = await server();
    const { c, all } = client(ts.server.relayUrl);
    await c.connect();
    c.close();
    expect(c.state).toBe('closed');
    expect(all('reconnecting')).toEqual([]);
    await expect(c.connect()).rejects.toThrow(/closed/);
  });

  it('hanging up while the first socket opens rejects connect()', async () => {
    const ts = await server();
    const { c } = client(ts.server.relayUrl);
    const connecting = c.connect();
    c.close();
    await expect(connecting).rejects.toThrow(/closed before the call was up/);
    expect(c.state).toBe('closed');
  });

  it('a prompt made while the socket is closing is kept for the next socket, not sent into the closing one', async () => {
    const ts = await server();
    const { c, all } = client(ts.server.relayUrl);
    await c.connect();
    c.drop();
    c.prompt('are you still there');
    await expect.poll(() => all('resumed').length).toBe(1);
    await expect.poll(() => all('replyDone').map((r) => r.text)).toContain('You said: are you still there');
  });

  it('a listener that throws breaks neither the client nor the other listeners; the error is reported', async () => {
    const ts = await server();
    const proxy = await TcpProxy.start(ts.server.port);
    cleanup.push(() => proxy.close());
    const reported: unknown[] = [];
    const { c, all, nextReply } = client(proxy.url(ts.server.relayUrl), { onListenerError: (err) => reported.push(err) });
    for (const type of ['state', 'reconnecting', 'resumed', 'token', 'replyDone'] as const) {
      c.on(type, () => {
        throw new Error(`${type} listener bug`);
      });
    }
    await c.connect();
    c.prompt('hello');
    expect(await nextReply()).toBe('You said: hello');
    proxy.cut();
    await expect.poll(() => all('resumed').length).toBe(1);
    c.prompt('again');
    await expect.poll(() => all('replyDone').map((r) => r.text)).toContain('You said: again');
    expect(all('replyDone').map((r) => r.text)).toEqual(['You said: hello', resumeLine('en-US'), 'You said: again']);
    expect(reported).toContainEqual(new Error('reconnecting listener bug'));
  });

  it('hanging up from a reconnecting listener leaves no retry timer running', async () => {
    const ts = await server();
    const { c } = client(ts.server.relayUrl, { random: () => 0.5, backoff: { baseMs: 3_600_000, capMs: 3_600_000 } });
    await c.connect();
    const setTimer = vi.spyOn(globalThis, 'setTimeout');
    const clearTimer = vi.spyOn(globalThis, 'clearTimeout');
    c.on('reconnecting', () => c.close());
    c.drop();
    await expect.poll(() => c.state).toBe('closed');
    const retryTimers = setTimer.mock.calls.flatMap((call, i) => (call[1] === 1_800_000 ? [setTimer.mock.results[i]!.value] : []));
    expect(retryTimers.filter((timer) => !clearTimer.mock.calls.some((call) => call[0] === timer))).toEqual([]);
  });

  it('frames sent on a socket the server refuses with 1013 (try again) are sent again on the next one', async () => {
    const clock = new TestClock();
    const ts = await startTestServer({ sharedLlm: llm, clock, config: { graceMs: 60_000 } });
    cleanup.push(() => ts.close());
    const proxy = await TcpProxy.start(ts.server.port);
    cleanup.push(() => proxy.close());
    const { c, all, nextReply } = client(proxy.url(ts.server.relayUrl));
    await c.connect();
    c.prompt('hello');
    await nextReply();
    proxy.cut();
    await expect.poll(() => all('resumed').length).toBe(1);
    // Half-open: the server still counts the call as connected, resumed moments ago (its clock stands
    // still), so the next resume is refused with 1013 until its clock moves on.
    c.on('reconnecting', ({ attempt, code }) => {
      if (attempt === 1) c.prompt('still there');
      if (code === 1013) clock.advance(RESUME_SETTLE_MS);
    });
    proxy.cutClientSide();
    await expect.poll(() => all('resumed').length).toBe(2);
    expect(all('reconnecting').map((r) => r.code)).toEqual([1006, 1006, 1013]);
    await expect.poll(() => all('replyDone').map((r) => r.text)).toContain('You said: still there');
    expect(all('replyDone').filter((r) => r.text === 'You said: still there')).toHaveLength(1);
  });

  it('a server that no longer has the call starts it afresh: no `resumed`, and the queued prompt is answered', async () => {
    const first = await startTestServer({ sharedLlm: llm, config: { graceMs: 60_000 } });
    const port = first.server.port;
    const { c, all, nextReply } = client(first.server.relayUrl, { backoff: { baseMs: 20, capMs: 100, maxAttempts: 10 } });
    await c.connect();
    c.prompt('hello');
    await nextReply();
    c.on('reconnecting', ({ attempt }) => attempt === 1 && c.prompt('anyone there'));
    await first.close(); // a memory store: the call is gone with the process
    await expect.poll(() => all('reconnecting').length).toBeGreaterThanOrEqual(1);
    const second = await startTestServer({ sharedLlm: llm, config: { port, graceMs: 60_000 } });
    cleanup.push(() => second.close());
    await expect.poll(() => all('replyDone').map((r) => r.text), { timeout: 10_000 }).toContain('You said: anyone there');
    expect(all('resumed')).toEqual([]);
    expect(all('restarted')).toHaveLength(1);
  });

  it('frames kept while away go out before any that a state listener sends as the socket opens', async () => {
    const { ts, proxy, c, all } = await midPhoneNumber();
    c.on('reconnecting', () => {
      for (const d of '2345') c.dtmf(d as '5');
    });
    c.on('state', ({ state, previous }) => {
      if (state === 'open' && previous === 'reconnecting') for (const d of '67') c.dtmf(d as '5');
    });
    proxy.cut();
    await expect.poll(() => all('replyDone').map((r) => r.text)).toContain(DIGITS_OK);
    const toolResult = ts.llm.requests.at(-1)!.messages.at(-1)!;
    expect(JSON.parse(String(toolResult.content))).toEqual({ status: 'ok', kind: 'phoneNumber', value: '5551234567' });
  });

  it('a frame that is JSON but not an object (from a peer that is not our server) is ignored, not thrown', async () => {
    const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    cleanup.push(() => new Promise((resolve) => wss.close(resolve)));
    await new Promise((resolve) => wss.once('listening', resolve));
    wss.on('connection', (ws) => {
      for (const frame of ['null', '7', JSON.stringify({ type: 'text', token: 'ok', last: true })]) ws.send(frame);
    });
    const { c, all } = client(`ws://127.0.0.1:${(wss.address() as { port: number }).port}/relay`);
    await c.connect();
    await expect.poll(() => all('replyDone')).toEqual([{ text: 'ok' }]);
    expect(c.state).toBe('open');
  });
});
