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

export interface StoreConfig {
  store: 'memory' | 'sqlite' | 'redis';
  sqlitePath: string;
  redisUrl: string;
}

export type CreateStoreOptions = SqliteStoreOptions & RedisStoreOptions;

export function createStore(config: StoreConfig, opts: CreateStoreOptions = {}): SnapshotStore {
  switch (config.store) {
    case 'memory':
      return new MemoryStore();
    case 'sqlite':
      return new SqliteStore(config.sqlitePath, { sweepIntervalMs: opts.sweepIntervalMs });
    case 'redis':
      return new RedisStore(config.redisUrl, { prefix: opts.prefix, onError: opts.onError });
  }
}
