// Child process entry for the benchmark: `llm` (fake OpenAI server), `fetch-floor` (the floor: the
// same request with plain fetch; later also the informational LLM-hop listener, the same request
// through the SDK) or `server` (the real relay server). Separate processes keep the harness's client
// work, the LLM and the measured server from sharing one event loop, and make memory readings per process.
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
    ...(o.store === 'memory' && memoryStore ? { store: keepOpen(memoryStore) } : {}),
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
