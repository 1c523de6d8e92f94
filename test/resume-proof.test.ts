// A resume must prove it is the same call, not just name its callSid. Each attack found on the old
// code is replayed here against the real server over real sockets and must fail, leaving the victim's
// call untouched and silent to the attacker; the genuine paths still resume everything. The server's
// session time is a TestClock: the window a callback gives an open socket to close ends only when
// the test moves the clock, after the server logged that it is waiting.
import { randomUUID } from 'node:crypto';
import { Writable } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { SimulatedCall, twilioReconnectOptions, type SimulatedCallOptions } from '../src/testing/twilio-sim.js';
import { readRelayTwiml } from '../src/testing/twiml-reader.js';
import { postAction } from '../src/testing/twilio-webhooks.js';
import { contentToText, type ScriptFn } from '../src/testing/fake-openai-server.js';
import { lifecycleOf } from '../src/machines/session.js';
import { createLogger } from '../src/server/logger.js';
import { hashSecret } from '../src/server/resume-proof.js';
import { ACTION_CLOSE_WINDOW_MS } from '../src/server/sessions/resume-rules.js';
import { startTestServer, tempSqlitePath, type TestServer } from './support/harness.js';
import { startFakeOpenAI } from '../src/testing/fake-openai-server.js';
import { waitUntil } from './support/conditions.js';
import { TestClock } from './support/test-clock.js';
import {
  DIGITS_OK,
  SPANISH_OK,
  expectedResumeLine,
  nextSpokenReply,
  postDroppedAction,
  say,
  scenarioScript,
  transcriptOf,
  waitForRequest,
} from './support/resume-scenario.js';

const ADMIN = 'admin-token-for-resume-proof';
const lines: string[] = [];
const sink = new Writable({
  write(chunk: Buffer | string, _encoding, done) {
    lines.push(chunk.toString());
    done();
  },
});
const logs = () => lines.map((l) => JSON.parse(l) as { msg: string; callSid?: string });

const base = scenarioScript();
/** The scenario's script, plus "agent" -> a handoff (the server sends `end`). */
const script: ScriptFn = (request) => {
  const said = contentToText(request.messages.at(-1)?.content).toLowerCase();
  if (request.messages.at(-1)?.role === 'user' && said.includes('agent')) {
    return { toolCalls: [{ name: 'human_agent_handoff', arguments: '{"reason":"caller asked"}' }] };
  }
  return base(request);
};

const clock = new TestClock();
let ts: TestServer;
const calls: SimulatedCall[] = [];
const track = (c: SimulatedCall) => (calls.push(c), c);

beforeAll(async () => {
  ts = await startTestServer({
    llm: { script },
    config: { adminToken: ADMIN, dtmfIdleMs: 3_600_000 },
    clock,
    logger: createLogger('trace', sink),
  });
});
afterEach(async () => {
  await Promise.all(calls.splice(0).map((c) => c.drop()));
});
afterAll(async () => {
  await ts?.close();
});

const snapshotOf = (callSid: string) => ts.server.manager.get(callSid)?.actor.getSnapshot();
const lifecycle = (callSid: string) => lifecycleOf(snapshotOf(callSid)?.value);
async function failedResumes(): Promise<number> {
  const text = await (await fetch(`${ts.server.httpUrl}/metrics`)).text();
  return Number(/relay_resumes_total\{outcome="failed"\} (\d+)/.exec(text)?.[1] ?? 0);
}

/** An attacker's socket: refused with 1008, having heard nothing of the call. */
async function expectRefused(opts: SimulatedCallOptions): Promise<void> {
  const attacker = track(await SimulatedCall.connect({ ...opts, url: ts.server.relayUrl }));
  const closed = await attacker.closed;
  expect(closed.code, JSON.stringify(opts.customParameters)).toBe(1008);
  expect(attacker.messages).toEqual([]);
}

/** The session as a resume would find it, without the parts that change on their own. */
function fingerprint(callSid: string): string {
  const s = snapshotOf(callSid)!;
  return JSON.stringify({ value: s.value, context: s.context });
}

