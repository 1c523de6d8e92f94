// Drops expired sessions from the store on a schedule derived from the retention, so nothing is kept
// much past RETENTION_MS (SQLite rows, memory-store entries; Redis expires its keys by itself).
import type { SnapshotStore } from '../stores/types.js';
import type { Logger } from './logger.js';

const MIN_SWEEP_MS = 250;
const MAX_SWEEP_MS = 60_000;

/** STORE_SWEEP_MS when set, else a quarter of the retention, between 250 ms and 60 s. */
export function sweepIntervalMs(retentionMs: number, configured?: number): number {
  return configured ?? Math.min(MAX_SWEEP_MS, Math.max(MIN_SWEEP_MS, Math.floor(retentionMs / 4)));
}

export interface Sweeper {
  stop(): void;
}

export function startSweeper(store: SnapshotStore, intervalMs: number, logger: Logger): Sweeper {
  let running = false;
  const timer = setInterval(() => {
    if (running) return; // a slow sweep is not stacked behind itself
    running = true;
    store
      .sweep()
      .then(
        (removed) => {
          if (removed > 0) logger.debug({ removed }, 'expired sessions swept');
        },
        // Counted as a store error; the next tick tries again.
        (err: unknown) => logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'store sweep failed'),
      )
      .finally(() => {
        running = false;
      });
  }, intervalMs);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
