// Which snapshot changes are worth a store write. Streamed reply text is not: a restored session
// regenerates an in-flight reply from scratch (see fromReplyStream in machines/reply.ts), so
// entering and leaving `responding` must be durable, every token in between need not be. With a
// real LLM the tokens arrive one per event-loop turn, so writing each would be one write per token.
import { matchesState, type SnapshotFrom } from 'xstate';
import type { SessionContext, SessionMachine } from '../machines/session.js';

type SessionSnapshot = SnapshotFrom<SessionMachine>;

/** True when `next` differs from `prev` only in the text of the reply being streamed. */
export function onlyReplyTextChanged(prev: SessionSnapshot, next: SessionSnapshot): boolean {
  if (prev === next || prev.status !== next.status) return false;
  const before = prev.context.reply;
  const after = next.context.reply;
  if (!before || !after || before === after) return false;
  // assign() keeps untouched context values by reference.
  for (const key of Object.keys(next.context) as Array<keyof SessionContext>) {
    if (key !== 'reply' && prev.context[key] !== next.context[key]) return false;
  }
  // Same state in every region (xstate's own state-value comparison, both ways) and the same children.
  return matchesState(prev.value, next.value) && matchesState(next.value, prev.value) && sameKeys(prev.children, next.children);
}

function sameKeys(a: object, b: object): boolean {
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  return ka.length === kb.length && ka.every((k) => k in b);
}
