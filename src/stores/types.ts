// Snapshot store contract shared by the memory, SQLite and Redis implementations.

/** Ownership of one session: whoever holds the highest epoch may write it. */
export interface Lease {
  callSid: string;
  /** Identifies the server instance (and process) that owns the session. */
  owner: string;
  /** Fencing token: strictly increases every time any instance acquires the session. */
  epoch: number;
}

export interface SessionRecord {
  callSid: string;
  /** JSON-serialisable output of actor.getPersistedSnapshot(). */
  snapshot: unknown;
  /** Top-level lifecycle state at save time (connected, grace, expired, ...), for listings. */
  state: string;
  /** Epoch of the lease that wrote this record. */
  epoch: number;
  /** Epoch ms of the write. */
  updatedAt: number;
  /** Epoch ms after which the store forgets the session (state retention). */
  retainUntil: number;
}

export type SaveInput = Omit<SessionRecord, 'callSid' | 'epoch' | 'updatedAt'>;

/**
 * Thrown when a write carries an epoch lower than the current one (another instance owns the session),
 * or a conditional acquire finds the session changed since it was read.
 */
export class StaleLeaseError extends Error {
  override name = 'StaleLeaseError';
  constructor(
    readonly callSid: string,
    readonly epoch: number,
    readonly currentEpoch: number,
    message = `stale lease for ${callSid}: epoch ${epoch} < current ${currentEpoch}`,
  ) {
    super(message);
  }
}

/**
 * A conditional takeover (`ifRecordEpoch`) found the record rewritten since it was read: nothing was
 * taken. Not a lost race as such: the session is as its newer record says, to be judged again.
 */
export class RecordChangedError extends StaleLeaseError {
  override name = 'RecordChangedError';
  constructor(
    callSid: string,
    currentEpoch: number,
    /** The record's writer epoch the takeover was conditional on. */
    readonly expectedRecordEpoch: number,
    /** The stored record's writer epoch now: 0 when it is gone, -1 when it could not be read. */
    readonly recordEpoch: number,
  ) {
    super(callSid, currentEpoch, currentEpoch, `stale takeover of ${callSid}: its record was written at epoch ${recordEpoch}, not ${expectedRecordEpoch} as read`);
  }
}

/** How long stores keep what they hold; the server passes its configured retention. */
export interface RetentionOptions {
  /**
   * A fencing epoch is kept at least this long after the acquire or save that last touched it, and
   * never less long than the record it guards. Default 24 h; the server passes RETENTION_MS, so an
   * epoch goes when its record does (or one retention after an acquire that never saved).
   */
  minLeaseMs?: number;
}

/** The default of `minLeaseMs` for stores built without a configuration (tests, tools). */
export const DEFAULT_MIN_LEASE_MS = 24 * 60 * 60_000;

/** A new call's single-use admission token, as the store keeps it: only its hash. */
export interface CallTokenGrant {
  /** sha256 of the token /twiml handed Twilio in a `<Parameter name="callToken">`. */
  hash: string;
  /** Epoch ms after which the token no longer admits the call. */
  expiresAt: number;
  /** Epoch ms until which the call's entry is kept, so a redeemed call cannot be issued a new token. */
  keepUntil: number;
}

/** A conditional acquire: only if the session is still as seen, else StaleLeaseError and nothing changes. */
export interface AcquireOptions {
  /** Only if the fencing epoch is still this one: nobody acquired the session since. */
  ifEpoch?: number;
  /**
   * Only if the stored record is still the one written under this epoch (its `epoch`), as well. A
   * takeover judged the record it read; a resume that acquired and then stored itself (and spoke) has
   * not moved the epoch since, only the record. A lease taken and never written leaves it unchanged.
   */
  ifRecordEpoch?: number;
}

export interface SnapshotStore {
  readonly kind: 'memory' | 'sqlite' | 'redis';
  /**
   * Takes ownership of a session (newest wins): bumps and returns the fencing epoch. With `ifEpoch`,
   * only if nobody acquired the session since that epoch was seen (two racing resumes: one wins);
   * with `ifRecordEpoch`, only if nobody rewrote its record either (RecordChangedError).
   */
  acquire(callSid: string, owner: string, opts?: AcquireOptions): Promise<Lease>;
  /**
   * acquire() then load() as one atomic step, where a store can do it in one round trip (Redis);
   * the record is read after the epoch moved, so no older owner's write can land after it.
   */
  acquireAndLoad?(callSid: string, owner: string, opts?: AcquireOptions): Promise<{ lease: Lease; record: SessionRecord | undefined }>;
  /** Atomically checks the lease epoch against the current one and writes; throws StaleLeaseError. */
  save(lease: Lease, input: SaveInput): Promise<void>;
  /** Returns the record unless missing or past retainUntil. */
  load(callSid: string): Promise<SessionRecord | undefined>;
  /** Current fencing epoch (0 when never acquired). */
  currentEpoch(callSid: string): Promise<number>;
  /** Removes a session if the lease is still current; throws StaleLeaseError otherwise. */
  delete(lease: Lease): Promise<void>;
  /** Lists live (not past retention) records, for admin views. */
  list(): Promise<SessionRecord[]>;
  /** Drops records past retention; returns how many were removed. Redis relies on TTLs and returns 0. */
  sweep(now?: number): Promise<number>;
  /**
   * Issues (or, while not yet redeemed, re-issues: Twilio may post /twiml again) the admission token
   * of a new call. False once the call's token was redeemed: the call already connected.
   */
  issueCallToken(callSid: string, grant: CallTokenGrant): Promise<boolean>;
  /**
   * Redeems the call's token, atomically across instances: true once, for the issued hash before it
   * expires; false for anything else (unknown, wrong, expired, or already redeemed).
   */
  redeemCallToken(callSid: string, tokenHash: string, now: number): Promise<boolean>;
  /**
   * Optional: calls `listener` whenever any instance acquires a session, so a stale owner can stop
   * at once instead of at its next (rejected) write. Redis announces acquires over pub/sub.
   */
  onLeaseChange?(listener: (callSid: string, epoch: number) => void): void;
  /**
   * Optional: one small real write to a reserved place (never a session), for readiness checks.
   * Rejects when the store cannot be written (read-only file, full disk, Redis down or hung).
   */
  probe?(): Promise<void>;
  close(): Promise<void>;
}
