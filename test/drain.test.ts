// SIGTERM drains instead of dropping: the stopping instance is not ready at once, refuses new work
// with 503, answers its own calls' action callbacks to the end, lets each call finish the reply it
// is speaking, stores it and only then closes the socket, so the call continues on another instance.
// And whatever moment a process stops in (drained or killed), a restored session answers again.
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { SimulatedCall, twilioReconnectOptions, UpgradeRejectedError } from '../src/testing/twilio-sim.js';
import { postAction, postIncomingCall, WebhookHttpError } from '../src/testing/twilio-webhooks.js';
import { contentToText, splitIntoChunks, type ScriptFn } from '../src/testing/fake-openai-server.js';
import { SqliteStore } from '../src/stores/index.js';
import { tempSqlitePath } from './support/harness.js';
import { useProcessFixture } from './support/process-fixture.js';
import {
  DIGITS_OK,
  SPANISH_OK,
  STORY,
  expectedResumeLine,
  lastUserText,
  nextSpokenReply,
  persisted,
  postDroppedAction,
  resumeViaTwilio,
  say,
  storedDtmfBuffer,
  transcriptOf,
  waitForDeltas,
  waitForRecord,
  waitForRequest,
} from './support/resume-scenario.js';
import { ServerProcess } from './support/server-process.js';

const fx = useProcessFixture('drain', false);

/** A reply the test holds back until it says so: the drain must wait for it, however slow the machine. */
class Gate {
  release!: () => void;
  readonly opened = new Promise<void>((resolve) => (this.release = resolve));
}
let gate = new Gate();
const HELD_REPLY = 'Thanks for waiting, here is your answer.';

/** The resume scenario's keywords, plus "hold" (a reply that starts only when the gate opens). */
const script: ScriptFn = async ({ messages }) => {
  const last = messages.at(-1);
  if (last?.role === 'tool') return { text: contentToText(last.content).startsWith('language switched') ? SPANISH_OK : DIGITS_OK };
  const said = contentToText(last?.content).toLowerCase();
  if (said.includes('hold')) {
    await gate.opened;
    return { text: HELD_REPLY };
  }
  if (said.includes('spanish')) return { toolCalls: [{ name: 'switch_language', arguments: '{"language":"es-US"}' }] };
  if (said.includes('phone')) return { toolCalls: [{ name: 'collect_digits', arguments: '{"kind":"phoneNumber"}' }] };
  if (said.includes('story')) return { chunks: splitIntoChunks(STORY), delayMs: 60 };
  return { text: `You said: ${contentToText(last?.content)}` };
};

// The fixture puts its own script back after each test.
beforeEach(() => fx.llm.setScript(script));
afterAll(() => gate.release());

function serverOn(sqlitePath: string, env: Record<string, string> = {}): ServerProcess {
  return new ServerProcess({ store: 'sqlite', openaiBaseUrl: fx.llm.baseURL, sqlitePath, graceMs: 120_000, dtmfIdleMs: 120_000, env });
}

async function upgradeStatus(relayUrl: string): Promise<number | 'open'> {
  try {
    const call = await SimulatedCall.connect({ url: relayUrl, sendSetup: false });
    await call.drop();
    return 'open';
  } catch (err) {
    if (err instanceof UpgradeRejectedError) return err.statusCode;
    throw err;
  }
}

/** A call that started a phone-number entry and typed `typed` of its digits. */
async function callInKeypadEntry(server: ServerProcess, store: SqliteStore, typed: string): Promise<SimulatedCall> {
  const call = fx.track(await SimulatedCall.connect({ url: server.relayUrl }));
  call.prompt('my phone number');
  expect((await nextSpokenReply(call)).text).toMatch(/10-digit/);
  call.digits(typed);
  await waitForRecord(store, call.callSid, (r) => storedDtmfBuffer(r) === typed);
  return call;
}

