// Two server processes sharing one store: a call moves from A to B, A's copy is fenced off and
// stopped, and the newest authenticated connection wins.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SimulatedCall } from '../src/testing/twilio-sim.js';
import { RedisStore, SqliteStore, type SnapshotStore } from '../src/stores/index.js';
import { tempSqlitePath } from './support/harness.js';
import { REDIS_URL, redisAvailable } from './support/redis.js';
import { ServerProcess, type ServerProcessOptions } from './support/server-process.js';
import { useProcessFixture } from './support/process-fixture.js';
import {
  SPANISH_OK,
  STORY,
  expectedResumeLine,
  lastUserText,
  persisted,
  resumeViaReconnection,
  resumeViaTwilio,
  say,
  gate,
  transcriptOf,
  waitForDeltas,
  waitForRecord,
  waitForRequest,
} from './support/resume-scenario.js';

const redisUp = await redisAvailable();
const fx = useProcessFixture('multi', redisUp);
const { prefix, track } = fx;

async function pair(opts: Omit<ServerProcessOptions, 'openaiBaseUrl'>): Promise<[ServerProcess, ServerProcess]> {
  const a = new ServerProcess({ ...opts, openaiBaseUrl: fx.llm.baseURL, instanceId: 'A', graceMs: 60_000 });
  const b = new ServerProcess({ ...opts, openaiBaseUrl: fx.llm.baseURL, instanceId: 'B', graceMs: 60_000 });
  await Promise.all([a.start(), b.start()]);
  return [a, b];
}

/** Waits until the instance holds `n` live sessions (its /healthz count). */
async function waitForSessions(server: ServerProcess, n: number): Promise<void> {
  await expect
    .poll(async () => (await server.getJson<{ sessions: number }>('/healthz')).sessions, { message: `live sessions on ${server.opts.instanceId}` })
    .toBe(n);
}

describe.skipIf(!redisUp)('two instances sharing Redis', () => {
  let a: ServerProcess;
  let b: ServerProcess;
  let store: RedisStore;
  beforeAll(async () => {
    [a, b] = await pair({ store: 'redis', redisUrl: REDIS_URL, redisPrefix: prefix });
    store = new RedisStore(REDIS_URL, { prefix });
    fx.keep(store);
  });
  afterAll(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
  });

  it('moves a dropped call from A to B through /action; A stops its copy at once', async () => {
    const onA = track(await SimulatedCall.connect({ url: a.relayUrl }));
    expect(await say(onA, 'hello there')).toBe('You said: hello there');
    expect(await say(onA, 'speak spanish')).toBe(SPANISH_OK);
    onA.prompt('tell me a story');
    await waitForDeltas(onA, 3);
    const epochOnA = await store.currentEpoch(onA.callSid);
    await onA.drop();

    // The action callback lands on B: B takes the session over and Twilio reconnects to B.
    const { call: onB, twiml } = await resumeViaTwilio(b.httpUrl, onA);
    track(onB);
    expect(twiml).toContain(b.relayUrl);
    expect(await store.currentEpoch(onA.callSid)).toBeGreaterThan(epochOnA);
    await waitForSessions(a, 0);
    await a.waitForLog((l) => l.callSid === onA.callSid && /releasing session/.test(l.msg));

    expect(await onB.waitForType('language')).toMatchObject({ ttsLanguage: 'es-US' });
    const reply = await onB.nextReply(15_000);
    const line = expectedResumeLine('es-US');
    expect(reply.text.startsWith(line)).toBe(true);
    expect(reply.text.slice(line.length).trimStart()).toBe(STORY);

    const n = fx.llm.requests.length;
    expect(await say(onB, 'thanks')).toBe('You said: thanks');
    const request = await waitForRequest(fx.llm, (m) => lastUserText(m) === 'thanks', 5000, n);
    expect(transcriptOf(request.messages)).toEqual([
      'user:hello there',
      'assistant:You said: hello there',
      'user:speak spanish',
      'assistant: [switch_language]',
      'tool:language switched to es-US',
      `assistant:${SPANISH_OK}`,
      'user:tell me a story',
      `assistant:${STORY}`,
      'user:thanks',
    ]);
    // The stored session is B's: its epoch and its latest turn.
    const record = await waitForRecord(store, onB.callSid, (r) => persisted(r).context?.history?.length === 10);
    expect(record!.epoch).toBe(await store.currentEpoch(onB.callSid));
    expect(await waitForSessions(b, 1)).toBeUndefined();
  }, 60_000);

  it('lets the newest authenticated connection win, and ignores a wrong sessionId', async () => {
    const onA = track(await SimulatedCall.connect({ url: a.relayUrl }));
    expect(await say(onA, 'first words')).toBe('You said: first words');
    const epoch = await store.currentEpoch(onA.callSid);

    // Someone without the sessionId tries B: refused, and A keeps the call, untouched.
    const intruder = track(await resumeViaReconnection(b.relayUrl, { callSid: onA.callSid, sessionId: 'VXnot-the-session' }));
    expect((await intruder.closed).code).toBe(1008);
    expect(await store.currentEpoch(onA.callSid)).toBe(epoch);
    expect(await say(onA, 'still on A')).toBe('You said: still on A');

    // A persists a turn a moment after the caller hears its end; a takeover inside that window would
    // restore the turn before (documented in the README), so wait until it is stored.
    await waitForRecord(store, onA.callSid, (r) => persisted(r).context?.history?.length === 4);
    // The rightful client connects to B while its socket on A is still open: B wins, A lets go at once
    // (the caller is idle, so only the lease notification can tell A).
    const onB = track(await resumeViaReconnection(b.relayUrl, onA));
    expect((await onB.nextReply()).text).toBe(expectedResumeLine('en-US'));
    expect(await onA.closed).toEqual({ code: 4001, reason: 'session moved' });
    expect(await store.currentEpoch(onA.callSid)).toBeGreaterThan(epoch);

    const n = fx.llm.requests.length;
    expect(await say(onB, 'now on B')).toBe('You said: now on B');
    const request = await waitForRequest(fx.llm, (m) => lastUserText(m) === 'now on B', 5000, n);
    expect(transcriptOf(request.messages)).toEqual([
      'user:first words',
      'assistant:You said: first words',
      'user:still on A',
      'assistant:You said: still on A',
      'user:now on B',
    ]);
  }, 60_000);
});

