// Calls for the retention soak: ones that hang up, drop (and expire after their grace), or drop and
// are resumed through Twilio's action path before hanging up. No test-framework imports: the memory
// soak runs them in a child process started with --expose-gc.
import { SimulatedCall } from '../../src/client/twilio-sim.js';
import { postAction } from '../../src/client/twilio-webhooks.js';
import type { RunningServer } from '../../src/server/server.js';
import { waitUntil } from './conditions.js';
import { resumeViaTwilio } from './resume-scenario.js';

export type SoakKind = 'hang-up' | 'drop' | 'drop-and-resume';
export const SOAK_KINDS: SoakKind[] = ['hang-up', 'drop', 'drop-and-resume'];

/** The caller hangs up: Twilio closes the socket and posts the action callback with status completed. */
async function hangUp(server: RunningServer, call: SimulatedCall): Promise<void> {
  await call.close();
  const res = await postAction(server.httpUrl, { CallSid: call.callSid, CallStatus: 'completed', SessionId: call.sessionId, SessionStatus: 'completed' });
  if (res.status !== 200) throw new Error(`action callback answered HTTP ${res.status}`);
}

/** One call of `kind`, with one exchange first; resolves once the caller's side is done. */
export async function placeCall(server: RunningServer, kind: SoakKind): Promise<string> {
  const call = await SimulatedCall.connect({ url: server.relayUrl });
  await waitUntil(() => server.manager.get(call.callSid) !== undefined, `session for ${call.callSid}`);
  call.prompt('hello there');
  await call.nextReply(10_000);
  if (kind === 'hang-up') {
    await hangUp(server, call);
  } else {
    await call.drop();
    if (kind === 'drop-and-resume') {
      const { call: resumed } = await resumeViaTwilio(server.httpUrl, call);
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
  await waitUntil(() => server.manager.size === 0, 'every session finished', finishedWithinMs);
  return sids;
}
