import { redisReachable } from '../../src/stores/redis-reachable.js';

export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

/**
 * Whether the real Redis answers. CI must have it (a missing Redis fails there);
 * locally the Redis suites are skipped with a clear message instead.
 */
export async function redisAvailable(): Promise<boolean> {
  const ok = await redisReachable(REDIS_URL);
  if (!ok && process.env.CI) throw new Error(`Redis is required in CI but ${REDIS_URL} is unreachable`);
  if (!ok) console.warn(`[skip] Redis at ${REDIS_URL} is unreachable: Redis suites are skipped locally`);
  return ok;
}
