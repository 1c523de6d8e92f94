// One contract suite for every SnapshotStore, plus checks specific to SQLite files and Redis TTLs.
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { Redis } from 'ioredis';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import {
  createStore,
  MemoryStore,
  RedisStore,
  SqliteStore,
  StaleLeaseError,
  type RetentionOptions,
  type SnapshotStore,
} from '../src/stores/index.js';
import { REDIS_URL, redisAvailable } from './support/redis.js';
import { clearRedisPrefix } from './support/resume-scenario.js';
import { MINUTE, newSid, sharedRedisContract, snapshot, storeContract } from './support/store-contract.js';

const redisUp = await redisAvailable();
const runPrefix = `test:stores:${randomUUID()}:`;
const tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'relay-stores-'));

const tmpDb = () => path.join(tmpDir, `${randomUUID()}.db`);

// Stores opened in a test are closed after it; Redis keys live under runPrefix and are removed at the end.
let opened: SnapshotStore[] = [];
afterEach(async () => {
  await Promise.all(opened.map((store) => store.close()));
  opened = [];
});
afterAll(async () => {
  fs.rmSync(tmpDir, { recursive: true, force: true });
  if (redisUp) await clearRedisPrefix(REDIS_URL, runPrefix);
});

function track<S extends SnapshotStore>(store: S): S {
  opened.push(store);
  return store;
}

const cases = [
  { kind: 'memory', available: true, open: (o: RetentionOptions = {}) => new MemoryStore(o) },
  { kind: 'sqlite', available: true, open: (o: RetentionOptions = {}) => new SqliteStore(tmpDb(), o) },
  // A prefix per store keeps list() scoped to the test that opened it.
  { kind: 'redis', available: redisUp, open: (o: RetentionOptions = {}) => new RedisStore(REDIS_URL, { prefix: `${runPrefix}${randomUUID()}:`, ...o }) },
] as const;

describe.each(cases)('$kind store contract', ({ kind, available, open }) => {
  describe.skipIf(!available)(kind, () => {
    storeContract({ kind, open });
  });
});

describe.skipIf(!redisUp)('redis shared-store contract', () => {
  sharedRedisContract({ open: (prefix) => new RedisStore(REDIS_URL, { prefix }), newPrefix: () => `${runPrefix}${randomUUID()}:` });
});

