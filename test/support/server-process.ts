// Runs the real server (src/server/main.ts, or a compiled build of it) as a child process, configured
// only through its environment, so tests can kill -9 it, restart it on the same store and run several instances.
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const MAIN = 'src/server/main.ts';
/**
 * A cap on waiting for start-up, not a speed check: a child compiles its TypeScript with tsx first,
 * and several workers doing that on a loaded 2-core machine have taken over 30 s.
 */
const START_TIMEOUT_MS = 90_000;

/** One parsed pino line from the child's stdout. */
export interface LogLine {
  level: number;
  msg: string;
  [field: string]: unknown;
}

export interface ServerProcessOptions {
  store: 'memory' | 'sqlite' | 'redis';
  /** URL of the fake OpenAI server running in the test process; without it the server runs offline (canned replies). */
  openaiBaseUrl?: string;
  /** node's arguments instead of `--import tsx src/server/main.ts`, e.g. flags and a compiled main.js. */
  nodeArgs?: string[];
  sqlitePath?: string;
  redisUrl?: string;
  redisPrefix?: string;
  graceMs?: number;
  retentionMs?: number;
  dtmfIdleMs?: number;
  maxResumes?: number;
  instanceId?: string;
  /** WORKERS: more than one runs a node:cluster primary; `start` then also waits for 'workers ready'. */
  workers?: number;
  /** Anything else, as environment variables (e.g. TWILIO_AUTH_TOKEN). */
  env?: Record<string, string>;
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

// Every child ever started, so a failing test cannot leave one running.
const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

export class ServerProcess {
  /** Every log line of every run of this server, in order. */
  readonly logs: LogLine[] = [];
  /** Non-JSON output (stderr, stack traces), for failure messages. */
  readonly rawOutput: string[] = [];
  private child: ChildProcess | undefined;
  private exited: Promise<ExitInfo> | undefined;
  private portNumber: number | undefined;
  private logWaiters = new Set<{ predicate: (l: LogLine) => boolean; resolve: (l: LogLine) => void }>();

  constructor(readonly opts: ServerProcessOptions) {}

  get port(): number {
    if (this.portNumber === undefined) throw new Error('server process has not been started');
    return this.portNumber;
  }

