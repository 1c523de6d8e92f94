// Which snapshot changes are worth a store write. Streamed reply text is not: a restored session
// regenerates an in-flight reply from scratch (see withRestartedReply in session-manager.ts), so
// entering and leaving `responding` must be durable, every token in between need not be. With a
// real LLM the tokens arrive one per event-loop turn, so writing each would be one write per token.
import type { SnapshotFrom } from 'xstate';
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
  return sameValue(prev.value, next.value) && sameKeys(prev.children, next.children);
}

function sameValue(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  const keys = Object.keys(a);
  if (!sameKeys(a, b)) return false;
  return keys.every((k) => sameValue((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

function sameKeys(a: object, b: object): boolean {
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  return ka.length === kb.length && ka.every((k) => k in b);
}