describe('SqliteStore specifics', () => {
  const countRows = (file: string, table: 'records' | 'leases', sid: string): number => {
    const db = new Database(file, { readonly: true });
    try {
      const row = db.prepare<[string], { n: number }>(`SELECT count(*) AS n FROM ${table} WHERE call_sid = ?`).get(sid);
      return row?.n ?? -1;
    } finally {
      db.close();
    }
  };

  it('survives a close and reopen on the same file', async () => {
    const file = tmpDb();
    const sid = newSid();
    const first = new SqliteStore(file);
    const lease = await first.acquire(sid, 'a');
    await first.save(lease, { snapshot, state: 'grace', retainUntil: Date.now() + MINUTE });
    await first.close();

    const second = track(new SqliteStore(file));
    expect(await second.load(sid)).toMatchObject({ callSid: sid, snapshot, state: 'grace', epoch: 1 });
    expect(await second.currentEpoch(sid)).toBe(1);
    expect((await second.acquire(sid, 'b')).epoch).toBe(2);
  });

  it('commits the saves of one event-loop turn together; a fenced one fails alone; close keeps those made', async () => {
    const file = tmpDb();
    const store = track(new SqliteStore(file));
    const sids = Array.from({ length: 10 }, () => newSid());
    const leases = await Promise.all(sids.map((sid) => store.acquire(sid, 'a')));
    // Another connection's data_version moves once per commit made by others.
    const reader = new Database(file, { readonly: true });
    const commits = () => reader.pragma('data_version', { simple: true }) as number;
    try {
      const before = commits();
      await Promise.all(leases.map((lease, i) => store.save(lease, { snapshot: { n: i }, state: 'connected', retainUntil: Date.now() + MINUTE })));
      expect(commits() - before).toBe(1);
      for (const [i, sid] of sids.entries()) expect((await store.load(sid))?.snapshot).toEqual({ n: i });

      await store.acquire(sids[0]!, 'b'); // fences lease 0
      const results = await Promise.allSettled(leases.slice(0, 3).map((lease) => store.save(lease, { snapshot: { n: 'again' }, state: 'grace', retainUntil: Date.now() + MINUTE })));
      expect(results.map((r) => r.status)).toEqual(['rejected', 'fulfilled', 'fulfilled']);
      expect((results[0] as PromiseRejectedResult).reason).toBeInstanceOf(StaleLeaseError);
      expect((await store.load(sids[0]!))?.snapshot).toEqual({ n: 0 });
      expect((await store.load(sids[1]!))?.snapshot).toEqual({ n: 'again' });

      const last = store.save(leases[2]!, { snapshot: { n: 'at close' }, state: 'grace', retainUntil: Date.now() + MINUTE });
      await store.close();
      await last;
    } finally {
      reader.close();
    }
    const reopened = track(new SqliteStore(file));
    expect((await reopened.load(sids[2]!))?.snapshot).toEqual({ n: 'at close' });
  });

  it('creates the parent directory and enables WAL', async () => {
    const file = path.join(tmpDir, 'nested', randomUUID(), 'sessions.db');
    track(new SqliteStore(file));
    expect(fs.existsSync(file)).toBe(true);
    const db = new Database(file, { readonly: true });
    try {
      expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
    } finally {
      db.close();
    }
  });

  it('sweep really deletes expired rows', async () => {
    const file = tmpDb();
    const s = track(new SqliteStore(file));
    const sid = newSid();
    const lease = await s.acquire(sid, 'a');
    await s.save(lease, { snapshot, state: 'expired', retainUntil: Date.now() - 1000 });
    expect(countRows(file, 'records', sid)).toBe(1); // hidden from load, but still on disk
    expect(await s.sweep()).toBe(1);
    expect(countRows(file, 'records', sid)).toBe(0);
    // The lease row is kept for fencing until well after retention ...
    expect(countRows(file, 'leases', sid)).toBe(1);
    // ... and swept once its own retention passes.
    await s.sweep(Date.now() + 2 * 24 * 60 * MINUTE);
    expect(countRows(file, 'leases', sid)).toBe(0);
  });

  it('keeps the lease row at least as long as its record, touching it only when it must grow', async () => {
    const file = tmpDb();
    const s = track(new SqliteStore(file));
    const sid = newSid();
    const leaseUntil = () => {
      const db = new Database(file, { readonly: true });
      try {
        return db.prepare<[string], { retain_until: number }>('SELECT retain_until FROM leases WHERE call_sid = ?').get(sid)!.retain_until;
      } finally {
        db.close();
      }
    };
    const day = 24 * 60 * MINUTE;
    const before = Date.now();
    const lease = await s.acquire(sid, 'a');
    await s.save(lease, { snapshot, state: 'connected', retainUntil: Date.now() + MINUTE });
    expect(leaseUntil()).toBeGreaterThanOrEqual(before + day); // fencing outlives activity by a day
    // A record kept longer than a day: the lease grows past it, with room to spare ...
    const twoDays = Date.now() + 2 * day;
    await s.save(lease, { snapshot, state: 'grace', retainUntil: twoDays });
    const first = leaseUntil();
    expect(first).toBeGreaterThan(twoDays);
    // ... so the next saves fit inside what it granted and leave the lease row alone.
    await s.save(lease, { snapshot, state: 'connected', retainUntil: Date.now() + MINUTE });
    expect(leaseUntil()).toBe(first);
    // A record kept longer than the lease: the lease grows with it.
    const long = Date.now() + 3 * day;
    await s.save(lease, { snapshot, state: 'grace', retainUntil: long });
    expect(leaseUntil()).toBeGreaterThanOrEqual(long);
    // And a stale writer is still refused.
    await s.acquire(sid, 'b');
    await expect(s.save(lease, { snapshot, state: 'connected', retainUntil: Date.now() + MINUTE })).rejects.toThrow(StaleLeaseError);
  });

  it('drops a lease row with its record when leases are kept only as long as the retention', async () => {
    // The store stamps its writes with Date.now(): a still clock, so a slow machine cannot move the
    // lease's end between the test's reading and the store's.
    vi.useFakeTimers({ toFake: ['Date'], now: 1_800_000_000_000 });
    try {
      const file = tmpDb();
      const s = track(new SqliteStore(file, { minLeaseMs: MINUTE }));
      const sid = newSid();
      const retainUntil = Date.now() + MINUTE;
      await s.save(await s.acquire(sid, 'a'), { snapshot, state: 'expired', retainUntil });
      // Kept while the record is ...
      expect(await s.sweep(retainUntil - 1)).toBe(0);
      expect(countRows(file, 'leases', sid)).toBe(1);
      // ... and gone soon after (a save may extend it by a quarter of the lease time), not a day later.
      expect(await s.sweep(retainUntil + MINUTE / 4 + 1)).toBe(1);
      expect(countRows(file, 'records', sid)).toBe(0);
      expect(countRows(file, 'leases', sid)).toBe(0);
    } finally {
      vi.useRealTimers();
    }
  });

  it('a file whose parent is not a directory fails with the path and the reason', () => {
    const notADir = path.join(tmpDir, `${randomUUID()}.txt`);
    fs.writeFileSync(notADir, 'not a directory');
    const file = path.join(notADir, 'sessions.db');
    expect(() => new SqliteStore(file)).toThrow(`cannot open the SQLite store at ${file}`);
  });

  it('is what createStore builds for store=sqlite', async () => {
    const store = track(createStore({ store: 'sqlite', sqlitePath: tmpDb(), redisUrl: REDIS_URL }));
    expect(store).toBeInstanceOf(SqliteStore);
    expect(track(createStore({ store: 'memory', sqlitePath: '', redisUrl: '' }))).toBeInstanceOf(MemoryStore);
  });
});

