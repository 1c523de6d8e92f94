// Parent side of the child processes: fork the compiled child script (compile.ts) with --expose-gc,
// then typed request/reply over IPC.
import { fork, type ChildProcess } from 'node:child_process';
import { openSync, closeSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ChildCommands, ChildRole, CommandName, ReplyMessage } from './child-protocol.js';

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = join(here, '..');

/** The node flags of `npm start` (GC tuning), so the server child runs as it does in production. */
function startScriptNodeFlags(): string[] {
  const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { scripts: { start: string } };
  return pkg.scripts.start.split(/\s+/).filter((word) => /^--[a-z-]+(=\S+)?$/.test(word) && word !== '--import');
}

export interface ChildHandle {
  role: ChildRole;
  pid: number;
  call<K extends CommandName>(cmd: K, arg: ChildCommands[K][0], timeoutMs?: number): Promise<ChildCommands[K][1]>;
  /** Asks the child to stop, then kills it if it lingers; never throws. */
  exit(): Promise<void>;
}

/**
 * `script`: bench/child.ts as compiledChildScript() emitted it. `logFile` receives the child's stdout (the
 * server's pino lines); stderr is inherited.
 */
export function spawnChild(role: ChildRole, script: string, logFile: string): ChildHandle {
  const out = openSync(logFile, 'a');
  const child: ChildProcess = fork(script, [role], {
    cwd: repoRoot,
    // BENCH_CPU_PROF=<dir> writes a V8 CPU profile per child on exit (open in Chrome DevTools);
    // BENCH_NODE_FLAGS adds node flags to every child, after (so overriding) npm start's (--trace-gc, say).
    execArgv: [
      '--expose-gc',
      ...(role === 'server' ? startScriptNodeFlags() : []),
      ...(process.env.BENCH_CPU_PROF ? ['--cpu-prof', '--cpu-prof-dir', process.env.BENCH_CPU_PROF] : []),
      ...(process.env.BENCH_NODE_FLAGS?.split(/\s+/).filter(Boolean) ?? []),
    ],
    stdio: ['ignore', out, 'inherit', 'ipc'],
    env: { ...process.env, NODE_OPTIONS: '' },
  });
  closeSync(out);
  let nextId = 1;
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  let exited = false;
  const exitedPromise = new Promise<void>((resolve) =>
    child.once('exit', (code, signal) => {
      exited = true;
      for (const p of pending.values()) {
        clearTimeout(p.timer);
        p.reject(new Error(`bench ${role} child exited (${code ?? signal}); see ${logFile}`));
      }
      pending.clear();
      resolve();
    }),
  );
  child.on('message', (raw) => {
    const msg = raw as ReplyMessage;
    const p = pending.get(msg.id);
    if (!p) return;
    pending.delete(msg.id);
    clearTimeout(p.timer);
    if (msg.ok) p.resolve(msg.result);
    else p.reject(new Error(`bench ${role} child: ${msg.error}`));
  });

  return {
    role,
    pid: child.pid ?? -1,
    call(cmd, arg, timeoutMs = 120_000) {
      if (exited) return Promise.reject(new Error(`bench ${role} child is gone`));
      const id = nextId++;
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          pending.delete(id);
          reject(new Error(`bench ${role} child: ${cmd} timed out after ${timeoutMs} ms`));
        }, timeoutMs);
        pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
        child.send({ id, cmd, arg });
      });
    },
    async exit() {
      if (exited) return;
      const id = nextId++;
      child.send({ id, cmd: 'stop', arg: {} }, () => {});
      const killer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exitedPromise;
      clearTimeout(killer);
    },
  };
}
