// Brand-new calls (callSids no store has seen) against a server: each sends its setup and its first
// prompt back to back, and is timed from the prompt to the first `text` frame, as load.ts times a
// turn. The storm measures a batch when the server is quiet, then one right after a burst of
// reconnects and one while the restores run (storm.ts): a new call must not wait behind the restores.
import { hangUpAll } from './hang-up.js';
import { LeanCall } from './lean-client.js';
import { ask, PROMPT } from './load.js';
import { mapLimit, percentile } from './stats.js';

export interface NewCallsResult {
  calls: number;
  /** Calls that heard a whole reply. */
  answered: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

/** Opens the sockets only: no setup yet, so the timed part starts with the setup. */
export function openNewCalls(relayUrl: string, n: number, concurrency: number): Promise<LeanCall[]> {
  return mapLimit(Array.from({ length: n }), concurrency, () => LeanCall.open(relayUrl));
}

/** Every call sends setup + prompt now; resolves with prompt -> first token per call (null: no whole reply). */
export function talkNow(calls: readonly LeanCall[], timeoutMs: number): Promise<Array<number | null>> {
  return Promise.all(
    calls.map((call) => {
      call.sendSetup();
      return ask(call, PROMPT, timeoutMs).then(
        (answer) => answer.firstMs,
        () => null,
      );
    }),
  );
}

export function summarize(latencies: ReadonlyArray<number | null>): NewCallsResult {
  const ok = latencies.filter((l): l is number => l !== null);
  return { calls: latencies.length, answered: ok.length, p50Ms: percentile(ok, 0.5), p99Ms: percentile(ok, 0.99), maxMs: percentile(ok, 1) };
}

/** A batch on a quiet server: open, talk, hang up. */
export async function newCallsBatch(port: number, n: number, concurrency: number, timeoutMs: number): Promise<NewCallsResult> {
  const calls = await openNewCalls(`ws://127.0.0.1:${port}/relay`, n, concurrency);
  try {
    return summarize(await talkNow(calls, timeoutMs));
  } finally {
    await hangUpAll(calls, `http://127.0.0.1:${port}`, concurrency);
  }
}
