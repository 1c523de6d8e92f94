// Stores every state change of a live session: one write per burst (CoalescingWriter), fenced by the
// session's lease epoch, so a stale owner's write is rejected and its copy let go.
import type { Actor } from 'xstate';
import type { Metrics } from '../metrics.js';
import { lifecycleOf, type SessionMachine, type SessionTimeouts } from '../../machines/session.js';
import { CoalescingWriter, StaleLeaseError, type SaveInput, type SnapshotStore } from '../../stores/index.js';
import type { Session } from './live-session.js';
import { persistedSnapshotOf } from './persisted-snapshot.js';

export interface SessionPersistenceOptions {
  store: SnapshotStore;
  instanceId: string;
  timeouts: SessionTimeouts;
  metrics: Metrics;
  /** Lets go of a session another instance owns now (its write was fenced). */
  release: (session: Session, why: string) => void;
}

export class SessionPersistence {
  constructor(private readonly opts: SessionPersistenceOptions) {}

  /** The writer of one session. */
  writerFor(session: Session): CoalescingWriter<Actor<SessionMachine>> {
    return new CoalescingWriter<Actor<SessionMachine>>(
      (actor) => this.persist(session, actor),
      (err) => this.onWriteError(session, err),
    );
  }

  private async persist(session: Session, actor: Actor<SessionMachine>): Promise<void> {
    const snapshot = actor.getSnapshot();
    // A stopped actor's snapshot has no children and ignores every event once restored: never store one.
    if (snapshot.status !== 'active' && snapshot.status !== 'done') return;
    if (session.claimPending) {
      // StaleLeaseError when another instance took the session since our epoch: fenced like any stale write.
      session.lease = await this.opts.store.acquire(session.callSid, this.opts.instanceId, { ifEpoch: session.lease.epoch });
      session.claimPending = false;
    }
    const now = Date.now();
    const input: SaveInput = {
      snapshot: persistedSnapshotOf(actor),
      state: lifecycleOf(snapshot.value),
      retainUntil: Math.max(now + this.opts.timeouts.retentionMs, snapshot.context.graceDeadline ?? 0),
    };
    await this.opts.store.save(session.lease, input);
    session.writeFailed = false;
  }

  private onWriteError(session: Session, err: unknown): void {
    if (err instanceof StaleLeaseError) {
      this.opts.metrics.staleWrites.inc();
      this.opts.release(session, 'stale lease: another instance owns the session');
      return;
    }
    session.writeFailed = true;
    session.log.error({ err }, 'snapshot write failed');
  }
}
