// Reconnect delays: "full jitter" exponential backoff (a random wait between 0 and min(cap, base * 2^n)),
// so a thousand clients dropped by the same restart do not all come back in the same instant.

export interface BackoffOptions {
  /** The first attempt's ceiling (ms). Default 1,000. */
  baseMs?: number;
  /** No wait is longer than this (ms). Default 30,000. */
  capMs?: number;
  /** Attempts after a drop before giving up. Default 5. */
  maxAttempts?: number;
}

export const DEFAULT_BACKOFF = { baseMs: 1000, capMs: 30_000, maxAttempts: 5 } as const;

/** The wait before reconnect attempt `attempt` (1 for the first), `random` in [0, 1). */
export function backoffDelay(attempt: number, opts: BackoffOptions = {}, random: () => number = Math.random): number {
  const base = opts.baseMs ?? DEFAULT_BACKOFF.baseMs;
  const cap = opts.capMs ?? DEFAULT_BACKOFF.capMs;
  const ceiling = Math.min(cap, base * 2 ** Math.max(0, attempt - 1));
  return Math.floor(random() * ceiling);
}
