// Hibernation end to end, over real sockets: a connected call with nothing going on stops holding a
// running actor after SESSION_HIBERNATE_MS (on the server's clock, a TestClock the test moves), and
// whatever comes next (a prompt, a keypad entry, a drop and resume, a new connection, a drain, a
// takeover by another instance) finds the call exactly as a live one would be, with nothing written
// to the store for the hibernation or the revival.
import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { SimulatedCall } from '../src/testing/twilio-sim.js';
import { startFakeOpenAI, type FakeOpenAI } from '../src/testing/fake-openai-server.js';
import { loadConfig } from '../src/config.js';
import { MemoryStore, RedisStore, SqliteStore, type SnapshotStore } from '../src/stores/index.js';
import type { Session } from '../src/server/sessions/live-session.js';
import { Hibernation } from '../src/server/sessions/hibernation.js';
import { startTestServer, tempSqlitePath, type TestServer } from './support/harness.js';
import { REDIS_URL, redisAvailable } from './support/redis.js';
import { readMetric } from './support/server-process.js';
import { TestClock } from './support/test-clock.js';
import {
  DIGITS_OK,
  clearRedisPrefix,
  expectedResumeLine,
  nextSpokenReply,
  resumeViaReconnection,
  resumeViaTwilio,
  say,
  scenarioScript,
  transcriptOf,
  waitForRecord,
  waitForRequest,
} from './support/resume-scenario.js';
import { countingStore } from './support/counting-store.js';

const HIBERNATE_MS = 2000;
const redisUp = await redisAvailable();
const prefix = `test:hibernation:${randomUUID()}:`;

let llm: FakeOpenAI;
beforeAll(async () => {
  llm = await startFakeOpenAI({ script: scenarioScript() });
});
afterAll(async () => {
  await llm.close();
  if (redisUp) await clearRedisPrefix(REDIS_URL, prefix);
});

const servers: TestServer[] = [];
const calls: SimulatedCall[] = [];
const track = (c: SimulatedCall) => (calls.push(c), c);
afterEach(async () => {
  await Promise.all(calls.splice(0).map((c) => c.drop()));
  await Promise.all(servers.splice(0).map((s) => s.close()));
});


interface Started {
  ts: TestServer;
  clock: TestClock;
  store: ReturnType<typeof countingStore>;
}

async function start(
  inner: SnapshotStore,
  opts: { hibernateMs?: number; redisPrefix?: string; store?: 'memory' | 'sqlite' | 'redis'; adminToken?: string } = {},
): Promise<Started> {
  const clock = new TestClock();
  const store = countingStore(inner);
  const ts = await startTestServer({
    sharedLlm: llm,
    clock,
    store,
    redisPrefix: opts.redisPrefix,
    config: { sessionHibernateMs: opts.hibernateMs ?? HIBERNATE_MS, store: opts.store ?? 'memory', adminToken: opts.adminToken },
  });
  servers.push(ts);
  return { ts, clock, store };
}

const sessionOf = (ts: TestServer, callSid: string): Session | undefined => ts.server.manager.get(callSid);

/** Every write the call's last event caused has landed: what is stored is what the session holds. */
async function settled(ts: TestServer): Promise<void> {
  await ts.server.manager.flush();
}

/** Moves the server's clock past the idle period and waits for `n` hibernated sessions. */
async function hibernate(s: Started, n = 1): Promise<void> {
  await settled(s.ts);
  s.clock.advance(HIBERNATE_MS);
  await expect.poll(() => s.ts.server.manager.hibernated, { message: 'hibernated sessions' }).toBe(n);
}

async function metrics(ts: TestServer): Promise<string> {
  return (await fetch(`${ts.server.httpUrl}/metrics`)).text();
}

