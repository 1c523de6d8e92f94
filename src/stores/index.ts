// Picks the snapshot store named by the configuration.
import { MemoryStore } from './memory.js';
import { RedisStore, type RedisStoreOptions } from './redis.js';
import { SqliteStore, type SqliteStoreOptions } from './sqlite.js';
import type { SnapshotStore } from './types.js';

export * from './types.js';
export { MemoryStore } from './memory.js';
export { SqliteStore, type SqliteStoreOptions } from './sqlite.js';
export { RedisStore, type RedisStoreOptions } from './redis.js';
export { CoalescingWriter } from './coalescing-writer.js';
export { delegatingStore } from './delegating-store.js';
export { StoreTimeoutError, StoreUnavailableError, withTimeouts, type StoreOp } from './timed-store.js';

export interface StoreConfig {
  store: 'memory' | 'sqlite' | 'redis';
  sqlitePath: string;
  redisUrl: string;
}

export type CreateStoreOptions = SqliteStoreOptions &
  RedisStoreOptions & {
    /** Bounds the store's own waits (SQLite lock waits, Redis replies); calls are also bounded by withTimeouts. */
    timeoutMs?: number;
  };

export function createStore(config: StoreConfig, opts: CreateStoreOptions = {}): SnapshotStore {
  const { minLeaseMs, timeoutMs } = opts;
  switch (config.store) {
    case 'memory':
      return new MemoryStore({ minLeaseMs });
    case 'sqlite':
      return new SqliteStore(config.sqlitePath, { minLeaseMs, busyTimeoutMs: timeoutMs ?? opts.busyTimeoutMs });
    case 'redis':
      return new RedisStore(config.redisUrl, { prefix: opts.prefix, onError: opts.onError, minLeaseMs, commandTimeoutMs: timeoutMs ?? opts.commandTimeoutMs });
  }
}
