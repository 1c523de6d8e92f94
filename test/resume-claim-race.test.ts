// A resume racing one that has already spoken, played in the one order that used to let both win.
// Instance A takes a call's session (its lease moves to a new epoch), then stores the resume and speaks.
// Instance B, resuming the same call, reads the new epoch with the *old* record between A's lease and
// A's write, and asks for its takeover only after A's write landed. A write does not move the epoch,
// so a takeover conditional on the epoch alone went through after A had spoken: two sockets spoke for
// one call. The takeover is conditional on the record B judged as well: refused, B judges the record
// as it is now (resumed a moment ago on another socket) and is closed having said nothing. A record
// rewritten by an owner that did not speak is judged again the same way, and resumed.
// Each instance sees the store through a view that holds it at chosen points (gates): the order is
// fixed by events, not by timing.
import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { SimulatedCall } from '../src/testing/twilio-sim.js';
import { startFakeOpenAI, type FakeOpenAI } from '../src/testing/fake-openai-server.js';
import { lifecycleOf } from '../src/machines/session.js';
import type { ChatTurn } from '../src/llm/types.js';
import { delegatingStore, MemoryStore, RecordChangedError, RedisStore, SqliteStore, type AcquireOptions, type SnapshotStore } from '../src/stores/index.js';
import { startTestServer, tempSqlitePath, type TestServer } from './support/harness.js';
import { REDIS_URL, redisAvailable } from './support/redis.js';
import { expectedResumeLine, gate, postDroppedAction, say } from './support/resume-scenario.js';
import { twilioReconnectOptions } from '../src/testing/twilio-sim.js';
import type { Config } from '../src/config.js';
import { TestClock } from './support/test-clock.js';

const redisUp = await redisAvailable();

/** What a view waits for before it lets a step of the watched call through. */
interface Holds {
  save?: Promise<void>;
  conditionalAcquire?: Promise<void>;
  /** The first save (once `save` lets it through) fails, as on a full disk. */
  failFirstSave?: boolean;
  /** Every conditional acquire is refused as if another instance had just rewritten the record. */
  recordAlwaysChanged?: boolean;
}

/**
 * One instance's view of the shared store. For the watched call (once `watched.callSid` is set), it
 * reports its first conditional acquire, save and record read (gates), and holds saves and
 * conditional acquires until `holds` let them through.
 */
function gatedView(inner: SnapshotStore, watched: { callSid?: string }, holds: Holds) {
  const gates = { acquired: gate(), saved: gate(), read: gate() };
  const mine = (callSid: string) => callSid === watched.callSid;
  async function conditionally<T>(callSid: string, opts: AcquireOptions | undefined, take: () => Promise<T>): Promise<T> {
    if (!mine(callSid) || opts?.ifEpoch === undefined) return take();
    await holds.conditionalAcquire;
    if (holds.recordAlwaysChanged) throw new RecordChangedError(callSid, opts.ifEpoch, opts.ifRecordEpoch ?? 0, (opts.ifRecordEpoch ?? 0) + 1);
    const taken = await take();
    gates.acquired.open();
    return taken;
  }
  const acquireAndLoad = inner.acquireAndLoad?.bind(inner);
  const store = delegatingStore(inner, {
    acquire: (callSid, owner, opts) => conditionally(callSid, opts, () => inner.acquire(callSid, owner, opts)),
    ...(acquireAndLoad && { acquireAndLoad: (callSid: string, owner: string, opts?: AcquireOptions) => conditionally(callSid, opts, () => acquireAndLoad(callSid, owner, opts)) }),
    save: async (lease, input) => {
      if (!mine(lease.callSid)) return inner.save(lease, input);
      await holds.save;
      if (holds.failFirstSave) {
        holds.failFirstSave = false;
        throw new Error('disk full');
      }
      await inner.save(lease, input);
      gates.saved.open();
    },
    load: async (callSid) => {
      const record = await inner.load(callSid);
      if (mine(callSid)) gates.read.open();
      return record;
    },
  });
  return { store, gates };
}

type View = ReturnType<typeof gatedView>;

const cases = [
  { kind: 'memory', available: true, opener: () => { const shared = new MemoryStore(); return () => shared; } },
  { kind: 'sqlite', available: true, opener: () => { const file = tempSqlitePath(); return () => new SqliteStore(file); } },
  { kind: 'redis', available: redisUp, opener: () => { const prefix = `test:claimrace:${randomUUID()}:`; return () => new RedisStore(REDIS_URL, { prefix }); } },
] as const;

