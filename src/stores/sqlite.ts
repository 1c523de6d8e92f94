// Durable single-host snapshot store on SQLite (better-sqlite3, WAL).
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
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

/**
 * A lease row is extended a little beyond what a save needs, so the saves after it need not touch it:
 * a quarter of the lease time, at most an hour, so it outlives its record by no more than that.
 */
const EPOCH_EXTEND_SLACK_MAX_MS = 60 * 60_000;

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS records (
    call_sid     TEXT PRIMARY KEY,
    snapshot     TEXT NOT NULL,
    state        TEXT NOT NULL,
    epoch        INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    retain_until INTEGER NOT NULL
  );
  CREATE INDEX IF NOT EXISTS records_retain_until ON records (retain_until);
  CREATE TABLE IF NOT EXISTS leases (
    call_sid     TEXT PRIMARY KEY,
    owner        TEXT NOT NULL,
    epoch        INTEGER NOT NULL,
    retain_until INTEGER NOT NULL
  );
  CREATE INDEX IF NOT EXISTS leases_retain_until ON leases (retain_until);
  CREATE TABLE IF NOT EXISTS call_tokens (
    call_sid   TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    keep_until INTEGER NOT NULL,
    redeemed   INTEGER NOT NULL DEFAULT 0
  );
  CREATE INDEX IF NOT EXISTS call_tokens_keep_until ON call_tokens (keep_until);
  CREATE TABLE IF NOT EXISTS probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at INTEGER NOT NULL
  );
