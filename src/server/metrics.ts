// Prometheus metrics (prom-client), one registry per server so tests and in-process instances don't collide.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { STORE_OPS } from '../stores/timed-store.js';

/**
 * Close codes worth telling apart; any other (a peer may send any code from 1000 to 4999) is
 * counted as `other`, so a client cannot grow the label set.
 */
const KNOWN_CLOSE_CODES = new Set([1000, 1001, 1005, 1006, 1007, 1008, 1011, 1013, 4000, 4001]);

export function closeCodeLabel(code: number): string {
  return KNOWN_CLOSE_CODES.has(code) ? String(code) : 'other';
}

/** The abuse limits (see README, Limits): each hit is counted under its name. */
export const LIMITS = ['prompt_bytes', 'send_buffer', 'queued_frames', 'sessions'] as const;
export type LimitName = (typeof LIMITS)[number];

export function createMetrics(opts: { defaultMetrics?: boolean } = {}) {
  const registry = new Registry();
  if (opts.defaultMetrics) collectDefaultMetrics({ register: registry });
  const registers = [registry];
  let sessionSource: () => Map<string, number> = () => new Map();
  let hibernatedSource: () => number = () => 0;
  const limitsExceeded = new Counter({
    name: 'relay_limits_exceeded_total',
    help: 'Abuse limits hit: prompt_bytes (prompt cut), send_buffer (socket closed), queued_frames (socket closed), sessions (socket refused)',
    labelNames: ['limit'],
    registers,
  });
  // Every series exists from the start, so alerts on rate() see a zero rather than nothing.
  for (const limit of LIMITS) limitsExceeded.inc({ limit }, 0);
  return {
    registry,
    setSessionSource(source: () => Map<string, number>, hibernated?: () => number) {
      sessionSource = source;
      if (hibernated) hibernatedSource = hibernated;
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
    sessionsHibernated: new Gauge({
      name: 'relay_sessions_hibernated',
      help: 'Live sessions (counted in relay_sessions) holding no running actor: connected calls idle for SESSION_HIBERNATE_MS',
      registers,
      collect() {
        this.set(hibernatedSource());
      },
    }),
    /** Label values come from closeCodeLabel only. */
    disconnects: new Counter({ name: 'relay_disconnects_total', help: 'Socket closes by close code (other: any code not listed)', labelNames: ['code'], registers }),
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
    callsRefused: new Counter({
      name: 'relay_calls_refused_total',
      help: 'New calls refused at setup for want of a valid call token (signatures on)',
      registers,
    }),
    staleWrites: new Counter({ name: 'relay_stale_lease_writes_total', help: 'Writes rejected because another instance owns the session', registers }),
    limitsExceeded,
    /** Counts one hit of an abuse limit (typed, so the label set stays fixed). */
    limitHit(limit: LimitName) {
      limitsExceeded.inc({ limit });
    },
    historyTurnsDropped: new Counter({
      name: 'relay_history_turns_dropped_total',
      help: 'Oldest conversation turns dropped to keep a call within HISTORY_MAX_TURNS / HISTORY_MAX_BYTES',
      registers,
    }),
    storeErrors: storeErrorCounter(registers),
  };
}

/** Every operation's series exists from the start (at 0), so an alert can watch its rate. */
function storeErrorCounter(registers: Registry[]) {
  const counter = new Counter({
    name: 'relay_store_errors_total',
    help: 'Store calls that failed or timed out, by operation',
    labelNames: ['op'],
    registers,
  });
  for (const op of STORE_OPS) counter.inc({ op }, 0);
  return counter;
}

export type Metrics = ReturnType<typeof createMetrics>;
