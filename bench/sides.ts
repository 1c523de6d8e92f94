// One side's load runs (the floor, a store's server, the LLM-hop baseline): its calls talk in one
// closed loop (load.ts) through every level, ascending, and at each level through every stream
// mode, the fake LLM's pace switched between runs. The calls are the side's idle-memory calls
// where it had those, topped up to the largest level.
import type { ChildHandle } from './child-process.js';
import { cpuOf } from './cpu-time.js';
import type { LeanCall } from './lean-client.js';
import { postAction } from '../src/testing/twilio-webhooks.js';
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
  /** Calls already open with their setup sent (the idle-memory calls); more are opened as needed. */
  calls?: LeanCall[];
  /**
   * A relay server's HTTP origin: a call that hangs up also gets its action callback (CallStatus
   * completed), as Twilio sends it, so the session ends instead of waiting out its grace period.
   */
  httpUrl?: string;
}

/**
 * The <Connect action> callback Twilio posts when the caller hung up. A saturated server can be
 * slow to accept it; it is tried twice, and a call whose callback still failed only means one
 * session that waits out its grace period in the server: never a failed turn.
 */
const hangUpAt = (httpUrl: string) => async (call: LeanCall) => {
  const params = { CallSid: call.callSid, CallStatus: 'completed', SessionStatus: 'completed' };
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await postAction(httpUrl, params);
      return;
    } catch {
      // once more
    }
  }
};

/** Runs every (level, mode) of one side, then hangs every call up once the turns in flight are done. */
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
    ...(side.httpUrl ? { hangUp: hangUpAt(side.httpUrl) } : {}),
  });
  const runs: LoadRun[] = [];
  try {
    for (const sessions of o.levels) {
      for (const mode of modes) {
        await setPace(llm, mode);
        const result = await loop.run(sessions, o.levelMs);
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
