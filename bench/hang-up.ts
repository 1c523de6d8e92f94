// A caller hanging up, as Twilio reports it: the socket closes, then the <Connect action> callback
// says the call completed, and the server ends the session (without the callback, a closed socket
// leaves the session waiting out its grace period for a reconnect).
import { postAction } from '../src/testing/twilio-webhooks.js';
import type { LeanCall } from './lean-client.js';
import { closeAll } from './load.js';
import { mapLimit } from './stats.js';

/**
 * The callback for a call whose socket is closed. A saturated server can be slow to accept it: it
 * is tried twice, and one that still fails only leaves a session waiting out its grace period, so
 * it never fails the caller (a turn, a run).
 */
export async function postHangUp(httpUrl: string, callSid: string): Promise<void> {
  const params = { CallSid: callSid, CallStatus: 'completed', SessionStatus: 'completed' };
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await postAction(httpUrl, params);
      return;
    } catch {
      // once more
    }
  }
}

export async function hangUpAll(calls: readonly LeanCall[], httpUrl: string, concurrency: number): Promise<void> {
  await closeAll(calls);
  await mapLimit(calls, concurrency, (call) => postHangUp(httpUrl, call.callSid));
}
