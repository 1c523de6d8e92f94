// Abuse limits against the real server over real sockets: prompt size, history size, a caller that
// stops reading, frames flooded before the session is ready, the session cap, the admin token and
// bounded metric labels. Each limit has a clear outcome for the offending call only, and a metric.
import { afterEach, describe, expect, it } from 'vitest';
import { SimulatedCall, UpgradeRejectedError } from '../src/testing/twilio-sim.js';
import { postAction } from '../src/testing/twilio-webhooks.js';
import { loadConfig } from '../src/config.js';
import { contentToText, echoScript, type ScriptFn } from '../src/testing/fake-openai-server.js';
import { lifecycleOf } from '../src/machines/session.js';
import { closeCodeLabel } from '../src/server/metrics.js';
import { cutToBytes } from '../src/server/prompt-limit.js';
import { MemoryStore, delegatingStore, type SnapshotStore } from '../src/stores/index.js';
import { useServersPerTest, waitUntil } from './support/conditions.js';
import { expectedResumeLine, say } from './support/resume-scenario.js';
import { startTestServer, type TestServer, type TestServerOptions } from './support/harness.js';

const { start, dial, track } = useServersPerTest();

/** One sample of a metric, e.g. sample(text, 'relay_limits_exceeded_total', 'limit="sessions"'); 0 when absent. */
function sample(exposition: string, name: string, labels = ''): number {
  const prefix = labels ? `${name}{${labels}} ` : `${name} `;
  const line = exposition.split('\n').find((l) => l.startsWith(prefix));
  return line ? Number(line.slice(prefix.length)) : 0;
}

async function scrape(ts: TestServer): Promise<string> {
  return (await fetch(`${ts.server.httpUrl}/metrics`)).text();
}

const limitHits = async (ts: TestServer, limit: string) => sample(await scrape(ts), 'relay_limits_exceeded_total', `limit="${limit}"`);

const lastUserMessage = (ts: TestServer) => {
  const messages = ts.llm.requests.at(-1)!.messages;
  return contentToText([...messages].reverse().find((m) => m.role === 'user')?.content);
};

describe('prompt size (MAX_PROMPT_BYTES)', () => {
  it('cuts strings at a word boundary, else between characters, never inside one', () => {
    expect(cutToBytes('hello world', 11)).toBeUndefined();
    expect(cutToBytes('hello world', 8)).toBe('hello');
    expect(cutToBytes('hello world', 6)).toBe('hello');
    expect(cutToBytes('€€€', 4)).toBe('€');
    expect(cutToBytes('😀😀', 7)).toBe('😀');
    expect(cutToBytes('ab😀', 5)).toBe('ab');
  });

  it('a 60 KB prompt reaches the LLM cut to the default 4 KiB and is answered; partials are not counted', async () => {
    const ts = await start();
    const call = await dial(ts);
    const words = 'word '.repeat(12_000).trimEnd(); // 59,999 bytes, under the 64 KiB frame limit
    call.prompt(words, { last: false });
    call.prompt(words);
    const reply = await call.nextReply(10_000);

    const heard = lastUserMessage(ts);
    expect(Buffer.byteLength(heard)).toBeLessThanOrEqual(4096);
    expect(Buffer.byteLength(heard)).toBeGreaterThan(4000);
    expect(words.startsWith(heard)).toBe(true);
    expect(heard.endsWith(' word')).toBe(true);
    expect(reply.text).toBe(`You said: ${heard}`);
    expect(await limitHits(ts, 'prompt_bytes')).toBe(1);
    const stored = ts.server.manager.get(call.callSid)!.actor.getSnapshot().context.history;
    expect(stored[0]).toEqual({ role: 'user', content: heard });
  });

  it('follows MAX_PROMPT_BYTES', async () => {
    expect(loadConfig({ MAX_PROMPT_BYTES: '16' }).maxPromptBytes).toBe(16);
    const ts = await start({ config: { maxPromptBytes: 16 } });
    const call = await dial(ts);
    call.prompt('please call me back tomorrow');
    await call.nextReply();
    expect(lastUserMessage(ts)).toBe('please call me');
    expect(await limitHits(ts, 'prompt_bytes')).toBe(1);
  });
});