describe.each(cases)('$kind: a resume that read the record before another resume stored it', ({ kind, available, opener }) => {
  let llm: FakeOpenAI | undefined;
  let servers: TestServer[] = [];
  afterEach(async () => {
    await Promise.all(servers.map((s) => s.close()));
    servers = [];
    await llm?.close();
  });

  /**
   * `n` instances over one shared namespace, each through its own gated view; `wire` sets who waits for
   * whom. `clocks`: an instance's own clock (the system clock where none is given).
   */
  async function instances(n: number, wire: (views: View[], holds: Holds[]) => void, clocks: (TestClock | undefined)[] = [], config: Partial<Config> = {}) {
    llm = await startFakeOpenAI();
    const open = opener();
    const watched: { callSid?: string } = {};
    const holds: Holds[] = Array.from({ length: n }, () => ({}));
    const views = holds.map((h) => gatedView(open(), watched, h));
    wire(views, holds);
    for (const [i, view] of views.entries()) servers.push(await startTestServer({ store: view.store, sharedLlm: llm, clock: clocks[i], config: { store: kind, ...config } }));
    return { views, watch: (callSid: string) => (watched.callSid = callSid) };
  }

  async function droppedCall(owner: TestServer): Promise<SimulatedCall> {
    const call = await SimulatedCall.connect({ url: owner.server.relayUrl });
    expect(await say(call, 'hello')).toBe('You said: hello');
    await call.drop();
    await expect.poll(() => lifecycleOf(owner.server.manager.get(call.callSid)?.actor.getSnapshot().value)).toBe('disconnected');
    await owner.server.manager.flush();
    return call;
  }

  const resumeOn = (server: TestServer, call: SimulatedCall) =>
    SimulatedCall.connect({ url: server.server.relayUrl, callSid: call.callSid, sessionId: call.sessionId, reconnection: true });

  /** The winner resumes and talks on; the loser is closed having heard nothing; the store has the winner's call. */
  async function expectOneSpoke(winner: SimulatedCall, loser: SimulatedCall, winning: TestServer) {
    // Refused, it judged the record again: resumed a moment ago on another socket (try again: 1013).
    // (Before the fix the loser spoke and was never closed: this fails instead of waiting for ever.)
    await expect.poll(() => loser.closeInfo, { message: 'the losing socket is closed as a duplicate' }).toMatchObject({ code: 1013 });
    expect(loser.messages, 'the losing socket heard something').toEqual([]);
    expect((await winner.nextReply(10_000)).text).toBe(expectedResumeLine('en-US'));
    expect(await say(winner, 'still there?')).toBe('You said: still there?');
    expect(winner.closeInfo).toBeUndefined();
    await winning.server.manager.flush();
    const record = await winning.server.store.load(winner.callSid);
    const history = (record?.snapshot as { context: { history: ChatTurn[] } }).context.history;
    expect(history.filter((t) => t.role === 'user' && t.content === 'still there?')).toHaveLength(1);
    expect(record?.state).toBe('connected');
    await winner.drop();
  }

  /**
   * A call dropped on `holder`; `first` resumes it and, once its lease has moved (its write held as
   * wired), a socket on `second` tries too: only the first speaks.
   */
  async function raceBehindLease(watch: (callSid: string) => void, holder: TestServer, first: { server: TestServer; view: View }, second: TestServer) {
    const call = await droppedCall(holder);
    watch(call.callSid);
    const onFirst = await resumeOn(first.server, call);
    await first.view.gates.acquired.opened;
    const onSecond = await resumeOn(second, call);
    await expectOneSpoke(onFirst, onSecond, first.server);
  }

  it.runIf(available)('the instance holding the call resumes it; a racer that read between its lease and its write says nothing', async () => {
    // A's write waits until B has read the record; B's takeover waits until A's write has landed.
    const { views, watch } = await instances(2, ([a, b], [holdA, holdB]) => {
      holdA!.save = b!.gates.read.opened;
      holdB!.conditionalAcquire = a!.gates.saved.opened;
    });
    const [a] = views as [View, View];
    const [serverA, serverB] = servers as [TestServer, TestServer];
    await raceBehindLease(watch, serverA, { server: serverA, view: a }, serverB);
  });

  it.runIf(available)('an instance taking the call over resumes it; a third that read between its lease and its write says nothing', async () => {
    // B takes the call over from its holder O; C reads between B's lease and B's first write.
    const { views, watch } = await instances(3, ([, b, c], [, holdB, holdC]) => {
      holdB!.save = c!.gates.read.opened;
      holdC!.conditionalAcquire = b!.gates.saved.opened;
    });
    const [, b] = views as [View, View, View];
    const [holder, serverB, serverC] = servers as [TestServer, TestServer, TestServer];
    await raceBehindLease(watch, holder, { server: serverB, view: b }, serverC);
  });

  it.runIf(available)('a racer that read between a lease and a write that did not speak judges the new record and resumes', async () => {
    // A's claim takes the lease, then its write of the resume fails (A refuses its socket, 1011) and
    // the write of that refusal lands. B read between A's lease and those writes; it resumes the call.
    const { views, watch } = await instances(2, ([a, b], [holdA, holdB]) => {
      holdA!.save = b!.gates.read.opened;
      holdA!.failFirstSave = true;
      holdB!.conditionalAcquire = a!.gates.saved.opened;
    });
    const [a] = views as [View, View];
    const [serverA, serverB] = servers as [TestServer, TestServer];
    const call = await droppedCall(serverA);
    watch(call.callSid);

    const onA = await resumeOn(serverA, call);
    await a.gates.acquired.opened;
    const onB = await resumeOn(serverB, call);
    await expect.poll(() => onA.closeInfo, { message: 'the socket whose resume was not stored is refused' }).toMatchObject({ code: 1011 });
    expect(onA.messages).toEqual([]);
    expect((await onB.nextReply(10_000)).text).toBe(expectedResumeLine('en-US'));
    expect(await say(onB, 'after all')).toBe('You said: after all');
    expect(serverB.server.manager.get(call.callSid)?.lease.epoch).toBe(await serverB.server.store.currentEpoch(call.callSid));
    await onB.drop();
  });

  it.runIf(available)('a replayed callback for the old socket, read before a resume stored itself, leaves the resumed call alone', async () => {
    // A resumes the call on Twilio's path (a new socket, a new sessionId). C answers a replay of the
    // old socket's callback and reads the record between A's lease and A's write: in what it read, the
    // old socket is the call's current one. Its takeover is refused, and in the record as it is now
    // the old socket is an earlier one, so the callback is acknowledged without touching the call.
    const { views, watch } = await instances(3, ([a, , c], [holdA, , holdC]) => {
      holdA!.save = c!.gates.read.opened;
      holdC!.conditionalAcquire = a!.gates.saved.opened;
    });
    const [a] = views as [View, View, View];
    const [serverA, , serverC] = servers as [TestServer, TestServer, TestServer];
    const call = await droppedCall(serverA);
    const action = await postDroppedAction(serverA.server.httpUrl, call);
    expect(action.body).toContain('<ConversationRelay');
    await serverA.server.manager.flush();
    watch(call.callSid);

    const onA = await SimulatedCall.connect(twilioReconnectOptions(action.body, call, { url: serverA.server.relayUrl }));
    await a.gates.acquired.opened;
    const replay = await postDroppedAction(serverC.server.httpUrl, call);
    expect(replay.status).toBe(200);
    // Acknowledged (plain hang-up TwiML for the old socket), not a reconnect that would move the call.
    expect(replay.body).not.toContain('<ConversationRelay');
    expect((await onA.nextReply(10_000)).text).toBe(expectedResumeLine('en-US'));
    expect(await say(onA, 'still me')).toBe('You said: still me');
    expect(onA.closeInfo).toBeUndefined();
    expect(serverC.server.manager.get(call.callSid)).toBeUndefined();
    await onA.drop();
  });

  it.runIf(available)('an expiry read before a resume stored itself leaves the resumed call alone', async () => {
    // C's clock is past the call's grace deadline, A's is not: A resumes the call, and C, asked for it
    // between A's lease and A's write, finds it over its deadline and takes it over to expire it. That
    // takeover is refused (A's write landed), and C judges the call as it is now: resumed on A a moment
    // ago, so C's socket is a duplicate. The call goes on on A, and nothing started a fresh one.
    const graceMs = 1000;
    const clockA = new TestClock();
    const clockC = new TestClock(clockA.now() + graceMs + 1);
    const { views, watch } = await instances(
      2,
      ([a, c], [holdA, holdC]) => {
        holdA!.save = c!.gates.read.opened;
        holdC!.conditionalAcquire = a!.gates.saved.opened;
      },
      [clockA, clockC],
      { graceMs },
    );
    const [a] = views as [View, View];
    const [serverA, serverC] = servers as [TestServer, TestServer];
    await raceBehindLease(watch, serverA, { server: serverA, view: a }, serverC);
  });

  it.runIf(available)('an action callback whose session keeps changing while it is judged is answered 503 and changes nothing', async () => {
    const { watch } = await instances(2, (_views, [, holdC]) => {
      holdC!.recordAlwaysChanged = true;
    });
    const [serverA, serverC] = servers as [TestServer, TestServer];
    const call = await droppedCall(serverA);
    watch(call.callSid);
    const epoch = await serverA.server.store.currentEpoch(call.callSid);

    const action = await postDroppedAction(serverC.server.httpUrl, call);
    expect(action.status).toBe(503);
    expect(serverC.server.manager.get(call.callSid)).toBeUndefined();
    expect(await serverA.server.store.currentEpoch(call.callSid)).toBe(epoch);
    expect((await serverA.server.store.load(call.callSid))?.state).toBe('disconnected');
    // Twilio's retry at an instance that can take it gets the reconnect.
    expect((await postDroppedAction(serverA.server.httpUrl, call)).body).toContain('<ConversationRelay');
  });
});
