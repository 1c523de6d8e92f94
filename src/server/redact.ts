// What the admin views may show of a session: state and conversation shape, never keypad digits.
import type { SnapshotFrom } from 'xstate';
import { lifecycleOf, type SessionMachine } from '../machines/session.js';

const mask = (value: string) => (value.length > 4 ? `${'*'.repeat(value.length - 4)}${value.slice(-4)}` : '****');

export function redactSession(snapshot: SnapshotFrom<SessionMachine>) {
  const c = snapshot.context;
  const dtmfToolIds = new Set(
    c.history.flatMap((t) => (t.role === 'assistant' ? (t.toolCalls ?? []).filter((x) => x.name === 'collect_digits').map((x) => x.id) : [])),
  );
  const child = snapshot.children['dtmf']?.getSnapshot() as { context?: { buffer?: string } } | undefined;
  return {
    callSid: c.callSid,
    sessionId: c.sessionId,
    state: lifecycleOf(snapshot.value),
    value: snapshot.value,
    from: mask(c.from),
    to: mask(c.to),
    language: c.language,
    resumes: c.resumes,
    disconnects: c.disconnects,
    graceDeadline: c.graceDeadline,
    dtmf: c.dtmf ? { kind: c.dtmf.kind, digitsEntered: child?.context?.buffer?.length ?? 0 } : null,
    history: c.history.map((t) => (t.role === 'tool' && dtmfToolIds.has(t.toolCallId) ? { ...t, content: '[redacted]' } : t)),
  };
}
