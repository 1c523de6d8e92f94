// What the admin views may show of a session: state and conversation shape, under the one redaction
// rule (redaction.ts): no keypad digits or results, masked numbers, no card-like runs in the transcript.
import { lifecycleOf } from '../machines/session.js';
import type { SessionView } from './sessions/live-session.js';
import { redact } from './redaction.js';

export function redactSession(snapshot: SessionView) {
  const c = snapshot.context;
  const child = snapshot.children['dtmf']?.getSnapshot() as { context?: { buffer?: string } } | undefined;
  return redact({
    callSid: c.callSid,
    state: lifecycleOf(snapshot.value),
    value: snapshot.value,
    from: c.from,
    to: c.to,
    language: c.language,
    resumes: c.resumes,
    disconnects: c.disconnects,
    graceDeadline: c.graceDeadline,
    // How far the entry is, never what was typed.
    dtmf: c.dtmf ? { kind: c.dtmf.kind, digitsEntered: child?.context?.buffer?.length ?? 0 } : null,
    history: c.history,
  });
}
