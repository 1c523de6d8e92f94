// Bounds every call into a SnapshotStore: a store that does not answer (Redis stopped or hung, a disk
// that blocks) fails the call with StoreTimeoutError after a fixed time instead of leaving a caller in
// silence, and every failure is reported once, here, for metrics and readiness.
import { StaleLeaseError, type SnapshotStore } from './types.js';

/** The store operations, as metric labels. */
export const STORE_OPS = ['acquire', 'acquire_and_load', 'save', 'load', 'current_epoch', 'delete', 'list', 'sweep', 'probe'] as const;
export type StoreOp = (typeof STORE_OPS)[number];

export class StoreTimeoutError extends Error {
  override name = 'StoreTimeoutError';
  constructor(
    readonly op: StoreOp,
    readonly timeoutMs: number,
    kind: string,
  ) {
    super(`${kind} store did not answer ${op} within ${timeoutMs} ms`);
  }
}

export interface TimeoutOptions {
  timeoutMs: number;
  /**
   * Called for every failed call (timeouts included). A StaleLeaseError is fencing working as meant,
   * not a store fault, and is not reported.
   */
  onFailure?: (op: StoreOp, err: unknown) => void;
}

/** `store` with every call failing after `timeoutMs`; the call itself goes on and its late outcome is ignored. */
export function withTimeouts(store: SnapshotStore, opts: TimeoutOptions): SnapshotStore {
  const { timeoutMs, onFailure } = opts;
  const bounded = <T>(op: StoreOp, call: () => Promise<T>): Promise<T> => {
    let timer: NodeJS.Timeout | undefined;
    let work: Promise<T>;
    try {
      work = call();
    } catch (err) {
      work = Promise.reject(err); // a synchronous throw (better-sqlite3) is a failure like any other
    }
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new StoreTimeoutError(op, timeoutMs, store.kind)), timeoutMs);
    });
    // race() subscribes to `work`, so its rejection after a timeout is handled, not unhandled.
    return Promise.race([work, timeout]).then(
      (value) => {
        clearTimeout(timer);
        return value;
      },
      (err: unknown) => {
        clearTimeout(timer);
        if (!(err instanceof StaleLeaseError)) onFailure?.(op, err);
        throw err;
      },
    );
  };

  const timed: SnapshotStore = {
    kind: store.kind,
    acquire: (callSid, owner) => bounded('acquire', () => store.acquire(callSid, owner)),
    save: (lease, input) => bounded('save', () => store.save(lease, input)),
    load: (callSid) => bounded('load', () => store.load(callSid)),
    currentEpoch: (callSid) => bounded('current_epoch', () => store.currentEpoch(callSid)),
    delete: (lease) => bounded('delete', () => store.delete(lease)),
    list: () => bounded('list', () => store.list()),
    sweep: (now) => bounded('sweep', () => store.sweep(now)),
    close: () => store.close(),
  };
  if (store.acquireAndLoad) {
    const acquireAndLoad = store.acquireAndLoad.bind(store);
    timed.acquireAndLoad = (callSid, owner) => bounded('acquire_and_load', () => acquireAndLoad(callSid, owner));
  }
  if (store.probe) {
    const probe = store.probe.bind(store);
    timed.probe = () => bounded('probe', probe);
  }
  if (store.onLeaseChange) timed.onLeaseChange = store.onLeaseChange.bind(store);
  return timed;
}
