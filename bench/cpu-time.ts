// CPU time of a child process, read from outside it. Asking the child over IPC would wait behind
// its event loop, which a thousand saturating calls keep seconds behind: the reading would come
// late and count work done after the measured time. On Linux the kernel's per-thread run time
// (/proc/<pid>/task/*/schedstat, in ns) is read at once instead; elsewhere the child is asked.
import { readdirSync, readFileSync } from 'node:fs';
import type { ChildHandle } from './child-process.js';

/** CPU microseconds all threads of `pid` have run so far, or null where /proc is not there. */
export function procCpuUs(pid: number): number | null {
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return null;
  }
  let ns = 0;
  for (const tid of tids) {
    try {
      ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // The thread ended in between.
    }
  }
  return Number.isFinite(ns) && ns > 0 ? ns / 1000 : null;
}

/** Cumulative CPU microseconds (user + system) of a child process. */
export function cpuOf(child: ChildHandle): () => Promise<number> {
  return async () => {
    const fromProc = procCpuUs(child.pid);
    if (fromProc !== null) return fromProc;
    const { user, system } = await child.call('cpu', {});
    return user + system;
  };
}
