// Throwaway Redis deployments for tests: a 3-master Redis Cluster, or one server watched by a Sentinel,
// on free loopback ports in a temporary directory. Each stops every process it started, by PID.
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { waitUntilAsync } from './conditions.js';

const run = promisify(execFile);

export interface RedisDeployment {
  /** REDIS_URL for the store (redis-cluster://… or redis-sentinel://…). */
  url: string;
  /** Ports of the data servers (cluster masters, or the sentinel's master). */
  dataPorts: number[];
  stop(): Promise<void>;
}

/**
 * Whether redis-server and redis-cli are installed. CI must have them (apt-get install redis-server);
 * locally the suites are skipped with a message instead.
 */
export function redisBinariesAvailable(): boolean {
  const ok = ['redis-server', 'redis-cli'].every((bin) => spawnSync(bin, ['--version']).status === 0);
  if (!ok && process.env.CI) throw new Error('redis-server and redis-cli are required in CI');
  if (!ok) console.warn('[skip] redis-server / redis-cli not installed: cluster and sentinel suites are skipped locally');
  return ok;
}

/** Starts `masters` cluster nodes, joins them with `redis-cli --cluster create`, waits for cluster_state:ok. */
export async function startRedisCluster(masters = 3): Promise<RedisDeployment> {
  const group = new ProcessGroup('relay-redis-cluster-');
  try {
    // A node also listens on port + 10000 for the cluster bus.
    const ports: number[] = [];
    while (ports.length < masters) {
      const port = await freePort((p) => p + 10_000 <= 65_535 && !ports.includes(p), (p) => [p + 10_000]);
      ports.push(port);
    }
    await Promise.all(
      ports.map((port) =>
        group.start(
          `node-${port}`,
          ['--cluster-enabled', 'yes', '--cluster-config-file', path.join(group.dir, `nodes-${port}.conf`), ...dataServerArgs(port, group.dir)],
          /Ready to accept connections/,
        ),
      ),
    );
    await run('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes']);
    const clients = ports.map((port) => new Redis({ host: '127.0.0.1', port, lazyConnect: true }).on('error', () => {}));
    try {
      await waitUntilAsync(async () => {
        const infos = await Promise.all(clients.map((c) => c.cluster('INFO') as Promise<string>));
        return infos.every((info) => /cluster_state:ok/.test(info) && new RegExp(`cluster_known_nodes:${masters}\\b`).test(info));
      }, 'cluster_state:ok on every node', 15_000);
    } finally {
      clients.forEach((c) => c.disconnect());
    }
    return { url: `redis-cluster://${ports.map((p) => `127.0.0.1:${p}`).join(',')}`, dataPorts: ports, stop: () => group.stop() };
  } catch (err) {
    await group.stop();
    throw err;
  }
}

export const SENTINEL_MASTER = 'relaymaster';

/** Starts one Redis server and one Sentinel monitoring it (quorum 1); waits until the Sentinel names it. */
export async function startRedisSentinel(): Promise<RedisDeployment> {
  const group = new ProcessGroup('relay-redis-sentinel-');
  try {
    const dataPort = await freePort();
    await group.start('master', dataServerArgs(dataPort, group.dir), /Ready to accept connections/);
    const sentinelPort = await freePort((p) => p !== dataPort);
    // Sentinel rewrites its config file, so it gets its own writable copy.
    const conf = path.join(group.dir, 'sentinel.conf');
    fs.writeFileSync(
      conf,
      [
        `port ${sentinelPort}`,
        'bind 127.0.0.1',
        `dir ${group.dir}`,
        `sentinel monitor ${SENTINEL_MASTER} 127.0.0.1 ${dataPort} 1`,
        '',
      ].join('\n'),
    );
    await group.start('sentinel', [conf, '--sentinel'], /\+monitor master/);
    const sentinel = new Redis({ host: '127.0.0.1', port: sentinelPort, lazyConnect: true }).on('error', () => {});
    try {
      await waitUntilAsync(async () => {
        const addr = (await sentinel.call('SENTINEL', 'get-master-addr-by-name', SENTINEL_MASTER)) as string[] | null;
        return addr?.[1] === String(dataPort);
      }, 'the sentinel to name its master', 15_000);
    } finally {
      sentinel.disconnect();
    }
    return { url: `redis-sentinel://127.0.0.1:${sentinelPort}/${SENTINEL_MASTER}`, dataPorts: [dataPort], stop: () => group.stop() };
  } catch (err) {
    await group.stop();
    throw err;
  }
}

function dataServerArgs(port: number, dir: string): string[] {
  return ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir];
}

/** redis-server processes sharing one temporary directory; stop() ends each by PID and removes it. */
class ProcessGroup {
  readonly dir: string;
  private readonly children: ChildProcess[] = [];

  constructor(prefix: string) {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  }

  /** Spawns redis-server and resolves once its log prints `ready`; rejects if it exits first. */
  start(name: string, args: string[], ready: RegExp, timeoutMs = 15_000): Promise<void> {
    const child = spawn('redis-server', args, { cwd: this.dir, stdio: ['ignore', 'pipe', 'pipe'] });
    this.children.push(child);
    let log = '';
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => fail(`not ready after ${timeoutMs} ms`), timeoutMs);
      const onData = (chunk: Buffer) => {
        log += chunk.toString();
        if (!ready.test(log)) return;
        clearTimeout(timer);
        child.stdout?.off('data', onData);
        resolve();
      };
      const fail = (why: string) => {
        clearTimeout(timer);
        reject(new Error(`redis-server ${name} ${why}:\n${log}`));
      };
      child.stdout?.on('data', onData);
      child.stderr?.on('data', (chunk: Buffer) => (log += chunk.toString()));
      child.once('error', (err) => fail(err.message));
      child.once('exit', (code, signal) => fail(`exited (${code ?? signal})`));
    });
  }

  async stop(): Promise<void> {
    await Promise.all(this.children.map(stopChild));
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** SIGTERM by PID and wait for the exit; SIGKILL if it has not exited within 5 s. */
function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return Promise.resolve();
  return new Promise((resolve) => {
    const kill = setTimeout(() => child.kill('SIGKILL'), 5000);
    child.once('exit', () => {
      clearTimeout(kill);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

/** A loopback port nothing listens on (and `also(port)` too), accepted by `ok`. */
async function freePort(ok: (port: number) => boolean = () => true, also: (port: number) => number[] = () => []): Promise<number> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = await bindable(0);
    if (port === undefined || !ok(port)) continue;
    if ((await Promise.all(also(port).map(bindable))).every((p) => p !== undefined)) return port;
  }
  throw new Error('no free loopback port found');
}

/** Binds 127.0.0.1:port (0 = any) and releases it; the port, or undefined when taken. */
function bindable(port: number): Promise<number | undefined> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(undefined));
    server.listen(port, '127.0.0.1', () => {
      const { port: bound } = server.address() as net.AddressInfo;
      server.close(() => resolve(bound));
    });
  });
}
