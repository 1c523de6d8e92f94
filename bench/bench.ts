// One benchmark run: baseline vs server latency/throughput, reconnect storms per store, idle memory.
// Every process is on loopback: the harness (clients), the fake LLM, and the measured server or
// baseline each in its own child process.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { spawnChild, type ChildHandle } from './child-process.js';
import { checkFrames } from './frame-check.js';
import { measureLlmFloor } from './llm-floor.js';
import { measureLoad, type LoadResult } from './load.js';
import { measureIdleMemory, type MemoryResult } from './memory.js';
import type { BenchOptions } from './options.js';
import { evaluate, floorRatios, type BenchResults, type FloorResults, type LevelResult, type Ratios } from './report.js';
import { redisReachable } from '../src/stores/redis-reachable.js';
import { runStorm, type StormResult } from './storm.js';
import { runDeploy, type DeployResult } from './deploy.js';

/** Cumulative CPU microseconds (user + system) of a child process. */
const cpuOf = (child: ChildHandle) => async () => {
  const { user, system } = await child.call('cpu', {});
  return user + system;
};

export interface RunContext {
  log?: (line: string) => void;
  fdSoftLimit?: number | null;
  notes?: string[];
}

export async function runBench(o: BenchOptions, ctx: RunContext = {}): Promise<BenchResults> {
  const log = ctx.log ?? (() => {});
  const started = Date.now();
  const tmp = mkdtempSync(join(os.tmpdir(), 'relay-bench-'));
  log(`child logs in ${tmp}`);
  const children: ChildHandle[] = [];
  const spawn = (role: Parameters<typeof spawnChild>[0], name: string) => {
    const child = spawnChild(role, join(tmp, `${name}.log`));
    children.push(child);
    return child;
  };
  let ok = false;
  try {
    const llm = spawn('llm', 'llm');
    const { baseURL: llmBaseUrl } = await llm.call('start', {});
    if (!llmBaseUrl) throw new Error('fake LLM did not report its URL');
    const serverOptions = (store: BenchOptions['loadStore'], name: string) => ({
      store,
      sqlitePath: join(tmp, `${name}.db`),
      redisUrl: o.redisUrl,
      redisPrefix: `bench:${name}:${started}:`,
      llmBaseUrl,
      graceMs: 10 * 60_000,
      logLevel: o.logLevel,
    });

    // ---- latency and throughput: baseline then server at each level, same client code
    const echo = spawn('echo', 'echo');
    const hop = o.llmHopBaseline ? spawn('llm-hop', 'llm-hop') : null;
    const floor = spawn('fetch-floor', 'fetch-floor');
    const server = spawn('server', 'server-load');
    const baselineUrl = `ws://127.0.0.1:${(await echo.call('start', {})).port}`;
    const hopUrl = hop ? `ws://127.0.0.1:${(await hop.call('start', { llmBaseUrl })).port}` : null;
    const floorUrl = `ws://127.0.0.1:${(await floor.call('start', { llmBaseUrl })).port}`;
    const serverUrl = `ws://127.0.0.1:${(await server.call('start', serverOptions(o.loadStore, 'load'))).port}/relay`;
    const frameCheck = await checkFrames(baselineUrl, serverUrl);
    log(`frame check: baseline ${frameCheck.baselineFrames} frames, server ${frameCheck.serverFrames}, identical=${frameCheck.identical}`);

    const llmFloor = o.llmFloorRequests > 0 ? await measureLlmFloor(llmBaseUrl, o.llmFloorRequests, Math.min(20, o.llmFloorRequests)) : null;
    if (llmFloor) log(`LLM client floor: ${llmFloor.cpuUsPerRequest.toFixed(0)} us CPU per streamed request (openai SDK)`);

    const latency: LevelResult[] = [];
    const floorResults: FloorResults = { levels: [], stores: [] };
    for (const [i, sessions] of o.levels.entries()) {
      const rounds = o.rounds[i]!;
      const load = { sessions, rounds, warmupRounds: o.warmupRounds, turnsPerCall: o.turnsPerCall, maxMs: o.levelMaxMs, replyTimeoutMs: o.replyTimeoutMs, connectConcurrency: o.connectConcurrency };
      const baseline = await measureLoad({ ...load, url: baselineUrl, cpuProbe: cpuOf(echo) });
      const srv = await measureLoad({ ...load, url: serverUrl, cpuProbe: cpuOf(server) });
      const ratio = (base: LoadResult): Ratios => ({ p50: srv.p50Ms / base.p50Ms, p99: srv.p99Ms / base.p99Ms, throughput: srv.throughput / base.throughput });
      const hopResult = hop && hopUrl ? await measureLoad({ ...load, url: hopUrl, cpuProbe: cpuOf(hop) }) : null;
      latency.push({ sessions, rounds, baseline, server: srv, ratios: ratio(baseline), ...(hopResult ? { llmHop: { result: hopResult, ratios: ratio(hopResult) } } : {}) });
      const floorResult = await measureLoad({ ...load, url: floorUrl, cpuProbe: cpuOf(floor) });
      floorResults.levels.push({ sessions, rounds, result: floorResult });
      log(
        `@${sessions}: p50 ${baseline.p50Ms.toFixed(3)} vs ${srv.p50Ms.toFixed(3)} ms; ` +
          `${baseline.throughput.toFixed(0)} vs ${srv.throughput.toFixed(0)} replies/s; ` +
          `cpu/reply ${baseline.cpuUsPerReply?.toFixed(0)} vs ${srv.cpuUsPerReply?.toFixed(0)} us (baseline vs server)` +
          (hopResult ? `; LLM-hop baseline p50 ${hopResult.p50Ms.toFixed(3)} ms, ${hopResult.throughput.toFixed(0)} replies/s` : '') +
          `; floor p99 ${floorResult.p99Ms.toFixed(3)} ms, ${floorResult.throughput.toFixed(0)} replies/s, cpu/reply ${floorResult.cpuUsPerReply?.toFixed(0)} us`,
      );
    }
    await echo.exit();
    await hop?.exit();
    await floor.exit();
    await server.exit();

    // ---- every store's server against the floor at the same levels (the load store's run is reused)
    for (const store of o.stores) {
      if (store === 'redis' && !(await redisReachable(o.redisUrl))) {
        floorResults.stores.push({ store, status: 'skipped', reason: `Redis at ${o.redisUrl} is unreachable`, levels: [] });
        continue;
      }
      let child: ChildHandle | null = null;
      let url = serverUrl;
      if (store !== o.loadStore) {
        child = spawn('server', `server-load-${store}`);
        url = `ws://127.0.0.1:${(await child.call('start', serverOptions(store, `load-${store}`))).port}/relay`;
      }
      const levels: FloorResults['stores'][number]['levels'] = [];
      for (const [i, sessions] of o.levels.entries()) {
        const rounds = o.rounds[i]!;
        const ours = child
          ? await measureLoad({ sessions, rounds, warmupRounds: o.warmupRounds, turnsPerCall: o.turnsPerCall, maxMs: o.levelMaxMs, replyTimeoutMs: o.replyTimeoutMs, connectConcurrency: o.connectConcurrency, url, cpuProbe: cpuOf(child) })
          : latency[i]!.server;
        const ratios = floorRatios(ours, floorResults.levels[i]!.result);
        levels.push({ sessions, server: ours, ratios });
        log(`floor @${sessions} ${store}: cpu/turn ${ratios.cpuPerTurn?.toFixed(2)}x, first-token p99 ${ratios.firstTokenP99.toFixed(2)}x, turns/s ${ratios.turnsPerSecPct.toFixed(0)}% of floor`);
      }
      await child?.exit();
      floorResults.stores.push({ store, status: 'ok', levels });
    }

    // ---- reconnect storms, one fresh server process per store
    const storms: StormResult[] = [];
    for (const store of o.stores) {
      const storm = await runStorm({
        store,
        sessions: o.stormSessions,
        llmBaseUrl,
        redisUrl: o.redisUrl,
        sqlitePath: join(tmp, `storm-${store}.db`),
        logFile: join(tmp, `server-storm-${store}.log`),
        logLevel: o.logLevel,
        connectConcurrency: o.connectConcurrency,
        actionConcurrency: o.actionConcurrency,
        timeoutMs: o.waitTimeoutMs,
      });
      storms.push(storm);
      log(`storm ${store}: ${storm.status === 'ok' ? `${storm.live?.restored}/${storm.restart?.restored} of ${storm.sessions}` : `skipped (${storm.reason})`}`);
    }

    // ---- a deploy: one instance stopped while its calls talk, the other takes them over
    let deploy: DeployResult | null = null;
    if (o.deploySessions > 0) {
      deploy = await runDeploy({
        sessions: o.deploySessions,
        server: serverOptions('sqlite', 'deploy'),
        logFile: (name) => join(tmp, `${name}.log`),
        connectConcurrency: o.connectConcurrency,
        timeoutMs: o.waitTimeoutMs,
      });
      log(`deploy: ${deploy.moved}/${deploy.sessions} calls moved, speech gap p50 ${deploy.gapP50Ms} ms, p99 ${deploy.gapP99Ms} ms`);
    }

    // ---- memory per idle session, each process measured on its own
    const idleServer = spawn('server', 'server-idle');
    const idlePort = (await idleServer.call('start', serverOptions(o.loadStore, 'idle'))).port;
    const serverMemory = await measureIdleMemory(idleServer, `ws://127.0.0.1:${idlePort}/relay`, o.idleSessions, o.connectConcurrency, o.waitTimeoutMs);
    await idleServer.exit();
    log(`idle server: ${(serverMemory.heapPerSessionBytes / 1024).toFixed(1)} KB heap per session`);
    let baselineMemory: MemoryResult | null = null;
    if (o.idleBaseline) {
      const idleEcho = spawn('echo', 'echo-idle');
      const echoPort = (await idleEcho.call('start', {})).port;
      baselineMemory = await measureIdleMemory(idleEcho, `ws://127.0.0.1:${echoPort}`, o.idleSessions, o.connectConcurrency, o.waitTimeoutMs);
      await idleEcho.exit();
    }
    await llm.exit();

    const partial = {
      version: 1 as const,
      startedAt: new Date(started).toISOString(),
      durationMs: Date.now() - started,
      machine: { cpus: os.cpus().length, node: process.version, platform: `${os.platform()} ${os.release()}`, fdSoftLimit: ctx.fdSoftLimit ?? null },
      options: o,
      notes: ctx.notes ?? [],
      frameCheck,
      llmFloor,
      latency,
      floor: floorResults,
      storms,
      deploy,
      memory: { server: serverMemory, baseline: baselineMemory },
    };
    const checks = evaluate(partial);
    const results: BenchResults = { ...partial, checks, pass: checks.every((c) => c.pass) };
    writeFileSync(o.resultsPath, `${JSON.stringify(results, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2)}\n`);
    ok = true;
    return results;
  } finally {
    await Promise.all(children.map((c) => c.exit()));
    // Logs are kept when something went wrong.
    if (ok) rmSync(tmp, { recursive: true, force: true });
    else log(`kept child logs in ${tmp}`);
  }
}
