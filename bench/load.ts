// Closed-loop load sized by time: a side's calls each send a prompt, wait for the whole reply
// (`last: true`) and send the next one. A run raises the number of talking calls to its level,
// warms up (every talking call completes one turn begun in this run, and a minimum time passes),
// then counts for a fixed time: turns completed, prompt -> first token of each, and the measured
// process's CPU time.
// Calls keep talking from one run to the next, so levels go up without reconnecting and a run never
// waits for the previous one to drain; only stop() drains.
import { LeanCall } from './lean-client.js';
import { mapLimit, mean, percentile, sleep, waitUntil } from './stats.js';

export const PROMPT = 'what time does the pharmacy on main street open tomorrow';

export interface LoadResult {
  sessions: number;
  /** Turns completed in the measured time. */
  turns: number;
  /** Turns that failed (timeout, closed socket) during this run, warm-up included. */
  failed: number;
  p50Ms: number;
  p99Ms: number;
  meanMs: number;
  maxMs: number;
  turnsPerSec: number;
  /** The measured time (longer than asked only if no turn completed in it). */
  elapsedMs: number;
  /** The warm-up before it: one round, and at least the minimum warm-up time. */
  warmupMs: number;
  /** The warm-up round did not finish in time (the run was measured anyway). */
  warmupTimedOut: boolean;
  framesPerTurn: number;
  /** CPU time (user + system) the measured process spent per completed turn. */
  cpuUsPerTurn: number;
}

interface Answer {
  firstMs: number;
  frames: number;
}

/** One prompt and its whole reply; rejects on timeout or a closed socket. */
export function ask(call: LeanCall, text: string, timeoutMs: number): Promise<Answer> {
  return new Promise((resolve, reject) => {
    let first = -1;
    let frames = 0;
    let done = false;
    const finish = (err?: Error, answer?: Answer) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      call.onText = null;
      if (err) reject(err);
      else resolve(answer!);
    };
    const timer = setTimeout(() => finish(new Error(`no complete reply within ${timeoutMs} ms`)), timeoutMs);
    void call.closed.then((code) => finish(new Error(`socket closed (${code}) while waiting for a reply`)));
    call.onText = (_token, last) => {
      frames++;
      if (first < 0) first = performance.now() - sent;
      if (last) finish(undefined, { firstMs: first, frames });
    };
    const sent = performance.now();
    call.prompt(text);
  });
}

export async function openCalls(url: string, n: number, concurrency: number): Promise<LeanCall[]> {
  return mapLimit(Array.from({ length: n }), concurrency, async () => {
    const call = await LeanCall.open(url);
    call.sendSetup();
    return call;
  });
}

/** Closes every call, waiting at most `timeoutMs` for close handshakes. */
export async function closeAll(calls: readonly LeanCall[], timeoutMs = 10_000): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    Promise.all(calls.map((c) => c.close())),
    new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        for (const c of calls) void c.drop();
        resolve();
      }, timeoutMs);
    }),
  ]);
  clearTimeout(timer);
}

export interface ClosedLoopOptions {
  /** Where a call that hung up calls again. */
  url: string;
  turnsPerCall: number;
  replyTimeoutMs: number;
  /** The warm-up lasts at least this long (and at least one round). */
  minWarmupMs: number;
  /** Bound on a warm-up round. */
  warmupTimeoutMs: number;
  /** Cumulative CPU microseconds of the measured process; read right before and after the measured time. */
  cpuProbe: () => Promise<number>;
  /** After a call's socket closed: what else a hang-up sends (the server's action callback). */
  hangUp?: (call: LeanCall) => Promise<void>;
}

/** The turns completed while the measured time runs. */
interface Window {
  open: boolean;
  latencies: number[];
  frames: number;
}

export class ClosedLoop {
  private active = 0;
  private generation = 0;
  private stopping = false;
  private failed = 0;
  private readonly loops: Array<Promise<void>> = [];
  /** Per call: turns on its current connection; whether it completed a turn of this run; whether it broke. */
  private readonly turnsOnCall: number[];
  private readonly warmed: boolean[];
  private readonly broken: boolean[];
  private warmedCount = 0;
  private brokenCount = 0;
  private onWarm: (() => void) | null = null;
  private window: Window | null = null;

  /** `calls` have sent their setup; the loop owns them from now on (a call that hangs up is replaced in place). */
  constructor(
    readonly calls: LeanCall[],
    private readonly o: ClosedLoopOptions,
  ) {
    this.turnsOnCall = calls.map(() => 0);
    this.warmed = calls.map(() => false);
    this.broken = calls.map(() => false);
  }

