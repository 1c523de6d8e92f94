// Which snapshot notifications are worth a store write. XState tells observers after every event,
// also when nothing changed: a streamed token only emits (its reply actor keeps the text), so the
// session's snapshot stays the same object and nothing is written per token. A keypad press changes
// only the keypad child's snapshot, which the stored snapshot includes: that one is written.
import type { SnapshotFrom } from 'xstate';
import type { SessionMachine } from '../machines/session.js';

type SessionSnapshot = SnapshotFrom<SessionMachine>;

/** What a stored snapshot is made of: the session's own snapshot and each child's. */
export interface Observed {
  snapshot: SessionSnapshot;
  children: unknown[];
}

export function observe(snapshot: SessionSnapshot): Observed {
  return { snapshot, children: Object.values(snapshot.children).map((child) => child?.getSnapshot()) };
}

/** True when nothing a store write would hold differs between `prev` and `next`. */
export function unchanged(prev: Observed, next: SessionSnapshot): boolean {
  if (prev.snapshot !== next) return false;
  const children = Object.values(next.children);
  return children.length === prev.children.length && children.every((child, i) => child?.getSnapshot() === prev.children[i]);
}
