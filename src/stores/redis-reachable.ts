import net from 'node:net';
import { seedAddresses, type HostPort } from './redis-connection.js';

/**
 * Whether something accepts TCP connections at REDIS_URL within a second (no Redis client needed):
 * the server, or any of the listed sentinels or cluster nodes.
 */
export async function redisReachable(url: string): Promise<boolean> {
  for (const address of seedAddresses(url)) if (await accepts(address)) return true;
  return false;
}

function accepts({ host, port }: HostPort): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
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
}
