// Two instances racing for one call: a dropped call comes back on two sockets at once, to two
// server instances sharing a store (SQLite file, Redis), each socket sending the caller's next words
// straight after its setup. Of each pair exactly one resumes; the other is closed having heard
// nothing, and its instance never writes the session; the caller's words are in the history once.
// Races are run on both resume paths (Twilio's token, our clients' sessionId), between the instance
// that holds the session and another one, and between two that do not.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SimulatedCall, twilioReconnectOptions, type SimulatedCallOptions } from '../src/testing/twilio-sim.js';
import { startFakeOpenAI, type FakeOpenAI } from '../src/testing/fake-openai-server.js';
import { lifecycleOf } from '../src/machines/session.js';
import type { ChatTurn } from '../src/llm/types.js';
import { delegatingStore, MemoryStore, RedisStore, SqliteStore, type SnapshotStore } from '../src/stores/index.js';
import { startTestServer, tempSqlitePath, type TestServer } from './support/harness.js';
import { REDIS_URL, redisAvailable } from './support/redis.js';
import { expectedResumeLine, postDroppedAction, say } from './support/resume-scenario.js';

const RACES = 50;
const redisUp = await redisAvailable();

/** A real store that counts, per call, the writes it accepted. */
function countingSaves(inner: SnapshotStore): { store: SnapshotStore; saves: Map<string, number> } {
  const saves = new Map<string, number>();
  const store = delegatingStore(inner, {
    save: async (lease, input) => {
      await inner.save(lease, input);
      saves.set(lease.callSid, (saves.get(lease.callSid) ?? 0) + 1);
    },
  });
  return { store, saves };
}

interface Instance {
  ts: TestServer;
  saves: Map<string, number>;
}

const cases = [
  { kind: 'sqlite', available: true, open: (file: string) => new SqliteStore(file) },
  { kind: 'redis', available: redisUp, open: (prefix: string) => new RedisStore(REDIS_URL, { prefix }) },
] as const;

