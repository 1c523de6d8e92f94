import net from 'node:net';

export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

/**
 * Whether the real Redis answers. CI must have it (a missing Redis fails there);
 * locally the Redis suites are skipped with a clear message instead.
 */
export async function redisAvailable(): Promise<boolean> {
  const url = new URL(REDIS_URL);
  const ok = await new Promise<boolean>((resolve) => {
    const socket = net.connect({ host: url.hostname, port: Number(url.port || 6379) });
    socket.setTimeout(1000);
    socket.once('connect', () => {
      socket.end();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
    socket.once('timeout', () => {
      socket.destroy();
      resolve(false);
    });
  });
  if (!ok && process.env.CI) throw new Error(`Redis is required in CI but ${REDIS_URL} is unreachable`);
  if (!ok) console.warn(`[skip] Redis at ${REDIS_URL} is unreachable: Redis suites are skipped locally`);
  return ok;
}
