// One benchmark run (issue 13): the floor and every store's server, each in its own process, at
// every level in both stream modes; idle memory per connected call; a reconnect storm per store with
// new calls arriving during it; a deploy. Every process is on loopback: the harness (clients), the
// fake LLM, and each measured process in a child of its own.
//
// A child takes about 2 s of CPU to load, so the run starts all of them at once before measuring
// anything, and each one does several jobs in turn: a store's server process measures idle memory on
// its fresh start, takes the reconnect storm with those same calls, then carries the load on the
// calls the storm left live (and the deploy reuses two of these processes); the floor's process
// later also listens as the LLM-hop baseline. The load runs of the floor and the stores take turns
// within each level and mode, so each ratio compares runs made seconds apart.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { redisReachable } from '../src/stores/redis-reachable.js';
import { evaluate } from './checks.js';
import { spawnChild, type ChildHandle } from './child-process.js';
import { compiledChildScript } from './compile.js';
import type { ServerChildOptions } from './child-protocol.js';
import { runDeploy, type DeployResult } from './deploy.js';
import { checkFrames } from './frame-check.js';
import { openCalls } from './load.js';
import type { LeanCall } from './lean-client.js';
import { measureIdleMemory, openWarmCalls } from './memory.js';
import { hangUpAll } from './hang-up.js';
import { setPace, streamModes } from './modes.js';
import type { BenchOptions, StoreKind } from './options.js';
import { removeRedisKeys } from './redis-keys.js';
import { compareRuns, idleRatios, type BenchResults, type ComparedRun, type IdleMemory, type StoreResults } from './results.js';
import { measureSides } from './sides.js';
import { runStorm, type StormResult } from './storm.js';

export interface RunContext {
  log?: (line: string) => void;
  fdSoftLimit?: number | null;
  notes?: string[];
}

/** A started server child and the port of the instance it runs now. */
interface ServerChild {
  store: StoreKind;
  child: ChildHandle;
  options: ServerChildOptions;
  port: number;
}

