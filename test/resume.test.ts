// Resume end to end over real sockets, per store and per path: history, language, partial keypad
// input and an in-flight reply all survive a dropped socket; only the rightful caller gets it back;
// and a burst of changes costs one store write. Every server's session time is a TestClock that
// stands still: no grace or keypad deadline can pass while a slow machine is still resuming.
import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { SimulatedCall, twilioReconnectOptions, UpgradeRejectedError } from '../src/testing/twilio-sim.js';
import { signWebSocketUrl } from '../src/testing/twilio-webhooks.js';
import { loadConfig, type Config } from '../src/config.js';
import { startFakeOpenAI, type FakeOpenAI } from '../src/testing/fake-openai-server.js';
import { startServer, type RunningServer } from '../src/server/server.js';
import { placeTwilioCall } from '../src/testing/twilio-call.js';
import { SqliteStore, type Lease, type SessionRecord, type SnapshotStore } from '../src/stores/index.js';
import { startTestServer, tempSqlitePath, type TestServer } from './support/harness.js';
import { REDIS_URL, redisAvailable } from './support/redis.js';
import { readMetric } from './support/server-process.js';
import { TestClock } from './support/test-clock.js';
import {
  DIGITS_OK,
  SPANISH_OK,
  STORY,
  clearRedisPrefix,
  expectedResumeLine,
  holdNextStory,
  lastUserText,
  nextSpokenReply,
  persisted,
  postDroppedAction,
  relayUrlOf,
  resume,
  resumeViaReconnection,
  say,
  scenarioScript,
  storedDtmfBuffer,
  transcriptOf,
  waitForDeltas,
  waitForRecord,
  waitForRequest,
  type ResumePath,
} from './support/resume-scenario.js';
import { countingStore } from './support/counting-store.js';

const redisUp = await redisAvailable();
const stores = [
  { store: 'memory' as const, available: true },
  { store: 'sqlite' as const, available: true },
  { store: 'redis' as const, available: redisUp },
];
const paths: ResumePath[] = ['twilio', 'reconnection'];
const BURST = Array.from({ length: 40 }, (_, i) => `word${i} `);

const calls: SimulatedCall[] = [];
const track = (c: SimulatedCall) => (calls.push(c), c);

const prefix = `test:resume:${randomUUID()}:`;
const script = scenarioScript({ storyDelayMs: 40 });

let llm: FakeOpenAI;
beforeAll(async () => {
  llm = await startFakeOpenAI({ script });
});
afterAll(async () => {
  await Promise.all(calls.map((c) => c.drop()));
  await llm.close();
  if (redisUp) await clearRedisPrefix(REDIS_URL, prefix);
});
afterEach(() => {
  llm.setScript(script);
});


function server(config: Partial<Config>, clock = new TestClock()): Promise<TestServer> {
  return startTestServer({ sharedLlm: llm, redisPrefix: prefix, config: { graceMs: 10_000, dtmfIdleMs: 20_000, ...config }, clock });
}

