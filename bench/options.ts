// Benchmark sizes and knobs, overridable through the environment (the smoke test runs tiny sizes).
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export type StoreKind = 'memory' | 'sqlite' | 'redis';

export interface BenchOptions {
  /** Concurrent calls per load level, ascending (each side's calls are reused from one level to the next). */
  levels: number[];
  /** Measured time of each (side, stream mode, level) run, after its warm-up. */
  levelMs: number;
  /** A run's warm-up: one round (every talking call completes a turn), at least warmupMs, at most warmupMaxMs. */
  warmupMs: number;
  warmupMaxMs: number;
  /** Gap between streamed tokens in the `paced` mode (the `instant` mode has none). */
  pacedChunkDelayMs: number;
  /** Turns per call before the call hangs up and calls again (calls are not endless). */
  turnsPerCall: number;
  /** Also measure the informational LLM-hop baseline (raw ws plus the same request through the openai SDK). */
  llmHopBaseline: boolean;
  replyTimeoutMs: number;
  /** Every store gets its own server process: idle memory, load, reconnect storm. */
  stores: StoreKind[];
  stormSessions: number;
  /** Brand-new calls measured when the server is quiet, and again during the restore storm. */
  stormNewCalls: number;
  /** Informational: one more restart with the reconnects one at a time (restore time without queueing). */
  stormOneByOne: boolean;
  /** Calls talking to an instance while it is stopped and they move to another (0 skips the deploy run). */
  deploySessions: number;
  /** Connected calls (setup only) for the memory reading of the floor and of every store's server. */
  idleSessions: number;
  /** Server log level (logs go to files in a temp dir, not the terminal). */
  logLevel: string;
  /** Keep the child logs after a successful run too (they are always kept after a failed one). */
  keepLogs: boolean;
  redisUrl: string;
  resultsPath: string;
  connectConcurrency: number;
  actionConcurrency: number;
  /** Bound for each wait (warm-up rounds, storms, the idle run). */
  waitTimeoutMs: number;
}

const benchDir = dirname(fileURLToPath(import.meta.url));

function list(value: string | undefined, fallback: number[]): number[] {
  if (!value) return fallback;
  const nums = value.split(',').map((s) => Number(s.trim()));
  if (nums.some((n) => !Number.isInteger(n) || n < 1)) throw new Error(`expected positive integers, got "${value}"`);
  return [...new Set(nums)].sort((a, b) => a - b);
}

function int(value: string | undefined, fallback: number, min = 0): number {
  if (value === undefined || value === '') return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw new Error(`expected an integer >= ${min}, got "${value}"`);
  return n;
}

function stores(value: string | undefined): StoreKind[] {
  const names = (value ?? 'memory,sqlite,redis').split(',').map((s) => s.trim()).filter(Boolean);
  for (const n of names) if (n !== 'memory' && n !== 'sqlite' && n !== 'redis') throw new Error(`unknown store "${n}"`);
  return [...new Set(names)] as StoreKind[];
}

export function benchOptionsFromEnv(env: NodeJS.ProcessEnv = process.env): BenchOptions {
  const levelMs = int(env.BENCH_LEVEL_MS, 2000, 1);
  return {
    levels: list(env.BENCH_LEVELS, [1, 100, 1000]),
    levelMs,
    warmupMs: int(env.BENCH_WARMUP_MS, Math.round(levelMs / 5)),
    warmupMaxMs: int(env.BENCH_WARMUP_MAX_MS, Math.round(levelMs * 0.75)),
    pacedChunkDelayMs: int(env.BENCH_PACED_CHUNK_DELAY_MS, 20, 1),
    turnsPerCall: int(env.BENCH_TURNS_PER_CALL, 20, 1),
    llmHopBaseline: env.BENCH_LLM_HOP_BASELINE !== '0',
    replyTimeoutMs: int(env.BENCH_REPLY_TIMEOUT_MS, 30_000, 1),
    stores: stores(env.BENCH_STORES),
    stormSessions: int(env.BENCH_STORM_SESSIONS, 1000, 1),
    stormNewCalls: int(env.BENCH_STORM_NEW_CALLS, 20, 1),
    stormOneByOne: env.BENCH_STORM_ONE_BY_ONE === '1',
    deploySessions: int(env.BENCH_DEPLOY_SESSIONS, 100),
    idleSessions: int(env.BENCH_IDLE_SESSIONS, 1000, 1),
    logLevel: env.BENCH_LOG_LEVEL ?? 'info',
    keepLogs: env.BENCH_KEEP_LOGS === '1',
    redisUrl: env.REDIS_URL ?? 'redis://127.0.0.1:6379',
    resultsPath: env.BENCH_RESULTS ?? join(benchDir, 'results.json'),
    connectConcurrency: int(env.BENCH_CONNECT_CONCURRENCY, 200, 1),
    actionConcurrency: int(env.BENCH_ACTION_CONCURRENCY, 50, 1),
    waitTimeoutMs: int(env.BENCH_WAIT_TIMEOUT_MS, 60_000, 1),
  };
}
