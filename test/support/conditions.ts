// Condition waits and small HTTP probes for the relay end-to-end suites: poll a predicate instead
// of sleeping a fixed time, and read Prometheus counters the way a scraper would.
import { SimulatedCall } from '../../src/client/twilio-sim.js';
import type { TestServer } from './harness.js';

/** Resolves once `condition` holds; rejects with `what` after `timeoutMs`. */
export async function waitUntil(condition: () => boolean, what: string, timeoutMs = 10_000, intervalMs = 10): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Resolves once the async `condition` holds (a rejection counts as not yet); rejects after `timeoutMs`. */
export async function waitUntilAsync(condition: () => Promise<boolean>, what: string, timeoutMs = 10_000, intervalMs = 20): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      if (await condition()) return;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      const cause = lastError instanceof Error ? ` (last error: ${lastError.message})` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}${cause}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Sum of every sample of a counter (all label sets) in a Prometheus text exposition. */
export function counterTotal(exposition: string, name: string): number {
  let total = 0;
  for (const line of exposition.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = /^(\w+)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (m && m[1] === name) total += Number(m[3]);
  }
  return total;
}

export async function scrapeCounter(httpUrl: string, name: string): Promise<number> {
  const res = await fetch(`${httpUrl}/metrics`);
  if (res.status !== 200) throw new Error(`GET /metrics answered ${res.status}`);
  return counterTotal(await res.text(), name);
}

/** Opens a call, sends setup and waits until the server has created its session. */
export async function connectCall(ts: TestServer, opts: { headers?: Record<string, string> } = {}): Promise<SimulatedCall> {
  const call = await SimulatedCall.connect({ url: ts.server.relayUrl, ...opts });
  await waitUntil(() => ts.server.manager.get(call.callSid) !== undefined, `session for ${call.callSid}`);
  return call;
}
