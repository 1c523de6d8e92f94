// The sides' load runs (the floor, each store's server, the LLM-hop baseline): each side's calls talk
// in one closed loop (load.ts) through every level, ascending, and at each level through every stream
// mode, the fake LLM's pace switched between runs; within a (level, mode) the sides take turns. The
// calls are those a side already has open (the floor's idle-memory calls; a store's, those its storm
// left live), topped up to the largest level.
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

/**
 * One side's closed loop, run one (level, mode) at a time so the harness can interleave the sides:
 * the floor's run and each store's run of the same level and mode are then measured seconds apart,
 * under the same background, instead of a minute apart.
 */
export class SideLoad {
  readonly runs: LoadRun[] = [];
  private constructor(
    readonly side: Side,
    private readonly loop: ClosedLoop,
    private readonly o: BenchOptions,
    private readonly log: (line: string) => void,
  ) {}

  /** Tops the side's calls up to the largest level. */
  static async open(side: Side, o: BenchOptions, log: (line: string) => void): Promise<SideLoad> {
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
    return new SideLoad(side, loop, o, log);
  }

  /** One run at `sessions` calls; the LLM's pace is already set to `mode`. */
  async run(sessions: number, mode: StreamMode): Promise<LoadRun> {
    // Every side starts clean: the garbage of what it did before (a reconnect storm, a thousand calls
    // hanging up) is collected now, not inside some later run, where it fell on whichever side was
    // first after a heavy phase (paced @1, 22 turns in 6 s: one old-generation GC moved its CPU per
    // turn by half). The run's own garbage is still its own.
    await this.side.child.call('gc', {});
    // Ends quiet (see ClosedLoop.run): the next side's run never shares the machine with this one's turns.
    const result = await this.loop.run(sessions, runMs(mode, sessions, this.o.levelMs));
    if (!result.quiet) this.log(`${this.side.name}: turns still in flight after the pause timeout; the next run may overlap them`);
    const run: LoadRun = { mode: mode.name, sessions, result };
    this.runs.push(run);
    this.log(
      `${this.side.name} ${mode.name} @${sessions}: ${result.turns} turns (${result.turnsPerSec.toFixed(0)}/s), ` +
        `first-token p99 ${result.p99Ms.toFixed(1)} ms, cpu/turn ${result.cpuUsPerTurn.toFixed(0)} us (${result.runTurns} turns; measured time alone ${result.cpuUsPerMeasuredTurn.toFixed(0)} us), ` +
        `client cpu/turn ${result.clientCpuUsPerTurn.toFixed(0)} us, warm-up ${result.warmupMs.toFixed(0)} ms${result.warmupRound ? '' : ' (cut)'}` +
        (result.failed ? `, ${result.failed} FAILED: ${JSON.stringify(result.failures)}` : ''),
    );
    return run;
  }

  /** Hangs every call up (replies in flight are cut). */
  stop(): Promise<void> {
    return this.loop.stop(this.o.actionConcurrency);
  }
}

/**
 * Runs every (level, mode) of `sides` (levels ascending, at each level every stream mode), the sides
 * interleaved within each (level, mode) in an order that rotates, then hangs every call up.
 */
export async function measureSides(sides: Side[], llm: ChildHandle, modes: readonly StreamMode[], o: BenchOptions, log: (line: string) => void): Promise<LoadRun[][]> {
  const loads: SideLoad[] = [];
  try {
    for (const side of sides) loads.push(await SideLoad.open(side, o, log));
    let round = 0;
    for (const sessions of o.levels) {
      for (const mode of modes) {
        await setPace(llm, mode);
        // Each round starts with the next side, so no side is always the first after a pace change.
        for (let k = 0; k < loads.length; k++) await loads[(round + k) % loads.length]!.run(sessions, mode);
        round++;
      }
    }
  } finally {
    // Nothing is measured any more: every side hangs up at once.
    await Promise.all(loads.map((load) => load.stop()));
  }
  return loads.map((l) => l.runs);
}