/** Waits for the n-th log line `msg` of this call. */
async function loggedTimes(callSid: string, msg: string, n: number): Promise<void> {
  await waitUntil(() => logs().filter((l) => l.callSid === callSid && l.msg === msg).length >= n, `${n}x "${msg}"`);
}
const WAITING = 'action callback while the socket is open: waiting for it to close';

describe('Twilio path: the reconnect TwiML carries a single-use token', () => {
  it('refuses a setup without the valid token or with another account or numbers; the genuine caller gets history, language and typed digits back', async () => {
    const url = ts.server.relayUrl;
    const victim = track(await SimulatedCall.connect({ url, from: '+15550107777', to: '+15550108888' }));
    expect(await say(victim, 'can we speak spanish')).toBe(SPANISH_OK);
    victim.prompt('my phone number');
    expect((await nextSpokenReply(victim)).text).toMatch(/10 dígitos/);
    victim.digits('555');
    const buffer = () => (snapshotOf(victim.callSid)?.children.dtmf?.getSnapshot() as { context?: { buffer?: string } } | undefined)?.context?.buffer;
    await waitUntil(() => buffer() === '555', 'three digits typed');
    await victim.drop();
    await waitUntil(() => lifecycle(victim.callSid) === 'disconnected', 'the drop noticed');

    // Before any callback there is no token to bring: the captured upgrade and the callSid are not enough.
    const failed0 = await failedResumes();
    await expectRefused({ url, callSid: victim.callSid, accountSid: victim.accountSid, from: victim.setup.from, to: victim.setup.to, callStatus: 'in-progress' });

    const action = await postDroppedAction(ts.server.httpUrl, victim);
    const token = readRelayTwiml(action.body).parameters.resumeToken!;
    expect(token).toMatch(/^[\w-]{43}$/);
    const untouched = fingerprint(victim.callSid);
    const other = token.startsWith('A') ? `B${token.slice(1)}` : `A${token.slice(1)}`;
    const attempts: Partial<SimulatedCallOptions>[] = [
      { customParameters: {} },
      { customParameters: { resumeToken: other } },
      { customParameters: { resumeToken: '' } },
      { accountSid: `AC${'f'.repeat(32)}` },
      { from: '+15550100000' },
      { to: '+15550100000' },
    ];
    for (const extra of attempts) {
      await expectRefused(twilioReconnectOptions(action.body, victim, extra));
    }
    expect(fingerprint(victim.callSid)).toBe(untouched);
    expect(lifecycle(victim.callSid)).toBe('grace');
    expect(await failedResumes()).toBe(failed0 + 7);

    // The genuine reconnect: the call's language first, the resume line, then the entry goes on.
    const back = track(await SimulatedCall.connect(twilioReconnectOptions(action.body, victim, { url })));
    expect(await back.waitForType('language', 10_000)).toEqual({ type: 'language', ttsLanguage: 'es-US', transcriptionLanguage: 'es-US' });
    expect((await back.nextReply()).text).toBe(expectedResumeLine('es-US'));
    const n = ts.llm.requests.length;
    back.digits('0123456');
    expect((await nextSpokenReply(back)).text).toBe(DIGITS_OK);
    const request = await waitForRequest(ts.llm, (m) => m.at(-1)?.role === 'tool', 10_000, n);
    expect(contentToText(request.messages.at(-1)?.content)).toContain('5550123456');
    expect(transcriptOf(request.messages).slice(0, 1)).toEqual(['user:can we speak spanish']);
    const resumed = snapshotOf(victim.callSid)!.context;
    expect(resumed).toMatchObject({ resumes: 1, resumeTokenHashes: [], sessionKeyHash: hashSecret(back.sessionId) });

    // Spent: the same token opens nothing, neither while the call talks nor after it drops again.
    await expectRefused(twilioReconnectOptions(action.body, victim));
    expect(back.isOpen).toBe(true);
    await back.drop();
    await waitUntil(() => lifecycle(victim.callSid) === 'disconnected', 'the second drop noticed');
    await expectRefused(twilioReconnectOptions(action.body, back));

    // Never shown: not in the context, the logs or the admin view.
    const secrets = [token, victim.sessionId, back.sessionId];
    const adminView = await (await fetch(`${ts.server.httpUrl}/sessions/${victim.callSid}`, { headers: { authorization: `Bearer ${ADMIN}` } })).text();
    for (const secret of secrets) {
      expect(JSON.stringify(snapshotOf(victim.callSid)!.context)).not.toContain(secret);
      expect(lines.join('')).not.toContain(secret);
      expect(adminView).not.toContain(secret);
    }
  });

  it('the token is never kept in customParameters; a callback posted again leaves the first TwiML valid, and one resume spends both', async () => {
    const call = track(await SimulatedCall.connect({ url: ts.server.relayUrl, customParameters: { tenant: 'blue', resumeToken: 'sent-early', callToken: 'x' } }));
    expect(await say(call, 'hello')).toBe('You said: hello');
    expect(snapshotOf(call.callSid)!.context.customParameters).toEqual({ tenant: 'blue' });
    await call.drop();
    const first = await postDroppedAction(ts.server.httpUrl, call);
    const second = await postDroppedAction(ts.server.httpUrl, call);
    expect(readRelayTwiml(second.body).parameters.resumeToken).not.toBe(readRelayTwiml(first.body).parameters.resumeToken);
    // Twilio acts on whichever answer reached it; a retry (or a replay) does not spoil the first.
    const back = track(await SimulatedCall.connect(twilioReconnectOptions(first.body, call)));
    expect((await back.nextReply()).text).toBe(expectedResumeLine('en-US'));
    expect(snapshotOf(call.callSid)!.context.customParameters).toEqual({ tenant: 'blue' });
    await expectRefused(twilioReconnectOptions(second.body, back));
  });
});