describe('SIGTERM drains live calls onto another instance', () => {
  it('refuses new work, answers its own callbacks, finishes replies and hands every call on', async () => {
    const sqlitePath = tempSqlitePath();
    const store = fx.keep(new SqliteStore(sqlitePath));
    const a = serverOn(sqlitePath, { INSTANCE_ID: 'drain-a', DRAIN_TIMEOUT_MS: '60000' });
    const b = serverOn(sqlitePath, { INSTANCE_ID: 'drain-b' });
    await Promise.all([a.start(), b.start()]);

    const idle = fx.track(await SimulatedCall.connect({ url: a.relayUrl }));
    expect(await say(idle, 'hello there')).toBe('You said: hello there');
    const keypad = await callInKeypadEntry(a, store, '5551');
    // Dropped before the stop: still held by A, in grace after its callback.
    const dropped = fx.track(await SimulatedCall.connect({ url: a.relayUrl }));
    expect(await say(dropped, 'first words')).toBe('You said: first words');
    await dropped.drop();
    await waitForRecord(store, dropped.callSid, (r) => r?.state === 'disconnected');
    // Speaking when the stop comes: its reply is held until the test opens the gate.
    gate = new Gate();
    const speaking = fx.track(await SimulatedCall.connect({ url: a.relayUrl }));
    const requestsBefore = fx.llm.requests.length;
    speaking.prompt('please hold');
    await waitForRequest(fx.llm, (m) => lastUserText(m) === 'please hold', 10_000, requestsBefore);

    const exited = a.kill('SIGTERM');
    await a.waitForLog((l) => l.msg === 'draining: handing live calls on');

    // Not ready, no new calls, no new sockets: the balancer moves on.
    expect((await fetch(`${a.httpUrl}/readyz`)).status).toBe(503);
    expect((await fetch(`${b.httpUrl}/readyz`)).status).toBe(200);
    expect((await fetch(`${a.httpUrl}/healthz`)).status).toBe(200);
    await expect(postIncomingCall(a.httpUrl)).rejects.toMatchObject({ status: 503 } satisfies Partial<WebhookHttpError>);
    expect(await upgradeStatus(a.relayUrl)).toBe(503);
    // A callback for a call A does not hold goes elsewhere; its own dropped call is told to reconnect.
    expect((await postAction(a.httpUrl, { CallSid: 'CAnot-here', CallStatus: 'in-progress', ErrorCode: '64105' })).status).toBe(503);
    const droppedAction = await postDroppedAction(a.httpUrl, dropped);
    expect(droppedAction.status).toBe(200);
    expect(droppedAction.body).toContain('<ConversationRelay');

    // The idle and keypad calls are handed on at once; the speaking one waits for its reply.
    for (const call of [idle, keypad]) expect((await call.closed).code).toBe(1001);
    expect(speaking.closeInfo).toBeUndefined();
    // A frame arriving meanwhile is handled: the caller changes their mind, and that reply is spoken in full.
    speaking.prompt('no wait, say something else');
    gate.release();
    const reply = await nextSpokenReply(speaking);
    expect(reply.text).toBe('You said: no wait, say something else');
    expect((await speaking.closed).code).toBe(1001);
    expect((await exited).code).toBe(0);
    expect(a.logs.filter((l) => l.msg === 'call handed on for a restart')).toHaveLength(3);

    // Twilio posts each callback (through the balancer, here straight to B) and follows the TwiML.
    const resumedKeypad = fx.track((await resumeViaTwilio(b.httpUrl, keypad)).call);
    expect((await resumedKeypad.nextReply()).text).toBe(expectedResumeLine('en-US'));
    resumedKeypad.digits('234567');
    expect((await nextSpokenReply(resumedKeypad)).text).toBe(DIGITS_OK);

    const resumedSpeaking = fx.track((await resumeViaTwilio(b.httpUrl, speaking)).call);
    expect((await resumedSpeaking.nextReply()).text).toBe(expectedResumeLine('en-US'));
    let n = fx.llm.requests.length;
    expect(await say(resumedSpeaking, 'thanks')).toBe('You said: thanks');
    const request = await waitForRequest(fx.llm, (m) => lastUserText(m) === 'thanks', 10_000, n);
    // Nothing lost, nothing twice: the held reply was cancelled by the new utterance, as on a live call.
    expect(transcriptOf(request.messages)).toEqual([
      'user:please hold',
      'user:no wait, say something else',
      'assistant:You said: no wait, say something else',
      'user:thanks',
    ]);

    const resumedIdle = fx.track((await resumeViaTwilio(b.httpUrl, idle)).call);
    expect((await resumedIdle.nextReply()).text).toBe(expectedResumeLine('en-US'));
    n = fx.llm.requests.length;
    expect(await say(resumedIdle, 'still there?')).toBe('You said: still there?');
    const idleRequest = await waitForRequest(fx.llm, (m) => lastUserText(m) === 'still there?', 10_000, n);
    expect(transcriptOf(idleRequest.messages)).toEqual(['user:hello there', 'assistant:You said: hello there', 'user:still there?']);

    // The call dropped before the stop was told to reconnect by A; its new socket lands on B.
    const resumedDropped = fx.track(await SimulatedCall.connect(twilioReconnectOptions(droppedAction.body, dropped, { url: b.relayUrl })));
    expect((await resumedDropped.nextReply()).text).toBe(expectedResumeLine('en-US'));
    expect(await say(resumedDropped, 'back again')).toBe('You said: back again');
    await b.stop();
  }, 90_000);
});

