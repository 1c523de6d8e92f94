// Prometheus metrics (prom-client), one registry per server so tests and in-process instances don't collide.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export function createMetrics(opts: { defaultMetrics?: boolean } = {}) {
  const registry = new Registry();
  if (opts.defaultMetrics) collectDefaultMetrics({ register: registry });
  const registers = [registry];
  let sessionSource: () => Map<string, number> = () => new Map();
  return {
    registry,
    setSessionSource(source: () => Map<string, number>) {
      sessionSource = source;
    },
    sessions: new Gauge({
      name: 'relay_sessions',
      help: 'Live sessions on this instance by lifecycle state',
      labelNames: ['state'],
      registers,
      collect() {
        this.reset();
        for (const [state, n] of sessionSource()) this.set({ state }, n);
      },
    }),
    disconnects: new Counter({ name: 'relay_disconnects_total', help: 'Socket closes by close code', labelNames: ['code'], registers }),
    resumeAttempts: new Counter({ name: 'relay_resume_attempts_total', help: 'Setups that asked for or could resume a session', labelNames: ['via'], registers }),
    resumes: new Counter({ name: 'relay_resumes_total', help: 'Resume attempts by outcome (succeeded, failed)', labelNames: ['outcome'], registers }),
    restoreSeconds: new Histogram({
      name: 'relay_restore_seconds',
      help: 'Time to restore a session from the store',
      buckets: [0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.5],
      registers,
    }),
    firstTokenSeconds: new Histogram({
      name: 'relay_llm_first_token_seconds',
      help: 'LLM time to first token',
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5],
      registers,
    }),
    malformedFrames: new Counter({ name: 'relay_malformed_frames_total', help: 'Inbound frames rejected', labelNames: ['reason'], registers }),
    staleWrites: new Counter({ name: 'relay_stale_lease_writes_total', help: 'Writes rejected because another instance owns the session', registers }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