describe.each([
  { name: 'memory', inner: () => new MemoryStore() },
  { name: 'sqlite', inner: () => new SqliteStore(tempSqlitePath()) },
])('hibernation ($name store)', ({ inner }) => {
  it('hibernates an idle call after SESSION_HIBERNATE_MS, writing nothing; its next prompt is answered with the history intact', async () => {
    const s = await start(inner());
    const call = track(await SimulatedCall.connect({ url: s.ts.server.relayUrl }));
    const firstWrites = s.store.saves.length;
    expect(await say(call, 'hello there')).toBe('You said: hello there');
    await settled(s.ts);
    const turnWrites = s.store.saves.length - firstWrites;

    // Idle one tick short of the period: still running. Then at rest.
    s.clock.advance(HIBERNATE_MS - 1);
    expect(s.ts.server.manager.hibernated).toBe(0);
    s.clock.advance(1);
    await expect.poll(() => s.ts.server.manager.hibernated).toBe(1);
    const session = sessionOf(s.ts, call.callSid)!;
    expect(session.hibernated).toBe(true);
    const atRest = s.store.saves.length;

    // Metrics count it by the state it rests in, without reviving it.
    const text = await metrics(s.ts);
    expect(readMetric(text, 'relay_sessions', { state: 'connected' })).toBe(1);
    expect(readMetric(text, 'relay_sessions_hibernated')).toBe(1);
    expect(session.hibernated).toBe(true);

    // The next prompt revives it: answered as ever, with what came before in the model's history.
    const from = llm.requests.length;
    expect(await say(call, 'and again')).toBe('You said: and again');
    expect(session.hibernated).toBe(false);
    expect(sessionOf(s.ts, call.callSid)).toBe(session);
    const request = await waitForRequest(llm, () => true, 10_000, from);
    expect(transcriptOf(request.messages)).toEqual(['user:hello there', 'assistant:You said: hello there', 'user:and again']);
    // Nothing for hibernating or reviving: the turn costs what the first one did.
    await settled(s.ts);
    expect(s.store.saves.length - atRest).toBe(turnWrites);
    expect(readMetric(await metrics(s.ts), 'relay_sessions_hibernated')).toBe(0);

    // And it rests again after the next idle period.
    await hibernate(s);
    expect(s.store.saves.length - atRest).toBe(turnWrites);
  });

  it('any activity starts the idle period over; a call in a keypad entry does not hibernate, and one revived for a keypad entry completes it', async () => {
    const s = await start(inner());
    const call = track(await SimulatedCall.connect({ url: s.ts.server.relayUrl }));
    expect(await say(call, 'hi')).toBe('You said: hi');
    await settled(s.ts);
    s.clock.advance(HIBERNATE_MS - 500);
    expect(await say(call, 'still here')).toBe('You said: still here');
    await settled(s.ts);
    // A full period since the start, but not since the last turn.
    s.clock.advance(500);
    expect(s.ts.server.manager.hibernated).toBe(0);
    s.clock.advance(HIBERNATE_MS - 500);
    await expect.poll(() => s.ts.server.manager.hibernated).toBe(1);

    // Revived by the prompt that opens a keypad entry; the entry runs its course.
    expect(await say(call, 'my phone number')).toMatch(/phone number/);
    await settled(s.ts);
    s.clock.advance(HIBERNATE_MS * 2);
    expect(s.ts.server.manager.hibernated).toBe(0);
    call.digits('555');
    await expect.poll(() => sessionOf(s.ts, call.callSid)?.actor.getSnapshot().children.dtmf?.getSnapshot().context.buffer).toBe('555');
    call.digits('0001234');
    expect((await nextSpokenReply(call)).text).toBe(DIGITS_OK);
    const request = llm.requests.at(-1)!;
    expect(JSON.parse(String(request.messages.at(-1)?.content))).toEqual({ status: 'ok', kind: 'phoneNumber', value: '5550001234' });
    await hibernate(s);
  });

  it('a hibernated call that drops resumes through /action, and one whose client reconnects on a new socket takes it over', async () => {
    const s = await start(inner());
    const call = track(await SimulatedCall.connect({ url: s.ts.server.relayUrl }));
    expect(await say(call, 'remember me')).toBe('You said: remember me');
    await hibernate(s);

    // The drop revives it (its socket closed); Twilio's callback and new socket resume it.
    await call.drop();
    await waitForRecord(s.store, call.callSid, (r) => r?.state === 'disconnected');
    const { call: back } = await resumeViaTwilio(s.ts.server.httpUrl, call);
    track(back);
    expect((await back.nextReply()).text).toBe(expectedResumeLine('en-US'));
    const from = llm.requests.length;
    expect(await say(back, 'still me')).toBe('You said: still me');
    expect(transcriptOf(llm.requests[from]!.messages)).toEqual(['user:remember me', 'assistant:You said: remember me', 'user:still me']);

    // At rest again, then our own client comes back on a second socket while the first is open:
    // the newest connection wins, as with a running actor.
    await hibernate(s);
    const second = track(await resumeViaReconnection(s.ts.server.relayUrl, back));
    expect((await back.closed).code).toBe(4000);
    expect((await second.nextReply()).text).toBe(expectedResumeLine('en-US'));
    expect(await say(second, 'third socket')).toBe('You said: third socket');
  });

  it('SESSION_HIBERNATE_MS=0 keeps every actor running', async () => {
    const s = await start(inner(), { hibernateMs: 0 });
    const call = track(await SimulatedCall.connect({ url: s.ts.server.relayUrl }));
    expect(await say(call, 'hello')).toBe('You said: hello');
    await settled(s.ts);
    s.clock.advance(HIBERNATE_MS * 10);
    expect(s.ts.server.manager.hibernated).toBe(0);
    expect(s.clock.pending).toBe(0);
  });
});