describe('two instances sharing a SQLite file (no lease notifications)', () => {
  let a: ServerProcess;
  let b: ServerProcess;
  let store: SqliteStore;
  beforeAll(async () => {
    const sqlitePath = tempSqlitePath();
    [a, b] = await pair({ store: 'sqlite', sqlitePath });
    store = new SqliteStore(sqlitePath);
    fx.keep(store);
  });
  afterAll(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
  });

  it("rejects the stale owner's next write and stops its actor", async () => {
    const onA = track(await SimulatedCall.connect({ url: a.relayUrl }));
    expect(await say(onA, 'hello there')).toBe('You said: hello there');
    // The story stops after three chunks until B has taken the call over: A is still streaming then.
    const takenOver = gate();
    fx.holdStories(3, takenOver.opened);
    onA.prompt('tell me a story');
    await waitForDeltas(onA, 3);
    await onA.drop();
    expect(await a.metric('relay_stale_lease_writes_total')).toBe(0);

    const { call: onB } = await resumeViaTwilio(b.httpUrl, onA);
    track(onB);
    takenOver.open();
    // A's reply keeps streaming into its (now stale) copy until its next write is refused.
    await waitForSessions(a, 0);
    expect(await a.metric('relay_stale_lease_writes_total')).toBeGreaterThanOrEqual(1);
    await a.waitForLog((l) => l.callSid === onA.callSid && /stale lease/.test(l.msg));

    const reply = await onB.nextReply(15_000);
    const line = expectedResumeLine('en-US');
    expect(reply.text.startsWith(line)).toBe(true);
    expect(reply.text.slice(line.length).trimStart()).toBe(STORY);
    const record = await waitForRecord(store, onB.callSid, (r) => persisted(r).context?.history?.length === 4);
    expect(record!.epoch).toBe(await store.currentEpoch(onB.callSid));
    expect(persisted(record).context?.history?.at(-1)).toEqual({ role: 'assistant', content: STORY });
  }, 60_000);
});