describe('reconnection path: the sessionId (and a resumeKey, if given) is the proof', () => {
  it('refuses a wrong sessionId, a missing or wrong resumeKey and another account; the right ones resume', async () => {
    const resumeKey = `key-${randomUUID()}`;
    const call = track(await SimulatedCall.connect({ url: ts.server.relayUrl, customParameters: { resumeKey, tenant: 'green' } }));
    expect(await say(call, 'hello there')).toBe('You said: hello there');
    expect(snapshotOf(call.callSid)!.context).toMatchObject({ customParameters: { tenant: 'green' }, resumeKeyHash: hashSecret(resumeKey) });
    await call.drop();
    await waitUntil(() => lifecycle(call.callSid) === 'disconnected', 'the drop noticed');
    const untouched = fingerprint(call.callSid);
    const same = { url: ts.server.relayUrl, callSid: call.callSid, sessionId: call.sessionId, reconnection: true };
    await expectRefused({ ...same, sessionId: `${call.sessionId}x`, customParameters: { resumeKey } });
    await expectRefused({ ...same, customParameters: {} });
    await expectRefused({ ...same, customParameters: { resumeKey: `${resumeKey}x` } });
    await expectRefused({ ...same, customParameters: { resumeKey }, accountSid: `AC${'e'.repeat(32)}` });
    expect(fingerprint(call.callSid)).toBe(untouched);

    const back = track(await SimulatedCall.connect({ ...same, customParameters: { resumeKey } }));
    expect((await back.nextReply()).text).toBe(expectedResumeLine('en-US'));
    const n = ts.llm.requests.length;
    expect(await say(back, 'again')).toBe('You said: again');
    const request = await waitForRequest(ts.llm, (m) => contentToText(m.at(-1)?.content) === 'again', 10_000, n);
    expect(transcriptOf(request.messages)).toEqual(['user:hello there', 'assistant:You said: hello there', 'user:again']);
  });

  it('a client written for the original sample (setup with its sessionId and reconnection, bare prompts) keeps working', async () => {
    const call = track(await SimulatedCall.connect({ url: ts.server.relayUrl }));
    call.sendJson({ type: 'prompt', voicePrompt: 'first words' });
    expect((await nextSpokenReply(call)).text).toBe('You said: first words');
    await call.drop();
    await waitUntil(() => lifecycle(call.callSid) === 'disconnected', 'the drop noticed');
    const again = track(await SimulatedCall.connect({ url: ts.server.relayUrl, sendSetup: false }));
    const { customParameters: _none, ...usual } = call.setup;
    again.sendJson({ ...usual, callStatus: 'in-progress', reconnection: true });
    expect((await again.nextReply()).text).toBe(expectedResumeLine('en-US'));
    again.sendJson({ type: 'prompt', voicePrompt: 'second words' });
    expect((await nextSpokenReply(again)).text).toBe('You said: second words');
    expect(snapshotOf(call.callSid)!.context.resumes).toBe(1);
  });
});