describe('hibernated calls and the rest of the server', () => {
  it('a drain hands hibernated calls on like running ones, and another instance resumes them', async () => {
    const path = tempSqlitePath();
    const a = await start(new SqliteStore(path));
    const c1 = track(await SimulatedCall.connect({ url: a.ts.server.relayUrl }));
    const c2 = track(await SimulatedCall.connect({ url: a.ts.server.relayUrl }));
    expect(await say(c1, 'first caller')).toBe('You said: first caller');
    expect(await say(c2, 'second caller')).toBe('You said: second caller');
    await hibernate(a, 2);

    await a.ts.server.close();
    for (const c of [c1, c2]) expect((await c.closed).code).toBe(1001);
    const b = await start(new SqliteStore(path));
    for (const [c, said] of [
      [c1, 'first caller'],
      [c2, 'second caller'],
    ] as const) {
      const record = await b.store.load(c.callSid);
      expect(record?.state).toBe('disconnected');
      const { call: back } = await resumeViaTwilio(b.ts.server.httpUrl, c);
      track(back);
      expect((await back.nextReply()).text).toBe(expectedResumeLine('en-US'));
      const from = llm.requests.length;
      expect(await say(back, 'moved')).toBe('You said: moved');
      expect(transcriptOf(llm.requests[from]!.messages)).toEqual([`user:${said}`, `assistant:You said: ${said}`, 'user:moved']);
    }
  });

  it.skipIf(!redisUp)('another instance taking a hibernated call over lets it go without reviving or writing it', async () => {
    const [ra, rb] = await Promise.all([redisServer(prefix), redisServer(prefix)]);

    const call = track(await SimulatedCall.connect({ url: ra.ts.server.relayUrl }));
    expect(await say(call, 'on instance a')).toBe('You said: on instance a');
    await hibernate(ra);
    const writesOnA = ra.store.saves.length;

    // Our own client comes back through B while A holds the call at rest: B takes it over.
    const onB = track(await resumeViaReconnection(rb.ts.server.relayUrl, call));
    expect((await onB.nextReply()).text).toBe(expectedResumeLine('en-US'));
    expect((await call.closed).code).toBe(4001);
    await expect.poll(() => ra.ts.server.manager.get(call.callSid)).toBeUndefined();
    // Let go as it rested: never revived, so nothing more written by A.
    expect(ra.ts.server.manager.hibernated).toBe(0);
    expect(ra.store.saves.length).toBe(writesOnA);
    const from = llm.requests.length;
    expect(await say(onB, 'on instance b')).toBe('You said: on instance b');
    expect(transcriptOf(llm.requests[from]!.messages)).toEqual(['user:on instance a', 'assistant:You said: on instance a', 'user:on instance b']);
  });

  it('the admin views show a hibernated call as it rests, without reviving it', async () => {
    const s = await start(new MemoryStore(), { adminToken: 'admin-1' });
    const call = track(await SimulatedCall.connect({ url: s.ts.server.relayUrl, from: '+15559876543' }));
    expect(await say(call, 'hello there')).toBe('You said: hello there');
    await hibernate(s);
    const auth = { authorization: 'Bearer admin-1' };
    const view = (await (await fetch(`${s.ts.server.httpUrl}/sessions/${call.callSid}`, { headers: auth })).json()) as Record<string, unknown>;
    expect(view).toMatchObject({ callSid: call.callSid, state: 'connected', from: '********6543', history: [{ role: 'user' }, { role: 'assistant' }] });
    const list = (await (await fetch(`${s.ts.server.httpUrl}/sessions`, { headers: auth })).json()) as Array<{ callSid: string }>;
    expect(list.map((v) => v.callSid)).toEqual([call.callSid]);
    expect(s.ts.server.manager.hibernated).toBe(1);
  });

  it('a session that cannot be revived costs its own call only: it is let go and the process serves the others', async () => {
    const s = await start(new MemoryStore());
    const broken = track(await SimulatedCall.connect({ url: s.ts.server.relayUrl }));
    const other = track(await SimulatedCall.connect({ url: s.ts.server.relayUrl }));
    expect(await say(broken, 'hello')).toBe('You said: hello');
    expect(await say(other, 'hello')).toBe('You said: hello');
    await hibernate(s, 2);

    // Never happens with a snapshot the session wrote itself: damage its copy to see what would.
    (sessionOf(s.ts, broken.callSid) as unknown as { dormant: string }).dormant = '{"status":"active"';
    broken.prompt('are you there?');
    expect((await broken.closed).code).toBe(1011);
    expect(s.ts.server.manager.get(broken.callSid)).toBeUndefined();
    expect(await say(other, 'still fine?')).toBe('You said: still fine?');
  });
});

