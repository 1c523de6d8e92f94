// The Redis store reached through Redis Sentinel (one server and one Sentinel this file starts
// itself): the same store contract as every other store, and a call moved between two servers.
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SimulatedCall } from '../src/testing/twilio-sim.js';
import { startFakeOpenAI } from '../src/testing/fake-openai-server.js';
import { RedisStore } from '../src/stores/index.js';
import { startTestServer } from './support/harness.js';
import { redisBinariesAvailable, startRedisSentinel, type RedisDeployment } from './support/redis-deployments.js';
import { expectedResumeLine, lastUserText, persisted, resumeViaTwilio, say, scenarioScript, transcriptOf, waitForRecord, waitForRequest } from './support/resume-scenario.js';
import { MINUTE, newSid, sharedRedisContract, storeContract } from './support/store-contract.js';

const available = redisBinariesAvailable();
const newPrefix = () => `test:sentinel:${randomUUID()}:`;

describe.skipIf(!available)('Redis behind Sentinel', () => {
  let sentinel: RedisDeployment;
  beforeAll(async () => {
    sentinel = await startRedisSentinel();
  }, 60_000);
  afterAll(async () => {
    await sentinel?.stop();
  });

  describe('store contract', () => {
    storeContract({ kind: 'redis', open: (o) => new RedisStore(sentinel.url, { prefix: newPrefix(), ...o }) });
  });

  describe('shared-store contract', () => {
    sharedRedisContract({ open: (prefix) => new RedisStore(sentinel.url, { prefix }), newPrefix });
  });

  it('writes to the master the Sentinel names, in the database the URL names', async () => {
    const prefix = newPrefix();
    const store = new RedisStore(`${sentinel.url}/4`, { prefix });
    const master = new Redis({ host: '127.0.0.1', port: sentinel.dataPorts[0], db: 4 });
    try {
      const sid = newSid();
      await store.save(await store.acquire(sid, 'a'), { snapshot: {}, state: 'connected', retainUntil: Date.now() + MINUTE });
      expect(await master.exists(`${prefix}{${sid}}:rec`, `${prefix}{${sid}}:epoch`)).toBe(2);
    } finally {
      await store.close();
      await master.quit();
    }
  });

  it('a call on server A drops and is resumed by server B; A lets go at once', async () => {
    const llm = await startFakeOpenAI({ script: scenarioScript() });
    const prefix = newPrefix();
    const config = { store: 'redis' as const, redisUrl: sentinel.url, graceMs: 60_000 };
    const a = await startTestServer({ sharedLlm: llm, redisPrefix: prefix, config: { ...config, instanceId: 'A' } });
    const b = await startTestServer({ sharedLlm: llm, redisPrefix: prefix, config: { ...config, instanceId: 'B' } });
    const calls: SimulatedCall[] = [];
    try {
      const call = await SimulatedCall.connect({ url: a.server.relayUrl });
      calls.push(call);
      expect(await say(call, 'hello there')).toBe('You said: hello there');
      await waitForRecord(b.server.store, call.callSid, (r) => persisted(r).context?.history?.length === 2);
      await call.drop();

      const { call: resumed } = await resumeViaTwilio(b.server.httpUrl, call);
      calls.push(resumed);
      await expect.poll(() => a.server.manager.get(call.callSid)).toBeUndefined();
      expect((await resumed.nextReply()).text).toBe(expectedResumeLine('en-US'));
      expect(await say(resumed, 'are you still there')).toBe('You said: are you still there');
      const request = await waitForRequest(llm, (m) => lastUserText(m) === 'are you still there');
      expect(transcriptOf(request.messages)).toEqual(['user:hello there', 'assistant:You said: hello there', 'user:are you still there']);
    } finally {
      await Promise.all(calls.map((c) => c.drop()));
      await Promise.all([a.close(), b.close()]);
      await llm.close();
    }
  });
});
