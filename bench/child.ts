// Child process entry for the benchmark: `llm` (fake OpenAI server), `fetch-floor` (the floor: the
// same request with plain fetch; later also the informational LLM-hop listener, the same request
// through the SDK) or `server` (the real relay server). Separate processes keep the harness's client
// work, the LLM and the measured server from sharing one event loop, and make memory readings per process.
import http from 'node:http';
import v8 from 'node:v8';
import { loadConfig } from '../src/config.js';
import { startServer, type RunningServer } from '../src/server/server.js';
import { createLogger } from '../src/server/logger.js';
import { echoScript, startFakeOpenAI, type FakeOpenAI } from '../src/testing/fake-openai-server.js';
import { MemoryStore, delegatingStore, type SnapshotStore } from '../src/stores/index.js';
import { startLlmHopServer } from './llm-hop-server.js';
import { startFetchFloorServer } from './fetch-floor-server.js';
import type { WsServer } from './reply-relay.js';
import type { ChildRole, CommandMessage, MemorySample, ReplyMessage, ServerChildOptions, ServerStats } from './child-protocol.js';

const role = process.argv[2] as ChildRole;
const gc = (globalThis as { gc?: () => void }).gc;

let llm: FakeOpenAI | undefined;
/** fetch-floor: the floor's listener, and the LLM-hop listener once asked for. */
let floor: WsServer | undefined;
let hop: WsServer | undefined;
let server: RunningServer | undefined;
let serverOptions: ServerChildOptions | undefined;
/** The memory store outlives a restart (as a shared store would); the server's close() must not clear it. */
let memoryStore: MemoryStore | undefined;

/** Far above any bench size: the bench measures the relay's cost, not its admission limit. */
const BENCH_MAX_SESSIONS = 100_000;

function keepOpen(store: SnapshotStore): SnapshotStore {
  return delegatingStore(store, { close: async () => {} });
}

async function startRelay(o: ServerChildOptions): Promise<RunningServer> {
  const config = loadConfig(
    {},
    {
      port: 0,
      host: '127.0.0.1',
      store: o.store,
      sqlitePath: o.sqlitePath,
      redisUrl: o.redisUrl,
      openaiApiKey: 'bench-key',
      openaiBaseUrl: o.llmBaseUrl,
      graceMs: o.graceMs,
      logLevel: o.logLevel,
      // The production guard (1,000) would refuse calls the floor takes: a storm's new calls, or a
      // new call at the 1,000 level before the session of the call that hung up has ended.
      maxSessions: BENCH_MAX_SESSIONS,
    },
  );
  if (o.store === 'memory') memoryStore ??= new MemoryStore();
  return startServer(config, {
    logger: createLogger(o.logLevel),
    redisPrefix: o.redisPrefix,
    ...(o.store === 'memory' && memoryStore ? { store: keepOpen(memoryStore) } : {}),
  });
}

/**
 * The fake LLM listens with node's default accept queue (511). When a thousand paced replies start
 * at once, the measured process opens that many connections to it in a moment; the kernel drops
 * what overflows the queue, and those requests wait for TCP's SYN retries (1 s, 3 s, 7 s...). That
 * is the test rig, not the relay: while the fake starts, its listen() gets the queue the kernel allows.
 */
async function withDeepAcceptQueue<T>(start: () => Promise<T>): Promise<T> {
  const proto = http.Server.prototype as unknown as { listen: (...args: unknown[]) => unknown };
  const listen = proto.listen;
  proto.listen = function (this: unknown, ...args: unknown[]) {
    // listen(port, host, callback) -> listen(port, host, backlog, callback)
    if (args.length === 3 && typeof args[2] === 'function') return listen.call(this, args[0], args[1], ACCEPT_QUEUE, args[2]);
    return listen.apply(this, args);
  };
  try {
    return await start();
  } finally {
    delete (proto as { listen?: unknown }).listen; // back to net.Server's own
  }
}

/** Linux caps it at net.core.somaxconn (4,096 on the dev machine). */
const ACCEPT_QUEUE = 8192;

