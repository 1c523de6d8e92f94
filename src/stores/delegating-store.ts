// A store that forwards every call to another one, with some operations replaced: for wrappers that
// change one thing (a store that outlives its server, one that counts or holds writes).
import type { SnapshotStore } from './types.js';

/** `inner` with `overrides` in place of its own operations; optional operations are kept only if `inner` has them. */
export function delegatingStore(inner: SnapshotStore, overrides: Partial<SnapshotStore> = {}): SnapshotStore {
  const store: SnapshotStore = {
    kind: inner.kind,
    acquire: (callSid, owner, opts) => inner.acquire(callSid, owner, opts),
    save: (lease, input) => inner.save(lease, input),
    load: (callSid) => inner.load(callSid),
    currentEpoch: (callSid) => inner.currentEpoch(callSid),
    delete: (lease) => inner.delete(lease),
    list: () => inner.list(),
    sweep: (now) => inner.sweep(now),
    issueCallToken: (callSid, grant) => inner.issueCallToken(callSid, grant),
    redeemCallToken: (callSid, hash, now) => inner.redeemCallToken(callSid, hash, now),
    close: () => inner.close(),
  };
  if (inner.acquireAndLoad) store.acquireAndLoad = inner.acquireAndLoad.bind(inner);
  if (inner.probe) store.probe = inner.probe.bind(inner);
  if (inner.onLeaseChange) store.onLeaseChange = inner.onLeaseChange.bind(inner);
  return { ...store, ...overrides };
}
