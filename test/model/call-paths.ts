// Which paths of the call model run against the server. The model's exact state space (every
// counter combination) is too large to execute, so paths are chosen in two ways, both from
// @xstate/graph traversals of the exact states (so each path's states are the ones its events
// produce): the shortest path to every coverage class (see coverageKey), and a few long simple
// paths over the link events only, which chain resumes, expiries and restarts in mixed orders.
import { createTestModel, type TestPath } from '@xstate/graph';
import type { SnapshotFrom } from 'xstate';
import { LIMITS, callModel, coverageKey, type CallModel, type CallModelEvent, type StoreKind } from './call-model.js';

export type ModelSnapshot = SnapshotFrom<CallModel>;
export type CallPath = TestPath<ModelSnapshot, CallModelEvent>;

const LINK_EVENTS: CallModelEvent[] = [
  { type: 'CONNECT' },
  { type: 'DROP' },
  { type: 'ACTION' },
  { type: 'RESUME_TWILIO' },
  { type: 'RESUME_RECONNECT' },
  { type: 'GRACE_EXPIRE' },
  { type: 'SERVER_RESTART' },
];

function testModel() {
  // Exact identity (the context includes `via`), so traversals never merge states with different expectations.
  return createTestModel(callModel, { serializeState: (s) => JSON.stringify([s.value, s.context]) });
}

const eventsOf = (path: CallPath) => path.steps.map((s) => s.event.type).join(' ');

/** Drops paths whose events are a prefix of another path's: the longer one checks the same states. */
function withoutPrefixes(paths: CallPath[]): CallPath[] {
  const sequences = paths.map(eventsOf);
  return paths.filter((_, i) => !sequences.some((other, j) => j !== i && other.startsWith(`${sequences[i]} `)));
}

/** The shortest path to each coverage class, prefixes removed. */
export function shortestPaths(store: StoreKind): CallPath[] {
  const best = new Map<string, CallPath>();
  for (const path of testModel().getShortestPaths({ input: { store }, allowDuplicatePaths: true })) {
    const key = coverageKey(path.state);
    const known = best.get(key);
    if (!known || path.weight < known.weight) best.set(key, path);
  }
  return withoutPrefixes([...best.values()]);
}

/**
 * Simple paths over the link events that end on the line after every drop (and restart) the model
 * allows; `limit` of them, spread evenly over the (deterministic) list.
 */
export function simplePaths(store: StoreKind, limit: number): CallPath[] {
  const restarts = store === 'memory' ? 0 : LIMITS.restarts;
  const paths = testModel().getSimplePaths({
    input: { store },
    events: LINK_EVENTS,
    toState: (s) => s.value === 'connected' && s.context.drops === LIMITS.drops && s.context.restarts === restarts,
  });
  if (paths.length <= limit) return paths;
  return Array.from({ length: limit }, (_, i) => paths[Math.floor((i * paths.length) / limit)]!);
}