function sample(): MemorySample {
  // Twice: the first pass can leave finalizer-held objects for the second.
  gc?.();
  gc?.();
  const m = process.memoryUsage();
  const young = v8.getHeapSpaceStatistics().find((space) => space.space_name === 'new_space')?.space_size ?? 0;
  return { heapUsed: m.heapUsed, rss: m.rss, youngGeneration: young, external: m.external, arrayBuffers: m.arrayBuffers, gc: gc !== undefined };
}

/**
 * Memory after forced full GCs, read until two readings 150 ms apart agree: V8 shrinks the young
 * generation by itself some time after a burst of allocation, and the pages leave RSS a moment
 * after it says so.
 */
async function memory(): Promise<MemorySample> {
  const live = (m: MemorySample) => m.rss - m.youngGeneration;
  let last = sample();
  for (let i = 0; i < 6; i++) {
    await new Promise((resolve) => setTimeout(resolve, 150));
    const next = sample();
    if (Math.abs(live(next) - live(last)) < 256 * 1024) return next;
    last = next;
  }
  return last;
}

async function handle(cmd: CommandMessage['cmd'], arg: unknown): Promise<unknown> {
  switch (cmd) {
    case 'start':
      if (role === 'llm') {
        llm = await withDeepAcceptQueue(() => startFakeOpenAI({ chunkDelayMs: 0 }));
        return { port: llm.port, baseURL: llm.baseURL };
      }
      if (role === 'fetch-floor') {
        floor = await startFetchFloorServer((arg as { llmBaseUrl: string }).llmBaseUrl);
        return { port: floor.port };
      }
      serverOptions = arg as ServerChildOptions;
      server = await startRelay(serverOptions);
      return { port: server.port };
    case 'pace': {
      if (!llm) throw new Error('pace before start');
      const { chunkDelayMs } = arg as { chunkDelayMs: number };
      // The same echo reply, its tokens `chunkDelayMs` apart; what startFakeOpenAI({ chunkDelayMs }) sends.
      llm.setScript(async (req) => ({ ...(await echoScript(req)), delayMs: chunkDelayMs }));
      // The fake keeps a record of every request; a run needs none of them, and they would pile up.
      llm.requests.length = 0;
      return null;
    }
    case 'start-hop':
      if (role !== 'fetch-floor') throw new Error('start-hop: fetch-floor only');
      hop ??= await startLlmHopServer((arg as { llmBaseUrl: string }).llmBaseUrl);
      return { port: hop.port };
    case 'restart': {
      if (!server || !serverOptions) throw new Error('restart before start');
      await server.close();
      serverOptions = (arg as { options?: ServerChildOptions }).options ?? serverOptions;
      server = await startRelay(serverOptions);
      return { port: server.port };
    }
    case 'stats': {
      const counts = server?.manager.countByState() ?? new Map<string, number>();
      const connections = (floor?.connections() ?? 0) + (hop?.connections() ?? 0);
      const stats: ServerStats = { sessions: server?.manager.size ?? connections, byState: Object.fromEntries(counts) };
      return stats;
    }
    case 'cpu':
      return process.cpuUsage();
    case 'flush':
      await server?.manager.flush();
      return null;
    case 'memory':
      return memory();
    case 'stop':
      await server?.close();
      await memoryStore?.close();
      await floor?.close();
      await hop?.close();
      await llm?.close();
      server = undefined;
      floor = undefined;
      hop = undefined;
      llm = undefined;
      return null;
  }
}

process.on('message', (raw) => {
  const msg = raw as CommandMessage;
  handle(msg.cmd, msg.arg).then(
    (result) => {
      const reply: ReplyMessage = { id: msg.id, ok: true, result };
      process.send?.(reply, () => {
        if (msg.cmd === 'stop') process.exit(0);
      });
    },
    (err: unknown) => {
      const reply: ReplyMessage = { id: msg.id, ok: false, error: err instanceof Error ? (err.stack ?? err.message) : String(err) };
      process.send?.(reply, () => {
        if (msg.cmd === 'stop') process.exit(1);
      });
    },
  );
});
// The benchmark went away (crash, Ctrl-C): do not linger.
process.on('disconnect', () => process.exit(0));
