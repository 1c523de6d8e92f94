// In-process snapshot store for development and tests; same contract as the durable stores.
import {
  DEFAULT_MIN_LEASE_MS,
  RecordChangedError,
  StaleLeaseError,
  type AcquireOptions,
  type CallTokenGrant,
  type Lease,
  type RetentionOptions,
  type SaveInput,
  type SessionRecord,
  type SnapshotStore,
} from './types.js';

interface CallTokenEntry extends CallTokenGrant {
  redeemed: boolean;
}

/** A record as held: its snapshot as JSON text, like the durable stores hold it. */
type HeldRecord = Omit<SessionRecord, 'snapshot'> & { snapshotJson: string };

interface EpochEntry {
  epoch: number;
  retainUntil: number;
}

export class MemoryStore implements SnapshotStore {
  readonly kind = 'memory' as const;
  private readonly records = new Map<string, HeldRecord>();
  private readonly epochs = new Map<string, EpochEntry>();
  private readonly callTokens = new Map<string, CallTokenEntry>();
  private readonly minLeaseMs: number;

  constructor(opts: RetentionOptions = {}) {
    this.minLeaseMs = opts.minLeaseMs ?? DEFAULT_MIN_LEASE_MS;
  }

  async acquire(callSid: string, owner: string, opts: AcquireOptions = {}): Promise<Lease> {
    const current = this.epochEntry(callSid).epoch;
    if (opts.ifEpoch !== undefined && current !== opts.ifEpoch) throw new StaleLeaseError(callSid, opts.ifEpoch, current);
    if (opts.ifRecordEpoch !== undefined) {
      // Read in the same synchronous step as the check and the bump: nothing can come in between.
      const recordEpoch = this.liveRecord(callSid)?.epoch ?? 0;
      if (recordEpoch !== opts.ifRecordEpoch) throw new RecordChangedError(callSid, current, opts.ifRecordEpoch, recordEpoch);
    }
    const epoch = current + 1;
    this.raiseEpoch(callSid, epoch, 0);
    return { callSid, owner, epoch };
  }

  async save(lease: Lease, input: SaveInput): Promise<void> {
    const now = Date.now();
    this.assertCurrent(lease);
    this.raiseEpoch(lease.callSid, lease.epoch, input.retainUntil);
    this.records.set(lease.callSid, {
      callSid: lease.callSid,
      // JSON text gives the same semantics as the durable stores and detaches caller objects.
      snapshotJson: JSON.stringify(input.snapshot) ?? 'null',
      state: input.state,
      epoch: lease.epoch,
      updatedAt: now,
      retainUntil: input.retainUntil,
    });
  }

  async load(callSid: string): Promise<SessionRecord | undefined> {
    const record = this.liveRecord(callSid);
    return record && recordOf(record);
  }

  async currentEpoch(callSid: string): Promise<number> {
    return this.epochs.get(callSid)?.epoch ?? 0;
  }

  async delete(lease: Lease): Promise<void> {
    this.assertCurrent(lease);
    // The epoch stays so an older owner cannot resurrect the session.
    this.records.delete(lease.callSid);
  }

  async list(): Promise<SessionRecord[]> {
    const now = Date.now();
    return [...this.records.values()]
      .filter((record) => record.retainUntil > now)
      .map(recordOf);
  }

  async issueCallToken(callSid: string, grant: CallTokenGrant): Promise<boolean> {
    const entry = this.callTokens.get(callSid);
    if (entry?.redeemed) return false;
    this.callTokens.set(callSid, { ...grant, keepUntil: Math.max(grant.keepUntil, entry?.keepUntil ?? 0), redeemed: false });
    return true;
  }

  async redeemCallToken(callSid: string, tokenHash: string, now: number): Promise<boolean> {
    const entry = this.callTokens.get(callSid);
    if (!entry || entry.redeemed || entry.hash !== tokenHash || entry.expiresAt <= now) return false;
    this.callTokens.set(callSid, { ...entry, hash: '', redeemed: true });
    return true;
  }

  async sweep(now = Date.now()): Promise<number> {
    let removed = 0;
    for (const [callSid, record] of this.records) {
      if (record.retainUntil > now) continue;
      this.records.delete(callSid);
      removed++;
    }
    for (const [callSid, entry] of this.epochs) {
      if (entry.retainUntil <= now) this.epochs.delete(callSid);
    }
    for (const [callSid, entry] of this.callTokens) {
      if (entry.keepUntil <= now) this.callTokens.delete(callSid);
    }
    return removed;
  }

  async probe(): Promise<void> {
    // Nothing here can fail to be written.
  }

  async close(): Promise<void> {
    this.records.clear();
    this.epochs.clear();
    this.callTokens.clear();
  }

  private liveRecord(callSid: string): HeldRecord | undefined {
    const record = this.records.get(callSid);
    return record && record.retainUntil > Date.now() ? record : undefined;
  }

  private epochEntry(callSid: string): EpochEntry {
    return this.epochs.get(callSid) ?? { epoch: 0, retainUntil: 0 };
  }

  /** Raises the stored epoch to at least `epoch`; it is kept at least as long as the record it guards. */
  private raiseEpoch(callSid: string, epoch: number, retainUntil: number): void {
    const entry = this.epochEntry(callSid);
    this.epochs.set(callSid, {
      epoch: Math.max(entry.epoch, epoch),
      retainUntil: Math.max(entry.retainUntil, retainUntil, Date.now() + this.minLeaseMs),
    });
  }

  private assertCurrent(lease: Lease): void {
    const current = this.epochs.get(lease.callSid)?.epoch ?? 0;
    if (lease.epoch < current) throw new StaleLeaseError(lease.callSid, lease.epoch, current);
  }
}

function recordOf({ snapshotJson, ...rest }: HeldRecord): SessionRecord {
  return { ...rest, snapshot: JSON.parse(snapshotJson) as unknown };
}