export async function runBench(o: BenchOptions, ctx: RunContext = {}): Promise<BenchResults> {
  const log = ctx.log ?? (() => {});
  const notes = [...(ctx.notes ?? [])];
  const started = Date.now();
  const tmp = mkdtempSync(join(os.tmpdir(), 'relay-bench-'));
  log(`child logs in ${tmp}`);
  const compiled = await compiledChildScript();
  const childScript = compiled.script;
  const children: ChildHandle[] = [];
  const spawn = (role: Parameters<typeof spawnChild>[0], name: string) => {
    const child = spawnChild(role, childScript, join(tmp, `${name}.log`));
    children.push(child);
    return child;
  };
  const modes = streamModes(o.pacedChunkDelayMs);
  const redisPrefix = (store: StoreKind) => `bench:${store}:${started}:`;
  let ok = false;
  try {
    const redisOk = o.stores.includes('redis') && (await redisReachable(o.redisUrl));
    const running = o.stores.filter((s) => s !== 'redis' || redisOk);

    // ---- every process at once, before anything is measured
    const llm = spawn('llm', 'llm');
    const floorChild = spawn('fetch-floor', 'fetch-floor');
    const spawned = running.map((store) => ({ store, child: spawn('server', `server-${store}`) }));
    const { baseURL: llmBaseUrl } = await llm.call('start', {});
    if (!llmBaseUrl) throw new Error('fake LLM did not report its URL');
    const serverOptions = (store: StoreKind): ServerChildOptions => ({
      store,
      sqlitePath: join(tmp, `${store}.db`),
      redisUrl: o.redisUrl,
      redisPrefix: redisPrefix(store),
      llmBaseUrl,
      // Long enough that no session expires during the run.
      graceMs: 10 * 60_000,
      logLevel: o.logLevel,
    });
    const [floorPort, servers] = await Promise.all([
      floorChild.call('start', { llmBaseUrl }).then((r) => r.port),
      Promise.all(
        spawned.map(async ({ store, child }): Promise<ServerChild> => {
          const options = serverOptions(store);
          return { store, child, options, port: (await child.call('start', options)).port };
        }),
      ),
    ]);
    const floorUrl = `ws://127.0.0.1:${floorPort}`;
    const relayUrl = (s: ServerChild) => `ws://127.0.0.1:${s.port}/relay`;
    const httpUrl = (s: ServerChild) => `http://127.0.0.1:${s.port}`;
    log(`started: fake LLM, floor, ${running.join('/')} servers (${((Date.now() - started) / 1000).toFixed(1)} s)`);

    // ---- like for like: the floor answers with the server's frames
    const first = servers[0];
    const frameCheck = first ? await checkFrames(floorUrl, relayUrl(first), `http://127.0.0.1:${first.port}`) : await checkFrames(floorUrl, floorUrl);
    log(`frame check: floor ${frameCheck.floorFrames} frames, server ${frameCheck.serverFrames}, identical=${frameCheck.identical}`);

    // ---- the warm calls of every process's idle-memory reading, all at once (see memory.ts)
    const [floorWarm, ...serverWarm] = await Promise.all([
      openWarmCalls(floorChild, floorUrl, o.idleSessions, o.connectConcurrency),
      ...servers.map((server) => openWarmCalls(server.child, relayUrl(server), o.idleSessions, o.connectConcurrency)),
    ]);

    // ---- the floor: idle memory on its fresh process; its load runs on the same calls, later
    const floorIdle = await measureIdleMemory(floorChild, floorUrl, o.idleSessions, o.connectConcurrency, o.waitTimeoutMs, undefined, floorWarm);
    log(`idle floor: ${(floorIdle.result.rssPerSessionBytes / 1024).toFixed(1)} KB RSS per call`);

    // ---- every store's server: idle memory, then the storm (storms and the deploy talk to an instant LLM)
    const instant = modes.find((m) => m.name === 'instant')!;
    const stormed: Array<{ store: StoreKind; server: ServerChild; idle: IdleMemory; storm: StormResult; calls: LeanCall[] }> = [];
    const skipped: StoreResults[] = [];
    for (const store of o.stores) {
      const server = servers.find((s) => s.store === store);
      if (!server) {
        skipped.push({ store, status: 'skipped', reason: `Redis at ${o.redisUrl} is unreachable`, idle: null, load: [], storm: null });
        continue;
      }
      const idle = await measureIdleMemory(server.child, relayUrl(server), o.idleSessions, o.connectConcurrency, o.waitTimeoutMs, httpUrl(server), serverWarm[servers.indexOf(server)]);
      const idleMemory = idleRatios(idle.result, floorIdle.result);
      log(`idle ${store}: ${(idle.result.rssPerSessionBytes / 1024).toFixed(1)} KB RSS per call (${idleMemory.rssRatio === null ? '-' : idleMemory.rssRatio.toFixed(2)}x floor)`);
      // The storm on the idle calls (each has one turn first); the calls it leaves live carry the load.
      const stormCalls = idle.calls.splice(0, o.stormSessions);
      await hangUpAll(idle.calls, httpUrl(server), o.actionConcurrency); // idle calls beyond the storm's
      if (stormCalls.length < o.stormSessions) stormCalls.push(...(await openCalls(relayUrl(server), o.stormSessions - stormCalls.length, o.connectConcurrency)));
      await setPace(llm, instant);
      const storm = await runStorm({
        store,
        child: server.child,
        port: server.port,
        calls: stormCalls,
        newCalls: o.stormNewCalls,
        oneByOne: o.stormOneByOne,
        connectConcurrency: o.connectConcurrency,
        actionConcurrency: o.actionConcurrency,
        timeoutMs: o.waitTimeoutMs,
        log,
      });
      server.port = storm.port;
      const s = storm.result;
      log(
        `storm ${store}: ${s.live.restored}/${s.restart.restored} of ${s.sessions} resumed/restored, restore p99 ${s.restart.serverRestore?.p99Ms.toFixed(2)} ms; ` +
          `new calls' first-token p99 ${s.newCalls.quiet.p99Ms.toFixed(1)} ms quiet, ${s.newCalls.afterBurst.p99Ms.toFixed(1)} ms right after the burst, ` +
          `${s.newCalls.duringStorm.p99Ms.toFixed(1)} ms while restoring (${s.newCalls.pendingRestores} to go)`,
      );
      stormed.push({ store, server, idle: idleMemory, storm: s, calls: storm.calls.filter((c) => c.open) });
    }

    // ---- the load: the floor and every store's server, interleaved within each (level, mode)
    const [floorLoad = [], ...storeLoads] = await measureSides(
      [
        { name: 'floor', url: floorUrl, child: floorChild, calls: floorIdle.calls },
        ...stormed.map(({ store, server, calls }) => ({ name: store, url: relayUrl(server), httpUrl: httpUrl(server), child: server.child, calls })),
      ],
      llm,
      modes,
      o,
      log,
    );
    const stores: StoreResults[] = [
      ...stormed.map(({ store, idle, storm }, i) => ({ store, status: 'ok' as const, idle, load: compareRuns(storeLoads[i] ?? [], floorLoad), storm })),
      ...skipped,
    ].sort((a, b) => o.stores.indexOf(a.store) - o.stores.indexOf(b.store));

    // ---- informational: the LLM-hop baseline, in the floor's process (the floor is idle by now)
    let llmHop: ComparedRun[] | null = null;
    if (o.llmHopBaseline) {
      const hopUrl = `ws://127.0.0.1:${(await floorChild.call('start-hop', { llmBaseUrl })).port}`;
      // Not at 1,000 calls: the full run's time budget (3 minutes) has no room for it, and the SDK's
      // share per request shows at 1 and 100 calls already.
      const hopLevels = o.levels.filter((n) => n < 1000);
      const [hopLoad = []] = await measureSides([{ name: 'llm-hop', url: hopUrl, child: floorChild }], llm, [instant], { ...o, levels: hopLevels }, log);
      llmHop = compareRuns(hopLoad, floorLoad);
    }

    // ---- a deploy: one instance stopped while its calls talk, another takes them over
    let deploy: DeployResult | null = null;
    if (o.deploySessions > 0) {
      await setPace(llm, instant);
      const pair = await deployPair(servers, serverOptions, spawn);
      deploy = await runDeploy({ sessions: o.deploySessions, ...pair, connectConcurrency: o.connectConcurrency, timeoutMs: o.waitTimeoutMs });
      log(`deploy: ${deploy.moved}/${deploy.sessions} calls moved, speech gap p50 ${deploy.gapP50Ms} ms, p99 ${deploy.gapP99Ms} ms`);
    }

    const partial = {
      version: 2 as const,
      startedAt: new Date(started).toISOString(),
      durationMs: Date.now() - started,
      machine: { cpus: os.cpus().length, node: process.version, platform: `${os.platform()} ${os.release()}`, fdSoftLimit: ctx.fdSoftLimit ?? null },
      options: o,
      notes,
      modes,
      frameCheck,
      floor: { idle: floorIdle.result, load: floorLoad },
      stores,
      llmHop,
      deploy,
    };
    const checks = evaluate(partial);
    const results: BenchResults = { ...partial, checks, pass: checks.every((c) => c.pass) };
    writeFileSync(o.resultsPath, `${JSON.stringify(results, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2)}\n`);
    ok = true;
    return results;
  } finally {
    await Promise.all(children.map((c) => c.exit()));
    compiled.remove();
    if (o.stores.includes('redis')) await removeRedisKeys(o.redisUrl, redisPrefix('redis')).catch(() => {});
    // Logs are kept when something went wrong, or when asked for.
    if (ok && !o.keepLogs) rmSync(tmp, { recursive: true, force: true });
    else log(`kept child logs in ${tmp}`);
  }
}

