// The SnapshotStore contract as reusable suites, so every store and every Redis deployment (one
// server, Sentinel, Cluster) is held to the same assertions. Call them inside a describe().
import { randomUUID } from 'node:crypto';
import { afterEach, expect, it } from 'vitest';
import type { RedisStore } from '../../src/stores/redis.js';
import { RecordChangedError, StaleLeaseError, type RetentionOptions, type SnapshotStore } from '../../src/stores/types.js';
import { waitUntilAsync } from './conditions.js';

export const MINUTE = 60_000;
export const newSid = () => `CA${randomUUID().replaceAll('-', '')}`;

export const snapshot = {
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

/** Stores opened by a test are closed after it. */
function useTracker() {
  let opened: SnapshotStore[] = [];
  afterEach(async () => {
    await Promise.all(opened.map((store) => store.close()));
    opened = [];
  });
  return <S extends SnapshotStore>(store: S): S => {
    opened.push(store);
    return store;
  };
}

export interface ContractOptions {
  kind: SnapshotStore['kind'];
  /** A store over a fresh, empty namespace (its own file, or its own Redis key prefix), with these options. */
  open: (opts?: RetentionOptions) => SnapshotStore;
}

/** What every store promises: fencing epochs, records, retention, listing. */
export function storeContract({ kind, open }: ContractOptions): void {
  const track = useTracker();
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

  it('acquires conditionally (ifEpoch): of two racers that saw the same epoch one wins, the other changes nothing', async () => {
    const s = store();
    const sid = newSid();
    const seen = (await s.acquire(sid, 'a')).epoch;
    const winner = await s.acquire(sid, 'b', { ifEpoch: seen });
    expect(winner.epoch).toBe(seen + 1);
    const loser = await s.acquire(sid, 'c', { ifEpoch: seen }).catch((err: unknown) => err);
    expect(loser).toBeInstanceOf(StaleLeaseError);
    expect(loser).toMatchObject({ epoch: seen, currentEpoch: seen + 1 });
    expect(await s.currentEpoch(sid)).toBe(seen + 1);
    // Never acquired: the epoch seen is 0.
    expect((await s.acquire(newSid(), 'a', { ifEpoch: 0 })).epoch).toBe(1);
    if (s.acquireAndLoad) {
      await s.save(winner, { snapshot, state: 'grace', retainUntil: Date.now() + MINUTE });
      await expect(s.acquireAndLoad(sid, 'c', { ifEpoch: seen })).rejects.toBeInstanceOf(StaleLeaseError);
      const taken = await s.acquireAndLoad(sid, 'c', { ifEpoch: seen + 1 });
      expect(taken.lease.epoch).toBe(seen + 2);
      expect(taken.record).toMatchObject({ state: 'grace', epoch: seen + 1 });
    }
  });

  it('takes over conditionally on the record as read (ifRecordEpoch): a write since fails it, a lease never written does not', async () => {
    const s = store();
    const sid = newSid();
    const first = await s.acquire(sid, 'a');
    await s.save(first, { snapshot, state: 'grace', retainUntil: Date.now() + MINUTE });
    // A takeover that died before writing anything: the record is still the one written at epoch 1.
    const dead = await s.acquire(sid, 'b', { ifEpoch: 1, ifRecordEpoch: 1 });
    expect(dead.epoch).toBe(2);
    // Read as (epoch 2, record of epoch 1); then a claim at 3 writes its record before the takeover.
    const claim = await s.acquire(sid, 'c', { ifEpoch: 2 });
    await s.save(claim, { snapshot, state: 'connected', retainUntil: Date.now() + MINUTE });
    const refused = await s.acquire(sid, 'd', { ifEpoch: 3, ifRecordEpoch: 1 }).catch((err: unknown) => err);
    expect(refused).toBeInstanceOf(RecordChangedError);
    expect(refused).toMatchObject({ expectedRecordEpoch: 1, recordEpoch: 3, currentEpoch: 3 });
    expect(await s.currentEpoch(sid)).toBe(3);
    // Read as it is now: taken.
    expect((await s.acquire(sid, 'd', { ifEpoch: 3, ifRecordEpoch: 3 })).epoch).toBe(4);
    // No record (0) is a record of its own: one written since is a change.
    const fresh = newSid();
    expect((await s.acquire(fresh, 'a', { ifRecordEpoch: 0 })).epoch).toBe(1);
    await s.save({ callSid: fresh, owner: 'a', epoch: 1 }, { snapshot, state: 'grace', retainUntil: Date.now() + MINUTE });
    await expect(s.acquire(fresh, 'b', { ifRecordEpoch: 0 })).rejects.toBeInstanceOf(RecordChangedError);
    // An owner writing again under its epoch (disconnected, then grace) is no change: taken as read.
    const rewritten = newSid();
    const owner = await s.acquire(rewritten, 'a');
    await s.save(owner, { snapshot, state: 'disconnected', retainUntil: Date.now() + MINUTE });
    await s.save(owner, { snapshot, state: 'grace', retainUntil: Date.now() + MINUTE });
    expect((await s.acquire(rewritten, 'b', { ifEpoch: 1, ifRecordEpoch: 1 })).epoch).toBe(2);
    // A record past its retention is gone (0): a change from the one read.
    const expired = newSid();
    await s.save(await s.acquire(expired, 'a'), { snapshot, state: 'grace', retainUntil: Date.now() - 1 });
    await expect(s.acquire(expired, 'b', { ifRecordEpoch: 1 })).rejects.toMatchObject({ name: 'RecordChangedError', expectedRecordEpoch: 1, recordEpoch: 0 });
    if (s.acquireAndLoad) {
      await expect(s.acquireAndLoad(sid, 'e', { ifEpoch: 4, ifRecordEpoch: 1 })).rejects.toBeInstanceOf(RecordChangedError);
      const taken = await s.acquireAndLoad(sid, 'e', { ifEpoch: 4, ifRecordEpoch: 3 });
      expect(taken.lease.epoch).toBe(5);
      expect(taken.record).toMatchObject({ state: 'connected', epoch: 3 });
    }
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

  it('probe writes without touching any session', async () => {
    const s = store();
    await expect(s.probe?.()).resolves.toBeUndefined();
    expect(await s.list()).toEqual([]);
  });

  it('forgets an epoch with its record when leases are kept only as long as the retention', async () => {
    const s = track(open({ minLeaseMs: 300 }));
    const sid = newSid();
    const lease = await s.acquire(sid, 'a');
    await s.save(lease, { snapshot, state: 'expired', retainUntil: Date.now() + 300 });
    expect(await s.currentEpoch(sid)).toBe(lease.epoch);
    // Memory and SQLite drop it at a sweep, Redis by the key's TTL: poll as the server's sweeper would sweep.
    await expect
      .poll(
        async () => {
          await s.sweep();
          return s.currentEpoch(sid);
        },
        { timeout: 5000, interval: 50 },
      )
      .toBe(0);
    expect(await s.load(sid)).toBeUndefined();
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

  it('redeems a call token once, for its own hash, before it expires; re-issues it only until then', async () => {
    const s = store();
    const sid = newSid();
    const now = Date.now();
    const grant = (hash: string, expiresAt = now + MINUTE) => ({ hash, expiresAt, keepUntil: now + 2 * MINUTE });
    expect(await s.redeemCallToken(sid, 'never-issued', now)).toBe(false);
    expect(await s.issueCallToken(sid, grant('first'))).toBe(true);
    // Posted again (a retried webhook): the newest token replaces the first.
    expect(await s.issueCallToken(sid, grant('second'))).toBe(true);
    expect(await s.redeemCallToken(sid, 'first', now)).toBe(false);
    expect(await s.redeemCallToken(newSid(), 'second', now)).toBe(false);
    expect(await s.redeemCallToken(sid, 'second', now)).toBe(true);
    expect(await s.redeemCallToken(sid, 'second', now)).toBe(false);
    // Connected: no new token for this call while its entry is kept.
    expect(await s.issueCallToken(sid, grant('third'))).toBe(false);
    expect(await s.redeemCallToken(sid, 'third', now)).toBe(false);

    const late = newSid();
    expect(await s.issueCallToken(late, grant('late', now + 1000))).toBe(true);
    expect(await s.redeemCallToken(late, 'late', now + 1000)).toBe(false);
    expect(await s.redeemCallToken(late, 'late', now + 999)).toBe(true);
  });

  it('forgets call tokens when their entry is no longer kept', async () => {
    const s = store();
    const sid = newSid();
    await s.issueCallToken(sid, { hash: 'h', expiresAt: Date.now() + 200, keepUntil: Date.now() + 200 });
    expect(await s.redeemCallToken(sid, 'h', Date.now())).toBe(true);
    // Memory and SQLite drop it at a sweep, Redis by the key's TTL; then the call could be issued a token again.
    await expect
      .poll(
        async () => {
          await s.sweep();
          return s.issueCallToken(sid, { hash: 'again', expiresAt: Date.now() + MINUTE, keepUntil: Date.now() + MINUTE });
        },
        { timeout: 5000, interval: 50 },
      )
      .toBe(true);
  });

  it('lists every one of many sessions (spread over every shard of a cluster)', async () => {
    const s = store();
    const sids = Array.from({ length: 60 }, newSid);
    await Promise.all(
      sids.map(async (sid) => s.save(await s.acquire(sid, 'a'), { snapshot: { sid }, state: 'grace', retainUntil: Date.now() + MINUTE })),
    );
    const listed = await s.list();
    expect(listed.map((r) => r.callSid).sort()).toEqual([...sids].sort());
  });
}

export interface SharedRedisOptions {
  /** A store on `prefix`: two stores on one prefix are two server instances sharing sessions. */
  open: (prefix: string) => RedisStore;
  newPrefix: () => string;
}

/** What Redis adds: instances sharing sessions, atomic takeover, and lease-change notices. */
export function sharedRedisContract({ open, newPrefix }: SharedRedisOptions): void {
  const track = useTracker();
  const pair = () => {
    const prefix = newPrefix();
    return [track(open(prefix)), track(open(prefix))] as const;
  };

  it('fences across two instances sharing Redis', async () => {
    const [a, b] = pair();
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
    await expect(a.delete(leaseA)).rejects.toBeInstanceOf(StaleLeaseError);
    expect(await a.load(sid)).toMatchObject({ snapshot: { by: 'b' } });
  });

  it('takes a session over and reads its record in one atomic step, fencing the old owner', async () => {
    const [a, b] = pair();
    const sid = newSid();
    const old = await a.acquire(sid, 'a');
    await a.save(old, { snapshot, state: 'grace', retainUntil: Date.now() + MINUTE });

    const { lease, record } = await b.acquireAndLoad(sid, 'b');
    expect(lease).toEqual({ callSid: sid, owner: 'b', epoch: old.epoch + 1 });
    expect(record).toMatchObject({ callSid: sid, state: 'grace', snapshot, epoch: old.epoch });
    await expect(a.save(old, { snapshot: { late: true }, state: 'connected', retainUntil: Date.now() + MINUTE })).rejects.toBeInstanceOf(
      StaleLeaseError,
    );
    expect(await b.load(sid)).toMatchObject({ epoch: old.epoch, state: 'grace' });

    const unknown = await b.acquireAndLoad(newSid(), 'b');
    expect(unknown.record).toBeUndefined();
    expect(unknown.lease.epoch).toBe(1);
  });

  it('tells the other instances about every takeover, whichever shard holds the session', async () => {
    const [a, b] = pair();
    const notices: Array<[string, number]> = [];
    b.onLeaseChange((callSid, epoch) => notices.push([callSid, epoch]));
    // The subscription starts in the background: wait until a probe acquire is heard.
    const probe = newSid();
    await waitUntilAsync(async () => {
      await a.acquire(probe, 'a');
      return notices.some(([sid]) => sid === probe);
    }, 'the lease subscription to deliver a probe');

    const sids = Array.from({ length: 20 }, newSid);
    const leases = await Promise.all(sids.map((sid) => a.acquireAndLoad(sid, 'a')));
    const expected = leases.map(({ lease }): [string, number] => [lease.callSid, lease.epoch]);
    await expect.poll(() => notices.filter(([sid]) => sids.includes(sid)).sort()).toEqual(expected.sort());
  });

  it('closes cleanly after subscribing, and a second close is harmless', async () => {
    const s = open(newPrefix());
    s.onLeaseChange(() => {});
    await s.acquire(newSid(), 'a');
    await s.close();
    await s.close();
    await expect(s.load(newSid())).rejects.toThrow(/closed/i);
  });
}
