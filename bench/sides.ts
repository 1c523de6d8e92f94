// One side's load runs (the floor, a store's server, the LLM-hop baseline): its calls talk in one
// closed loop (load.ts) through every level, ascending, and at each level through every stream
// mode, the fake LLM's pace switched between runs. The calls are those the side already has open
// (the floor's idle-memory calls; a store's, those its storm left live), topped up to the largest level.
import type { ChildHandle } from './child-process.js';
import { cpuOf } from './cpu-time.js';
import type { LeanCall } from './lean-client.js';
import { postHangUp } from './hang-up.js';
import { ClosedLoop, openCalls } from './load.js';
import { setPace, type StreamMode } from './modes.js';
import type { BenchOptions } from './options.js';
import type { LoadRun } from './results.js';

export interface Side {
  name: string;
  /** Where the side's calls connect (and a call that hung up calls again). */
  url: string;
  /** The measured process. */
  child: ChildHandle;
  /** Calls already open with their setup sent; more are opened as needed. */
  calls?: LeanCall[];
  /** A relay server's HTTP origin: a call that hangs up also gets its action callback (hang-up.ts). */
  httpUrl?: string;
}

/**
 * A single paced call makes 3-4 turns a second: its run lasts three times as long, so the CPU reading
 * covers about 20 turns instead of 7 and a background burst moves it less.
 */
export function runMs(mode: StreamMode, sessions: number, levelMs: number): number {
  return mode.name === 'paced' && sessions === 1 ? levelMs * 3 : levelMs;
}

/** Runs every (level, mode) of one side, then hangs every call up (replies in flight are cut). */
export async function measureSide(side: Side, llm: ChildHandle, modes: readonly StreamMode[], o: BenchOptions, log: (line: string) => void): Promise<LoadRun[]> {
  const calls = side.calls ?? [];
  const largest = Math.max(...o.levels);
  if (calls.length < largest) calls.push(...(await openCalls(side.url, largest - calls.length, o.connectConcurrency)));
  const loop = new ClosedLoop(calls, {
    url: side.url,
    turnsPerCall: o.turnsPerCall,
    replyTimeoutMs: o.replyTimeoutMs,
    minWarmupMs: o.warmupMs,
    maxWarmupMs: Math.max(o.warmupMs, o.warmupMaxMs),
    cpuProbe: cpuOf(side.child),
    ...(side.httpUrl ? { hangUp: (call: LeanCall) => postHangUp(side.httpUrl!, call.callSid) } : {}),
  });
  const runs: LoadRun[] = [];
  try {
    for (const sessions of o.levels) {
      for (const mode of modes) {
        await setPace(llm, mode);
        const result = await loop.run(sessions, runMs(mode, sessions, o.levelMs));
        runs.push({ mode: mode.name, sessions, result });
        log(
          `${side.name} ${mode.name} @${sessions}: ${result.turns} turns (${result.turnsPerSec.toFixed(0)}/s), ` +
            `first-token p99 ${result.p99Ms.toFixed(1)} ms, cpu/turn ${result.cpuUsPerTurn.toFixed(0)} us, ` +
            `client cpu/turn ${result.clientCpuUsPerTurn.toFixed(0)} us, warm-up ${result.warmupMs.toFixed(0)} ms${result.warmupRound ? '' : ' (cut)'}` +
            (result.failed ? `, ${result.failed} FAILED: ${JSON.stringify(result.failures)}` : ''),
        );
      }
    }
  } finally {
    await loop.stop(o.actionConcurrency);
  }
  return runs;
}