describe('history (HISTORY_MAX_TURNS, HISTORY_MAX_BYTES)', () => {
  it('the LLM is sent and the store keeps only the newest turns; the system prompt stays; drops are counted', async () => {
    const ts = await start({ config: { store: 'sqlite', historyMaxTurns: 4 } });
    const call = await dial(ts);
    for (let i = 1; i <= 6; i++) {
      call.prompt(`turn ${i}`);
      await call.nextReply();
    }
    const sent = ts.llm.requests.at(-1)!.messages;
    expect(sent[0]!.role).toBe('system');
    expect(sent.slice(1).map((m) => contentToText(m.content))).toEqual(['You said: turn 4', 'turn 5', 'You said: turn 5', 'turn 6']);

    await ts.server.manager.flush();
    const record = await ts.server.store.load(call.callSid);
    const history = (record!.snapshot as { context: { history: Array<{ content: string }> } }).context.history;
    expect(history.map((t) => t.content)).toEqual(['turn 5', 'You said: turn 5', 'turn 6', 'You said: turn 6']);
    expect(sample(await scrape(ts), 'relay_history_turns_dropped_total')).toBe(12 - 4);
  });

  it('many 60 KB prompts on one call keep its stored snapshot and LLM requests small (default limits)', async () => {
    const ts = await start({ config: { store: 'sqlite' }, llm: { script: () => ({ text: 'Noted.' }) } });
    const call = await dial(ts);
    const big = 'blah '.repeat(12_000).trimEnd();
    for (let i = 0; i < 30; i++) {
      call.prompt(`${i} ${big}`);
      await call.nextReply(10_000);
    }
    await ts.server.manager.flush();
    const record = await ts.server.store.load(call.callSid);
    // History at most 32 KiB of text, plus the rest of the context and JSON overhead.
    expect(JSON.stringify(record!.snapshot).length).toBeLessThan(40 * 1024);
    expect(JSON.stringify(ts.llm.requests.at(-1)!.messages).length).toBeLessThan(40 * 1024);
    expect(await limitHits(ts, 'prompt_bytes')).toBe(30);
  });
});

describe('send buffer (MAX_SEND_BUFFER_BYTES)', () => {
  it('a caller that stops reading while a long reply streams is cut off (1008) and counted; another call goes on', async () => {
    const chunk = 'x'.repeat(64 * 1024);
    // Up to 32 MB, paced by the fake LLM: several times what loopback's kernel buffers (about 4 MB
    // here) and the 64 KiB cap hold, so the cap is reached long before the reply could end.
    const script: ScriptFn = (req) => {
      const said = contentToText(req.messages.at(-1)?.content);
      return said === 'flood' ? { chunks: new Array<string>(500).fill(chunk), delayMs: 1 } : echoScript(req);
    };
    const ts = await start({ config: { maxSendBufferBytes: 64 * 1024 }, llm: { script } });
    const other = await dial(ts);
    const stalled = await dial(ts);
    stalled.pauseReading();
    stalled.prompt('flood');

    await expect.poll(() => limitHits(ts, 'send_buffer'), { timeout: 15_000, interval: 20 }).toBe(1);
    // The stalled call is a dropped call now (it may resume like any other), closed with 1008.
    const session = ts.server.manager.get(stalled.callSid)!;
    expect(lifecycleOf(session.actor.getSnapshot().value)).toBe('disconnected');
    expect(session.actor.getSnapshot().context.lastCloseCode).toBe(1008);
    expect(session.socket).toBeNull();
    expect(sample(await scrape(ts), 'relay_disconnects_total', 'code="1008"')).toBe(1);

    // The other call is untouched: a whole reply, its socket open, its session connected.
    other.prompt('are you still there');
    expect((await other.nextReply(10_000)).text).toBe('You said: are you still there');
    expect(other.isOpen).toBe(true);
    expect(lifecycleOf(ts.server.manager.get(other.callSid)!.actor.getSnapshot().value)).toBe('connected');

    // Once it reads again it finds what was sent before the cut, then the close (or the cut TCP connection).
    stalled.resumeReading();
    const closed = await stalled.closed;
    expect([1008, 1006]).toContain(closed.code);
    expect(await limitHits(ts, 'send_buffer')).toBe(1);
  });
});

