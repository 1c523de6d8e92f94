// Closed-loop load sized by time: a side's calls each send a prompt, wait for the whole reply
// (`last: true`) and send the next one. A run raises the number of talking calls to its level,
// warms up (see ClosedLoop.run), then counts for a fixed time: turns completed, prompt -> first
// token of each, and the measured process's CPU time.
// Calls keep their connections from one run to the next, so levels go up without reconnecting;
// between runs the loop pauses (pause() lets every turn in flight finish and sends no new prompt),
// so another side's run, interleaved with this side's, never shares the machine with its traffic.
import { LeanCall } from './lean-client.js';
import { mapLimit, mean, percentile, sleep, waitUntil } from './stats.js';

export const PROMPT = 'what time does the pharmacy on main street open tomorrow';

export interface LoadResult {
  sessions: number;
  /** Turns completed in the measured time. */
  turns: number;
  /** Turns that failed (timeout, closed socket) during this run, warm-up included. */
  failed: number;
  /** Why they failed: message -> count. */
  failures: Record<string, number>;
  p50Ms: number;
  p99Ms: number;
  meanMs: number;
  maxMs: number;
  turnsPerSec: number;
  /** The measured time (longer than asked only if no turn completed in it). */
  elapsedMs: number;
  /** The warm-up before it. */
  warmupMs: number;
  /** Every talking call completed a turn of this run before the measured time began (else the warm-up was cut at its maximum). */
  warmupRound: boolean;
  framesPerTurn: number;
  /**
   * CPU time (user + system) the measured process spent per turn over the whole run: from its start
   * (quiet: the previous run ended with no turn in flight) to its end (quiet again), warm-up and tail
   * included, over every turn completed in that span.
   */
  cpuUsPerTurn: number;
  /** Turns completed in the whole run (the span of cpuUsPerTurn). */
  runTurns: number;
  /** Informational: the CPU time of the measured time per turn completed in it (the earlier measure). */
  cpuUsPerMeasuredTurn: number;
  /** The same for the harness (all clients): near a whole core, the clients are what limits the run. */
  clientCpuUsPerTurn: number;
  /** First-token samples: the turns sent in the measured time that got a first token. */
  latencySamples: number;
  /** Every turn in flight had finished after the run (else the next run may overlap them). */
  quiet: boolean;
}

interface Answer {
  firstMs: number;
  frames: number;
}

/** One prompt and its whole reply; rejects on timeout or a closed socket. `onFirst`: prompt -> first token, when it comes. */
export function ask(call: LeanCall, text: string, timeoutMs: number, onFirst?: (ms: number) => void): Promise<Answer> {
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
      if (first < 0) {
        first = performance.now() - sent;
        onFirst?.(first);
      }
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
  /** The warm-up lasts at least this long... */
  minWarmupMs: number;
  /** ...and at most this long. */
  maxWarmupMs: number;
  /** Cumulative CPU microseconds of the measured process; read right before and after the measured time. */
  cpuProbe: () => Promise<number>;
  /** After a call's socket closed: what else a hang-up sends (the server's action callback). */
  hangUp?: (call: LeanCall) => Promise<void>;
}

/** How long stop() waits for the calls' loops to notice (one may be connecting again, or posting its hang-up). */
const STOP_WAIT_MS = 5000;

/**
 * The measured time: the turns completed in it (throughput, CPU per turn), and the first-token
 * latency of the turns sent in it, whenever their first token comes (see run()).
 */
interface Window {
  open: boolean;
  turns: number;
  frames: number;
  /** Turns sent in the measured time, and those of them still without a first token (or a failure). */
  sent: number;
  waiting: number;
  latencies: number[];
}

export class ClosedLoop {
  private active = 0;
  private generation = 0;
  private stopping = false;
  private failed = 0;
  private failures: Record<string, number> = {};
  private readonly loops: Array<Promise<void>> = [];
  /** Per call: turns on its current connection, and the newest run (generation) it completed a turn in. */
  private readonly turnsOnCall: number[];
  private readonly completed: number[];
  private brokenCount = 0;
  private window: Window | null = null;
  /** Turns completed since the current run began (its CPU per turn). */
  private runTurns = 0;
  /** Set while paused: each call's loop waits on it before its next prompt. */
  private gate: { opened: Promise<void>; open: () => void } | null = null;
  private parked = 0;

