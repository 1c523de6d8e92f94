// Sessions a dead owner left waiting for a reconnect still expire at their own (absolute) deadline:
// at start-up this instance schedules a check per waiting session shortly after that deadline.
import type { Logger } from '../logger.js';
import type { Clock } from '../../clock.js';
import { StaleLeaseError, type SessionRecord, type SnapshotStore } from '../../stores/index.js';
import type { KeyedMutex } from '../keyed-mutex.js';
import type { SessionRegistry } from './registry.js';
import type { SessionRestorer } from './restore.js';
import { graceDeadlineOf } from './stored-snapshot.js';

/** An orphaned session is expired this long after its deadline, leaving its owner (if alive) the first go. */
const ORPHAN_EXPIRY_SLACK_MS = 250;

export interface OrphanedDeadlinesOptions {
  store: SnapshotStore;
  logger: Logger;
  clock: Clock;
  /** The per-call lock the manager holds while it connects, acts or hands a call on. */
  locks: KeyedMutex;
  registry: SessionRegistry;
  restorer: SessionRestorer;
}

export class OrphanedDeadlines {
  private readonly timers = new Set<unknown>();

  constructor(private readonly opts: OrphanedDeadlinesOptions) {}

  /** Schedules a check after the deadline of every stored session waiting for a reconnect; how many. */
  async adopt(): Promise<number> {
    const { store, logger, clock } = this.opts;
    let records: SessionRecord[];
    try {
      records = await store.list();
    } catch (err) {
      // Not fatal: such sessions still expire when someone next asks for them.
      logger.error({ err }, 'could not list stored sessions to watch their grace deadlines');
      return 0;
    }
    let scheduled = 0;
    for (const record of records) {
      if (record.state !== 'disconnected' && record.state !== 'grace') continue;
      const deadline = graceDeadlineOf(record);
      if (deadline === null) continue;
      const timer = clock.setTimeout(() => {
        this.timers.delete(timer);
        this.expireIfOrphaned(record.callSid).catch((err: unknown) => {
          // Taken or rewritten by another instance meanwhile: it owns the session and its deadline now.
          if (err instanceof StaleLeaseError) logger.info({ callSid: record.callSid }, 'orphaned session taken over meanwhile: left to its new owner');
          else logger.error({ err, callSid: record.callSid }, 'could not expire an orphaned session');
        });
      }, Math.max(0, deadline - clock.now()) + ORPHAN_EXPIRY_SLACK_MS);
      (timer as { unref?: () => void }).unref?.();
      this.timers.add(timer);
      scheduled++;
    }
    if (scheduled > 0) logger.info({ sessions: scheduled }, 'watching grace deadlines of sessions left by a previous owner');
    return scheduled;
  }

  /** Cancels every pending check (shutdown). */
  stop(): void {
    for (const timer of this.timers) this.opts.clock.clearTimeout(timer);
    this.timers.clear();
  }

  private expireIfOrphaned(callSid: string): Promise<void> {
    return this.opts.locks.run(callSid, async () => {
      if (this.opts.registry.has(callSid)) return; // ours: its own timer runs
      // Looking a session up expires it when its grace is over.
      await this.opts.restorer.locate(callSid, this.opts.logger.child({ callSid }));
    });
  }
}