describe.each(stores)('resume with the $store store', ({ store, available }) => {
  describe.skipIf(!available).each(paths)('via %s', (path) => {
    let ts: TestServer;
    beforeAll(async () => {
      ts = await server({ store });
    });
    afterAll(async () => {
      await ts?.close();
    });

    it('keeps history, language and partial keypad input, and completes an in-flight reply', async () => {
      const urls = { httpUrl: ts.server.httpUrl, relayUrl: ts.server.relayUrl };
      let call = track(await SimulatedCall.connect({ url: ts.server.relayUrl }));
      const { callSid } = call;

      expect(await say(call, 'hello there')).toBe('You said: hello there');
      expect(await say(call, 'can we speak spanish')).toBe(SPANISH_OK);
      await call.waitForType('language', { fromStart: true });

      // A keypad entry is started by the model, 4 of 10 digits are typed, then the socket drops.
      call.prompt('I will give you my phone number');
      const keypadPrompt = await nextSpokenReply(call);
      expect(keypadPrompt.text).toMatch(/10 dígitos/);
      call.digits('5551');
      await waitForRecord(ts.server.store, callSid, (r) => storedDtmfBuffer(r) === '5551');
      await call.drop();

      call = track(await resume(path, urls, call));
      expect(call.callSid).toBe(callSid);
      const language = await call.waitForType('language');
      expect(language).toMatchObject({ ttsLanguage: 'es-US', transcriptionLanguage: 'es-US' });
      expect((await call.nextReply()).text).toBe(expectedResumeLine('es-US'));

      const before = ts.llm.requests.length;
      call.digits('234567');
      const afterDigits = await nextSpokenReply(call);
      expect(afterDigits.text).toBe(DIGITS_OK);
      const digitsRequest = await waitForRequest(ts.llm, (m) => m.at(-1)?.role === 'tool', 5000, before);
      expect(JSON.parse(String(digitsRequest.messages.at(-1)!.content))).toEqual({
        status: 'ok',
        kind: 'phoneNumber',
        value: '5551234567',
      });
      expect(String(digitsRequest.messages[0]!.content)).toContain('es-US');
      // The whole conversation, each turn once, in order.
      expect(transcriptOf(digitsRequest.messages)).toEqual([
        'user:hello there',
        'assistant:You said: hello there',
        'user:can we speak spanish',
        'assistant: [switch_language]',
        'tool:language switched to es-US',
        `assistant:${SPANISH_OK}`,
        'user:I will give you my phone number',
        'assistant: [collect_digits]',
        expect.stringMatching(/^tool:\{"status":"ok"/),
      ]);

      // A slow reply is cut by a drop mid-stream; after the resume the caller gets all of it.
      let release = holdNextStory(llm, script, 3);
      call.prompt('tell me a story');
      await waitForDeltas(call, 3);
      await call.drop();
      call = track(await resume(path, urls, call));
      await call.waitForType('language'); // the server has taken the resume: let the rest stream
      release();
      const afterResume = await call.nextReply(15_000);
      const resumeLine = expectedResumeLine('es-US');
      expect(afterResume.text.startsWith(resumeLine)).toBe(true);
      const rest = afterResume.text.slice(resumeLine.length).trimStart();
      expect(rest).toBe(STORY);
      expect(afterResume.tokens.at(-1)).toMatchObject({ last: true });

      // It was still streaming at the resume: the rest came as separate deltas.
      expect(afterResume.tokens.length).toBeGreaterThan(3);

      // A reply that finished while nobody was listening is spoken in full after the resume.
      release = holdNextStory(llm, script, 2);
      call.prompt('one more story');
      await waitForDeltas(call, 2);
      const storyRequest = ts.llm.requests.at(-1)!;
      await call.drop();
      await expect.poll(() => ts.server.manager.get(callSid)?.socket, { message: 'the server noticing the drop' }).toBeNull();
      release();
      await expect.poll(() => storyRequest.completed).toBe(true);
      call = track(await resume(path, urls, call));
      expect((await call.nextReply()).text).toBe(`${resumeLine} ${STORY}`);

      // The next request carries each story exactly once.
      const n = ts.llm.requests.length;
      expect(await say(call, 'thanks')).toBe('You said: thanks');
      const next = await waitForRequest(ts.llm, (m) => m.at(-1)?.role === 'user', 5000, n);
      const turns = transcriptOf(next.messages);
      expect(turns.slice(-5)).toEqual(['user:tell me a story', `assistant:${STORY}`, 'user:one more story', `assistant:${STORY}`, 'user:thanks']);
      expect(turns.filter((t) => t === `assistant:${STORY}`)).toHaveLength(2);
      expect(turns.filter((t) => t.startsWith('user:'))).toHaveLength(6);
      await call.close();
    }, 60_000);
  });
});

/** Reads one sample from an in-process server's /metrics. */
async function metric(ts: TestServer, name: string, labels: Record<string, string>): Promise<number> {
  const res = await fetch(`${ts.server.httpUrl}/metrics`);
  return readMetric(await res.text(), name, labels);
}

describe('resume cap', () => {
  let ts: TestServer;
  beforeAll(async () => {
    ts = await server({ store: 'sqlite', maxResumes: 2 });
  });
  afterAll(async () => {
    await ts?.close();
  });

  it('refuses a reconnection past maxResumes without touching the stored session, and /action then hangs up', async () => {
    const urls = { httpUrl: ts.server.httpUrl, relayUrl: ts.server.relayUrl };
    let call = track(await SimulatedCall.connect({ url: ts.server.relayUrl }));
    const { callSid } = call;
    expect(await say(call, 'hello')).toBe('You said: hello');
    for (const path of ['reconnection', 'twilio'] as const) {
      await call.drop();
      call = track(await resume(path, urls, call));
      expect((await call.nextReply()).text).toBe(expectedResumeLine('en-US'));
    }
    await call.drop();
    const before = await waitForRecord(ts.server.store, callSid, (r) => r?.state === 'disconnected');
    expect(persisted(before).context?.resumes).toBe(2);
    const failedBefore = await metric(ts, 'relay_resumes_total', { outcome: 'failed' });

    const refused = track(await resumeViaReconnection(ts.server.relayUrl, call));
    expect(await refused.closed).toEqual({ code: 1008, reason: 'resume limit reached' });
    expect(refused.messages).toEqual([]);
    await ts.server.manager.flush();
    const after = await ts.server.store.load(callSid);
    expect(after).toEqual(before);
    expect(await metric(ts, 'relay_resumes_total', { outcome: 'failed' })).toBe(failedBefore + 1);

    const action = await postDroppedAction(ts.server.httpUrl, call);
    expect(action.status).toBe(200);
    expect(action.body).toContain('<Hangup/>');
    expect(action.body).not.toContain('<ConversationRelay');
    await waitForRecord(ts.server.store, callSid, (r) => r?.state === 'ended');
  }, 60_000);
});

describe('only the rightful caller resumes', () => {
  let ts: TestServer;
  const clock = new TestClock();
  beforeAll(async () => {
    ts = await server({ store: 'sqlite', graceMs: 800 }, clock);
  });
  afterAll(async () => {
    await ts?.close();
  });

  it('refuses a reconnection with a wrong sessionId, live or dropped, and keeps the session for its owner', async () => {
    let call = track(await SimulatedCall.connect({ url: ts.server.relayUrl }));
    expect(await say(call, 'my secret is safe')).toBe('You said: my secret is safe');

    const intruder = track(await resumeViaReconnection(ts.server.relayUrl, { callSid: call.callSid, sessionId: 'VXwrong' }));
    expect((await intruder.closed).code).toBe(1008);
    expect(call.isOpen).toBe(true);
    expect(await say(call, 'still here')).toBe('You said: still here');

    await call.drop();
    const dropped = await waitForRecord(ts.server.store, call.callSid, (r) => r?.state === 'disconnected');
    const intruder2 = track(await resumeViaReconnection(ts.server.relayUrl, { callSid: call.callSid, sessionId: 'VXwrong' }));
    expect(await intruder2.closed).toEqual({ code: 1008, reason: 'not allowed to resume this session' });
    expect(intruder2.messages).toEqual([]);
    expect(await ts.server.store.load(call.callSid)).toEqual(dropped);

    call = track(await resumeViaReconnection(ts.server.relayUrl, call));
    expect((await call.nextReply()).text).toBe(expectedResumeLine('en-US'));
    const n = ts.llm.requests.length;
    expect(await say(call, 'back')).toBe('You said: back');
    const request = await waitForRequest(ts.llm, (m) => lastUserText(m) === 'back', 5000, n);
    expect(transcriptOf(request.messages)).toEqual([
      'user:my secret is safe',
      'assistant:You said: my secret is safe',
      'user:still here',
      'assistant:You said: still here',
      'user:back',
    ]);
  }, 60_000);

  it('starts a fresh session for a reconnection with an unknown callSid, and counts it as a failed resume', async () => {
    const failedBefore = await metric(ts, 'relay_resumes_total', { outcome: 'failed' });
    const stranger = track(await SimulatedCall.connect({ url: ts.server.relayUrl, reconnection: true }));
    const n = ts.llm.requests.length;
    expect(await say(stranger, 'hi')).toBe('You said: hi');
    // No resume line and no history: a new conversation.
    expect(stranger.messages.some((m) => m.type === 'text' && m.token.includes('cut off'))).toBe(false);
    const request = await waitForRequest(ts.llm, (m) => lastUserText(m) === 'hi', 5000, n);
    expect(transcriptOf(request.messages)).toEqual(['user:hi']);
    expect(await metric(ts, 'relay_resumes_total', { outcome: 'failed' })).toBe(failedBefore + 1);
    const record = await waitForRecord(ts.server.store, stranger.callSid, (r) => r?.state === 'connected');
    expect(persisted(record).context?.resumes).toBe(0);
  }, 60_000);

  it('cancels the grace timer of a resumed session', async () => {
    let call = track(await SimulatedCall.connect({ url: ts.server.relayUrl }));
    expect(await say(call, 'hello')).toBe('You said: hello');
    await call.drop();
    const urls = { httpUrl: ts.server.httpUrl, relayUrl: ts.server.relayUrl };
    call = track(await resume('twilio', urls, call));
    expect((await call.nextReply()).text).toBe(expectedResumeLine('en-US'));
    expect(ts.server.manager.get(call.callSid)?.actor.getSnapshot().context.graceDeadline).toBeNull();
    // Well past the deadline the drop had set (graceMs after the drop).
    clock.advance(ts.config.graceMs * 2);
    expect(call.isOpen).toBe(true);
    expect(await say(call, 'still connected?')).toBe('You said: still connected?');
    await ts.server.manager.flush();
    const record = await ts.server.store.load(call.callSid);
    expect(record?.state).toBe('connected');
    expect(persisted(record).context?.graceDeadline).toBeNull();
  }, 60_000);
});

describe('signatures on the resume socket', () => {
  const authToken = 'resume-test-token';
  let ts: TestServer;
  beforeAll(async () => {
    ts = await server({ store: 'memory', twilioAuthToken: authToken });
  });
  afterAll(async () => {
    await ts?.close();
  });

  it('rejects an unsigned resume socket with 403 and accepts the signed one on its own relay path', async () => {
    const call = track((await placeTwilioCall({ baseUrl: ts.server.httpUrl, authToken })).call);
    expect(await say(call, 'hello')).toBe('You said: hello');
    await call.drop();

    expect((await postDroppedAction(ts.server.httpUrl, call)).status).toBe(403);
    const action = await postDroppedAction(ts.server.httpUrl, call, authToken);
    expect(action.body).toContain('<ConversationRelay');
    const url = relayUrlOf(action.body);

    await expect(SimulatedCall.connect({ url, callSid: call.callSid })).rejects.toMatchObject({ statusCode: 403 });
    const forged = { 'X-Twilio-Signature': signWebSocketUrl('not-the-token', url) };
    await expect(SimulatedCall.connect({ url, callSid: call.callSid, headers: forged })).rejects.toBeInstanceOf(UpgradeRejectedError);
    await expect(resumeViaReconnection(url, call)).rejects.toMatchObject({ statusCode: 403 });

    const resumed = track(await SimulatedCall.connect(twilioReconnectOptions(action.body, call, { authToken })));
    expect((await resumed.nextReply()).text).toBe(expectedResumeLine('en-US'));
    expect(await say(resumed, 'signed and back')).toBe('You said: signed and back');
  }, 60_000);
});


describe('coalesced persistence', () => {
  let store: ReturnType<typeof countingStore>;
  let running: RunningServer;
  beforeAll(async () => {
    store = countingStore(new SqliteStore(tempSqlitePath()));
    const config = loadConfig({}, {
      port: 0,
      host: '127.0.0.1',
      openaiApiKey: 'test-key',
      openaiBaseUrl: llm.baseURL,
      logLevel: 'silent',
      dtmfIdleMs: 20_000,
    });
    running = await startServer(config, { store, clock: new TestClock() });
  });
  afterAll(async () => {
    await running?.close();
  });

  it('writes a burst once: 40 streamed deltas delivered in one tick, and 6 key presses', async () => {
    const call = track(await SimulatedCall.connect({ url: running.relayUrl }));
    // The reply is held until the prompt's own write has landed; then the 40 content deltas follow in one tick.
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    llm.setScript(async ({ messages }) => {
      if (lastUserText(messages) !== 'a burst please') return { text: 'unused' };
      await held;
      return { chunks: BURST, delayMs: 0 };
    });
    const from = llm.requests.length;
    call.prompt('a burst please');
    await waitForRequest(llm, (m) => lastUserText(m) === 'a burst please', 5000, from);
    await running.manager.flush();
    const beforeReply = store.saves.length;
    release();
    const reply = await call.nextReply();
    expect(reply.text).toBe(BURST.join(''));
    expect(reply.tokens.filter((t) => t.token !== '')).toHaveLength(BURST.length);
    await running.manager.flush();
    const replyWrites = store.saves.slice(beforeReply);
    expect(replyWrites).toHaveLength(1);
    const written = persisted({ snapshot: replyWrites[0]!.snapshot } as SessionRecord).context;
    expect(written?.history?.at(-1)).toEqual({ role: 'assistant', content: BURST.join('') });

    // Six key presses sent back to back reach the server in one read: one write holding all six.
    llm.setScript(script);
    call.prompt('my phone number');
    await nextSpokenReply(call);
    await running.manager.flush();
    const beforeDigits = store.saves.length;
    call.digits('555123');
    await waitForRecord(running.store, call.callSid, (r) => storedDtmfBuffer(r) === '555123');
    await running.manager.flush();
    expect(store.saves.length - beforeDigits).toBe(1);
  }, 60_000);
});