  /** One run: `sessions` calls talking (at least as many as the previous run), measured for `durationMs`. */
  async run(sessions: number, durationMs: number): Promise<LoadResult> {
    if (sessions > this.calls.length || sessions < this.active) throw new Error(`ClosedLoop: ${sessions} calls after ${this.active}, of ${this.calls.length}`);
    // A new generation: turns begun from now on are this run's (the caller changed what they meet, e.g. the LLM's pace).
    this.generation++;
    this.warmed.fill(false);
    this.warmedCount = 0;
    const failedBefore = this.failed;
    const warmStart = performance.now();
    const warm = new Promise<void>((resolve) => (this.onWarm = resolve));
    for (let i = this.active; i < sessions; i++) this.loops.push(this.loop(i));
    this.active = sessions;
    this.checkWarm();
    let warmTimer: NodeJS.Timeout | undefined;
    const warmupTimedOut = await Promise.race([
      warm.then(() => false),
      new Promise<boolean>((resolve) => (warmTimer = setTimeout(() => resolve(true), this.o.warmupTimeoutMs))),
    ]);
    clearTimeout(warmTimer);
    this.onWarm = null;
    // A round of one call is one turn: not enough for the JIT and the GC to settle.
    const settledAt = warmStart + this.o.minWarmupMs;
    if (performance.now() < settledAt) await sleep(settledAt - performance.now());
    const warmupMs = performance.now() - warmStart;

    const cpuBefore = await this.o.cpuProbe();
    const window: Window = { open: true, latencies: [], frames: 0 };
    this.window = window;
    const start = performance.now();
    await sleep(durationMs);
    // A turn longer than the measured time (a slow machine, a tiny run) still gets one figure.
    if (window.latencies.length === 0) await waitUntil(() => window.latencies.length > 0 || this.brokenCount >= this.active, this.o.replyTimeoutMs, 5);
    window.open = false;
    const elapsedMs = performance.now() - start;
    const cpuAfter = await this.o.cpuProbe();
    const { latencies } = window;
    return {
      sessions,
      turns: latencies.length,
      failed: this.failed - failedBefore,
      p50Ms: percentile(latencies, 0.5),
      p99Ms: percentile(latencies, 0.99),
      meanMs: mean(latencies),
      maxMs: percentile(latencies, 1),
      turnsPerSec: (latencies.length / elapsedMs) * 1000,
      elapsedMs,
      warmupMs,
      warmupTimedOut,
      framesPerTurn: latencies.length ? window.frames / latencies.length : 0,
      cpuUsPerTurn: latencies.length ? (cpuAfter - cpuBefore) / latencies.length : Number.NaN,
    };
  }

  /** Every call finishes the turn it is in, then hangs up. */
  async stop(concurrency: number): Promise<void> {
    this.stopping = true;
    await Promise.all(this.loops);
    await closeAll(this.calls);
    const { hangUp } = this.o;
    if (hangUp) await mapLimit(this.calls, concurrency, hangUp);
  }

  private checkWarm(): void {
    if (this.onWarm && this.warmedCount + this.brokenCount >= this.active) this.onWarm();
  }

  private async loop(i: number): Promise<void> {
    while (!this.stopping) {
      const generation = this.generation;
      try {
        if (this.turnsOnCall[i]! >= this.o.turnsPerCall) {
          // Hang up and call again: connection set-up counts in turns/s and CPU per turn, not in latency.
          await this.calls[i]!.close();
          await this.o.hangUp?.(this.calls[i]!);
          this.calls[i] = (await openCalls(this.o.url, 1, 1))[0]!;
          this.turnsOnCall[i] = 0;
        }
        const answer = await ask(this.calls[i]!, PROMPT, this.o.replyTimeoutMs);
        this.turnsOnCall[i]!++;
        if (this.window?.open) {
          this.window.latencies.push(answer.firstMs);
          this.window.frames += answer.frames;
        }
        if (generation === this.generation && !this.warmed[i]) {
          this.warmed[i] = true;
          this.warmedCount++;
          this.checkWarm();
        }
      } catch {
        // A broken call stops; the failure is reported with the run it happened in.
        this.failed++;
        this.broken[i] = true;
        this.brokenCount++;
        this.checkWarm();
        return;
      }
    }
  }
}
