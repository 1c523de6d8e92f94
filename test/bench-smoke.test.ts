// Runs the whole benchmark harness at tiny sizes so its code stays exercised in CI. It checks the
// shape and sanity of the results, never timing targets (those depend on the machine).
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runBench } from '../bench/bench.js';
import { benchOptionsFromEnv } from '../bench/options.js';
import type { BenchResults } from '../bench/report.js';
import { renderReport } from '../bench/report.js';
import { REDIS_URL, redisAvailable } from './support/redis.js';

const dir = mkdtempSync(join(tmpdir(), 'relay-bench-smoke-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const positive = (n: number | null) => typeof n === 'number' && Number.isFinite(n) && n > 0;

describe('npm run bench (tiny sizes)', () => {
  it('measures baseline and server, storms every store, and reports every target', async () => {
    const withRedis = await redisAvailable();
    const stores = withRedis ? 'memory,sqlite,redis' : 'memory,sqlite';
    const options = benchOptionsFromEnv({
      BENCH_LEVELS: '1,3',
      BENCH_ROUNDS: '5,4',
      BENCH_TURNS_PER_CALL: '3',
      BENCH_STORM_SESSIONS: '4',
      BENCH_DEPLOY_SESSIONS: '3',
      BENCH_STORES: stores,
      BENCH_IDLE_SESSIONS: '20',
      BENCH_LLM_FLOOR_REQUESTS: '10',
      BENCH_LOG_LEVEL: 'silent',
      BENCH_WAIT_TIMEOUT_MS: '20000',
      BENCH_RESULTS: join(dir, 'results.json'),
      REDIS_URL,
    });
    const results = await runBench(options);

    // The JSON file holds the same results (non-finite numbers become null).
    const file = JSON.parse(readFileSync(options.resultsPath, 'utf8')) as BenchResults;
    expect(file.checks).toEqual(results.checks);
    expect(file.options.levels).toEqual([1, 3]);

    // The baseline answers with exactly the server's frames, and the server's frames are valid.
    expect(results.frameCheck).toMatchObject({ identical: true, invalidFrames: 0 });
    expect(results.frameCheck.serverFrames).toBeGreaterThan(1);

    expect(results.latency.map((l) => l.sessions)).toEqual([1, 3]);
    for (const level of results.latency) {
      // The LLM-hop baseline answers the same prompts with the same frames, through the real SDK.
      expect(level.llmHop).toBeDefined();
      expect(positive(level.llmHop!.ratios.p50) && positive(level.llmHop!.ratios.throughput)).toBe(true);
      for (const side of [level.baseline, level.server, level.llmHop!.result]) {
        expect(side.failed).toBe(0);
        expect(side.replies).toBe(level.sessions * level.rounds);
        expect(side.framesPerReply).toBe(results.frameCheck.serverFrames);
        expect(positive(side.p50Ms) && positive(side.throughput) && positive(side.cpuUsPerReply)).toBe(true);
        expect(side.p99Ms).toBeGreaterThanOrEqual(side.p50Ms);
        expect(side.maxMs).toBeGreaterThanOrEqual(side.p99Ms);
      }
      expect(positive(level.ratios.p50) && positive(level.ratios.p99) && positive(level.ratios.throughput)).toBe(true);
    }
    expect(positive(results.llmFloor?.cpuUsPerRequest ?? null)).toBe(true);

    // The floor (raw ws + plain fetch of the same streamed request) at every level, and every store's
    // ratios to it: produced and finite, never judged against the targets here.
    const finite = (n: number | null | undefined) => typeof n === 'number' && Number.isFinite(n);
    expect(results.floor.levels.map((l) => l.sessions)).toEqual([1, 3]);
    for (const { sessions, rounds, result } of results.floor.levels) {
      expect(result).toMatchObject({ failed: 0, replies: sessions * rounds, framesPerReply: results.frameCheck.serverFrames });
      expect(positive(result.p99Ms) && positive(result.throughput) && positive(result.cpuUsPerReply)).toBe(true);
    }
    expect(results.floor.stores.map((s) => s.store)).toEqual(stores.split(','));
    for (const store of results.floor.stores) {
      expect(store.status).toBe('ok');
      expect(store.levels.map((l) => l.sessions)).toEqual([1, 3]);
      for (const l of store.levels) {
        expect(l.server.failed).toBe(0);
        expect(finite(l.ratios.cpuPerTurn) && finite(l.ratios.firstTokenP99) && finite(l.ratios.turnsPerSecPct)).toBe(true);
      }
    }
    expect(file.floor.stores.flatMap((s) => s.levels.map((l) => [l.ratios.cpuPerTurn, l.ratios.firstTokenP99, l.ratios.turnsPerSecPct])).flat().every(finite)).toBe(true);

    expect(results.storms.map((s) => s.store)).toEqual(stores.split(','));
    for (const storm of results.storms) {
      expect(storm.status).toBe('ok');
      for (const phase of [storm.live!, storm.restart!, storm.oneByOne!]) {
        expect(phase).toMatchObject({ restored: 4, failed: 0, actionsReconnect: 4, resumesSucceeded: 4 });
        expect(positive(phase.e2eP50Ms) && positive(phase.wallMs)).toBe(true);
        expect(phase.e2eP99Ms).toBeGreaterThanOrEqual(phase.e2eP50Ms);
      }
      expect(storm.live!.serverRestore).toBeNull();
      // After each restart every session came back from the store, once each.
      for (const restore of [storm.restart!.serverRestore!, storm.oneByOne!.serverRestore!]) {
        expect(restore.count).toBe(4);
        expect(positive(restore.p50Ms) && positive(restore.meanMs)).toBe(true);
        expect(restore.p99Ms).toBeGreaterThanOrEqual(restore.p50Ms);
        expect(restore.within5ms).toBeGreaterThanOrEqual(0);
        expect(restore.within5ms).toBeLessThanOrEqual(1);
      }
    }

    // A deploy moves every call to the other instance; each heard it speak after a measurable gap.
    expect(results.deploy).toMatchObject({ sessions: 3, moved: 3, lost: 0 });
    expect(positive(results.deploy!.gapP50Ms) && positive(results.deploy!.drainMs)).toBe(true);
    expect(results.deploy!.gapP99Ms!).toBeGreaterThanOrEqual(results.deploy!.gapP50Ms!);

    const memory = results.memory.server;
    expect(memory).toMatchObject({ sessions: 20, held: 20, gcExposed: true });
    expect(Number.isFinite(memory.heapPerSessionBytes) && Number.isFinite(memory.rssPerSessionBytes)).toBe(true);
    expect(memory.heapAfterBytes).toBeGreaterThan(0);
    expect(results.memory.baseline).toMatchObject({ sessions: 20, held: 20 });

    // Every target has a row with a verdict; the overall verdict is their conjunction.
    const metrics = results.checks.map((c) => c.metric).join('\n');
    for (const expected of ['first-token latency p50 @3', 'first-token latency p99 @3', 'throughput @1', 'throughput @3', 'heap per idle session', 'RSS per idle session']) {
      expect(metrics).toContain(expected);
    }
    for (const store of stores.split(',')) expect(metrics).toContain(`storm ${store}: restore p99`);
    expect(metrics).toContain('deploy: calls moved to the other instance');
    expect(renderReport(results)).toContain('speech gap');
    for (const c of results.checks) expect(typeof c.pass).toBe('boolean');
    expect(results.pass).toBe(results.checks.every((c) => c.pass));
    expect(renderReport(results)).toContain('Targets');
    expect(renderReport(results)).toContain('Informational: against a baseline that also makes the LLM request');
    expect(renderReport(results)).toContain('Floor (issue 13)');
  }, 150_000);
});
