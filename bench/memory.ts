// Memory per idle session: open N calls (setup only, no traffic), wait until the process holds
// them all, then compare its memory after a full GC with the reading taken before.
import type { ChildHandle } from './child-process.js';
import { closeAll, openCalls } from './load.js';
import { waitUntil } from './stats.js';

export interface MemoryResult {
  sessions: number;
  /** Sessions (server) or connections (baseline) the process reported holding when measured. */
  held: number;
  heapPerSessionBytes: number;
  rssPerSessionBytes: number;
  externalPerSessionBytes: number;
  heapBeforeBytes: number;
  heapAfterBytes: number;
  rssBeforeBytes: number;
  rssAfterBytes: number;
  gcExposed: boolean;
}

export async function measureIdleMemory(child: ChildHandle, url: string, sessions: number, connectConcurrency: number, timeoutMs: number): Promise<MemoryResult> {
  const before = await child.call('memory', {});
  const calls = await openCalls(url, sessions, connectConcurrency);
  try {
    let held = 0;
    await waitUntil(async () => {
      held = (await child.call('stats', {})).sessions;
      return held >= sessions;
    }, timeoutMs);
    await child.call('flush', {}); // pending snapshot writes are not idle-state memory
    const after = await child.call('memory', {});
    return {
      sessions,
      held,
      heapPerSessionBytes: (after.heapUsed - before.heapUsed) / sessions,
      rssPerSessionBytes: (after.rss - before.rss) / sessions,
      externalPerSessionBytes: (after.external - before.external) / sessions,
      heapBeforeBytes: before.heapUsed,
      heapAfterBytes: after.heapUsed,
      rssBeforeBytes: before.rss,
      rssAfterBytes: after.rss,
      gcExposed: after.gc,
    };
  } finally {
    await closeAll(calls, 20_000);
  }
}
