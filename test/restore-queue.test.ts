// Restores run one at a time (a reconnect storm stays orderly), but a new call never waits in that
// queue: a setup that claims no resume is looked up at once. The store here is a real MemoryStore
// shared by two server instances; a resume's store read is held until the test releases it, so the
// restore queue is busy for as long as the test says.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SimulatedCall } from '../src/testing/twilio-sim.js';
import { startFakeOpenAI, type FakeOpenAI } from '../src/testing/fake-openai-server.js';
import { MemoryStore, delegatingStore } from '../src/stores/index.js';
import { lifecycleOf } from '../src/machines/session.js';
import { resumeLine } from '../src/machines/phrases.js';
import { startTestServer, type TestServer } from './support/harness.js';
import { say } from './support/resume-scenario.js';

let llm: FakeOpenAI;
beforeAll(async () => {
  llm = await startFakeOpenAI();
});
afterAll(async () => {
  await llm.close();
});

describe('the restore queue', () => {
  it('holds resumes in line, never a new call', async () => {
    const inner = new MemoryStore();
    const held = new Set<string>();
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const readsWaiting: string[] = [];
    const store = delegatingStore(inner, {
      load: async (callSid) => {
        if (held.has(callSid)) {
          readsWaiting.push(callSid);
          await gate;
        }
        return inner.load(callSid);
      },
    });
    const servers: TestServer[] = [];
    try {
      const a = await startTestServer({ sharedLlm: llm, store });
      servers.push(a);
      const b = await startTestServer({ sharedLlm: llm, store });
      servers.push(b);

      // A call on instance A drops; its resume goes to instance B, which must read it from the store.
      const call = await SimulatedCall.connect({ url: a.server.relayUrl });
      expect(await say(call, 'hello')).toBe('You said: hello');
      await call.drop();
      await expect.poll(() => lifecycleOf(a.server.manager.get(call.callSid)?.actor.getSnapshot().value)).toBe('disconnected');
      await a.server.manager.flush();

      held.add(call.callSid);
      const resumed = await SimulatedCall.connect({ url: b.server.relayUrl, callSid: call.callSid, sessionId: call.sessionId, reconnection: true });
      await expect.poll(() => readsWaiting).toEqual([call.callSid]);

      // The queue is busy with that resume: a new call on B starts and is answered all the same.
      const fresh = await SimulatedCall.connect({ url: b.server.relayUrl });
      expect(await say(fresh, 'are you there')).toBe('You said: are you there');
      expect(resumed.messages).toEqual([]); // still waiting in the queue

      release();
      const back = await resumed.nextReply();
      expect(back.text.startsWith(resumeLine('en-US'))).toBe(true);
      await Promise.all([fresh.drop(), resumed.drop()]);
    } finally {
      release();
      for (const s of servers) await s.close();
    }
  });
});
