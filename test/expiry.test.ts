// Grace expiry (nobody came back in time) and retention expiry (the store forgets old sessions).
// Grace runs on the server's TestClock, which only moves when the test moves it: a session expires
// exactly at its deadline and never early or late because the machine is busy.
import { randomUUID } from 'node:crypto';
import Database from 'better-sqlite3';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SimulatedCall } from '../src/testing/twilio-sim.js';
import { postAction } from '../src/testing/twilio-webhooks.js';
import { startFakeOpenAI, type FakeOpenAI } from '../src/testing/fake-openai-server.js';
import type { Config } from '../src/config.js';
import { startTestServer, tempSqlitePath, type TestServer } from './support/harness.js';
import { MemoryStore, RedisStore, SqliteStore, delegatingStore, type SnapshotStore } from '../src/stores/index.js';
import { REDIS_URL, redisAvailable } from './support/redis.js';
import { readMetric } from './support/server-process.js';
import { TestClock } from './support/test-clock.js';
import { lifecycleOf } from '../src/machines/session.js';
import {
  clearRedisPrefix,
  lastUserText,
  persisted,
  postDroppedAction,
  say,
  scenarioScript,
  transcriptOf,
  waitForRecord,
  waitForRequest,
} from './support/resume-scenario.js';

const redisUp = await redisAvailable();
const prefixes: string[] = [];
const calls: SimulatedCall[] = [];
const track = (c: SimulatedCall) => (calls.push(c), c);

let llm: FakeOpenAI;
beforeAll(async () => {
  llm = await startFakeOpenAI({ script: scenarioScript() });
});
afterAll(async () => {
  await Promise.all(calls.map((c) => c.drop()));
  await llm.close();
  if (redisUp) await Promise.all(prefixes.map((p) => clearRedisPrefix(REDIS_URL, p)));
});

function server(config: Partial<Config>, clock?: TestClock): Promise<{ ts: TestServer; prefix: string }> {
  const prefix = `test:expiry:${randomUUID()}:`;
  prefixes.push(prefix);
  return startTestServer({ sharedLlm: llm, redisPrefix: prefix, config, clock }).then((ts) => ({ ts, prefix }));
}

/** The lifecycle state of this server's live actor for the call (undefined once it let go of it). */
function liveState(ts: TestServer, callSid: string): string | undefined {
  const session = ts.server.manager.get(callSid);
  return session && lifecycleOf(session.actor.getSnapshot().value);
}

async function failedResumes(ts: TestServer): Promise<number> {
  const res = await fetch(`${ts.server.httpUrl}/metrics`);
  return readMetric(await res.text(), 'relay_resumes_total', { outcome: 'failed' });
}

const stores = [
  { store: 'memory' as const, available: true },
  { store: 'sqlite' as const, available: true },
  { store: 'redis' as const, available: redisUp },
];

describe.each(stores)('grace expiry with the $store store', ({ store, available }) => {
  let ts: TestServer;
  const graceMs = 300;
  const clock = new TestClock();
  beforeAll(async () => {
    if (available) ({ ts } = await server({ store, graceMs }, clock));
  });
  afterAll(async () => {
    await ts?.close();
  });

  it.skipIf(!available)('expires a dropped call nobody resumes, after /action or without one, exactly at its deadline', async () => {
    const withAction = track(await SimulatedCall.connect({ url: ts.server.relayUrl }));
    const withoutAction = track(await SimulatedCall.connect({ url: ts.server.relayUrl }));
    expect(await say(withAction, 'hello')).toBe('You said: hello');
    expect(await say(withoutAction, 'hello')).toBe('You said: hello');
    const droppedAt = clock.now();
    await Promise.all([withAction.drop(), withoutAction.drop()]);
    expect((await postDroppedAction(ts.server.httpUrl, withAction)).body).toContain('<ConversationRelay');
    await waitForRecord(ts.server.store, withAction.callSid, (r) => r?.state === 'grace');
    const dropped = await waitForRecord(ts.server.store, withoutAction.callSid, (r) => r?.state === 'disconnected');
    expect(persisted(dropped).context?.graceDeadline).toBe(droppedAt + graceMs);

    clock.advance(graceMs - 1);
    expect([liveState(ts, withAction.callSid), liveState(ts, withoutAction.callSid)]).toEqual(['grace', 'disconnected']);
    clock.advance(1);
    for (const call of [withAction, withoutAction]) {
      const record = await waitForRecord(ts.server.store, call.callSid, (r) => r?.state === 'expired');
      expect(persisted(record).context?.history).toHaveLength(2); // kept for retention, not wiped
    }
    // Let go of once its final write landed.
    await expect.poll(() => ts.server.manager.get(withAction.callSid)).toBeUndefined();

    // Twilio asking again is told to hang up; a reconnect starts over.
    const action = await postDroppedAction(ts.server.httpUrl, withAction);
    expect(action.body).toContain('<Hangup/>');
    const failedBefore = await failedResumes(ts);
    const late = track(await SimulatedCall.connect({ url: ts.server.relayUrl, callSid: withAction.callSid, sessionId: withAction.sessionId, reconnection: true }));
    const n = llm.requests.length;
    expect(await say(late, 'is anyone there?')).toBe('You said: is anyone there?');
    expect(late.messages.some((m) => m.type === 'language')).toBe(false); // no resume greeting
    const request = await waitForRequest(llm, (m) => lastUserText(m) === 'is anyone there?', 5000, n);
    expect(transcriptOf(request.messages)).toEqual(['user:is anyone there?']);
    expect(await failedResumes(ts)).toBe(failedBefore + 1);
    await waitForRecord(ts.server.store, late.callSid, (r) => r?.state === 'connected' && persisted(r).context?.history?.length === 2);
  });
});

