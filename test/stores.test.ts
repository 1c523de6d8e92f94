// One contract suite for every SnapshotStore, plus checks specific to SQLite files and Redis TTLs.
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { Redis } from 'ioredis';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import {
  createStore,
  MemoryStore,
  RedisStore,
  SqliteStore,
  StaleLeaseError,
  type SnapshotStore,
} from '../src/stores/index.js';
import { REDIS_URL, redisAvailable } from './support/redis.js';

const redisUp = await redisAvailable();
const runPrefix = `test:stores:${randomUUID()}:`;
const tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'relay-stores-'));

const MINUTE = 60_000;
const newSid = () => `CA${randomUUID().replaceAll('-', '')}`;
const tmpDb = () => path.join(tmpDir, `${randomUUID()}.db`);

const snapshot = {
  status: 'active',
  value: { session: { connected: 'listening' } },
  context: {
    turns: [
      { role: 'user', text: 'héllo ☎️', at: 1 },
      { role: 'assistant', text: 'hi', tools: [] },
    ],
    resumes: 0,
    flags: { dtmf: null, barge: true },
  },
};

// Stores opened in a test are closed after it; Redis keys live under runPrefix and are removed at the end.
let opened: SnapshotStore[] = [];
afterEach(async () => {
  await Promise.all(opened.map((store) => store.close()));
  opened = [];
});
afterAll(async () => {
  fs.rmSync(tmpDir, { recursive: true, force: true });
  if (!redisUp) return;
  const redis = new Redis(REDIS_URL);
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${runPrefix}*`, 'COUNT', 500);
    cursor = next;
    if (keys.length > 0) await redis.del(keys);
  } while (cursor !== '0');
  await redis.quit();
});

function track<S extends SnapshotStore>(store: S): S {
  opened.push(store);
  return store;
}

const cases = [
  { kind: 'memory', available: true, open: () => new MemoryStore() },
  { kind: 'sqlite', available: true, open: () => new SqliteStore(tmpDb()) },
  // A prefix per store keeps list() scoped to the test that opened it.
  { kind: 'redis', available: redisUp, open: () => new RedisStore(REDIS_URL, { prefix: `${runPrefix}${randomUUID()}:` }) },
] as const;

describe.each(cases)('$kind store contract', ({ kind, available, open }) => {
  describe.skipIf(!available)(kind, () => {
    const store = () => track(open());

    it('reports its kind', () => {
      expect(store().kind).toBe(kind);
    });

    it('acquire increments the epoch per call, starting from 0', async () => {
      const s = store();
      const sid = newSid();
      expect(await s.currentEpoch(sid)).toBe(0);
      expect(await s.acquire(sid, 'a')).toEqual({ callSid: sid, owner: 'a', epoch: 1 });
      expect((await s.acquire(sid, 'b')).epoch).toBe(2);
      expect(await s.currentEpoch(sid)).toBe(2);
      // Other sessions have their own counter.
      expect((await s.acquire(newSid(), 'a')).epoch).toBe(1);
    });

    it('round-trips a nested JSON snapshot', async () => {
      const s = store();
      const sid = newSid();
      const lease = await s.acquire(sid, 'a');
      const retainUntil = Date.now() + 30 * MINUTE;
      const before = Date.now();
      await s.save(lease, { snapshot, state: 'connected', retainUntil });
      const after = Date.now();

      const record = await s.load(sid);
      expect(record).toMatchObject({ callSid: sid, snapshot, state: 'connected', epoch: 1, retainUntil });
      expect(record?.updatedAt).toBeGreaterThanOrEqual(before);
      expect(record?.updatedAt).toBeLessThanOrEqual(after);
      expect(await s.load(newSid())).toBeUndefined();
    });

    it('overwrites the record on the next save', async () => {
      const s = store();
      const sid = newSid();
      const lease = await s.acquire(sid, 'a');
      const retainUntil = Date.now() + MINUTE;
      await s.save(lease, { snapshot: { n: 1 }, state: 'connected', retainUntil });
      await s.save(lease, { snapshot: { n: 2 }, state: 'grace', retainUntil });
      expect(await s.load(sid)).toMatchObject({ snapshot: { n: 2 }, state: 'grace' });
    });

    it('rejects a save with a stale epoch and leaves the data unchanged', async () => {
      const s = store();
      const sid = newSid();
      const old = await s.acquire(sid, 'a');
      const current = await s.acquire(sid, 'a');
      const retainUntil = Date.now() + MINUTE;
      await s.save(current, { snapshot: { v: 'current' }, state: 'connected', retainUntil });

      const err = await s.save(old, { snapshot: { v: 'stale' }, state: 'grace', retainUntil }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(StaleLeaseError);
      expect(err).toMatchObject({ name: 'StaleLeaseError', callSid: sid, epoch: 1, currentEpoch: 2 });
      expect(await s.load(sid)).toMatchObject({ snapshot: { v: 'current' }, state: 'connected', epoch: 2 });
    });

    it('lets the newest acquire win: the older owner can neither save nor delete', async () => {
      const s = store();
      const sid = newSid();
      const retainUntil = Date.now() + MINUTE;
      const a = await s.acquire(sid, 'instance-a');
      await s.save(a, { snapshot: { by: 'a' }, state: 'connected', retainUntil });
      const b = await s.acquire(sid, 'instance-b');
      expect(b.epoch).toBeGreaterThan(a.epoch);
      await s.save(b, { snapshot: { by: 'b' }, state: 'connected', retainUntil });

      await expect(s.save(a, { snapshot: { by: 'a' }, state: 'grace', retainUntil })).rejects.toThrow(StaleLeaseError);
      await expect(s.delete(a)).rejects.toThrow(StaleLeaseError);
      expect(await s.load(sid)).toMatchObject({ snapshot: { by: 'b' }, epoch: b.epoch });

      // Deleting keeps the epoch, so the old owner cannot resurrect the session either.
      await s.delete(b);
      expect(await s.load(sid)).toBeUndefined();
      expect(await s.currentEpoch(sid)).toBe(b.epoch);
      await expect(s.save(a, { snapshot: { by: 'a' }, state: 'grace', retainUntil })).rejects.toThrow(StaleLeaseError);
      expect(await s.load(sid)).toBeUndefined();
    });

    it('does not load a record past retainUntil, and sweep drops it', async () => {
      const s = store();
      const sid = newSid();
      const lease = await s.acquire(sid, 'a');
      await s.save(lease, { snapshot, state: 'expired', retainUntil: Date.now() - 1000 });
      expect(await s.load(sid)).toBeUndefined();
      expect((await s.list()).map((r) => r.callSid)).not.toContain(sid);
      // Redis has already dropped it by TTL and reports 0.
      expect(await s.sweep()).toBe(kind === 'redis' ? 0 : 1);
      expect(await s.load(sid)).toBeUndefined();
      // The fencing epoch outlives the record.
      expect(await s.currentEpoch(sid)).toBe(lease.epoch);
    });

    it('sweep(now) only removes records whose retention ended by then', async () => {
      const s = store();
      const lease = await s.acquire(newSid(), 'a');
      const retainUntil = Date.now() + MINUTE;
      await s.save(lease, { snapshot, state: 'grace', retainUntil });
      expect(await s.sweep(retainUntil - 1)).toBe(0);
      expect(await s.load(lease.callSid)).toBeDefined();
      if (kind !== 'redis') {
        expect(await s.sweep(retainUntil)).toBe(1);
        expect(await s.load(lease.callSid)).toBeUndefined();
      }
    });

    it('lists live records only', async () => {
      const s = store();
      const live = [newSid(), newSid()];
      const dead = newSid();
      for (const sid of live) {
        await s.save(await s.acquire(sid, 'a'), { snapshot: { sid }, state: 'connected', retainUntil: Date.now() + MINUTE });
      }
      await s.save(await s.acquire(dead, 'a'), { snapshot: {}, state: 'expired', retainUntil: Date.now() - 1 });

      const listed = await s.list();
      expect(listed.map((r) => r.callSid).sort()).toEqual([...live].sort());
      for (const record of listed) {
        expect(record).toMatchObject({ snapshot: { sid: record.callSid }, state: 'connected', epoch: 1 });
      }
    });
  });
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

  it('sweeps periodically in the background', async () => {
    const file = tmpDb();
    const s = track(new SqliteStore(file, { sweepIntervalMs: 20 }));
    const sid = newSid();
    await s.save(await s.acquire(sid, 'a'), { snapshot, state: 'expired', retainUntil: Date.now() - 1 });
    expect(countRows(file, 'records', sid)).toBe(1);
    await expect.poll(() => countRows(file, 'records', sid), { timeout: 2000 }).toBe(0);
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

  it('takes a session over and reads its record in one atomic step, fencing the old owner', async () => {
    const s = track(new RedisStore(REDIS_URL, { prefix: runPrefix }));
    const sid = newSid();
    const old = await s.acquire(sid, 'a');
    await s.save(old, { snapshot, state: 'grace', retainUntil: Date.now() + MINUTE });
    const notices: Array<[string, number]> = [];
    s.onLeaseChange((callSid, epoch) => notices.push([callSid, epoch]));
    // The subscription is active once Redis counts a subscriber on the lease channel.
    const redis = raw();
    await expect.poll(async () => ((await redis.pubsub('NUMSUB', `${runPrefix}leases`)) as [string, number])[1]).toBeGreaterThanOrEqual(1);

    const { lease, record } = await s.acquireAndLoad(sid, 'b');
    expect(lease).toEqual({ callSid: sid, owner: 'b', epoch: old.epoch + 1 });
    expect(record).toMatchObject({ callSid: sid, state: 'grace', snapshot, epoch: old.epoch });
    await expect(s.save(old, { snapshot: { late: true }, state: 'connected', retainUntil: Date.now() + MINUTE })).rejects.toBeInstanceOf(StaleLeaseError);
    await expect.poll(() => notices).toContainEqual([sid, lease.epoch]);

    const unknown = await s.acquireAndLoad(newSid(), 'b');
    expect(unknown.record).toBeUndefined();
    expect(unknown.lease.epoch).toBe(1);
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

  it('fences across two instances sharing Redis', async () => {
    const a = track(new RedisStore(REDIS_URL, { prefix: runPrefix }));
    const b = track(new RedisStore(REDIS_URL, { prefix: runPrefix }));
    const sid = newSid();
    const retainUntil = Date.now() + MINUTE;
    const leaseA = await a.acquire(sid, 'a');
    const leaseB = await b.acquire(sid, 'b');
    await b.save(leaseB, { snapshot: { by: 'b' }, state: 'connected', retainUntil });
    await expect(a.save(leaseA, { snapshot: { by: 'a' }, state: 'connected', retainUntil })).rejects.toMatchObject({
      name: 'StaleLeaseError',
      epoch: leaseA.epoch,
      currentEpoch: leaseB.epoch,
    });
    expect(await a.load(sid)).toMatchObject({ snapshot: { by: 'b' } });
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
