// Shared set-up of the suites that run server child processes against one fake LLM:
// everything they open is closed and their Redis keys are removed afterwards.
import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll } from 'vitest';
import type { SimulatedCall } from '../../src/testing/twilio-sim.js';
import { startFakeOpenAI, type FakeOpenAI } from '../../src/testing/fake-openai-server.js';
import type { SnapshotStore } from '../../src/stores/index.js';
import { REDIS_URL } from './redis.js';
import { clearRedisPrefix, scenarioScript } from './resume-scenario.js';
import { killAllServerProcesses } from './server-process.js';

export interface ProcessFixture {
  readonly llm: FakeOpenAI;
  readonly prefix: string;
  /** Registers a call to be dropped at the end. */
  track(call: SimulatedCall): SimulatedCall;
  /** Registers a store to be closed at the end. */
  keep<S extends SnapshotStore>(store: S): S;
  /** Stories stop after `chunks` chunks until `until` resolves (for the current test). */
  holdStories(chunks: number, until: Promise<unknown>): void;
}

const STORY_DELAY_MS = 60;

export function useProcessFixture(name: string, redisUp: boolean): ProcessFixture {
  let llm: FakeOpenAI | undefined;
  const calls: SimulatedCall[] = [];
  const stores: SnapshotStore[] = [];
  const prefix = `test:${name}:${randomUUID()}:`;
  beforeAll(async () => {
    llm = await startFakeOpenAI({ script: scenarioScript({ storyDelayMs: STORY_DELAY_MS }) });
  });
  afterEach(() => {
    llm?.setScript(scenarioScript({ storyDelayMs: STORY_DELAY_MS }));
  });
  afterAll(async () => {
    await killAllServerProcesses();
    await Promise.all(calls.map((c) => c.drop()));
    await Promise.all(stores.map((s) => s.close()));
    await llm?.close();
    if (redisUp) await clearRedisPrefix(REDIS_URL, prefix);
  });
  return {
    get llm() {
      if (!llm) throw new Error('fake LLM not started yet (use the fixture inside tests or hooks)');
      return llm;
    },
    prefix,
    track: (call) => (calls.push(call), call),
    keep: (store) => (stores.push(store), store),
    holdStories: (chunks, until) => llm?.setScript(scenarioScript({ storyDelayMs: STORY_DELAY_MS, storyHold: { chunks, until } })),
  };
}