/** The memory store with acquire() held until the test lets it go: the session stays "being created". */
function gatedStore(): { store: SnapshotStore; hold(): () => void } {
  const inner = new MemoryStore();
  let gate: Promise<void> | undefined;
  const store = delegatingStore(inner, {
    acquire: async (callSid, owner, opts) => {
      await gate;
      return inner.acquire(callSid, owner, opts);
    },
  });
  return {
    store,
    hold() {
      let release!: () => void;
      gate = new Promise((resolve) => (release = resolve));
      return () => {
        gate = undefined;
        release();
      };
    },
  };
}

describe('frames before the session is ready (MAX_QUEUED_FRAMES)', () => {
  it('up to the cap they are delivered once the session is ready; beyond it the socket is closed with 1008', async () => {
    const gated = gatedStore();
    const ts = await start({ store: gated.store, config: { maxQueuedFrames: 5 } });

    let release = gated.hold();
    const patient = await SimulatedCall.connect({ url: ts.server.relayUrl });
    track(patient);
    for (let i = 0; i < 4; i++) patient.info('roundTripDelayMs', i);
    patient.prompt('hello after setup');
    release();
    expect((await patient.nextReply(10_000)).text).toBe('You said: hello after setup');

    release = gated.hold();
    const flooder = await SimulatedCall.connect({ url: ts.server.relayUrl });
    track(flooder);
    for (let i = 0; i < 6; i++) flooder.info('roundTripDelayMs', i);
    expect((await flooder.closed).code).toBe(1008);
    expect(await limitHits(ts, 'queued_frames')).toBe(1);
    release();
    // Its session, created after the close, learns at once that the socket is gone.
    await waitUntil(() => {
      const s = ts.server.manager.get(flooder.callSid);
      return s !== undefined && lifecycleOf(s.actor.getSnapshot().value) === 'disconnected';
    }, 'the flooder session to be disconnected');
    expect(ts.server.manager.get(flooder.callSid)!.actor.getSnapshot().context.lastCloseCode).toBe(1008);
    expect(patient.isOpen).toBe(true);
  });

  it('the same cap holds while a setup claiming a resume waits for its turn (held with what follows it)', async () => {
    const ts = await start({ config: { maxQueuedFrames: 5 } });
    const call = await SimulatedCall.connect({ url: ts.server.relayUrl });
    track(call);
    expect(await say(call, 'hello')).toBe('You said: hello');
    await call.drop();
    await waitUntil(() => lifecycleOf(ts.server.manager.get(call.callSid)?.actor.getSnapshot().value) === 'disconnected', 'the drop to be seen');

    // Sent in one write: the resume's setup is held, and so are the frames behind it, in order.
    const resumeOptions = { url: ts.server.relayUrl, callSid: call.callSid, sessionId: call.sessionId, reconnection: true, sendSetup: false };
    const back = await SimulatedCall.connect(resumeOptions);
    track(back);
    back.sendTogether(() => {
      back.sendJson(back.setup);
      for (let i = 0; i < 4; i++) back.info('roundTripDelayMs', i);
      back.prompt('still there?');
    });
    expect((await back.nextReply(10_000)).text).toBe(expectedResumeLine('en-US'));
    expect((await back.nextReply(10_000)).text).toBe('You said: still there?');
    await back.drop();
    await waitUntil(() => lifecycleOf(ts.server.manager.get(call.callSid)?.actor.getSnapshot().value) === 'disconnected', 'the second drop to be seen');

    const flooder = await SimulatedCall.connect(resumeOptions);
    track(flooder);
    flooder.sendTogether(() => {
      flooder.sendJson(flooder.setup);
      for (let i = 0; i < 7; i++) flooder.info('roundTripDelayMs', i);
    });
    expect((await flooder.closed).code).toBe(1008);
    expect(await limitHits(ts, 'queued_frames')).toBe(1);
  });

  it('a frame that only looks like a resume setup does not stop the setup timeout (SETUP_TIMEOUT_MS)', async () => {
    expect(loadConfig({ SETUP_TIMEOUT_MS: '250' }).setupTimeoutMs).toBe(250);
    // Past what a Node timer can wait: refused, not turned into a 1 ms timeout for every socket.
    expect(() => loadConfig({ SETUP_TIMEOUT_MS: String(2 ** 31) })).toThrow();
    const ts = await start({ config: { setupTimeoutMs: 200 } });
    const impostor = await SimulatedCall.connect({ url: ts.server.relayUrl, sendSetup: false });
    track(impostor);
    impostor.sendRaw('{"resumeToken":"x"}');
    expect(await impostor.closed).toMatchObject({ code: 1008, reason: 'setup expected' });
  });

  it('an oversize frame behind a held resume setup is dropped, and the resume goes on', async () => {
    const ts = await start();
    const call = await SimulatedCall.connect({ url: ts.server.relayUrl });
    track(call);
    expect(await say(call, 'hello')).toBe('You said: hello');
    await call.drop();
    await waitUntil(() => lifecycleOf(ts.server.manager.get(call.callSid)?.actor.getSnapshot().value) === 'disconnected', 'the drop to be seen');
    const back = await SimulatedCall.connect({ url: ts.server.relayUrl, callSid: call.callSid, sessionId: call.sessionId, reconnection: true, sendSetup: false });
    track(back);
    back.sendTogether(() => {
      back.sendJson(back.setup);
      back.sendRaw(`{"type":"info","name":"x","value":"${'y'.repeat(70 * 1024)}"}`);
      back.prompt('after the big one');
    });
    expect((await back.nextReply(10_000)).text).toBe(expectedResumeLine('en-US'));
    expect((await back.nextReply(10_000)).text).toBe('You said: after the big one');
    expect(sample(await scrape(ts), 'relay_malformed_frames_total', 'reason="oversize"')).toBe(1);
  });
});