  /** `calls` have sent their setup; the loop owns them from now on (a call that hangs up is replaced in place). */
  constructor(
    readonly calls: LeanCall[],
    private readonly o: ClosedLoopOptions,
  ) {
    // Calls hang up at staggered turns, as real ones do: in step, a thousand would hang up and
    // connect again in the same moment, every turnsPerCall rounds.
    this.turnsOnCall = calls.map((_, i) => i % o.turnsPerCall);
    this.completed = calls.map(() => 0);
  }

  /**
   * One run: `sessions` calls talking (at least as many as in the previous run), warmed up, then
   * measured for `durationMs`. The warm-up is one round (every talking call completes a turn begun
   * in this run), at least minWarmupMs and at most maxWarmupMs: a thousand saturating calls can take
   * longer than that for a round, and then a few turns begun before the run (at the previous level,
   * or the LLM's previous pace) may still end inside the measured time (`warmupRound: false`); they
   * count as turns done, not in the latency. The run ends paused (see pause()).
   */
  async run(sessions: number, durationMs: number): Promise<LoadResult> {
    if (sessions > this.calls.length || sessions < this.active) throw new Error(`ClosedLoop: ${sessions} calls after ${this.active}, of ${this.calls.length}`);
    // CPU per turn is read over the whole run, from quiet to quiet: at 1,000 paced calls the calls
    // fall into step (they all start at once, and a reply's 20 ms tokens keep them there), so turns
    // end in waves about as far apart as the measured time is long. Whether one wave or two fell
    // inside it moved the turns completed in it, and so CPU per turn, by up to 2.5x between runs,
    // while CPU per reply over the whole run stayed the same. From quiet to quiet, every turn begun
    // is also completed, wherever the waves fall. Read before the gate opens: no prompt goes out first.
    const runCpuBefore = await this.o.cpuProbe();
    this.runTurns = 0;
    this.generation++;
    const generation = this.generation;
    this.openGate();
    const failedBefore = this.failed;
    this.failures = {};
    const warmStart = performance.now();
    for (let i = this.active; i < sessions; i++) this.loops.push(this.loop(i));
    this.active = sessions;
    let warmupRound = false;
    await waitUntil(
      () => {
        let done = this.brokenCount;
        for (let i = 0; i < this.active; i++) if (this.completed[i] === generation) done++;
        warmupRound = done >= this.active;
        return warmupRound && performance.now() - warmStart >= this.o.minWarmupMs;
      },
      this.o.maxWarmupMs,
      5,
    );
    const warmupMs = performance.now() - warmStart;

    const cpuBefore = await this.o.cpuProbe();
    const clientBefore = process.cpuUsage();
    const window: Window = { open: true, turns: 0, frames: 0, sent: 0, waiting: 0, latencies: [] };
    this.window = window;
    const start = performance.now();
    await sleep(durationMs);
    // A turn longer than the measured time (a slow machine, a tiny run) still gets one figure of each kind.
    if (window.turns === 0 || window.sent === 0) {
      await waitUntil(() => (window.turns > 0 && window.sent > 0) || this.brokenCount >= this.active, this.o.replyTimeoutMs, 5);
    }
    window.open = false;
    const elapsedMs = performance.now() - start;
    const client = process.cpuUsage(clientBefore);
    const cpuAfter = await this.o.cpuProbe();
    // The last turns sent in the measured time get their first token under the same load: the calls
    // go on talking (those turns no longer counted) until each of them has one. Then the run ends
    // quiet before the next run (another side's, interleaved): no new prompt, every turn finishes.
    await waitUntil(() => window.waiting === 0 || this.brokenCount >= this.active, this.o.replyTimeoutMs, 5);
    const quiet = await this.pause();
    const runCpu = (await this.o.cpuProbe()) - runCpuBefore;
    const { runTurns } = this;
    const { latencies, turns } = window;
    return {
      sessions,
      turns,
      failed: this.failed - failedBefore,
      failures: this.failures,
      p50Ms: percentile(latencies, 0.5),
      p99Ms: percentile(latencies, 0.99),
      meanMs: mean(latencies),
      maxMs: percentile(latencies, 1),
      turnsPerSec: (turns / elapsedMs) * 1000,
      elapsedMs,
      warmupMs,
      warmupRound,
      framesPerTurn: turns ? window.frames / turns : 0,
      latencySamples: latencies.length,
      quiet,
      cpuUsPerTurn: runTurns ? runCpu / runTurns : Number.NaN,
      runTurns,
      cpuUsPerMeasuredTurn: turns ? (cpuAfter - cpuBefore) / turns : Number.NaN,
      clientCpuUsPerTurn: turns ? (client.user + client.system) / turns : Number.NaN,
    };
  }