describe.skipIf(!redisUp)('RedisStore specifics', () => {
  let clients: Redis[] = [];
  afterEach(async () => {
    await Promise.all(clients.map((client) => client.quit()));
    clients = [];
  });
  /** A plain client for looking at keys and TTLs directly. */
  const raw = () => {
    const redis = new Redis(REDIS_URL);
    clients.push(redis);
    return redis;
  };
  const keysOf = async (redis: Redis, sid: string) => redis.keys(`${runPrefix}*${sid}*`);

  it('sets TTLs on the record and the epoch key', async () => {
    const s = track(new RedisStore(REDIS_URL, { prefix: runPrefix }));
    const redis = raw();
    const sid = newSid();
    const retainUntil = Date.now() + MINUTE;
    await s.save(await s.acquire(sid, 'a'), { snapshot, state: 'connected', retainUntil });

    const keys = await keysOf(redis, sid);
    expect(keys).toHaveLength(2);
    for (const key of keys) {
      expect(key.startsWith(runPrefix)).toBe(true);
      expect(await redis.pttl(key)).toBeGreaterThan(0);
    }
    const recordKey = keys.find((k) => k.endsWith(':rec'));
    expect(recordKey).toBeDefined();
    const ttl = await redis.pttl(recordKey ?? '');
    // The record expires at retainUntil itself: its TTL is what is left of that now.
    expect(ttl).toBeGreaterThanOrEqual(retainUntil - Date.now());
    expect(ttl).toBeLessThanOrEqual(MINUTE);
  });

  it('gives a never-saved lease a TTL so it cannot leak', async () => {
    const s = track(new RedisStore(REDIS_URL, { prefix: runPrefix }));
    const redis = raw();
    const sid = newSid();
    await s.acquire(sid, 'a');
    const [epochKey] = await keysOf(redis, sid);
    expect(epochKey).toBeDefined();
    expect(await redis.pttl(epochKey ?? '')).toBeGreaterThan(0);
  });

  it('reads the record epoch of a conditional takeover from a record in another field order too', async () => {
    const s = track(new RedisStore(REDIS_URL, { prefix: runPrefix }));
    const redis = raw();
    const sid = newSid();
    await s.save(await s.acquire(sid, 'a'), { snapshot, state: 'grace', retainUntil: Date.now() + MINUTE });
    const recordKey = (await keysOf(redis, sid)).find((k) => k.endsWith(':rec'))!;
    // Decoys where the record's own fields would be: a nested object, and text, at the snapshot's end.
    const decoy = { note: '"epoch":9,"updatedAt":1,"retainUntil":2}', tail: { epoch: 9, updatedAt: 1, retainUntil: 2 } };
    const now = Date.now();
    // Written by hand with the snapshot last (its decoy ends the text), then in save()'s own order.
    const shapes = [
      { epoch: 1, retainUntil: now + MINUTE, updatedAt: now, state: 'grace', callSid: sid, snapshot: decoy },
      { callSid: sid, snapshot: decoy, state: 'grace', epoch: 2, updatedAt: now, retainUntil: now + MINUTE },
    ];
    for (const [i, record] of shapes.entries()) {
      await redis.set(recordKey, JSON.stringify(record), 'PX', MINUTE);
      await expect(s.acquire(sid, 'b', { ifRecordEpoch: 9 })).rejects.toMatchObject({ name: 'RecordChangedError', recordEpoch: record.epoch });
      expect((await s.acquire(sid, 'b', { ifRecordEpoch: record.epoch })).epoch).toBe(2 + i);
    }
  });

  it('forgets a record once its retention passes', async () => {
    const s = track(new RedisStore(REDIS_URL, { prefix: runPrefix }));
    const redis = raw();
    const sid = newSid();
    const lease = await s.acquire(sid, 'a');
    await s.save(lease, { snapshot, state: 'grace', retainUntil: Date.now() + 150 });
    expect(await s.load(sid)).toBeDefined();
    await expect.poll(() => s.load(sid), { message: 'the record to be forgotten' }).toBeUndefined();
    await expect.poll(async () => (await keysOf(redis, sid)).filter((k) => k.endsWith(':rec'))).toEqual([]);
    expect(await s.currentEpoch(sid)).toBe(lease.epoch);
  });
});

describe('RedisStore connection errors', () => {
  it('reports them to onError instead of printing or throwing, and keeps retrying', async () => {
    const errors: Error[] = [];
    // Port 1 on loopback refuses connections: the outage a store must survive.
    const store = new RedisStore('redis://127.0.0.1:1', { onError: (err) => errors.push(err) });
    await expect.poll(() => errors.length).toBeGreaterThan(0);
    expect(errors[0]?.message).toMatch(/ECONNREFUSED/);
    await store.close();
  });
});
