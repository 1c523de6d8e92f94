// Removes the keys a run wrote to Redis (every server child has its own prefix).
import { closeClient, connectRedis, scanKeys } from '../src/stores/redis-connection.js';

/** Any REDIS_URL form; one DEL per key (a cluster refuses a DEL across slots), auto-pipelined per node. */
export async function removeRedisKeys(url: string, prefix: string): Promise<void> {
  const redis = connectRedis(url, { autoPipelining: true });
  try {
    for await (const keys of scanKeys(redis, `${prefix}*`, 1000)) await Promise.all(keys.map((key) => redis.del(key)));
  } finally {
    await closeClient(redis);
  }
}