  /**
   * Sends no new prompt and waits until every turn in flight has finished; false if some had not
   * within twice the reply timeout (a call connecting again, then its turn).
   */
  async pause(): Promise<boolean> {
    if (!this.gate) {
      let open!: () => void;
      const opened = new Promise<void>((resolve) => (open = resolve));
      this.gate = { opened, open };
    }
    return waitUntil(() => this.parked + this.brokenCount >= this.active, 2 * this.o.replyTimeoutMs, 5);
  }

  private openGate(): void {
    this.gate?.open();
    this.gate = null;
  }

  /**
   * Every call hangs up now: its socket is cut (a close handshake with a saturated process can take
   * seconds; replies in flight are cut, nothing is measured any more), then the hang-up callback.
   */
  async stop(concurrency: number): Promise<void> {
    this.stopping = true;
    this.openGate();
    await Promise.all(this.calls.map((c) => c.drop()));
    // A call still connecting again drops that socket itself once it opens (see loop()).
    await Promise.race([Promise.all(this.loops), sleep(STOP_WAIT_MS)]);
    const { hangUp } = this.o;
    if (hangUp) await mapLimit(this.calls, concurrency, hangUp);
  }

  /** A turn sent in the measured time: its first-token latency is a sample, taken when it comes. */
  private async timed(window: Window, call: LeanCall): Promise<Answer> {
    window.sent++;
    window.waiting++;
    let heard = false;
    try {
      return await ask(call, PROMPT, this.o.replyTimeoutMs, (ms) => {
        heard = true;
        window.waiting--;
        window.latencies.push(ms);
      });
    } finally {
      if (!heard) window.waiting--;
    }
  }

  private async loop(i: number): Promise<void> {
    while (!this.stopping) {
      if (this.gate) {
        this.parked++;
        await this.gate.opened;
        this.parked--;
        if (this.stopping) return;
      }
      const generation = this.generation;
      try {
        if (this.turnsOnCall[i]! >= this.o.turnsPerCall) {
          // Hang up and call again: connection set-up counts in turns/s and CPU per turn, not in latency.
          await this.calls[i]!.close();
          await this.o.hangUp?.(this.calls[i]!);
          if (this.stopping) return;
          // A process saturated by a thousand calls can take seconds to accept a connection.
          const next = await LeanCall.open(this.o.url, undefined, this.o.replyTimeoutMs);
          if (this.stopping) {
            void next.drop(); // no setup sent: the server holds no session for it
            return;
          }
          next.sendSetup();
          this.calls[i] = next;
          this.turnsOnCall[i] = 0;
          continue; // the gate again: a pause may have begun while it connected
        }
        // Latency counts for turns sent in the measured time: a turn sent in the warm-up (the ramp-up's
        // burst of first prompts, all at once) is not the steady state, even if it completes in it.
        const sentIn = this.window?.open ? this.window : null;
        const answer = await (sentIn ? this.timed(sentIn, this.calls[i]!) : ask(this.calls[i]!, PROMPT, this.o.replyTimeoutMs));
        this.turnsOnCall[i]!++;
        this.completed[i] = generation;
        this.runTurns++;
        if (this.window?.open) {
          this.window.turns++;
          this.window.frames += answer.frames;
        }
      } catch (err) {
        if (this.stopping) return; // hung up by stop()
        // A broken call stops; the failure is reported with the run it happened in.
        const why = err instanceof Error ? err.message.replace(/ws:\/\/\S+/, 'its URL') : String(err);
        this.failures[why] = (this.failures[why] ?? 0) + 1;
        this.failed++;
        this.brokenCount++;
        return;
      }
    }
  }
}
