// Child process entry for the benchmark: `llm` (fake OpenAI server), `echo` (baseline), `llm-hop`
// (baseline plus the LLM request through the SDK), `fetch-floor` (the floor: the same request with
// plain fetch) or `server` (the real relay server). Separate processes keep the harness's client work,
// the LLM and the measured server from sharing one event loop, and make memory readings per process.
import { loadConfig } from '../src/config.js';
import { startServer, type RunningServer } from '../src/server/server.js';
import { createLogger } from '../src/server/logger.js';
import { startFakeOpenAI, type FakeOpenAI } from '../src/testing/fake-openai-server.js';
import { MemoryStore, delegatingStore, type SnapshotStore } from '../src/stores/index.js';
import { startEchoServer, type EchoServer } from './echo-server.js';
import { startLlmHopServer } from './llm-hop-server.js';
import { startFetchFloorServer } from './fetch-floor-server.js';
import type { ChildRole, CommandMessage, MemorySample, ReplyMessage, ServerChildOptions, ServerStats } from './child-protocol.js';

const role = process.argv[2] as ChildRole;
const gc = (globalThis as { gc?: () => void }).gc;

let llm: FakeOpenAI | undefined;
let echo: EchoServer | undefined;
let server: RunningServer | undefined;
let serverOptions: ServerChildOptions | undefined;
/** The memory store outlives a restart (as a shared store would); the server's close() must not clear it. */
let memoryStore: MemoryStore | undefined;

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
    },
  );
  if (o.store === 'memory') memoryStore ??= new MemoryStore();
  return startServer(config, {
    logger: createLogger(o.logLevel),
    redisPrefix: o.redisPrefix,
    ...(memoryStore ? { store: keepOpen(memoryStore) } : {}),
  });
}

function memory(): MemorySample {
  // Twice: the first pass can leave finalizer-held objects for the second.
  gc?.();
  gc?.();
  const m = process.memoryUsage();
  return { heapUsed: m.heapUsed, rss: m.rss, external: m.external, arrayBuffers: m.arrayBuffers, gc: gc !== undefined };
}

async function handle(cmd: CommandMessage['cmd'], arg: unknown): Promise<unknown> {
  switch (cmd) {
    case 'start':
      if (role === 'llm') {
        llm = await startFakeOpenAI({ chunkDelayMs: 0 });
        return { port: llm.port, baseURL: llm.baseURL };
      }
      if (role === 'echo') {
        echo = await startEchoServer();
        return { port: echo.port };
      }
      if (role === 'llm-hop') {
        echo = await startLlmHopServer((arg as { llmBaseUrl: string }).llmBaseUrl);
        return { port: echo.port };
      }
      if (role === 'fetch-floor') {
        echo = await startFetchFloorServer((arg as { llmBaseUrl: string }).llmBaseUrl);
        return { port: echo.port };
      }
      serverOptions = arg as ServerChildOptions;
      server = await startRelay(serverOptions);
      return { port: server.port };
    case 'restart':
      if (!server || !serverOptions) throw new Error('restart before start');
      await server.close();
      server = await startRelay(serverOptions);
      return { port: server.port };
    case 'stats': {
      const counts = server?.manager.countByState() ?? new Map<string, number>();
      const stats: ServerStats = { sessions: server?.manager.size ?? echo?.connections() ?? 0, byState: Object.fromEntries(counts) };
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
      await echo?.close();
      await llm?.close();
      server = undefined;
      echo = undefined;
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