describe.each(cases)('$kind: two instances racing for one call', ({ kind, available, open }) => {
  let llm: FakeOpenAI;
  const instances: Instance[] = [];

  beforeAll(async () => {
    if (!available) return;
    llm = await startFakeOpenAI();
    // One shared namespace: a SQLite file, or a Redis key prefix.
    const where = kind === 'sqlite' ? tempSqlitePath() : `test:race:${randomUUID()}:`;
    for (let i = 0; i < 3; i++) {
      const { store, saves } = countingSaves(open(where));
      instances.push({ ts: await startTestServer({ store, sharedLlm: llm, config: { store: kind } }), saves });
    }
  });
  afterAll(async () => {
    await Promise.all(instances.map((i) => i.ts.close()));
    await llm?.close();
  });

  /** A call on `owner` that said something and then dropped; resolves once the owner noticed. */
  async function droppedCall(owner: Instance): Promise<SimulatedCall> {
    const call = await SimulatedCall.connect({ url: owner.ts.server.relayUrl });
    expect(await say(call, 'hello')).toBe('You said: hello');
    await call.drop();
    await expect.poll(() => lifecycleOf(owner.ts.server.manager.get(call.callSid)?.actor.getSnapshot().value)).toBe('disconnected');
    await owner.ts.server.manager.flush();
    return call;
  }

  /** Opens both sockets at once, each saying `words` right after its setup, as a caller racing itself. */
  async function race(options: [SimulatedCallOptions, SimulatedCallOptions], words: string): Promise<SimulatedCall[]> {
    return Promise.all(
      options.map(async (o) => {
        const socket = await SimulatedCall.connect(o);
        socket.prompt(words);
        return socket;
      }),
    );
  }

  async function expectOneWinner(callSid: string, pair: [Instance, Instance], sockets: SimulatedCall[], words: string, savesBefore: number[]): Promise<void> {
    // The loser is closed without a word; the winner is the one still open once the loser is gone.
    const closed = await Promise.race(sockets.map((s, i) => s.closed.then(() => i)));
    const loser = sockets[closed]!;
    const winner = sockets[1 - closed]!;
    expect(loser.messages, `the losing socket heard something (closed ${JSON.stringify(loser.closeInfo)})`).toEqual([]);
    expect([1008, 1013, 4001]).toContain(loser.closeInfo!.code);
    expect((await winner.nextReply(10_000)).text).toBe(expectedResumeLine('en-US'));
    expect((await winner.nextReply(10_000)).text).toBe(`You said: ${words}`);
    expect(winner.closeInfo).toBeUndefined();

    const winning = pair.find((p) => p.ts.server.manager.get(callSid)?.socket !== null && p.ts.server.manager.get(callSid) !== undefined)!;
    const losing = pair.find((p) => p !== winning)!;
    await winning.ts.server.manager.flush();
    expect(losing.ts.server.manager.get(callSid)?.socket ?? null).toBeNull();
    expect(losing.saves.get(callSid) ?? 0, 'the losing instance wrote the session').toBe(savesBefore[pair.indexOf(losing)]);

    const record = await winning.ts.server.store.load(callSid);
    const history = (record?.snapshot as { context: { history: ChatTurn[] } }).context.history;
    expect(history.filter((t) => t.role === 'user' && t.content === words)).toHaveLength(1);
    expect(record?.state).toBe('connected');
    await winner.drop();
  }

  it.runIf(available)(`${RACES} races on each resume path: one socket resumes, the other hears nothing, nothing is said twice`, async () => {
    const [a, b, c] = instances as [Instance, Instance, Instance];
    for (let i = 0; i < RACES; i++) {
      const call = await droppedCall(a);
      // Even races: the holder against another instance; odd ones: two instances that do not hold it.
      const pair: [Instance, Instance] = i % 2 === 0 ? [a, b] : [b, c];
      const words = `race ${i}`;
      let options: [SimulatedCallOptions, SimulatedCallOptions];
      if (i % 4 < 2) {
        // Our own clients: the same sessionId and reconnection on both sockets.
        options = [
          { url: pair[0].ts.server.relayUrl, callSid: call.callSid, sessionId: call.sessionId, reconnection: true },
          { url: pair[1].ts.server.relayUrl, callSid: call.callSid, sessionId: call.sessionId, reconnection: true },
        ];
      } else {
        // Twilio's path: the reconnect TwiML's token, brought twice (a replayed setup).
        const action = await postDroppedAction(a.ts.server.httpUrl, call);
        await a.ts.server.manager.flush();
        options = [
          twilioReconnectOptions(action.body, call, { url: pair[0].ts.server.relayUrl }),
          twilioReconnectOptions(action.body, call, { url: pair[1].ts.server.relayUrl }),
        ];
      }
      const savesBefore = pair.map((p) => p.saves.get(call.callSid) ?? 0);
      const sockets = await race(options, words);
      await expectOneWinner(call.callSid, pair, sockets, words, savesBefore);
    }
  }, 240_000);
});

describe('a resume that cannot be stored', () => {
  it('answers the callback 503 (Twilio retries), says nothing on a new socket, closes it (1011) and leaves the session waiting', async () => {
    const inner = new MemoryStore();
    let failing = false;
    // The store's disk fails for a while (the write is refused); everything else works.
    const store = delegatingStore(inner, {
      save: async (lease, input) => {
        if (failing) throw new Error('disk full');
        return inner.save(lease, input);
      },
    });
    const ts = await startTestServer({ store });
    try {
      const call = await SimulatedCall.connect({ url: ts.server.relayUrl });
      expect(await say(call, 'hello')).toBe('You said: hello');
      await call.drop();
      const lifecycle = () => lifecycleOf(ts.server.manager.get(call.callSid)?.actor.getSnapshot().value);
      await expect.poll(lifecycle).toBe('disconnected');
      await ts.server.manager.flush();

      failing = true;
      // Twilio would be told to reconnect with a token no instance could check: it is asked to retry instead.
      const action = await postDroppedAction(ts.server.httpUrl, call);
      expect(action.status).toBe(503);
      const refused = await SimulatedCall.connect({ url: ts.server.relayUrl, callSid: call.callSid, sessionId: call.sessionId, reconnection: true });
      expect(await refused.closed).toMatchObject({ code: 1011 });
      expect(refused.messages).toEqual([]);
      expect(lifecycle()).toBe('disconnected');

      failing = false;
      const back = await SimulatedCall.connect({ url: ts.server.relayUrl, callSid: call.callSid, sessionId: call.sessionId, reconnection: true });
      expect((await back.nextReply(10_000)).text).toBe(expectedResumeLine('en-US'));
      expect(await say(back, 'and now?')).toBe('You said: and now?');
      await back.drop();
    } finally {
      await ts.close();
    }
  });
});
