// Messages between the benchmark and its child processes (IPC over child_process.fork).

export type ChildRole = 'llm' | 'fetch-floor' | 'server';

export interface ServerChildOptions {
  store: 'memory' | 'sqlite' | 'redis';
  sqlitePath: string;
  redisUrl: string;
  redisPrefix: string;
  llmBaseUrl: string;
  graceMs: number;
  logLevel: string;
}

export interface MemorySample {
  heapUsed: number;
  rss: number;
  /**
   * The anonymous part of RSS (Linux; elsewhere all of it). The rest is file-backed: the program's
   * code and data, which the kernel pages in and out on its own (this machine's kdamond pages out
   * what has gone cold), so it moves by megabytes between two readings of an idle process.
   */
  rssAnon: number;
  /**
   * Resident size of V8's young generation. A full GC empties it, but the pages the allocations
   * since the last GC touched stay resident (up to the semi-space size: 16 MB by default), and V8
   * resizes it by the recent allocation rate: it moves RSS by megabytes between two readings.
   */
  youngGeneration: number;
  external: number;
  arrayBuffers: number;
  /** Whether gc() was available (the child runs with --expose-gc). */
  gc: boolean;
}

export interface ServerStats {
  /** Server: sessions held. fetch-floor: open connections (the floor's and the LLM-hop listener's). */
  sessions: number;
  byState: Record<string, number>;
  /** Server only: sessions holding no running actor (hibernated, SESSION_HIBERNATE_MS). */
  hibernated?: number;
}

/** Command name -> [argument, result]. */
export interface ChildCommands {
  /** llm: the fake LLM (instant pace), answering with its baseURL. fetch-floor: the floor's listener. server: the relay server. */
  start: [ServerChildOptions | { llmBaseUrl: string } | Record<string, never>, { port: number; baseURL?: string }];
  /** llm only: the gap between streamed tokens of the requests that start from now on. */
  pace: [{ chunkDelayMs: number }, null];
  /** fetch-floor only: also listen as the informational LLM-hop baseline (the same request through the openai SDK). */
  'start-hop': [{ llmBaseUrl: string }, { port: number }];
  /**
   * Server only: close this instance (persisting everything) and start a new one on the same store,
   * or with `options` on another (the deploy run points a second process at the first one's SQLite file).
   */
  restart: [{ options?: ServerChildOptions }, { port: number }];
  stats: [Record<string, never>, ServerStats];
  /** process.cpuUsage() of the child, in microseconds. */
  cpu: [Record<string, never>, { user: number; system: number }];
  flush: [Record<string, never>, null];
  /** Two forced full GCs: a load run starts with no garbage left from what the process did before. */
  gc: [Record<string, never>, null];
  /** process.memoryUsage() after two forced full GCs, once it holds still. */
  memory: [Record<string, never>, MemorySample];
  stop: [Record<string, never>, null];
}

export type CommandName = keyof ChildCommands;

export interface CommandMessage {
  id: number;
  cmd: CommandName;
  arg: unknown;
}

export type ReplyMessage = { id: number; ok: true; result: unknown } | { id: number; ok: false; error: string };
