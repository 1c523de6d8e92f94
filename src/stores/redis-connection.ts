// REDIS_URL names one of three deployments; this module parses it and builds the matching ioredis client.
//   redis://[user:pass@]host:port[/db]                 one server (rediss:// for TLS; ioredis parses it)
//   redis-sentinel://[user:pass@]h1:26379,h2:26379/mymaster[/db][?sentinelPassword=..&sentinelUsername=..]
//   redis-cluster://[user:pass@]h1:7000,h2:7001        Redis Cluster (startup nodes; the rest is discovered)
import { Cluster, Redis, type ClusterNode } from 'ioredis';

export type RedisClient = Redis | Cluster;

export interface HostPort {
  host: string;
  port: number;
}

export type RedisTarget =
  | { mode: 'plain'; url: string }
  | {
      mode: 'sentinel';
      sentinels: HostPort[];
      name: string;
      db: number;
      username?: string;
      password?: string;
      sentinelUsername?: string;
      sentinelPassword?: string;
    }
  | { mode: 'cluster'; nodes: HostPort[]; username?: string; password?: string };

export class RedisUrlError extends Error {
  override name = 'RedisUrlError';
}

const FORMS =
  'expected redis://host:port[/db], rediss://..., redis-sentinel://host:port[,host:port...]/masterName[/db] ' +
  'or redis-cluster://host:port[,host:port...]';

const DEFAULT_PORT = { sentinel: 26379, cluster: 6379 } as const;
const SENTINEL_PARAMS = new Set(['sentinelPassword', 'sentinelUsername']);

/** Parses REDIS_URL; throws RedisUrlError (credentials masked) when it names no supported deployment. */
export function parseRedisUrl(url: string): RedisTarget {
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(url)?.[1]?.toLowerCase();
  if (scheme === 'redis' || scheme === 'rediss') {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw urlError(url, 'not a valid URL');
    }
    if (!parsed.hostname) throw urlError(url, 'no host');
    return { mode: 'plain', url };
  }
  if (scheme !== 'redis-sentinel' && scheme !== 'redis-cluster') throw urlError(url, 'unknown scheme');
  const mode = scheme === 'redis-sentinel' ? 'sentinel' : 'cluster';

  // URL cannot hold a host list, so split by hand: scheme://[userinfo@]hosts[/path][?query].
  const rest = url.slice(scheme.length + 3);
  const queryAt = rest.indexOf('?');
  const beforeQuery = queryAt < 0 ? rest : rest.slice(0, queryAt);
  const query = new URLSearchParams(queryAt < 0 ? '' : rest.slice(queryAt + 1));
  const slash = beforeQuery.indexOf('/', beforeQuery.lastIndexOf('@') + 1);
  const authority = slash < 0 ? beforeQuery : beforeQuery.slice(0, slash);
  const path = slash < 0 ? '' : beforeQuery.slice(slash + 1);
  const at = authority.lastIndexOf('@');
  const { username, password } = at < 0 ? {} : userInfo(url, authority.slice(0, at));
  const hosts = authority
    .slice(at + 1)
    .split(',')
    .map((entry) => hostPort(url, entry, DEFAULT_PORT[mode]));

  if (mode === 'cluster') {
    if (path !== '') throw urlError(url, 'a cluster has no database or master name (remove the path)');
    if ([...query.keys()].length > 0) throw urlError(url, 'a cluster URL takes no query parameters');
    return { mode, nodes: hosts, username, password };
  }

  const [name, dbText, ...extra] = path.split('/').map(decodeURIComponent);
  if (!name) throw urlError(url, 'the master name is missing (…/mymaster)');
  if (extra.length > 0) throw urlError(url, 'the path is /masterName or /masterName/db');
  const db = dbText === undefined || dbText === '' ? 0 : Number(dbText);
  if (!Number.isInteger(db) || db < 0) throw urlError(url, `database "${dbText}" is not a number`);
  for (const key of query.keys()) {
    if (!SENTINEL_PARAMS.has(key)) throw urlError(url, `unknown parameter "${key}" (only ${[...SENTINEL_PARAMS].join(', ')})`);
  }
  return {
    mode,
    sentinels: hosts,
    name,
    db,
    username,
    password,
    sentinelUsername: query.get('sentinelUsername') ?? undefined,
    sentinelPassword: query.get('sentinelPassword') ?? undefined,
  };
}

export interface ConnectOptions {
  /** Batches the commands of one event-loop turn into one write per server (per node in a cluster). */
  autoPipelining?: boolean;
  /** Every command fails after this long without a reply; unset keeps ioredis' defaults (wait for ever). */
  commandTimeoutMs?: number;
}