describe('the action callback needs the socket to be gone', () => {
  it('a replayed 64105 or completed for a live call is answered harmlessly and the call goes on', async () => {
    const victim = track(await SimulatedCall.connect({ url: ts.server.relayUrl }));
    expect(await say(victim, 'hello')).toBe('You said: hello');
    const replays = [
      { CallSid: victim.callSid, CallStatus: 'in-progress', SessionId: victim.sessionId, SessionStatus: 'failed', ErrorCode: '64105' },
      { CallSid: victim.callSid, CallStatus: 'completed', SessionId: victim.sessionId, SessionStatus: 'completed' },
    ];
    for (const [i, params] of replays.entries()) {
      const answer = postAction(ts.server.httpUrl, params);
      await loggedTimes(victim.callSid, WAITING, i + 1);
      clock.advance(ACTION_CLOSE_WINDOW_MS);
      const res = await answer;
      expect(res.status).toBe(200);
      expect(res.body).not.toContain('<ConversationRelay');
      expect(lifecycle(victim.callSid)).toBe('connected');
      expect(snapshotOf(victim.callSid)!.context.resumeTokenHashes).toEqual([]);
    }
    // The attacker got no token; the victim noticed nothing and talks on.
    await expectRefused({ url: ts.server.relayUrl, callSid: victim.callSid, callStatus: 'in-progress' });
    expect(victim.messages.slice(victim.readCursor)).toEqual([]);
    expect(await say(victim, 'still here')).toBe('You said: still here');
  });

  it("a genuine callback that overtakes the socket's close waits for it and asks Twilio to reconnect", async () => {
    const call = track(await SimulatedCall.connect({ url: ts.server.relayUrl }));
    expect(await say(call, 'hello')).toBe('You said: hello');
    const answer = postDroppedAction(ts.server.httpUrl, call);
    await loggedTimes(call.callSid, WAITING, 1);
    await call.drop();
    const res = await answer;
    expect(res.body).toContain('<ConversationRelay');
    const back = track(await SimulatedCall.connect(twilioReconnectOptions(res.body, call, { url: ts.server.relayUrl })));
    expect((await back.nextReply()).text).toBe(expectedResumeLine('en-US'));
  });

  it('a callback that ends a call whose socket is still attached after its last words closes that socket too', async () => {
    const call = track(await SimulatedCall.connect({ url: ts.server.relayUrl }));
    call.prompt('get me an agent');
    await call.waitForType('end', 10_000);
    const answer = postAction(ts.server.httpUrl, { CallSid: call.callSid, CallStatus: 'in-progress', SessionId: call.sessionId, SessionStatus: 'ended', HandoffData: '{}' });
    await loggedTimes(call.callSid, WAITING, 1);
    clock.advance(ACTION_CLOSE_WINDOW_MS);
    expect((await answer).status).toBe(200);
    expect((await call.closed).code).toBe(1000);
    await waitUntil(() => snapshotOf(call.callSid) === undefined || lifecycle(call.callSid) === 'ended', 'the session to end');
  });
});

