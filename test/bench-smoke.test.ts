// Runs the whole benchmark harness at tiny sizes so its code stays exercised in CI. It checks that
// every figure is produced (finite, positive where it must be, no failed turns, every store, mode
// and level present), never the targets or any timing: those depend on the machine.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runBench } from '../bench/bench.js';
import type { LoadResult } from '../bench/load.js';
import { benchOptionsFromEnv } from '../bench/options.js';
import { renderReport } from '../bench/report.js';
import type { BenchResults, ComparedRun, LoadRun } from '../bench/results.js';
import type { StormPhase } from '../bench/storm.js';
import { REDIS_URL, redisAvailable } from './support/redis.js';

const dir = mkdtempSync(join(tmpdir(), 'relay-bench-smoke-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const finite = (n: number | null | undefined): n is number => typeof n === 'number' && Number.isFinite(n);
const positive = (n: number | null | undefined) => finite(n) && n > 0;

const LEVELS = [1, 3];
const MODES = ['instant', 'paced'];
/** Every (mode, level) pair, in the order the runs happen: levels ascending, both modes at each. */
const matrix = (modes: string[]) => LEVELS.flatMap((sessions) => modes.map((mode) => `${mode} @${sessions}`));
const keys = (runs: readonly LoadRun[]) => runs.map((r) => `${r.mode} @${r.sessions}`);

function expectLoad(r: LoadResult, frames: number): void {
  expect(r.failed).toBe(0);
  expect(r.turns).toBeGreaterThan(0);
  // Latency comes from the turns sent in the measured time, which may not be the ones completed in it.
  expect(r.latencySamples).toBeGreaterThan(0);
  expect(r.quiet).toBe(true);
  expect(r.framesPerTurn).toBe(frames);
  for (const v of [r.p50Ms, r.p99Ms, r.maxMs, r.turnsPerSec, r.cpuUsPerTurn, r.elapsedMs]) expect(positive(v)).toBe(true);
  expect(r.p99Ms).toBeGreaterThanOrEqual(r.p50Ms);
  expect(r.maxMs).toBeGreaterThanOrEqual(r.p99Ms);
}

function expectRatios(run: ComparedRun): void {
  const { cpuPerTurn, firstTokenP99, turnsPerSecPct } = run.ratios;
  expect([cpuPerTurn, firstTokenP99, turnsPerSecPct].every(positive)).toBe(true);
}

function expectStormPhase(p: StormPhase, n: number): void {
  expect(p).toMatchObject({ restored: n, failed: 0, actionsReconnect: n, resumesSucceeded: n });
  expect(positive(p.e2eP50Ms) && positive(p.wallMs)).toBe(true);
  expect(p.e2eP99Ms).toBeGreaterThanOrEqual(p.e2eP50Ms);
}

describe('npm run bench (tiny sizes)', () => {
  it('measures the floor and every store in both stream modes, storms and idle memory, and reports every target', async () => {
    const withRedis = await redisAvailable();
    const stores = withRedis ? ['memory', 'sqlite', 'redis'] : ['memory', 'sqlite'];
    const options = benchOptionsFromEnv({
      BENCH_LEVELS: LEVELS.join(','),
      BENCH_LEVEL_MS: '300',
      BENCH_WARMUP_MS: '50',
      BENCH_PACED_CHUNK_DELAY_MS: '5',
      BENCH_TURNS_PER_CALL: '3',
      BENCH_STORM_SESSIONS: '4',
      BENCH_STORM_NEW_CALLS: '2',
      BENCH_STORM_ONE_BY_ONE: '1',
      BENCH_DEPLOY_SESSIONS: '3',
      BENCH_STORES: stores.join(','),
      BENCH_IDLE_SESSIONS: '20',
      BENCH_LOG_LEVEL: 'silent',
      BENCH_WAIT_TIMEOUT_MS: '20000',
      BENCH_RESULTS: join(dir, 'results.json'),
      REDIS_URL,
    });
    const results = await runBench(options);

    // The JSON file holds the same results (non-finite numbers become null).
    const file = JSON.parse(readFileSync(options.resultsPath, 'utf8')) as BenchResults;
    expect(file.checks).toEqual(results.checks);
    expect(file.options.levels).toEqual(LEVELS);
    expect(results.modes.map((m) => m.name)).toEqual(MODES);

    // The floor answers with exactly the server's frames, and both sides' frames are valid.
    expect(results.frameCheck).toMatchObject({ identical: true, invalidFrames: 0 });
    const frames = results.frameCheck.serverFrames;
    expect(frames).toBeGreaterThan(1);

    // The floor at every level in both modes.
    expect(keys(results.floor.load)).toEqual(matrix(MODES));
    for (const run of results.floor.load) expectLoad(run.result, frames);

    // The informational LLM-hop baseline, instant mode, against the floor.
    expect(keys(results.llmHop ?? [])).toEqual(matrix(['instant']));
    for (const run of results.llmHop!) {
      expectLoad(run.result, frames);
      expectRatios(run);
    }

    // Idle memory of the floor and of every store's server (tiny counts: RSS growth may be anything, but it is read).
    expect(results.floor.idle).toMatchObject({ sessions: 20, held: 20, hibernated: null, gcExposed: true });
    expect(finite(results.floor.idle.rssPerSessionBytes) && finite(results.floor.idle.heapPerSessionBytes)).toBe(true);

    expect(results.stores.map((s) => s.store)).toEqual(stores);
    for (const s of results.stores) {
      expect(s.status).toBe('ok');
      // Every store's server at every level in both modes, with its ratios to the floor.
      expect(keys(s.load)).toEqual(matrix(MODES));
      for (const run of s.load) {
        expectLoad(run.result, frames);
        expectRatios(run);
      }
      // Measured at rest: the server (production's SESSION_HIBERNATE_MS) has hibernated every idle call.
      expect(s.idle!.result).toMatchObject({ sessions: 20, held: 20, hibernated: 20, gcExposed: true });
      expect(finite(s.idle!.result.rssPerSessionBytes) && positive(s.idle!.result.heapAfterBytes)).toBe(true);
      expect(s.idle!.rssRatio === null || finite(s.idle!.rssRatio)).toBe(true);

      // The storm: every call resumed and restored, and the new calls heard quiet and during the storm.
      const storm = s.storm!;
      for (const p of [storm.live, storm.restart, storm.oneByOne!]) expectStormPhase(p, 4);
      expect(storm.live.serverRestore).toBeNull();
      for (const restore of [storm.restart.serverRestore!, storm.oneByOne!.serverRestore!]) {
        expect(restore.count).toBe(4);
        expect(positive(restore.p50Ms) && positive(restore.meanMs)).toBe(true);
        expect(restore.p99Ms).toBeGreaterThanOrEqual(restore.p50Ms);
        expect(restore.within5ms).toBeGreaterThanOrEqual(0);
        expect(restore.within5ms).toBeLessThanOrEqual(1);
      }
      for (const batch of [storm.newCalls.quiet, storm.newCalls.afterBurst, storm.newCalls.duringStorm]) {
        expect(batch).toMatchObject({ calls: 2, answered: 2 });
        expect(positive(batch.p50Ms) && positive(batch.p99Ms)).toBe(true);
      }
      expect(positive(storm.newCalls.p99Ratio) && positive(storm.newCalls.afterBurstRatio)).toBe(true);
      expect(storm.newCalls.pendingRestores).toBeGreaterThanOrEqual(0);
      expect(storm.newCalls.pendingRestores).toBeLessThan(storm.sessions);
    }
    expect(file.stores.flatMap((s) => s.load.flatMap((l) => [l.ratios.cpuPerTurn, l.ratios.firstTokenP99, l.ratios.turnsPerSecPct])).every(finite)).toBe(true);

    // A deploy moves every call to the other instance; each heard it speak after a measurable gap.
    expect(results.deploy).toMatchObject({ sessions: 3, moved: 3, lost: 0 });
    expect(positive(results.deploy!.gapP50Ms) && positive(results.deploy!.drainMs)).toBe(true);
    expect(results.deploy!.gapP99Ms!).toBeGreaterThanOrEqual(results.deploy!.gapP50Ms!);

    // Every target has a row with a verdict; the overall verdict is their conjunction.
    const metrics = results.checks.map((c) => c.metric);
    for (const store of stores) {
      for (const key of matrix(MODES)) expect(metrics).toContain(`${store} ${key}: server CPU per turn / floor`);
      expect(metrics).toContain(`${store} instant @3: first-token p99 / floor`);
      expect(metrics).toContain(`${store} instant @3: turns/s, % of floor`);
      expect(metrics).toContain(`${store} idle RSS per call @20 / floor`);
      for (const row of ['resumed (same instance)', 'restored after restart', 'restore p99 (relay_restore_seconds)', "new calls' first-token p99, right after the burst / without storm", "new calls' first-token p99, while restoring / without storm"]) {
        expect(metrics).toContain(`${store} storm: ${row}`);
      }
    }
    expect(metrics).toContain('deploy: calls moved to the other instance');
    expect(metrics.length).toBe(stores.length * (LEVELS.length * MODES.length + 2 + 1 + 5) + 1);
    for (const c of results.checks) expect(typeof c.pass).toBe('boolean');
    expect(results.pass).toBe(results.checks.every((c) => c.pass));

    const report = renderReport(results);
    for (const heading of ['instant mode', 'paced mode', 'llm-hop', 'Idle memory per connected call', 'New calls during', 'speech gap', 'Targets']) {
      expect(report).toContain(heading);
    }
  }, 180_000);
});