describe('sessions per instance (MAX_SESSIONS)', () => {
  it('refuses the upgrade with 503 at the cap, counts it, and admits again once a call has ended', async () => {
    const ts = await start({ config: { maxSessions: 2 } });
    const first = await dial(ts);
    await dial(ts);
    const refused = await SimulatedCall.connect({ url: ts.server.relayUrl }).catch((err: unknown) => err);
    expect(refused).toBeInstanceOf(UpgradeRejectedError);
    expect((refused as UpgradeRejectedError).statusCode).toBe(503);
    expect(await limitHits(ts, 'sessions')).toBe(1);

    // The caller hangs up: socket closed, then Twilio's action callback ends the session.
    await first.close();
    await postAction(ts.server.httpUrl, { CallSid: first.callSid, CallStatus: 'completed', SessionStatus: 'completed' });
    await waitUntil(() => ts.server.manager.size === 1, 'the ended session to be gone');
    const third = await dial(ts);
    third.prompt('hello');
    expect((await third.nextReply()).text).toBe('You said: hello');
  });

  it('a socket let in below the cap is refused at setup (1013) when the cap was reached meanwhile', async () => {
    const ts = await start({ config: { maxSessions: 2 } });
    const dropped = await dial(ts);
    await dropped.drop(); // its session waits in grace: it still counts
    await waitUntil(() => ts.server.manager.get(dropped.callSid)?.socket === null, 'the dropped session to lose its socket');

    const a = await SimulatedCall.connect({ url: ts.server.relayUrl, sendSetup: false });
    const b = await SimulatedCall.connect({ url: ts.server.relayUrl, sendSetup: false });
    track(a);
    track(b);
    a.sendJson(a.setup);
    await waitUntil(() => ts.server.manager.get(a.callSid) !== undefined, 'the session of a');
    b.sendJson(b.setup);
    expect((await b.closed).code).toBe(1013);
    expect(ts.server.manager.get(b.callSid)).toBeUndefined();
    expect(await limitHits(ts, 'sessions')).toBe(1);
    a.prompt('still here');
    expect((await a.nextReply()).text).toBe('You said: still here');
  });
});

