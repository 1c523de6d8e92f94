// How a call ends when its session cannot be started or restored (the store does not answer).
// The socket edge sends `end` with this handoff marker; Twilio then posts the <Connect action> callback
// with SessionStatus=ended and the marker, and /action answers the apology as <Say> and <Hangup/>,
// without touching the store. TwiML <Say> is spoken in full before the hang-up, whatever state the
// relay session was in when it ended. (A socket that closes instead reaches /action as 64105, which
// answers the same apology when the store still fails.)
import type { EndMessage } from '../protocol/messages.js';

const REASON = 'service-unavailable';

export const serviceUnavailableEnd: EndMessage = { type: 'end', handoffData: JSON.stringify({ reason: REASON }) };

/** Whether an action callback's HandoffData is the marker above. */
export function isServiceUnavailableHandoff(handoffData: string | undefined): boolean {
  if (!handoffData) return false;
  try {
    return (JSON.parse(handoffData) as { reason?: unknown } | null)?.reason === REASON;
  } catch {
    return false;
  }
}
