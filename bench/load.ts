// Closed-loop load: N sessions each send a prompt, wait for the whole reply (`last: true`), and
// repeat. Measures prompt -> first token latency and completed replies per second.
import { LeanCall } from './lean-client.js';
import { mapLimit, mean, percentile } from './stats.js';

export const PROMPT = 'what time does the pharmacy on main street open tomorrow';

export interface LoadOptions {
  url: string;
  sessions: number;
  /** Measured prompts per session. */
  rounds: number;
  /** A session hangs up and places a new call after this many turns (calls are not endless). */
  turnsPerCall: number;
  /** Unmeasured prompts per session first (JIT, connection pools). */
  warmupRounds: number;
  /** Time cap for the measured part; sessions stop issuing prompts after it. */
  maxMs: number;
  replyTimeoutMs: number;
  connectConcurrency: number;
  /** Cumulative CPU microseconds of the measured process; read right before and after the measured part. */
  cpuProbe?: () => Promise<number>;
}

export interface LoadResult {
  sessions: number;
  replies: number;
  failed: number;
  p50Ms: number;
  p99Ms: number;
  meanMs: number;
  maxMs: number;
  /** Completed replies per second over the measured part. */
  throughput: number;
  elapsedMs: number;
  /** The time cap cut the run short. */
  timedOut: boolean;
  framesPerReply: number;
  /** CPU time the measured process spent per completed reply (null without a probe). */
  cpuUsPerReply: number | null;
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

export async function measureLoad(o: LoadOptions): Promise<LoadResult> {
  const calls = await openCalls(o.url, o.sessions, o.connectConcurrency);
  try {
    for (let r = 0; r < o.warmupRounds; r++) await Promise.all(calls.map((c) => ask(c, PROMPT, o.replyTimeoutMs)));

    const latencies: number[] = [];
    let failed = 0;
    let frames = 0;
    let timedOut = false;
    const cpuBefore = await o.cpuProbe?.();
    const start = performance.now();
    const deadline = start + o.maxMs;
    await Promise.all(
      calls.map(async (first, i) => {
        let call = first;
        let turnsOnCall = o.warmupRounds;
        for (let r = 0; r < o.rounds; r++) {
          if (performance.now() > deadline) {
            timedOut = true;
            return;
          }
          try {
            if (turnsOnCall >= o.turnsPerCall) {
              // Hang up and call again: connection set-up counts in throughput, not in latency.
              await call.close();
              call = (await openCalls(o.url, 1, 1))[0]!;
              calls[i] = call;
              turnsOnCall = 0;
            }
            const answer = await ask(call, PROMPT, o.replyTimeoutMs);
            turnsOnCall++;
            latencies.push(answer.firstMs);
            frames += answer.frames;
          } catch {
            failed++;
            return; // a broken session stops; the failure is reported
          }
        }
      }),
    );
    const elapsedMs = performance.now() - start;
    const cpuAfter = await o.cpuProbe?.();
    return {
      sessions: o.sessions,
      replies: latencies.length,
      failed,
      p50Ms: percentile(latencies, 0.5),
      p99Ms: percentile(latencies, 0.99),
      meanMs: mean(latencies),
      maxMs: percentile(latencies, 1),
      throughput: (latencies.length / elapsedMs) * 1000,
      elapsedMs,
      timedOut,
      framesPerReply: latencies.length ? frames / latencies.length : 0,
      cpuUsPerReply: cpuBefore !== undefined && cpuAfter !== undefined && latencies.length ? (cpuAfter - cpuBefore) / latencies.length : null,
    };
  } finally {
    await closeAll(calls);
  }
}
