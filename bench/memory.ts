// Memory per idle call: open N calls (setup only, no traffic) to a fresh process, wait until it
// holds them all (and a server, until it has hibernated them: an idle call at rest keeps no running
// actor after SESSION_HIBERNATE_MS, production's 2 s), then compare its memory with the reading taken
// before. Both readings come after two forced full GCs (the child's `memory` command), so the growth
// is live memory, not garbage. Of RSS, the anonymous part is read (file-backed pages are program code
// the kernel pages in and out), less V8's young generation (empty then, but sized by recent allocation).
// The calls stay open and are handed back: the same process and calls then carry the load runs.
import type { ChildHandle } from './child-process.js';
import type { LeanCall } from './lean-client.js';
import { openCalls } from './load.js';
import { waitUntil } from './stats.js';

/** Bound on waiting for the server to hibernate its idle calls (2 s after their setup, by default). */
const HIBERNATE_WAIT_MS = 15_000;

export interface MemoryResult {
  sessions: number;
  /** Sessions (server) or connections (floor) the process reported holding when measured. */
  held: number;
  /** Server: of those, the sessions hibernated (no running actor) when measured; null for the floor. */
  hibernated: number | null;
  /**
   * RSS growth per call, both readings after forced full GCs: its anonymous part, without V8's
   * young generation (empty after a full GC, but sized by recent allocation; see MemorySample).
   */
  rssPerSessionBytes: number;
  /** Informational: plain RSS growth per call. */
  rawRssPerSessionBytes: number;
  /** Informational. */
  heapPerSessionBytes: number;
  externalPerSessionBytes: number;
  heapBeforeBytes: number;
  heapAfterBytes: number;
  rssBeforeBytes: number;
  rssAfterBytes: number;
  gcExposed: boolean;
}

export async function measureIdleMemory(
  child: ChildHandle,
  url: string,
  sessions: number,
  connectConcurrency: number,
  timeoutMs: number,
): Promise<{ result: MemoryResult; calls: LeanCall[] }> {
  const before = await child.call('memory', {});
  const calls = await openCalls(url, sessions, connectConcurrency);
  let held = 0;
  await waitUntil(async () => {
    held = (await child.call('stats', {})).sessions;
    return held >= sessions;
  }, timeoutMs);
  // Idle calls are measured at rest: a server stops their actors once they have been idle a while.
  let hibernated: number | null = null;
  await waitUntil(async () => {
    hibernated = (await child.call('stats', {})).hibernated ?? null;
    return hibernated === null || hibernated >= sessions;
  }, Math.min(timeoutMs, HIBERNATE_WAIT_MS));
  await child.call('flush', {}); // pending snapshot writes are not idle-state memory
  const after = await child.call('memory', {});
  return {
    calls,
    result: {
      sessions,
      held,
      hibernated,
      rssPerSessionBytes: (after.rssAnon - after.youngGeneration - (before.rssAnon - before.youngGeneration)) / sessions,
      rawRssPerSessionBytes: (after.rss - before.rss) / sessions,
      heapPerSessionBytes: (after.heapUsed - before.heapUsed) / sessions,
      externalPerSessionBytes: (after.external - before.external) / sessions,
      heapBeforeBytes: before.heapUsed,
      heapAfterBytes: after.heapUsed,
      rssBeforeBytes: before.rss,
      rssAfterBytes: after.rss,
      gcExposed: after.gc,
    },
  };
}
