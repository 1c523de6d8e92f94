// The Redis store on a real 3-master Redis Cluster this file starts itself: the same store contract
// as every other store, keys of one call on one slot, calls spread over every master, and a call
// moved between two servers through the cluster.
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SimulatedCall } from '../src/testing/twilio-sim.js';
import { startFakeOpenAI } from '../src/testing/fake-openai-server.js';
import { RedisStore } from '../src/stores/index.js';
import { startTestServer } from './support/harness.js';
import { redisBinariesAvailable, startRedisCluster, type RedisDeployment } from './support/redis-deployments.js';
import {
  SPANISH_OK,
  expectedResumeLine,
  lastUserText,
  persisted,
  resumeViaTwilio,
  say,
  scenarioScript,
  transcriptOf,
  waitForRecord,
  waitForRequest,
} from './support/resume-scenario.js';
import { MINUTE, newSid, sharedRedisContract, storeContract } from './support/store-contract.js';

const available = redisBinariesAvailable();
const newPrefix = () => `test:cluster:${randomUUID()}:`;

describe.skipIf(!available)('Redis Cluster (3 masters)', () => {
  let cluster: RedisDeployment;
  beforeAll(async () => {
    cluster = await startRedisCluster(3);
  }, 60_000);
  afterAll(async () => {
    await cluster?.stop();
  });

  describe('store contract', () => {
    storeContract({ kind: 'redis', open: (o) => new RedisStore(cluster.url, { prefix: newPrefix(), ...o }) });
  });

  describe('shared-store contract', () => {
    sharedRedisContract({ open: (prefix) => new RedisStore(cluster.url, { prefix }), newPrefix });
  });

  describe('key layout', () => {
    it("keeps a call's keys on one slot and spreads calls over every master", async () => {
      const prefix = newPrefix();
      const store = new RedisStore(cluster.url, { prefix });
      const masters = cluster.dataPorts.map((port) => new Redis({ host: '127.0.0.1', port }));
      try {
        const sids = Array.from({ length: 60 }, newSid);
        await Promise.all(
          sids.map(async (sid) => store.save(await store.acquire(sid, 'a'), { snapshot: { sid }, state: 'connected', retainUntil: Date.now() + MINUTE })),
        );
        // Each master holds its own share: KEYS is fine on a test cluster this small.
        const perMaster = await Promise.all(masters.map((m) => m.keys(`${prefix}*`)));
        expect(perMaster.every((keys) => keys.length > 0)).toBe(true);
        expect(perMaster.flat()).toHaveLength(2 * sids.length);
        for (const keys of perMaster) {
          // Record and epoch of a call live together, on the slot of its hash tag.
          const sidsHere = new Set(keys.map((k) => /\{([^}]+)\}/.exec(k)?.[1]));
          for (const sid of sidsHere) {
            expect(keys).toEqual(expect.arrayContaining([`${prefix}{${sid}}:rec`, `${prefix}{${sid}}:epoch`]));
          }
        }
        const [master] = masters;
        const slots = await Promise.all(
          sids.slice(0, 5).flatMap((sid) => [`${prefix}{${sid}}:rec`, `${prefix}{${sid}}:epoch`]).map((key) => master!.cluster('KEYSLOT', key)),
        );
        for (let i = 0; i < slots.length; i += 2) expect(slots[i]).toBe(slots[i + 1]);
      } finally {
        await store.close();
        await Promise.all(masters.map((m) => m.quit()));
      }
    });

    it('refuses a key prefix with braces, which would move the hash tag', () => {
      expect(() => new RedisStore(cluster.url, { prefix: 'relay:{x}:' })).toThrow(/must not contain \{ or \}/);
    });
  });

  describe('end to end', () => {
    it('a call on server A drops and is resumed by server B through the cluster; A lets go at once', async () => {
      const llm = await startFakeOpenAI({ script: scenarioScript() });
      const prefix = newPrefix();
      const config = { store: 'redis' as const, redisUrl: cluster.url, graceMs: 60_000 };
      const a = await startTestServer({ sharedLlm: llm, redisPrefix: prefix, config: { ...config, instanceId: 'A' } });
      const b = await startTestServer({ sharedLlm: llm, redisPrefix: prefix, config: { ...config, instanceId: 'B' } });
      const calls: SimulatedCall[] = [];
      try {
        const call = await SimulatedCall.connect({ url: a.server.relayUrl });
        calls.push(call);
        expect(await say(call, 'hello there')).toBe('You said: hello there');
        expect(await say(call, 'can we speak spanish')).toBe(SPANISH_OK);
        // B sees A's writes: the state lives in the cluster, not in A.
        await waitForRecord(b.server.store, call.callSid, (r) => persisted(r).context?.history?.length === 6);
        await call.drop();

        // Twilio's /action callback lands on B, which takes the session over and names its own socket.
        const { call: resumed, twiml } = await resumeViaTwilio(b.server.httpUrl, call);
        calls.push(resumed);
        expect(twiml).toContain(b.server.relayUrl);
        // The takeover notice (PUBLISH inside the Lua script) reaches A through the cluster bus.
        await expect.poll(() => a.server.manager.get(call.callSid)).toBeUndefined();
        expect(b.server.manager.get(call.callSid)).toBeDefined();

        expect(await resumed.waitForType('language')).toMatchObject({ ttsLanguage: 'es-US' });
        expect((await resumed.nextReply()).text).toBe(expectedResumeLine('es-US'));
        expect(await say(resumed, 'are you still there')).toBe('You said: are you still there');
        const request = await waitForRequest(llm, (m) => lastUserText(m) === 'are you still there');
        expect(transcriptOf(request.messages)).toEqual([
          'user:hello there',
          'assistant:You said: hello there',
          'user:can we speak spanish',
          'assistant: [switch_language]',
          'tool:language switched to es-US',
          `assistant:${SPANISH_OK}`,
          'user:are you still there',
        ]);
        expect((await b.server.store.list()).map((r) => r.callSid)).toEqual([call.callSid]);
      } finally {
        await Promise.all(calls.map((c) => c.drop()));
        await Promise.all([a.close(), b.close()]);
        await llm.close();
      }
    });
  });
});