  get httpUrl(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get relayUrl(): string {
    return `ws://127.0.0.1:${this.port}/relay`;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get isRunning(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /**
   * Starts the server and resolves once it logged 'relay-actors listening'. A restart reuses the
   * previous port (like a restarted host) unless `port` says otherwise.
   */
  async start(port = this.portNumber ?? 0): Promise<void> {
    try {
      await this.spawnAndWait(port);
    } catch (err) {
      // Someone else took the old port meanwhile (busy shared machine): any port will do.
      if (port === 0 || !this.rawOutput.some((l) => l.includes('EADDRINUSE'))) throw err;
      await this.spawnAndWait(0);
    }
  }

  private async spawnAndWait(port: number): Promise<void> {
    if (this.isRunning) throw new Error('server process is already running');
    const o = this.opts;
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '',
      PORT: String(port),
      HOST: '127.0.0.1',
      LOG_LEVEL: 'info',
      STORE: o.store,
      ...(o.openaiBaseUrl ? { OPENAI_BASE_URL: o.openaiBaseUrl, OPENAI_API_KEY: 'test-key' } : {}),
      ...(o.sqlitePath ? { SQLITE_PATH: o.sqlitePath } : {}),
      ...(o.redisUrl ? { REDIS_URL: o.redisUrl } : {}),
      ...(o.redisPrefix ? { REDIS_PREFIX: o.redisPrefix } : {}),
      ...(o.graceMs !== undefined ? { GRACE_MS: String(o.graceMs) } : {}),
      ...(o.retentionMs !== undefined ? { RETENTION_MS: String(o.retentionMs) } : {}),
      ...(o.dtmfIdleMs !== undefined ? { DTMF_IDLE_MS: String(o.dtmfIdleMs) } : {}),
      ...(o.maxResumes !== undefined ? { MAX_RESUMES: String(o.maxResumes) } : {}),
      ...(o.instanceId ? { INSTANCE_ID: o.instanceId } : {}),
      ...(o.workers !== undefined ? { WORKERS: String(o.workers) } : {}),
      // As for in-process test servers (harness.ts): the test environment's setting, unless the test sets one.
      ...(process.env.SESSION_HIBERNATE_MS ? { SESSION_HIBERNATE_MS: process.env.SESSION_HIBERNATE_MS } : {}),
      ...o.env,
    };
    const child = spawn(process.execPath, o.nodeArgs ?? ['--import', 'tsx', MAIN], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    running.add(child);
    this.child = child;
    this.exited = new Promise<ExitInfo>((resolve) => {
      child.once('exit', (code, signal) => {
        running.delete(child);
        resolve({ code, signal });
      });
    });
    createInterface({ input: child.stdout! }).on('line', (line) => this.onLine(line));
    createInterface({ input: child.stderr! }).on('line', (line) => this.rawOutput.push(line));

    const from = this.logs.length;
    const listening = this.waitForLog((l) => l.msg === 'relay-actors listening', START_TIMEOUT_MS, from);
    // A cluster primary is ready once every worker listens (they all log the one shared port).
    const ready = (o.workers ?? 1) > 1 ? this.waitForLog((l) => l.msg === 'workers ready', START_TIMEOUT_MS, from) : listening;
    const died = this.exited.then((exit) => {
      throw new Error(`server exited before listening (${JSON.stringify(exit)}):\n${this.outputTail()}`);
    });
    const [line] = await Promise.race([Promise.all([listening, ready]), died]);
    if (typeof line.port !== 'number') throw new Error(`no port in the listening line: ${JSON.stringify(line)}`);
    this.portNumber = line.port;
  }

  /** Sends `signal` without waiting for anything (e.g. SIGHUP: a cluster primary reloads its workers). */
  signal(signal: NodeJS.Signals): void {
    if (!this.child || !this.isRunning) throw new Error('server process is not running');
    this.child.kill(signal);
  }

  /** Sends `signal` (kill -9 by default) and waits for the process to be gone. */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<ExitInfo> {
    const child = this.child;
    if (!child || !this.exited) throw new Error('server process has not been started');
    if (this.isRunning) child.kill(signal);
    return this.exited;
  }

  /** Graceful stop (SIGTERM), falling back to SIGKILL; a no-op when not running. */
  async stop(timeoutMs = 5000): Promise<void> {
    if (!this.child || !this.exited || !this.isRunning) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child?.kill('SIGKILL'), timeoutMs);
    await this.exited;
    clearTimeout(timer);
  }

  /** Resolves with the first log line (from index `from`, default: the start) matching `predicate`. */
  waitForLog(predicate: (l: LogLine) => boolean, timeoutMs = 10_000, from = 0): Promise<LogLine> {
    const found = this.logs.slice(from).find(predicate);
    if (found) return Promise.resolve(found);
    return new Promise<LogLine>((resolve, reject) => {
      const waiter = {
        predicate,
        resolve: (l: LogLine) => {
          clearTimeout(timer);
          resolve(l);
        },
      };
      const timer = setTimeout(() => {
        this.logWaiters.delete(waiter);
        reject(new Error(`no matching log line within ${timeoutMs} ms:\n${this.outputTail()}`));
      }, timeoutMs);
      this.logWaiters.add(waiter);
    });
  }

  /** GET a path and parse JSON. */
  async getJson<T>(path: string): Promise<T> {
    const res = await fetch(`${this.httpUrl}${path}`);
    if (!res.ok) throw new Error(`GET ${path}: HTTP ${res.status}`);
    return (await res.json()) as T;
  }

  /** The value of one Prometheus sample (0 when absent), e.g. metric('relay_resumes_total', { outcome: 'failed' }). */
  async metric(name: string, labels: Record<string, string> = {}): Promise<number> {
    const res = await fetch(`${this.httpUrl}/metrics`);
    return readMetric(await res.text(), name, labels);
  }

  outputTail(lines = 40): string {
    const json = this.logs.slice(-lines).map((l) => JSON.stringify(l));
    return [...json, ...this.rawOutput.slice(-lines)].join('\n');
  }

  private onLine(line: string): void {
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch {
      this.rawOutput.push(line);
      return;
    }
    if (!parsed || typeof parsed !== 'object' || typeof (parsed as LogLine).msg !== 'string') {
      this.rawOutput.push(line);
      return;
    }
    const entry = parsed as LogLine;
    this.logs.push(entry);
    for (const w of this.logWaiters) {
      if (w.predicate(entry)) {
        this.logWaiters.delete(w);
        w.resolve(entry);
      }
    }
  }
}

/** Reads one sample from Prometheus text exposition; 0 when the series does not exist yet. */
export function readMetric(text: string, name: string, labels: Record<string, string> = {}): number {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const match = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const present = new Map([...(match[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1]!, m[2]!]));
    if (Object.entries(labels).every(([k, v]) => present.get(k) === v)) return Number(match[3]);
  }
  return 0;
}

/** Kills every child still running (afterAll safety net). */
export async function killAllServerProcesses(): Promise<void> {
  const children = [...running];
  await Promise.all(
    children.map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          child.once('exit', () => resolve());
          child.kill('SIGKILL');
        }),
    ),
  );
}
