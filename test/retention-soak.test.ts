// Nothing is kept longer than configured: rounds of calls that hang up, drop (and expire), or drop and
// resume run against the real server with a short RETENTION_MS and GRACE_MS; afterwards every record
// and every fencing epoch must leave the store (SQLite rows, Redis keys, memory-store entries) on the
// server's own retention-derived schedule, and the memory store's heap must stay flat. Waits poll the
// store itself; no fixed sleeps.
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { Redis } from 'ioredis';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { Config } from '../src/config.js';
import { startTestServer, tempSqlitePath, type TestServer } from './support/harness.js';
import { REDIS_URL, redisAvailable } from './support/redis.js';
import { clearRedisPrefix } from './support/resume-scenario.js';
import { soakRound } from './support/soak-calls.js';

const redisUp = await redisAvailable();
const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** Long enough that a resume under load is never late (it takes milliseconds), short enough to wait for. */
const GRACE_MS = 3000;
const RETENTION_MS = 1000;
/**
 * How long the store may take to forget a round once its calls finished: one retention after their
 * last write, plus a sweep interval and the lease slack (a quarter of the retention each). The old
 * behaviour (a fixed 60 s SQLite sweep, day-long leases and epochs, a memory store never swept) fails
 * this by far; the rest is headroom for a busy 2-core host.
 */
const GONE_WITHIN_MS = 15_000;

const soakConfig = (extra: Partial<Config>): Partial<Config> => ({ graceMs: GRACE_MS, retentionMs: RETENTION_MS, ...extra });

let ts: TestServer | undefined;
afterEach(async () => {
  await ts?.close();
  ts = undefined;
});

/** Three rounds of five calls of each kind. */
async function soak(server: TestServer): Promise<string[]> {
  const sids: string[] = [];
  for (let round = 0; round < 3; round++) sids.push(...(await soakRound(server.server, 5, GONE_WITHIN_MS)));
  expect(new Set(sids).size).toBe(45);
  return sids;
}

describe('nothing is kept past retention', () => {
  it('SQLite: records and lease rows are deleted on the retention-derived schedule', async () => {
    const sqlitePath = tempSqlitePath();
    ts = await startTestServer({ config: soakConfig({ store: 'sqlite', sqlitePath }) });
    const count = (table: 'records' | 'leases') => {
      const db = new Database(sqlitePath, { readonly: true });
      try {
        return db.prepare<[], { n: number }>(`SELECT count(*) AS n FROM ${table}`).get()!.n;
      } finally {
        db.close();
      }
    };
    await soak(ts);
    // Kept for the retention first ...
    expect(count('leases')).toBeGreaterThan(0);
    // ... then gone, leases included.
    await expect
      .poll(() => ({ records: count('records'), leases: count('leases') }), { timeout: GONE_WITHIN_MS, interval: 100 })
      .toEqual({ records: 0, leases: 0 });
  });

  describe.skipIf(!redisUp)('Redis', () => {
    const prefix = `test:retention-soak:${randomUUID()}:`;
    let redis: Redis | undefined;
    afterAll(async () => {
      await redis?.quit();
      await clearRedisPrefix(REDIS_URL, prefix);
    });

    it('records and epoch keys expire with the retention (no day-long epochs)', async () => {
      redis = new Redis(REDIS_URL);
      const client = redis;
      ts = await startTestServer({ config: soakConfig({ store: 'redis' }), redisPrefix: prefix });
      // The readiness probe's own key is not a session's and is left out.
      const sessionKeys = async () => (await client.keys(`${prefix}*`)).filter((k) => k.endsWith(':rec') || k.endsWith(':epoch')).length;
      await soak(ts);
      expect(await sessionKeys()).toBeGreaterThan(0);
      await expect.poll(sessionKeys, { timeout: GONE_WITHIN_MS, interval: 100 }).toBe(0);
    });
  });

  it('memory: every round is swept from the store and the heap stays flat after a forced GC', async () => {
    const warmUp = 4;
    const measured = 3;
    const perKind = 20;
    const rounds = await runMemorySoak({ rounds: warmUp + measured, perKind });
    expect(rounds.map((r) => r.calls)).toEqual(Array(warmUp + measured).fill(3 * perKind));
    const heaps = rounds.map((r) => r.heapUsed);
    const baseline = heaps[warmUp - 1]!;
    // The lower of the last two, so one late allocation does not count; a leak raises both.
    const growth = Math.min(...heaps.slice(-2)) - baseline;
    const perCall = growth / (measured * 3 * perKind);
    // Before sweeps ran, every call left about 1.2-2 KB behind for good (measured the same way).
    expect(perCall, `heap after each round: ${heaps.map((h) => (h / 1e6).toFixed(3)).join(', ')} MB`).toBeLessThan(500);
  }, 180_000);
});

interface RoundResult {
  round: number;
  calls: number;
  heapUsed: number;
}

/**
 * Runs test/support/memory-soak-child.ts with --expose-gc and V8's optimising tiers off (compiled code
 * warming up would otherwise grow the heap by about as much as the leak this looks for).
 */
async function runMemorySoak(opts: { rounds: number; perKind: number }): Promise<RoundResult[]> {
  const child = spawn(process.execPath, ['--expose-gc', '--no-opt', '--no-sparkplug', '--import', 'tsx', 'test/support/memory-soak-child.ts'], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '',
      SOAK_ROUNDS: String(opts.rounds),
      SOAK_PER_KIND: String(opts.perKind),
      SOAK_GRACE_MS: String(GRACE_MS),
      SOAK_RETENTION_MS: String(RETENTION_MS),
      SOAK_GONE_WITHIN_MS: String(GONE_WITHIN_MS),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const results: RoundResult[] = [];
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
  createInterface({ input: child.stdout }).on('line', (line) => results.push(JSON.parse(line) as RoundResult));
  // 'close' comes after the last line of output, unlike 'exit'.
  const [code] = (await once(child, 'close')) as [number | null];
  if (code !== 0) throw new Error(`memory soak child exited with ${code}:\n${stderr}`);
  return results;
}
