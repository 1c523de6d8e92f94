// Calls for the retention soak: ones that hang up, drop (and expire after their grace), or drop and
// are resumed through Twilio's action path before hanging up. No test-framework imports (and none of
// the helpers that use vi): the memory soak runs them in a child process started with --expose-gc.
import { SimulatedCall, twilioReconnectOptions } from '../../src/testing/twilio-sim.js';
import { readRelayTwiml } from '../../src/testing/twiml-reader.js';
import { postAction } from '../../src/testing/twilio-webhooks.js';
import type { RunningServer } from '../../src/server/server.js';

export type SoakKind = 'hang-up' | 'drop' | 'drop-and-resume';
export const SOAK_KINDS: SoakKind[] = ['hang-up', 'drop', 'drop-and-resume'];

/** Polls `condition` until it holds; rejects with `what` after `timeoutMs`. */
export async function pollUntil(condition: () => boolean | Promise<boolean>, what: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** The caller hangs up: Twilio closes the socket and posts the action callback with status completed. */
async function hangUp(server: RunningServer, call: SimulatedCall): Promise<void> {
  await call.close();
  const res = await postAction(server.httpUrl, { CallSid: call.callSid, CallStatus: 'completed', SessionId: call.sessionId, SessionStatus: 'completed' });
  if (res.status !== 200) throw new Error(`action callback answered HTTP ${res.status}`);
}

/** Twilio after a dropped socket: the action callback (64105), then a new socket where its TwiML says. */
async function resumeViaTwilio(server: RunningServer, call: SimulatedCall): Promise<SimulatedCall> {
  const res = await postAction(server.httpUrl, {
    CallSid: call.callSid,
    CallStatus: 'in-progress',
    SessionId: call.sessionId,
    SessionStatus: 'failed',
    ErrorCode: '64105',
  });
  const url = res.status === 200 ? readRelayTwiml(res.body).relayUrl : undefined;
  if (!url) throw new Error(`/action did not ask Twilio to reconnect: HTTP ${res.status} ${res.body}`);
  // With the resume token the TwiML carries, as Twilio hands it over.
  return SimulatedCall.connect(twilioReconnectOptions(res.body, call));
}

/** One call of `kind`, with one exchange first; resolves once the caller's side is done. */
export async function placeCall(server: RunningServer, kind: SoakKind): Promise<string> {
  const call = await SimulatedCall.connect({ url: server.relayUrl });
  await pollUntil(() => server.manager.get(call.callSid) !== undefined, `session for ${call.callSid}`, 10_000);
  call.prompt('hello there');
  await call.nextReply(10_000);
  if (kind === 'hang-up') {
    await hangUp(server, call);
  } else {
    await call.drop();
    if (kind === 'drop-and-resume') {
      const resumed = await resumeViaTwilio(server, call);
      await resumed.nextReply(10_000); // the resume line
      await hangUp(server, resumed);
    }
  }
  return call.callSid;
}

/** `perKind` calls of each kind, ten at a time; resolves with every callSid once every session finished. */
export async function soakRound(server: RunningServer, perKind: number, finishedWithinMs: number): Promise<string[]> {
  const kinds = SOAK_KINDS.flatMap((k) => Array.from({ length: perKind }, () => k));
  const sids: string[] = [];
  for (let i = 0; i < kinds.length; i += 10) sids.push(...(await Promise.all(kinds.slice(i, i + 10).map((k) => placeCall(server, k)))));
  // Dropped calls finish when their grace runs out: then only the store holds anything of them.
  await pollUntil(() => server.manager.size === 0, 'every session finished', finishedWithinMs);
  return sids;
}