/** One call per phase of a turn, so one stop covers them all. */
const PHASES = ['idle', 'awaiting first token', 'mid-stream', 'keypad entry', 'after a tool call'] as const;
type Phase = (typeof PHASES)[number];

async function callIn(phase: Phase, server: ServerProcess, store: SqliteStore): Promise<SimulatedCall> {
  if (phase === 'keypad entry') return callInKeypadEntry(server, store, '55');
  const call = fx.track(await SimulatedCall.connect({ url: server.relayUrl }));
  expect(await say(call, 'hello there')).toBe('You said: hello there');
  const before = fx.llm.requests.length;
  if (phase === 'awaiting first token') {
    call.prompt('please hold');
    await waitForRequest(fx.llm, (m) => lastUserText(m) === 'please hold', 10_000, before);
  } else if (phase === 'mid-stream') {
    call.prompt('tell me a story');
    await waitForDeltas(call, 3);
  } else if (phase === 'after a tool call') {
    expect(await say(call, 'speak spanish')).toBe(SPANISH_OK);
  }
  return call;
}

describe.each([
  { stop: 'SIGTERM, out of drain time' as const, signal: 'SIGTERM' as const },
  { stop: 'SIGKILL' as const, signal: 'SIGKILL' as const },
])('a process stopped by $stop in any phase of a turn', ({ signal }) => {
  it('never stores a dead actor: every restored session answers its next prompt', async () => {
    gate = new Gate();
    const sqlitePath = tempSqlitePath();
    const store = fx.keep(new SqliteStore(sqlitePath));
    // No drain time at all: the stop catches each call wherever it is.
    const server = serverOn(sqlitePath, { DRAIN_TIMEOUT_MS: '0' });
    await server.start();
    const calls = new Map<Phase, SimulatedCall>();
    for (const phase of PHASES) calls.set(phase, await callIn(phase, server, store));

    await server.kill(signal);
    for (const call of calls.values()) await call.closed;
    for (const call of calls.values()) {
      const record = await store.load(call.callSid);
      expect(persisted(record)).toMatchObject({ status: 'active' });
    }
    gate.release();
    await server.start();

    for (const [phase, call] of calls) {
      const resumed = fx.track((await resumeViaTwilio(server.httpUrl, call)).call);
      const language = phase === 'after a tool call' ? 'es-US' : 'en-US';
      const greeting = await resumed.nextReply();
      expect(greeting.text.startsWith(expectedResumeLine(language)), `${phase}: ${greeting.text}`).toBe(true);
      if (phase === 'keypad entry') {
        resumed.digits('51234567');
        expect((await nextSpokenReply(resumed)).text, phase).toBe(DIGITS_OK);
      } else {
        // A reply cut off by the stop is regenerated after the resume line; then the caller speaks again.
        if (greeting.text === expectedResumeLine(language) && (phase === 'awaiting first token' || phase === 'mid-stream')) {
          await nextSpokenReply(resumed, 15_000);
        }
        expect(await say(resumed, `next after ${phase}`, 15_000), phase).toBe(`You said: next after ${phase}`);
      }
    }
    await server.stop();
  }, 90_000);
});
