// Small probes for the relay end-to-end suites: wait for a call's session, and read Prometheus
// counters the way a scraper would.
import { afterEach, expect, vi } from 'vitest';
import { SimulatedCall } from '../../src/testing/twilio-sim.js';
import { startTestServer, type TestServer, type TestServerOptions } from './harness.js';

/** Resolves once `condition` holds (vitest's own waitFor polls it); fails with `what` after `timeoutMs`. */
export async function waitUntil(condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  await vi.waitFor(() => {
    if (!condition()) throw new Error(`waiting for: ${what}`);
  }, { timeout: timeoutMs, interval: 10 });
}

/** The async form: a rejection counts as not yet. */
export async function waitUntilAsync(condition: () => Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  await vi.waitFor(async () => {
    if (!(await condition())) throw new Error(`waiting for: ${what}`);
  }, { timeout: timeoutMs, interval: 20 });
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
  await expect.poll(() => ts.server.manager.get(call.callSid), { timeout: 10_000, message: `session for ${call.callSid}` }).toBeDefined();
  return call;
}

/** Servers and calls a test opens in-process, dropped and closed after each test. */
export function useServersPerTest(): {
  start(opts?: TestServerOptions): Promise<TestServer>;
  dial(ts: TestServer): Promise<SimulatedCall>;
  /** A call the test opened itself, dropped after the test too. */
  track(call: SimulatedCall): SimulatedCall;
} {
  const servers: TestServer[] = [];
  const calls: SimulatedCall[] = [];
  afterEach(async () => {
    await Promise.all(calls.splice(0).map((c) => c.drop()));
    await Promise.all(servers.splice(0).map((s) => s.close()));
  });
  return {
    async start(opts = {}) {
      const ts = await startTestServer(opts);
      servers.push(ts);
      return ts;
    },
    async dial(ts) {
      const call = await connectCall(ts);
      calls.push(call);
      return call;
    },
    track(call) {
      calls.push(call);
      return call;
    },
  };
}
