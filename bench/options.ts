// Benchmark sizes and knobs, overridable through the environment (the smoke test runs tiny sizes).
import { join } from 'node:path';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

export type StoreKind = 'memory' | 'sqlite' | 'redis';

export interface BenchOptions {
  /** Concurrent sessions for the latency/throughput runs. */
  levels: number[];
  /** Measured prompts per session at each level (same index as `levels`). */
  rounds: number[];
  warmupRounds: number;
  /** Turns per call before the session hangs up and calls again. */
  turnsPerCall: number;
  /** Streamed requests for the LLM-client floor measurement (0 skips it). */
  llmFloorRequests: number;
  /** Also measure the informational LLM-hop baseline (raw ws plus the same SDK request). */
  llmHopBaseline: boolean;
  /** Time cap per measured level and side (baseline or server). */
  levelMaxMs: number;
  replyTimeoutMs: number;
  /** Store behind the server during the latency runs (sqlite is the server's default). */
  loadStore: StoreKind;
  stormSessions: number;
  /** Calls talking to an instance while it is stopped and they move to another (0 skips the deploy run). */
  deploySessions: number;
  stores: StoreKind[];
  idleSessions: number;
  /** Also measure the raw ws baseline's memory per idle connection. */
  idleBaseline: boolean;
  /** Server log level (logs go to files in a temp dir, not the terminal). */
  logLevel: string;
  redisUrl: string;
  resultsPath: string;
  connectConcurrency: number;
  actionConcurrency: number;
  /** Bound for each wait in the storms and the idle run. */
  waitTimeoutMs: number;
}

const benchDir = dirname(fileURLToPath(import.meta.url));

function list(value: string | undefined, fallback: number[]): number[] {
  if (!value) return fallback;
  const nums = value.split(',').map((s) => Number(s.trim()));
  if (nums.some((n) => !Number.isInteger(n) || n < 1)) throw new Error(`expected positive integers, got "${value}"`);
  return nums;
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
  return names as StoreKind[];
}

export function benchOptionsFromEnv(env: NodeJS.ProcessEnv = process.env): BenchOptions {
  const levels = list(env.BENCH_LEVELS, [1, 100, 1000]);
  const defaultRounds = levels.map((n) => (n <= 1 ? 200 : n <= 100 ? 20 : 5));
  const rounds = list(env.BENCH_ROUNDS, defaultRounds);
  if (rounds.length !== levels.length) throw new Error('BENCH_ROUNDS needs one entry per BENCH_LEVELS entry');
  const loadStore = stores(env.BENCH_LOAD_STORE ?? 'sqlite');
  return {
    levels,
    rounds,
    warmupRounds: int(env.BENCH_WARMUP, 1),
    turnsPerCall: int(env.BENCH_TURNS_PER_CALL, 20, 1),
    llmFloorRequests: int(env.BENCH_LLM_FLOOR_REQUESTS, 1000),
    llmHopBaseline: env.BENCH_LLM_HOP_BASELINE !== '0',
    levelMaxMs: int(env.BENCH_LEVEL_MAX_MS, 60_000, 1),
    replyTimeoutMs: int(env.BENCH_REPLY_TIMEOUT_MS, 30_000, 1),
    loadStore: loadStore[0]!,
    stormSessions: int(env.BENCH_STORM_SESSIONS, 1000, 1),
    deploySessions: int(env.BENCH_DEPLOY_SESSIONS, 100),
    stores: stores(env.BENCH_STORES),
    idleSessions: int(env.BENCH_IDLE_SESSIONS, 10_000, 1),
    idleBaseline: env.BENCH_IDLE_BASELINE !== '0',
    logLevel: env.BENCH_LOG_LEVEL ?? 'info',
    redisUrl: env.REDIS_URL ?? 'redis://127.0.0.1:6379',
    resultsPath: env.BENCH_RESULTS ?? join(benchDir, 'results.json'),
    connectConcurrency: int(env.BENCH_CONNECT_CONCURRENCY, 200, 1),
    actionConcurrency: int(env.BENCH_ACTION_CONCURRENCY, 50, 1),
    waitTimeoutMs: int(env.BENCH_WAIT_TIMEOUT_MS, 60_000, 1),
  };
}