describe('a hibernated session that cannot be revived (its copy damaged)', () => {
  async function broken(options: Parameters<typeof start>[1] = {}) {
    const s = await start(new MemoryStore(), options);
    const call = track(await SimulatedCall.connect({ url: s.ts.server.relayUrl }));
    expect(await say(call, 'hello')).toBe('You said: hello');
    await hibernate(s);
    (sessionOf(s.ts, call.callSid) as unknown as { dormant: string }).dormant = '{"status":"active"';
    return { s, call };
  }

  it('an action callback that finds it is answered from the stored record', async () => {
    const { s, call } = await broken();
    const outcome = await s.ts.server.manager.handleAction({ callSid: call.callSid, callStatus: 'in-progress', sessionStatus: 'failed', errorCode: '64105', sessionId: call.sessionId });
    expect(outcome).toMatchObject({ kind: 'reconnect' });
  });

  it('a reconnection that finds it resumes the call from the stored record', async () => {
    const { s, call } = await broken();
    const back = track(await resumeViaReconnection(s.ts.server.relayUrl, call));
    expect((await back.nextReply()).text).toBe(expectedResumeLine('en-US'));
  });

  it('the admin list leaves it out and still shows the others', async () => {
    const { s, call } = await broken({ adminToken: 'admin-1' });
    const other = track(await SimulatedCall.connect({ url: s.ts.server.relayUrl }));
    expect(await say(other, 'hi')).toBe('You said: hi');
    const auth = { authorization: 'Bearer admin-1' };
    const list = (await (await fetch(`${s.ts.server.httpUrl}/sessions`, { headers: auth })).json()) as Array<{ callSid: string }>;
    expect(list.map((v) => v.callSid)).toEqual([other.callSid]);
    expect((await fetch(`${s.ts.server.httpUrl}/sessions/${call.callSid}`, { headers: auth })).status).toBe(404);
  });
});

describe('the idle timer', () => {
  it('never waits longer than SESSION_HIBERNATE_MS, even when the wall clock steps back', () => {
    let now = 1_800_000_000_000;
    const delays: number[] = [];
    const fns: Array<() => void> = [];
    const clock = { now: () => now, setTimeout: (fn: () => void, ms: number) => (delays.push(ms), fns.push(fn), fns.length), clearTimeout: () => {} };
    const hibernation = new Hibernation({ clock, afterMs: 2000, holds: () => true, busy: () => false });
    const resting = { status: 'active', matches: () => true, children: {} };
    const session = { idleTimer: undefined, lastActive: 0, hibernated: false, actor: { getSnapshot: () => resting }, hibernate: () => {} } as unknown as Session;
    hibernation.touch(session);
    now -= 30 * 24 * 3600 * 1000; // a VM or NTP step back by 30 days
    fns.at(-1)!();
    expect(delays).toEqual([2000, 2000]);
  });
});

describe('SESSION_HIBERNATE_MS', () => {
  it('defaults to 2000 ms; 0 turns hibernation off; anything but a whole number of ms a timer can wait is refused', () => {
    expect(loadConfig({}).sessionHibernateMs).toBe(2000);
    expect(loadConfig({ SESSION_HIBERNATE_MS: '0' }).sessionHibernateMs).toBe(0);
    expect(loadConfig({ SESSION_HIBERNATE_MS: '250' }).sessionHibernateMs).toBe(250);
    expect(() => loadConfig({ SESSION_HIBERNATE_MS: '-1' })).toThrow(/sessionHibernateMs/);
    expect(() => loadConfig({ SESSION_HIBERNATE_MS: 'soon' })).toThrow(/sessionHibernateMs/);
    // Longer than a Node timer can wait (it would fire at once).
    expect(() => loadConfig({ SESSION_HIBERNATE_MS: String(2 ** 31) })).toThrow(/sessionHibernateMs/);
  });
});

/** An in-process server on the test's Redis prefix, counting what it writes. */
function redisServer(redisPrefix: string): Promise<Started> {
  return start(new RedisStore(REDIS_URL, { prefix: redisPrefix }), { store: 'redis', redisPrefix });
}
