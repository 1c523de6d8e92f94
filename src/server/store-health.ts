// Readiness of the snapshot store: a small real write (the store's probe) on a fixed interval, and at
// once when a real store call fails, so a read-only file, a full disk or a stopped or hung Redis takes
// the instance out of rotation within about one interval plus the store timeout, and puts it back
// when a probe succeeds again.
import { StoreTimeoutError } from '../stores/timed-store.js';
import type { SnapshotStore } from '../stores/types.js';
import type { Logger } from './logger.js';

export type StoreStatus = { ready: true } | { ready: false; error: string };

/** What a store without probe() is asked instead: a read of a session id no call can have. */
const PROBE_CALL_SID = '~readiness-probe';
/** Failures of real calls trigger a probe, but not more often than this. */
const MIN_PROBE_GAP_MS = 250;

export interface StoreHealthOptions {
  intervalMs: number;
  logger: Logger;
}

export class StoreHealth {
  private status: StoreStatus = { ready: true };
  private inFlight: Promise<StoreStatus> | undefined;
  private lastProbeAt = 0;
  private timer: NodeJS.Timeout | undefined;

  /** `store` should be bounded (withTimeouts), so a hung store reads as a failed probe. */
  constructor(
    private readonly store: SnapshotStore,
    private readonly opts: StoreHealthOptions,
  ) {}

  /** The outcome of the latest probe. */
  get current(): StoreStatus {
    return this.status;
  }

  /** Probes now (joining a probe already running) and returns the outcome. */
  check(): Promise<StoreStatus> {
    this.inFlight ??= this.probe().finally(() => {
      this.inFlight = undefined;
      this.lastProbeAt = Date.now();
    });
    return this.inFlight;
  }

  /**
   * A real store call failed: probe now, unless one is running or just ran. A call that got no answer
   * at all is taken as not ready at once (the probe would wait a whole store timeout to say so); a
   * probe that gets through puts it back.
   */
  suspect(err?: unknown): void {
    if (err instanceof StoreTimeoutError && this.status.ready) this.setStatus({ ready: false, error: err.message });
    if (this.inFlight || Date.now() - this.lastProbeAt < MIN_PROBE_GAP_MS) return;
    void this.check();
  }

  start(): void {
    this.timer ??= setInterval(() => void this.check(), this.opts.intervalMs).unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private async probe(): Promise<StoreStatus> {
    let next: StoreStatus;
    try {
      await (this.store.probe ? this.store.probe() : this.store.currentEpoch(PROBE_CALL_SID));
      next = { ready: true };
    } catch (err) {
      next = { ready: false, error: err instanceof Error ? err.message : String(err) };
    }
    this.setStatus(next);
    return next;
  }

  private setStatus(next: StoreStatus): void {
    if (next.ready !== this.status.ready) {
      if (next.ready) this.opts.logger.info({ store: this.store.kind }, 'store answers again: ready');
      else this.opts.logger.error({ store: this.store.kind, err: next.error }, 'store cannot be written: not ready');
    }
    this.status = next;
  }
}
