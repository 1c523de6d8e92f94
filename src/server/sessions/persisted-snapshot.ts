// A session's persisted snapshot, as actor.getPersistedSnapshot() gives it, without xstate's walk of
// the context in search of actor references: a session's context is plain data (its children are
// invoked, never kept in context), and the walk visited every history turn with for...in on each
// store write, about 30 us a write with a 40-message history. The machine's own getPersistedSnapshot
// still builds the rest (state value, history value, children's snapshots); it is handed an empty
// context, and the session's context goes in its place, as the walk would have returned it.
import type { Actor } from 'xstate';
import type { SessionMachine } from '../../machines/session.js';

const NO_CONTEXT = Object.freeze({});

type Persisted = ReturnType<Actor<SessionMachine>['getPersistedSnapshot']>;

export function persistedSnapshotOf(actor: Actor<SessionMachine>): Persisted {
  const snapshot = actor.getSnapshot();
  const persisted = snapshot.machine.getPersistedSnapshot({ ...snapshot, context: NO_CONTEXT } as unknown as typeof snapshot);
  return { ...persisted, context: snapshot.context } as unknown as Persisted;
}
