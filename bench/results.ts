// The shape of a run's results (bench/results.json): every figure of the floor and of each store's
// server, raw and as ratios to the floor measured in the same run, per stream mode and level.
import type { DeployResult } from './deploy.js';
import type { FrameCheck } from './frame-check.js';
import type { LoadResult } from './load.js';
import type { MemoryResult } from './memory.js';
import type { ModeName, StreamMode } from './modes.js';
import type { BenchOptions, StoreKind } from './options.js';
import type { StormResult } from './storm.js';

/** One (side, mode, level) load run. */
export interface LoadRun {
  mode: ModeName;
  sessions: number;
  result: LoadResult;
}

/** Ours / the floor at the same mode and level. */
export interface FloorRatios {
  cpuPerTurn: number;
  firstTokenP99: number;
  /** Turns per second as % of the floor's. */
  turnsPerSecPct: number;
}

export interface ComparedRun extends LoadRun {
  ratios: FloorRatios;
}

export interface IdleMemory {
  result: MemoryResult;
  /** RSS growth per call, ours / the floor's (null when the floor's growth is not positive). */
  rssRatio: number | null;
  /** Informational: heap growth per call, ours / the floor's. */
  heapRatio: number | null;
}

/** One store's server process: idle memory, then the load runs, then the reconnect storm. */
export interface StoreResults {
  store: StoreKind;
  status: 'ok' | 'skipped';
  reason?: string;
  idle: IdleMemory | null;
  load: ComparedRun[];
  storm: StormResult | null;
}

export interface Check {
  metric: string;
  value: number | null;
  unit: string;
  target: string;
  pass: boolean;
  /** Why the figure cannot be judged (failed turns, frames that differ from the floor's, a skipped store). */
  invalid?: string;
}

export interface BenchResults {
  version: 2;
  startedAt: string;
  durationMs: number;
  machine: { cpus: number; node: string; platform: string; fdSoftLimit: number | null };
  options: BenchOptions;
  notes: string[];
  modes: StreamMode[];
  frameCheck: FrameCheck;
  /** The floor: raw ws + the same streamed request with plain fetch, SSE parsed by hand. */
  floor: { idle: MemoryResult; load: LoadRun[] };
  stores: StoreResults[];
  /** Informational, instant mode: raw ws + the same request through the openai SDK, against the floor. */
  llmHop: ComparedRun[] | null;
  /** A stopped instance's calls moving to another one: the speech gap callers hear. */
  deploy: DeployResult | null;
  checks: Check[];
  pass: boolean;
}

export function floorRatios(ours: LoadResult, floor: LoadResult): FloorRatios {
  return {
    cpuPerTurn: ours.cpuUsPerTurn / floor.cpuUsPerTurn,
    firstTokenP99: ours.p99Ms / floor.p99Ms,
    turnsPerSecPct: (100 * ours.turnsPerSec) / floor.turnsPerSec,
  };
}

export function compareRuns(ours: LoadRun[], floor: LoadRun[]): ComparedRun[] {
  return ours.map((run) => {
    const base = floor.find((f) => f.mode === run.mode && f.sessions === run.sessions);
    if (!base) throw new Error(`no floor run for ${run.mode} @${run.sessions}`);
    return { ...run, ratios: floorRatios(run.result, base.result) };
  });
}

export function idleRatios(ours: MemoryResult, floor: MemoryResult): IdleMemory {
  const ratio = (a: number, b: number) => (b > 0 ? a / b : null);
  return { result: ours, rssRatio: ratio(ours.rssPerSessionBytes, floor.rssPerSessionBytes), heapRatio: ratio(ours.heapPerSessionBytes, floor.heapPerSessionBytes) };
}