`;

interface RecordRow {
  call_sid: string;
  snapshot: string;
  state: string;
  epoch: number;
  updated_at: number;
  retain_until: number;
}

interface LeaseParams {
  callSid: string;
  owner: string;
  epoch: number;
  retainUntil: number;
}

export interface SqliteStoreOptions extends RetentionOptions {
  /**
   * How long a write waits for another process's write lock before failing; default 5 s. better-sqlite3
   * waits synchronously, so the server keeps this within its store timeout.
   */
  busyTimeoutMs?: number;
}

/** A save waiting for its group commit. */
interface PendingSave {
  lease: Lease;
  row: RecordRow;
  resolve: () => void;
  reject: (err: unknown) => void;
  failed?: Error;
}

/**
 * Expired rows are dropped by sweep(), which the server calls on a schedule derived from its retention
 * (src/server/store-sweeper.ts); the store runs no timer of its own.
 */
export class SqliteStore implements SnapshotStore {
  readonly kind = 'sqlite' as const;
  private readonly db: Database.Database;
  private readonly stmt;
  private readonly acquireTx;
  private readonly saveTx;
  private readonly saveGroupTx;
  /** Saves made in this event-loop turn, committed together by the next one (group commit). */
  private pendingSaves: PendingSave[] = [];
  private readonly deleteTx;
  private readonly minLeaseMs: number;
  private readonly leaseSlackMs: number;

  constructor(
    readonly file: string,
    opts: SqliteStoreOptions = {},
  ) {
    this.minLeaseMs = opts.minLeaseMs ?? DEFAULT_MIN_LEASE_MS;
    this.leaseSlackMs = Math.min(EPOCH_EXTEND_SLACK_MAX_MS, Math.floor(this.minLeaseMs / 4));
    this.db = openDatabase(file, opts.busyTimeoutMs ?? 5000);
    const db = this.db;
    this.stmt = {
      // Newest wins: every acquire bumps the epoch, creating the lease row on first use.
      acquire: db.prepare<LeaseParams, { epoch: number }>(`
        INSERT INTO leases (call_sid, owner, epoch, retain_until) VALUES (@callSid, @owner, @epoch, @retainUntil)
        ON CONFLICT (call_sid) DO UPDATE SET
          epoch = epoch + 1,
          owner = excluded.owner,
          retain_until = MAX(retain_until, excluded.retain_until)
        RETURNING epoch`),
      epoch: db.prepare<[string], { epoch: number; retain_until: number }>('SELECT epoch, retain_until FROM leases WHERE call_sid = ?'),
      // Keeps the epoch at least as long as the record it guards (and restores it if it was swept).
      keepLease: db.prepare<LeaseParams>(`
        INSERT INTO leases (call_sid, owner, epoch, retain_until) VALUES (@callSid, @owner, @epoch, @retainUntil)
        ON CONFLICT (call_sid) DO UPDATE SET
          epoch = MAX(epoch, excluded.epoch),
          retain_until = MAX(retain_until, excluded.retain_until)`),
      upsert: db.prepare<[RecordRow]>(`
        INSERT INTO records (call_sid, snapshot, state, epoch, updated_at, retain_until)
        VALUES (@call_sid, @snapshot, @state, @epoch, @updated_at, @retain_until)
        ON CONFLICT (call_sid) DO UPDATE SET
          snapshot = excluded.snapshot, state = excluded.state, epoch = excluded.epoch,
          updated_at = excluded.updated_at, retain_until = excluded.retain_until`),
      load: db.prepare<[string, number], RecordRow>('SELECT * FROM records WHERE call_sid = ? AND retain_until > ?'),
      recordEpoch: db.prepare<[string, number], { epoch: number }>('SELECT epoch FROM records WHERE call_sid = ? AND retain_until > ?'),
      list: db.prepare<[number], RecordRow>('SELECT * FROM records WHERE retain_until > ? ORDER BY updated_at DESC'),
      deleteRecord: db.prepare<[string]>('DELETE FROM records WHERE call_sid = ?'),
      sweepRecords: db.prepare<[number]>('DELETE FROM records WHERE retain_until <= ?'),
      sweepLeases: db.prepare<[number]>('DELETE FROM leases WHERE retain_until <= ?'),
      // A redeemed call keeps its row (and gets no new token) until keep_until.
      issueCallToken: db.prepare<{ callSid: string; hash: string; expiresAt: number; keepUntil: number }>(`
        INSERT INTO call_tokens (call_sid, token_hash, expires_at, keep_until) VALUES (@callSid, @hash, @expiresAt, @keepUntil)
        ON CONFLICT (call_sid) DO UPDATE SET
          token_hash = excluded.token_hash, expires_at = excluded.expires_at, keep_until = MAX(keep_until, excluded.keep_until)
        WHERE redeemed = 0`),
      redeemCallToken: db.prepare<[string, string, number]>(`
        UPDATE call_tokens SET redeemed = 1, token_hash = ''
        WHERE call_sid = ? AND redeemed = 0 AND token_hash = ? AND expires_at > ?`),
      sweepCallTokens: db.prepare<[number]>('DELETE FROM call_tokens WHERE keep_until <= ?'),
      probe: db.prepare<[number]>('INSERT INTO probe (id, at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET at = excluded.at'),
    };

    // IMMEDIATE takes the write lock up front, so the epoch read and the write cannot interleave
    // with another process's acquire.
    // In its own transaction: a RETURNING statement read with get() commits when it is reset, where
    // better-sqlite3 does not report a failed commit (a read-only or full disk), and the epoch would
    // be handed out without being stored. An explicit COMMIT throws.
    this.acquireTx = db.transaction((params: LeaseParams, { ifEpoch, ifRecordEpoch }: AcquireOptions) => {
      if (ifEpoch !== undefined || ifRecordEpoch !== undefined) {
        const current = this.stmt.epoch.get(params.callSid)?.epoch ?? 0;
        if (ifEpoch !== undefined && current !== ifEpoch) throw new StaleLeaseError(params.callSid, ifEpoch, current);
        if (ifRecordEpoch !== undefined) {
          const recordEpoch = this.stmt.recordEpoch.get(params.callSid, Date.now())?.epoch ?? 0;
          if (recordEpoch !== ifRecordEpoch) throw new RecordChangedError(params.callSid, current, ifRecordEpoch, recordEpoch);
        }
      }
      return this.stmt.acquire.get(params);
    }).immediate;
    this.saveTx = db.transaction((lease: Lease, row: RecordRow) => {
      const current = this.assertCurrent(lease);
      this.stmt.upsert.run(row);
      const keepUntil = Math.max(row.retain_until, row.updated_at + this.minLeaseMs);
      if (current && current.epoch >= lease.epoch && current.retain_until >= keepUntil) return;
      this.stmt.keepLease.run({ callSid: lease.callSid, owner: lease.owner, epoch: lease.epoch, retainUntil: keepUntil + this.leaseSlackMs });
    }).immediate;
    // One transaction for a turn's saves, each in its own savepoint (the nested saveTx): a fenced save
    // fails alone and writes nothing; the others commit. A commit costs more than a save's own writes.
    this.saveGroupTx = db.transaction((group: PendingSave[]) => {
      for (const save of group) {
        try {
          this.saveTx(save.lease, save.row);
        } catch (err) {
          save.failed = err instanceof Error ? err : new Error(String(err));
        }
      }
    }).immediate;
    this.deleteTx = db.transaction((lease: Lease) => {
      this.assertCurrent(lease);
      // The lease row stays so an older owner cannot resurrect the session.
      this.stmt.deleteRecord.run(lease.callSid);
    }).immediate;
  }

  async acquire(callSid: string, owner: string, opts: AcquireOptions = {}): Promise<Lease> {
    const row = this.acquireTx({ callSid, owner, epoch: 1, retainUntil: Date.now() + this.minLeaseMs }, opts);
    if (!row) throw new Error(`acquire returned no epoch for ${callSid}`);
    return { callSid, owner, epoch: row.epoch };
  }

  /** Resolves once the save is committed: with the other saves made in the same event-loop turn. */
  async save(lease: Lease, input: SaveInput): Promise<void> {
    const row: RecordRow = {
      call_sid: lease.callSid,
      snapshot: JSON.stringify(input.snapshot) ?? 'null',
      state: input.state,
      epoch: lease.epoch,
      updated_at: Date.now(),
      retain_until: input.retainUntil,
    };
    await new Promise<void>((resolve, reject) => {
      if (this.pendingSaves.push({ lease, row, resolve, reject }) === 1) setImmediate(() => this.commitSaves());
    });
  }

  private commitSaves(): void {
    const group = this.pendingSaves;
    if (group.length === 0) return;
    this.pendingSaves = [];
    try {
      if (!this.db.open) throw new Error('the SQLite store is closed');
      this.saveGroupTx(group);
    } catch (err) {
      // The commit itself failed (a full or read-only disk, a lock held too long): nothing was saved.
      for (const save of group) save.reject(err);
      return;
    }
    for (const save of group) {
      if (save.failed) save.reject(save.failed);
      else save.resolve();
    }
  }

  async load(callSid: string): Promise<SessionRecord | undefined> {
    const row = this.stmt.load.get(callSid, Date.now());
    return row && toRecord(row);
  }

  async currentEpoch(callSid: string): Promise<number> {
    return this.stmt.epoch.get(callSid)?.epoch ?? 0;
  }

  async delete(lease: Lease): Promise<void> {
    this.deleteTx(lease);
  }

  async list(): Promise<SessionRecord[]> {
    return this.stmt.list.all(Date.now()).map(toRecord);
  }

  async issueCallToken(callSid: string, grant: CallTokenGrant): Promise<boolean> {
    return this.stmt.issueCallToken.run({ callSid, ...grant }).changes === 1;
  }

  async redeemCallToken(callSid: string, tokenHash: string, now: number): Promise<boolean> {
    return this.stmt.redeemCallToken.run(callSid, tokenHash, now).changes === 1;
  }

  async sweep(now = Date.now()): Promise<number> {
    const removed = this.stmt.sweepRecords.run(now).changes;
    this.stmt.sweepLeases.run(now);
    this.stmt.sweepCallTokens.run(now);
    return removed;
  }

  async probe(): Promise<void> {
    this.stmt.probe.run(Date.now());
  }

  async close(): Promise<void> {
    this.commitSaves(); // saves already made are kept
    if (this.db.open) this.db.close();
  }

  /** The lease row, after checking that `lease` is not older than it. */
  private assertCurrent(lease: Lease): { epoch: number; retain_until: number } | undefined {
    const current = this.stmt.epoch.get(lease.callSid);
    if (current && lease.epoch < current.epoch) throw new StaleLeaseError(lease.callSid, lease.epoch, current.epoch);
    return current;
  }
}

/** The database with its pragmas and schema; a path that cannot be opened fails with the path and the reason. */
function openDatabase(file: string, busyTimeoutMs: number): Database.Database {
  let db: Database.Database | undefined;
  try {
    if (file !== ':memory:') fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
    db = new Database(file);
    db.pragma('journal_mode = WAL');
    // NORMAL is durable across process crashes in WAL mode; only an OS crash can lose the last commits.
    db.pragma('synchronous = NORMAL');
    // Several server processes may share the file; wait for the write lock instead of failing.
    db.pragma(`busy_timeout = ${Math.max(0, Math.floor(busyTimeoutMs))}`);
    db.exec(SCHEMA);
    return db;
  } catch (err) {
    if (db?.open) db.close();
    const reason = err instanceof Error ? err.message : String(err);
    throw new Error(`cannot open the SQLite store at ${path.resolve(file)}: ${reason}`, { cause: err });
  }
}

function toRecord(row: RecordRow): SessionRecord {
  return {
    callSid: row.call_sid,
    snapshot: JSON.parse(row.snapshot) as unknown,
    state: row.state,
    epoch: row.epoch,
    updatedAt: row.updated_at,
    retainUntil: row.retain_until,
  };
}