/**
 * Two server processes on one SQLite file for the deploy run: A is the sqlite store's process, B
 * another store's process restarted onto A's file. Fresh processes stand in for whichever is missing.
 */
async function deployPair(
  servers: ServerChild[],
  serverOptions: (store: StoreKind) => ServerChildOptions,
  spawn: (role: 'server', name: string) => ChildHandle,
): Promise<{ a: ChildHandle; portA: number; portB: number }> {
  const sqlite = servers.find((s) => s.store === 'sqlite');
  const options = sqlite?.options ?? { ...serverOptions('sqlite'), sqlitePath: serverOptions('sqlite').sqlitePath.replace(/sqlite\.db$/, 'deploy.db') };
  // A new instance on each: whatever the load left behind (a hang-up callback a saturated server missed) stays out.
  const a = sqlite ? { child: sqlite.child, port: (await sqlite.child.call('restart', {})).port } : await startFresh(spawn('server', 'deploy-a'), options);
  const other = servers.find((s) => s.store !== 'sqlite');
  const portB = other ? (await other.child.call('restart', { options })).port : (await startFresh(spawn('server', 'deploy-b'), options)).port;
  return { a: a.child, portA: a.port, portB };
}

async function startFresh(child: ChildHandle, options: ServerChildOptions): Promise<{ child: ChildHandle; port: number }> {
  return { child, port: (await child.call('start', options)).port };
}
