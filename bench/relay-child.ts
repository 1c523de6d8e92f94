// The `server` child's relay: the real startServer() on the chosen store, reaching the fake LLM
// through the real openai SDK. Loaded only by that role (child.ts imports it when it starts).
import { loadConfig } from '../src/config.js';
import { startServer, type RunningServer } from '../src/server/server.js';
import { createLogger } from '../src/server/logger.js';
import { MemoryStore, delegatingStore, type SnapshotStore } from '../src/stores/index.js';
import type { ServerChildOptions } from './child-protocol.js';

export type { RunningServer };

/** The memory store outlives a restart (as a shared store would); the server's close() must not clear it. */
let memoryStore: MemoryStore | undefined;

/** Far above any bench size: the bench measures the relay's cost, not its admission limit. */
const BENCH_MAX_SESSIONS = 100_000;

function keepOpen(store: SnapshotStore): SnapshotStore {
  return delegatingStore(store, { close: async () => {} });
}

export async function startRelay(o: ServerChildOptions): Promise<RunningServer> {
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

/** At the child's stop, after the last instance closed. */
export async function closeMemoryStore(): Promise<void> {
  await memoryStore?.close();
}
