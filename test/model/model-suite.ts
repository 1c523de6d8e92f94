// Model-based tests of the call (issue 5.1): every shortest path of the call model, plus a bounded
// set of longer simple paths, runs against the real server over real sockets, and every state
// along the way is checked against the live actor and the stored record. One test file per store
// (memory/sqlite/redis.model.test.ts) calls this, so vitest runs the stores in parallel.
import { randomUUID } from 'node:crypto';
import { afterAll, describe, it } from 'vitest';
import { REDIS_URL, redisAvailable } from '../support/redis.js';
import { clearRedisPrefix } from '../support/resume-scenario.js';
import { CallDriver } from './call-driver.js';
import type { StoreKind } from './call-model.js';
import { shortestPaths, simplePaths } from './call-paths.js';

/** Longer simple paths added per store on top of the shortest paths. */
const SIMPLE_PATHS_PER_STORE = 6;
/**
 * Grace never runs out on its own during a path: the server's clock only moves when GRACE_EXPIRE
 * moves it past the deadline. The keypad idle timer never fires either (paths do not wait for it).
 */
const TIMING = { graceMs: 10 * 60_000, dtmfIdleMs: 60_000, storyDelayMs: 50 };
const PATH_TIMEOUT_MS = 30_000;

export async function describeCallModel(store: StoreKind): Promise<void> {
  const available = store !== 'redis' || (await redisAvailable());
  describe(`call model against the real server, ${store} store`, () => {
    const shortest = shortestPaths(store);
    const simple = simplePaths(store, SIMPLE_PATHS_PER_STORE);
    console.log(`[model] ${store}: ${shortest.length} shortest + ${simple.length} simple paths`);
    const prefix = `test:model:${randomUUID().slice(0, 8)}:${store}:`;
    afterAll(async () => {
      if (store === 'redis' && available) await clearRedisPrefix(REDIS_URL, prefix);
    });

    const cases = [...shortest.map((p) => ({ kind: 'shortest', path: p })), ...simple.map((p) => ({ kind: 'simple', path: p }))];
    cases.forEach(({ kind, path }, i) => {
      it.skipIf(!available)(
        `${kind} #${i}: ${path.description}`,
        async () => {
          const driver = await CallDriver.start({ store, redisPrefix: `${prefix}${i}:`, ...TIMING });
          try {
            await path.test({ events: driver.events, states: { '*': (state) => driver.check(state) } });
          } finally {
            await driver.dispose();
          }
        },
        PATH_TIMEOUT_MS,
      );
    });
  });
}
