// A deploy, measured from the caller's side: N calls keep talking to instance A while A is stopped
// (its drain hands each call on), and each call comes back the way Twilio brings it back: the socket
// closes, the <Connect action> callback goes to instance B, and the returned TwiML opens a new socket.
// The speech gap of a moved call is the time from the last frame it heard on A to the first token on B.
import { postAction } from '../src/testing/twilio-webhooks.js';
import { readRelayTwiml } from '../src/testing/twiml-reader.js';
import type { ChildHandle } from './child-process.js';
import { LeanCall, sid } from './lean-client.js';
import { mapLimit, percentile, round } from './stats.js';

export interface DeployOptions {
  sessions: number;
  /** Instance A's process: the calls start on it, and it is stopped (the process exits) during the run. */
  a: ChildHandle;
  portA: number;
  /** Instance B, on the same store as A (both open one SQLite file): the calls move to it. */
  portB: number;
  connectConcurrency: number;
  timeoutMs: number;
}

export interface DeployResult {
  sessions: number;
  /** Calls that came back on the other instance and heard it speak. */
  moved: number;
  /** Calls whose callback was not answered with reconnect TwiML, or that never heard a token after it. */
  lost: number;
  gapP50Ms: number | null;
  gapP99Ms: number | null;
  gapMaxMs: number | null;
  /** SIGTERM-equivalent stop of A to its exit: the drain as a whole. */
  drainMs: number;
}

/** A caller speaks again this long after the reply ends (listening and speaking take time on a real call). */
const THINK_MS = 200;

/** Keeps one call talking (prompt, reply, prompt...) and notes when it last heard anything. */
function keepTalking(call: LeanCall, state: { lastFrameAt: number; turns: number }): void {
  call.onText = (_token, last) => {
    state.lastFrameAt = performance.now();
    if (!last) return;
    state.turns++;
    setTimeout(() => call.open && call.prompt(`turn ${state.turns}`), THINK_MS);
  };
  call.prompt('turn 0');
}

/** The first text frame on a new socket: the resume line. */
function firstToken(call: LeanCall, timeoutMs: number): Promise<number | null> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(null), timeoutMs);
    call.onText = () => {
      clearTimeout(timer);
      call.onText = null;
      resolve(performance.now());
    };
  });
}

async function comeBack(call: LeanCall, lastFrameAt: () => number, httpUrl: string, timeoutMs: number): Promise<number | null> {
  await call.closed;
  const dropped = lastFrameAt();
  const res = await postAction(httpUrl, { CallSid: call.callSid, CallStatus: 'in-progress', SessionStatus: 'failed', ErrorCode: '64105' });
  if (res.status !== 200 || !res.body.includes('<ConversationRelay')) return null;
  const { relayUrl, parameters } = readRelayTwiml(res.body);
  if (!relayUrl) return null;
  const next = await LeanCall.open(relayUrl, call.callSid);
  const heard = firstToken(next, timeoutMs);
  // With the TwiML's <Parameter>s (the single-use resume token), as Twilio hands them over.
  next.sendSetup(sid('VX'), { callStatus: 'in-progress', customParameters: parameters });
  const at = await heard;
  await next.close();
  return at === null ? null : at - dropped;
}

export async function runDeploy(o: DeployOptions): Promise<DeployResult> {
  const calls = await mapLimit(Array.from({ length: o.sessions }), o.connectConcurrency, async () => {
    const call = await LeanCall.open(`ws://127.0.0.1:${o.portA}/relay`);
    const state = { lastFrameAt: performance.now(), turns: 0 };
    const firstTurn = new Promise<void>((resolve) => {
      call.onText = (_t, last) => last && resolve();
    });
    call.sendSetup();
    call.prompt('hello');
    await firstTurn;
    return { call, state };
  });
  for (const { call, state } of calls) keepTalking(call, state);
  // The balancer would send each callback to a live instance; here that is B.
  const gaps = calls.map(({ call, state }) => comeBack(call, () => state.lastFrameAt, `http://127.0.0.1:${o.portB}`, o.timeoutMs));
  const stopStarted = performance.now();
  await o.a.exit();
  const drainMs = performance.now() - stopStarted;
  const measured = (await Promise.all(gaps)).filter((g): g is number => g !== null);
  return {
    sessions: o.sessions,
    moved: measured.length,
    lost: o.sessions - measured.length,
    gapP50Ms: round(percentile(measured, 0.5)),
    gapP99Ms: round(percentile(measured, 0.99)),
    gapMaxMs: round(percentile(measured, 1)),
    drainMs: round(drainMs) ?? 0,
  };
}
