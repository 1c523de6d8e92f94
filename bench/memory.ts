// Memory per idle call: open N calls (setup only, no traffic) to a fresh process that already holds
// some warm calls at rest, wait until it holds them all (and a server, until it has hibernated them:
// an idle call at rest keeps no running actor after SESSION_HIBERNATE_MS, production's 2 s), then
// compare its memory with the reading taken before. Both readings come after two forced full GCs
// (the child's `memory` command), so the growth is live memory, not garbage. Of RSS, the anonymous part is read (file-backed pages are program code
// the kernel pages in and out), less V8's young generation (empty then, but sized by recent allocation).
// The calls stay open and are handed back: the same process and calls then carry the load runs.
import type { ChildHandle } from './child-process.js';
import type { LeanCall } from './lean-client.js';
import { hangUpAll } from './hang-up.js';
import { closeAll, openCalls } from './load.js';
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

/** Calls held through both readings, the first taken with them at rest (at most the measured number). */
const WARM_CALLS = 200;

/**
 * Waits until the process holds `n` calls and, a server, has hibernated them (bounded), then lets
 * pending snapshot writes land (they are not idle-state memory). What it held is reported, not thrown.
 */
async function atRest(child: ChildHandle, n: number, timeoutMs: number): Promise<{ holding: number; hibernated: number | null }> {
  let holding = 0;
  await waitUntil(async () => (holding = (await child.call('stats', {})).sessions) >= n, timeoutMs);
  // Idle calls are measured at rest: a server stops their actors once they have been idle a while.
  let hibernated: number | null = null;
  await waitUntil(async () => {
    hibernated = (await child.call('stats', {})).hibernated ?? null;
    return hibernated === null || hibernated >= n;
  }, Math.min(timeoutMs, HIBERNATE_WAIT_MS));
  await child.call('flush', {});
  return { holding, hibernated };
}

/** Warm calls opened ahead of measureIdleMemory, and what the process held before them. */
export interface WarmCalls {
  calls: LeanCall[];
  base: number;
}

/**
 * Opens the warm calls for a later measureIdleMemory: opened early (every process's at once), a
 * server has hibernated them by the time it is measured, so no run waits for that on its own.
 */
export async function openWarmCalls(child: ChildHandle, url: string, sessions: number, connectConcurrency: number): Promise<WarmCalls> {
  const base = (await child.call('stats', {})).sessions;
  return { base, calls: await openCalls(url, Math.min(WARM_CALLS, sessions), connectConcurrency) };
}

/**
 * `httpUrl`: a server's, where the warm calls hang up after the readings (the action callback ends
 * their sessions); the floor holds nothing once a socket closes. `warmed`: warm calls opened
 * earlier (openWarmCalls); else they are opened here.
 */
export async function measureIdleMemory(
  child: ChildHandle,
  url: string,
  sessions: number,
  connectConcurrency: number,
  timeoutMs: number,
  httpUrl?: string,
  warmed?: WarmCalls,
): Promise<{ result: MemoryResult; calls: LeanCall[] }> {
  // A fresh process's young generation is small and only partly resident; the first calls grow it
  // (up to 16 MB for the floor), which read as live memory of the calls, or, with the young
  // generation's committed size subtracted, as a negative growth (-1.6 KB per call for the floor
  // once). So the baseline is read with some calls already held, at rest, and the figure is what the
  // measured calls add on top: the warm calls stay until after the second reading, so nothing they
  // freed is there for the measured calls to reuse.
  const { base, calls: warm } = warmed ?? (await openWarmCalls(child, url, sessions, connectConcurrency));
  const { hibernated: hibernatedBefore } = await atRest(child, base + warm.length, timeoutMs);
  const before = await child.call('memory', {});
  const calls = await openCalls(url, sessions, connectConcurrency);
  const { holding, hibernated } = await atRest(child, base + warm.length + sessions, timeoutMs);
  const after = await child.call('memory', {});
  if (httpUrl) await hangUpAll(warm, httpUrl, connectConcurrency);
  else await closeAll(warm);
  return {
    calls,
    result: {
      sessions,
      held: holding - base - warm.length,
      hibernated: hibernated === null || hibernatedBefore === null ? null : hibernated - hibernatedBefore,
      // Never less than the live heap's growth, which is resident for certain: the young generation's
      // committed size can grow by more than its resident pages (once: the floor read -2.8 KB per
      // call while its heap grew 2.9 KB per call), and subtracting it then reads a negative growth.
      rssPerSessionBytes: Math.max(after.rssAnon - after.youngGeneration - (before.rssAnon - before.youngGeneration), after.heapUsed - before.heapUsed) / sessions,
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
