// Bounds every call into a SnapshotStore: a store that does not answer (Redis stopped or hung, a disk
// that blocks) fails the call with StoreTimeoutError after a fixed time instead of leaving a caller in
// silence; while the store is known down, calls fail at once; and every failure is reported once,
// here, for metrics and readiness.
import { StaleLeaseError, type SnapshotStore } from './types.js';

/** The store operations, as metric labels. */
export const STORE_OPS = ['acquire', 'acquire_and_load', 'save', 'load', 'current_epoch', 'delete', 'list', 'sweep', 'probe', 'issue_call_token', 'redeem_call_token'] as const;
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

/** A call not even tried: the store is known to be down (its latest probe failed). */
export class StoreUnavailableError extends Error {
  override name = 'StoreUnavailableError';
  constructor(
    readonly op: StoreOp,
    kind: string,
    reason: string,
  ) {
    super(`${kind} store unavailable (${op} not tried): ${reason}`);
  }
}

export interface TimeoutOptions {
  timeoutMs: number;
  /**
   * The reason the store is known to be down, or undefined. While there is one, every call but the
   * probe fails at once instead of waiting out the timeout, so calls queued behind each other during
   * an outage do not each wait their turn; the probe finds out when the store is back.
   */
  unavailable?: () => string | undefined;
  /**
   * Called for every failed call (timeouts included). A StaleLeaseError is fencing working as meant,
   * not a store fault, and is not reported.
   */
  onFailure?: (op: StoreOp, err: unknown) => void;
}

/** `store` with every call failing after `timeoutMs`; the call itself goes on and its late outcome is ignored. */
export function withTimeouts(store: SnapshotStore, opts: TimeoutOptions): SnapshotStore {
  const { timeoutMs, onFailure, unavailable } = opts;
  const bounded = <T>(op: StoreOp, call: () => Promise<T>): Promise<T> => {
    let timer: NodeJS.Timeout | undefined;
    let work: Promise<T>;
    const down = op === 'probe' ? undefined : unavailable?.();
    try {
      if (down !== undefined) throw new StoreUnavailableError(op, store.kind, down);
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
    acquire: (callSid, owner, opts) => bounded('acquire', () => store.acquire(callSid, owner, opts)),
    save: (lease, input) => bounded('save', () => store.save(lease, input)),
    load: (callSid) => bounded('load', () => store.load(callSid)),
    currentEpoch: (callSid) => bounded('current_epoch', () => store.currentEpoch(callSid)),
    delete: (lease) => bounded('delete', () => store.delete(lease)),
    list: () => bounded('list', () => store.list()),
    sweep: (now) => bounded('sweep', () => store.sweep(now)),
    issueCallToken: (callSid, grant) => bounded('issue_call_token', () => store.issueCallToken(callSid, grant)),
    redeemCallToken: (callSid, hash, now) => bounded('redeem_call_token', () => store.redeemCallToken(callSid, hash, now)),
    close: () => store.close(),
  };
  if (store.acquireAndLoad) {
    const acquireAndLoad = store.acquireAndLoad.bind(store);
    timed.acquireAndLoad = (callSid, owner, opts) => bounded('acquire_and_load', () => acquireAndLoad(callSid, owner, opts));
  }
  if (store.probe) {
    const probe = store.probe.bind(store);
    timed.probe = () => bounded('probe', probe);
  }
  if (store.onLeaseChange) timed.onLeaseChange = store.onLeaseChange.bind(store);
  return timed;
}
