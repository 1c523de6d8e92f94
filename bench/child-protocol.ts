// Messages between the benchmark and its child processes (IPC over child_process.fork).

export type ChildRole = 'llm' | 'echo' | 'llm-hop' | 'fetch-floor' | 'server';

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
  external: number;
  arrayBuffers: number;
  /** Whether gc() was available (the child runs with --expose-gc). */
  gc: boolean;
}

export interface ServerStats {
  sessions: number;
  byState: Record<string, number>;
}

/** Command name -> [argument, result]. */
export interface ChildCommands {
  start: [ServerChildOptions | { llmBaseUrl: string } | Record<string, never>, { port: number; baseURL?: string }];
  /** Server only: close this instance (persisting everything) and start a new one on the same store. */
  restart: [Record<string, never>, { port: number }];
  stats: [Record<string, never>, ServerStats];
  /** process.cpuUsage() of the child, in microseconds. */
  cpu: [Record<string, never>, { user: number; system: number }];
  flush: [Record<string, never>, null];
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