describe('a callback names the socket it is about', () => {
  it("a refused resume socket's callback asks Twilio to reconnect again, and the next socket resumes", async () => {
    const call = track(await SimulatedCall.connect({ url: ts.server.relayUrl }));
    expect(await say(call, 'hello')).toBe('You said: hello');
    await call.drop();
    const first = await postDroppedAction(ts.server.httpUrl, call);
    // Twilio's socket arrives with a token that is not (or no longer) valid: refused, then Twilio posts its callback.
    const refused = track(await SimulatedCall.connect(twilioReconnectOptions(first.body, call, { customParameters: { resumeToken: 'not-the-token' } })));
    expect((await refused.closed).code).toBe(1008);
    const again = await postDroppedAction(ts.server.httpUrl, refused);
    expect(again.body).toContain('<ConversationRelay');
    const back = track(await SimulatedCall.connect(twilioReconnectOptions(again.body, call)));
    expect((await back.nextReply()).text).toBe(expectedResumeLine('en-US'));
  });

  it('a drop gets at most six reconnect tokens: replays of its callback cannot crowd out the first', async () => {
    const call = track(await SimulatedCall.connect({ url: ts.server.relayUrl }));
    expect(await say(call, 'hello')).toBe('You said: hello');
    await call.drop();
    const answers = [];
    for (let i = 0; i < 8; i++) answers.push((await postDroppedAction(ts.server.httpUrl, call)).body);
    expect(answers.slice(0, 6).every((body) => body.includes('<ConversationRelay'))).toBe(true);
    expect(answers.slice(6).some((body) => body.includes('<ConversationRelay'))).toBe(false);
    expect(snapshotOf(call.callSid)!.context.resumeTokenHashes).toHaveLength(6);
    const back = track(await SimulatedCall.connect(twilioReconnectOptions(answers[0]!, call)));
    expect((await back.nextReply()).text).toBe(expectedResumeLine('en-US'));
  });

  it('a replayed callback of an earlier socket neither moves nor ends the call, on the instance holding it or on another one', async () => {
    const sqlitePath = tempSqlitePath();
    const llm = await startFakeOpenAI();
    const a = await startTestServer({ config: { store: 'sqlite', sqlitePath }, sharedLlm: llm });
    const b = await startTestServer({ config: { store: 'sqlite', sqlitePath }, sharedLlm: llm });
    try {
      const call = track(await SimulatedCall.connect({ url: a.server.relayUrl }));
      expect(await say(call, 'hello')).toBe('You said: hello');
      await call.drop();
      const genuine = await postDroppedAction(a.server.httpUrl, call);
      const back = track(await SimulatedCall.connect(twilioReconnectOptions(genuine.body, call)));
      expect((await back.nextReply()).text).toBe(expectedResumeLine('en-US'));
      await a.server.manager.flush();
      const epoch = await a.server.store.currentEpoch(call.callSid);

      // Captured earlier: the callbacks Twilio posts when the first socket closes, posted again now;
      // and one for a socket the call never talked on (a refused one), while it talks on another.
      const replays = [
        { CallSid: call.callSid, CallStatus: 'in-progress', SessionId: call.sessionId, SessionStatus: 'failed', ErrorCode: '64105' },
        { CallSid: call.callSid, CallStatus: 'completed', SessionId: call.sessionId, SessionStatus: 'completed' },
        { CallSid: call.callSid, CallStatus: 'in-progress', SessionId: 'VX0000000000000000000000000refused', SessionStatus: 'failed', ErrorCode: '64105' },
      ];
      for (const server of [b, a]) {
        for (const params of replays) {
          const res = await postAction(server.server.httpUrl, params);
          expect(res.status).toBe(200);
          expect(res.body).not.toContain('<ConversationRelay');
        }
      }
      expect(b.server.manager.get(call.callSid)).toBeUndefined();
      expect(await a.server.store.currentEpoch(call.callSid)).toBe(epoch);
      expect(lifecycleOf(a.server.manager.get(call.callSid)!.actor.getSnapshot().value)).toBe('connected');
      expect(back.closeInfo).toBeUndefined();
      expect(await say(back, 'still here')).toBe('You said: still here');
    } finally {
      await Promise.all(calls.splice(0).map((c) => c.drop()));
      await a.close();
      await b.close();
      await llm.close();
    }
  });
});