describe('admin token (ADMIN_TOKEN, bearerAuth)', () => {
  it('answers 401 to a missing, wrong or malformed token and 200 to the right one', async () => {
    const ts = await start({ config: { adminToken: 'tok-3n.x' } });
    const get = (authorization?: string) => fetch(`${ts.server.httpUrl}/sessions`, { headers: authorization ? { authorization } : {} });
    for (const auth of [undefined, 'Bearer wrong', 'Bearer tok-3n.', 'Basic dG9rOng=', 'Bearer bad token', 'Bearer']) {
      const res = await get(auth);
      expect(res.status, String(auth)).toBe(401);
      expect(res.headers.get('www-authenticate'), String(auth)).toMatch(/^Bearer/);
    }
    expect((await get('Bearer tok-3n.x')).status).toBe(200);
    expect((await fetch(`${ts.server.httpUrl}/sessions/CAnope`, { headers: { authorization: 'Bearer tok-3n.x' } })).status).toBe(404);
  });

  it('a token that no Bearer header could carry stops the start-up; an empty one leaves the views off', () => {
    expect(() => loadConfig({ ADMIN_TOKEN: 'has space' })).toThrow(/ADMIN_TOKEN/);
    expect(loadConfig({ ADMIN_TOKEN: '' }).adminToken).toBeUndefined();
  });
});

describe('metric labels', () => {
  it('close codes outside a fixed set are counted as "other"', async () => {
    expect(['1000', '1006', '4001', 'other', 'other']).toEqual([1000, 1006, 4001, 4999, 3000].map(closeCodeLabel));
    const ts = await start();
    const call = await dial(ts);
    await call.close(4321, 'made up');
    await waitUntil(() => ts.server.manager.get(call.callSid)?.socket === null, 'the server to see the close');
    const text = await scrape(ts);
    expect(sample(text, 'relay_disconnects_total', 'code="other"')).toBe(1);
    expect(text).not.toContain('code="4321"');
  });

  it('every limit series exists from the start', async () => {
    const ts = await start();
    const text = await scrape(ts);
    for (const limit of ['prompt_bytes', 'send_buffer', 'queued_frames', 'sessions']) {
      expect(text).toContain(`relay_limits_exceeded_total{limit="${limit}"} 0`);
    }
  });

  it('the config rejects a limit that is not a positive integer', () => {
    expect(() => loadConfig({ MAX_SESSIONS: '0' })).toThrow(/maxSessions/);
    expect(() => loadConfig({ MAX_SEND_BUFFER_BYTES: 'lots' })).toThrow(/maxSendBufferBytes/);
    // Workers share calls (and call tokens) only through a shared store.
    expect(() => loadConfig({ STORE: 'memory', WORKERS: '2' })).toThrow(/WORKERS > 1 needs a shared store[\s\S]*workers/);
    expect(loadConfig({ STORE: 'sqlite', WORKERS: '2' }).workers).toBe(2);
  });
});