/** Builds the ioredis client REDIS_URL names. It connects in the background, as ioredis always does. */
export function connectRedis(url: string | RedisTarget, opts: ConnectOptions = {}): RedisClient {
  const target = typeof url === 'string' ? parseRedisUrl(url) : url;
  const enableAutoPipelining = opts.autoPipelining ?? false;
  const bounded =
    opts.commandTimeoutMs === undefined
      ? {}
      : {
          // A reply that does not come (a stopped or partitioned server) fails the command ...
          commandTimeout: opts.commandTimeoutMs,
          // ... and commands queued while the connection is down fail at the first failed reconnect
          // instead of the 20th, so they neither wait nor run long after their caller gave up.
          maxRetriesPerRequest: 1,
        };
  switch (target.mode) {
    case 'plain':
      return new Redis(target.url, { enableAutoPipelining, ...bounded });
    case 'sentinel':
      return new Redis({
        sentinels: target.sentinels,
        name: target.name,
        db: target.db,
        username: target.username,
        password: target.password,
        sentinelUsername: target.sentinelUsername,
        sentinelPassword: target.sentinelPassword,
        enableAutoPipelining,
        ...bounded,
      });
    case 'cluster':
      return new Cluster(target.nodes satisfies ClusterNode[], {
        enableAutoPipelining,
        redisOptions: { username: target.username, password: target.password, ...bounded },
      });
  }
}

/** Another client of the same deployment and options (pub/sub needs a connection of its own). */
export function duplicateClient(client: RedisClient): RedisClient {
  // Both classes' duplicate() are generic since ioredis 6, so TypeScript cannot call it on the union.
  return client instanceof Cluster ? client.duplicate() : client.duplicate();
}

/** The servers that hold keys: every master of a cluster, or the one server otherwise. */
async function keyHolders(client: RedisClient): Promise<Redis[]> {
  if (!(client instanceof Cluster)) return [client];
  // The slot map is known once the cluster is ready; before that nodes() is empty. A command waits in
  // the offline queue until then (or fails like any other command would).
  if (client.status !== 'ready') await client.ping();
  return client.nodes('master');
}

/** SCANs every key holder for `match`, yielding batches of keys. */
export async function* scanKeys(client: RedisClient, match: string, count = 500): AsyncGenerator<string[]> {
  for (const node of await keyHolders(client)) {
    let cursor = '0';
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', match, 'COUNT', count);
      cursor = next;
      if (keys.length > 0) yield keys;
    } while (cursor !== '0');
  }
}

/** Reports connection errors of every mode: a cluster also reports per-node errors separately. */
export function onConnectionError(client: RedisClient, listener: (err: Error) => void): void {
  client.on('error', listener);
  if (!(client instanceof Cluster)) return;
  client.on('node error', (err: Error, address: string) => listener(new Error(`cluster node ${address}: ${err.message}`, { cause: err })));
}

/**
 * Closes a client in any state. When connected: QUIT (queued commands finish first), resolving once
 * the client has ended. Otherwise it stops reconnecting at once (QUIT would wait for a connection
 * that may never come).
 */
export async function closeClient(client: RedisClient): Promise<void> {
  if (client.status === 'end') return;
  if (client.status !== 'ready') return client.disconnect();
  const ended = new Promise<void>((resolve) => client.once('end', () => resolve()));
  try {
    await client.quit();
  } catch {
    client.disconnect(); // connected but not answering (a hung server): QUIT timed out
  }
  await ended;
}

/** host:port of every server to try first (for reachability checks). */
export function seedAddresses(url: string): HostPort[] {
  const target = parseRedisUrl(url);
  if (target.mode === 'sentinel') return target.sentinels;
  if (target.mode === 'cluster') return target.nodes;
  const u = new URL(target.url);
  return [{ host: u.hostname.replace(/^\[(.*)\]$/, '$1'), port: Number(u.port || 6379) }];
}

/** The URL with its password (and sentinelPassword) masked, for error messages and logs. */
export function maskRedisUrl(url: string): string {
  return url.replace(/(\/\/[^/@]*?:)[^/@]*@/, '$1***@').replace(/([?&]sentinelPassword=)[^&]*/i, '$1***');
}

function userInfo(url: string, text: string): { username?: string; password?: string } {
  const colon = text.indexOf(':');
  try {
    const username = decodeURIComponent(colon < 0 ? text : text.slice(0, colon));
    const password = colon < 0 ? undefined : decodeURIComponent(text.slice(colon + 1));
    // redis://:pass@host means the default user, like ioredis reads a plain URL.
    return { username: username || undefined, password: password || undefined };
  } catch {
    throw urlError(url, 'malformed percent-encoding in the credentials');
  }
}

function hostPort(url: string, entry: string, defaultPort: number): HostPort {
  // [v6::addr]:port, host:port or host alone.
  const match = /^(?:\[([^\]]+)\]|([^:[\]]+))(?::(\d*))?$/.exec(entry);
  if (!match) throw urlError(url, `"${entry}" is not host:port`);
  const host = match[1] ?? match[2] ?? '';
  const portText = match[3];
  const port = portText === undefined || portText === '' ? defaultPort : Number(portText);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw urlError(url, `bad port in "${entry}"`);
  return { host, port };
}

function urlError(url: string, reason: string): RedisUrlError {
  return new RedisUrlError(`REDIS_URL ${maskRedisUrl(url)}: ${reason}; ${FORMS}`);
}