describe('retention expiry', () => {
  /**
   * The store the server writes through, noting when a call's final (ended) record is written and
   * how long it is to be kept: the test then moves on from that event, not from a guess at timing.
   */
  function recordingEnd(inner: SnapshotStore) {
    const ended = new Map<string, (retainUntil: number) => void>();
    const store = delegatingStore(inner, {
      save: async (lease, input) => {
        await inner.save(lease, input);
        if (input.state === 'ended') ended.get(lease.callSid)?.(input.retainUntil);
      },
    });
    const endOf = (callSid: string) => new Promise<number>((resolve) => ended.set(callSid, resolve));
    return { store, endOf };
  }

  /** A call that says something and hangs up; resolves with when its ended record's retention ends. */
  async function hungUpCall(ts: TestServer, endOf: (callSid: string) => Promise<number>): Promise<{ callSid: string; retainUntil: number }> {
    const call = track(await SimulatedCall.connect({ url: ts.server.relayUrl }));
    const ended = endOf(call.callSid);
    expect(await say(call, 'bye')).toBe('You said: bye');
    await call.close();
    const action = await postAction(ts.server.httpUrl, { CallSid: call.callSid, CallStatus: 'completed', SessionStatus: 'completed' });
    expect(action.status).toBe(200);
    return { callSid: call.callSid, retainUntil: await ended };
  }

  it('drops the record from the SQLite file at the first sweep after retention', async () => {
    const sqlitePath = tempSqlitePath();
    const { store, endOf } = recordingEnd(new SqliteStore(sqlitePath));
    // The server's own sweeps are an hour apart: this test sweeps, at the times it names.
    const ts = await startTestServer({ sharedLlm: llm, store, config: { store: 'sqlite', sqlitePath, graceMs: 100, retentionMs: 400, storeSweepMs: 3_600_000 } });
    // A separate connection to the same file sees the row until a sweep after retention removes it.
    const db = new Database(sqlitePath, { readonly: true });
    const rows = (callSid: string) => (db.prepare('SELECT COUNT(*) AS n FROM records WHERE call_sid = ?').get(callSid) as { n: number }).n;
    try {
      const { callSid, retainUntil } = await hungUpCall(ts, endOf);
      // Time is the sweep's input: kept up to the end of its retention, gone at it.
      expect(rows(callSid)).toBe(1);
      expect(await ts.server.store.sweep(retainUntil - 1)).toBe(0);
      expect(rows(callSid)).toBe(1);
      await waitForRecord(ts.server.store, callSid, (r) => r === undefined, 5000);
      expect(rows(callSid)).toBe(1); // past retention: not loaded, not yet swept
      expect(await ts.server.store.sweep(retainUntil)).toBeGreaterThanOrEqual(1);
      expect(rows(callSid)).toBe(0);
    } finally {
      db.close();
      await ts.close();
    }
  });

  it.skipIf(!redisUp)('lets Redis expire the record by TTL', async () => {
    const prefix = `test:expiry:${randomUUID()}:`;
    prefixes.push(prefix);
    const { store, endOf } = recordingEnd(new RedisStore(REDIS_URL, { prefix }));
    const ts = await startTestServer({ sharedLlm: llm, store, config: { store: 'redis', graceMs: 100, retentionMs: 400 } });
    const redis = new Redis(REDIS_URL);
    try {
      const { callSid, retainUntil } = await hungUpCall(ts, endOf);
      const key = `${prefix}{${callSid}}:rec`;
      // The key expires exactly when the record's retention ends (or already has, on a slow machine).
      const expiresAt = await redis.call('PEXPIRETIME', key);
      if (expiresAt === -2) expect(Date.now()).toBeGreaterThanOrEqual(retainUntil);
      else expect(expiresAt).toBe(retainUntil);
      await expect.poll(() => redis.exists(key), { message: 'Redis to expire the record' }).toBe(0);
      expect(await ts.server.store.load(callSid)).toBeUndefined();
      // The fencing epoch outlives the record so a late writer cannot resurrect it.
      expect(await redis.exists(`${prefix}{${callSid}}:epoch`)).toBe(1);
    } finally {
      await redis.quit();
      await ts.close();
    }
  });
});

describe('a reconnect right after expiry', () => {
  it('starts a fresh session even while the expired snapshot is still being written', async () => {
    // A real store whose writes take a while, so the expired session's final write is still in flight.
    const inner = new MemoryStore();
    const slow = delegatingStore(inner, {
      save: async (lease, input) => {
        await new Promise((r) => setTimeout(r, 300));
        return inner.save(lease, input);
      },
    });
    const clock = new TestClock();
    const graceMs = 150;
    const ts = await startTestServer({ sharedLlm: llm, store: slow, config: { graceMs }, clock });
    try {
      const call = track(await SimulatedCall.connect({ url: ts.server.relayUrl }));
      await say(call, 'hello');
      await call.drop();
      await expect.poll(() => liveState(ts, call.callSid), { message: 'the server noticing the drop' }).toBe('disconnected');
      clock.advance(graceMs);
      // Expired this instant; its final write now takes 300 ms.
      expect(ts.server.manager.get(call.callSid)?.actor.getSnapshot().status).toBe('done');
      const again = track(await SimulatedCall.connect({ url: ts.server.relayUrl, callSid: call.callSid, sessionId: call.sessionId, reconnection: true }));
      const n = llm.requests.length;
      expect(await say(again, 'anyone there?')).toBe('You said: anyone there?');
      const request = await waitForRequest(llm, (m) => lastUserText(m) === 'anyone there?', 5000, n);
      expect(transcriptOf(request.messages)).toEqual(['user:anyone there?']);
      expect(again.isOpen).toBe(true);
    } finally {
      await ts.close();
    }
  });
});
