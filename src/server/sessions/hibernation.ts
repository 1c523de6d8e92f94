// Hibernation: a connected call with nothing going on (no reply, tool or keypad entry) holds no
// running actor. After `afterMs` without an event its actor is stopped and only its persisted
// snapshot is kept (live-session.ts); the next event, close, resume, callback or drain revives it
// from that copy, synchronously. Nothing is written either way: the store already holds that snapshot.
import type { Clock } from '../../clock.js';
import type { Session, SessionSnapshot } from './live-session.js';

export interface HibernationOptions {
  clock: Clock;
  /** Idle time before a session hibernates; 0 turns hibernation off. */
  afterMs: number;
  /** Whether `session` is still the one held for its call (a session let go is left alone). */
  holds: (session: Session) => boolean;
  /**
   * Whether something is working on the call across an await (its lock is held: a resume, a
   * callback, a hand-off) or the instance is stopping: it may hold the actor, so not now.
   */
  busy: (session: Session) => boolean;
}

export class Hibernation {
  constructor(private readonly opts: HibernationOptions) {}

  get enabled(): boolean {
    return this.opts.afterMs > 0;
  }

  /**
   * The session's actor took an event: its idle period starts over. Cheap on purpose (it runs per
   * streamed token): a timestamp, and a timer only when none is armed; the timer checks the rest.
   */
  touch(session: Session): void {
    if (!this.enabled) return;
    session.lastActive = this.opts.clock.now();
    if (session.idleTimer === undefined) this.arm(session, this.opts.afterMs);
  }

  /** Cancels the session's timer (it is let go or finished). */
  disarm(session: Session): void {
    if (session.idleTimer === undefined) return;
    this.opts.clock.clearTimeout(session.idleTimer);
    session.idleTimer = undefined;
  }

  private arm(session: Session, ms: number): void {
    const timer = this.opts.clock.setTimeout(() => this.check(session), ms);
    // Never what keeps a process alive.
    (timer as { unref?: () => void }).unref?.();
    session.idleTimer = timer;
  }

  private check(session: Session): void {
    session.idleTimer = undefined;
    try {
      if (!this.opts.holds(session) || session.hibernated) return;
      // Not resting: its next event arms the timer again.
      if (!restsIdle(session.actor.getSnapshot())) return;
      const idleFor = this.opts.clock.now() - session.lastActive;
      // At most afterMs again, even if the clock stepped back.
      if (idleFor < this.opts.afterMs) return this.arm(session, Math.min(this.opts.afterMs, this.opts.afterMs - idleFor));
      // Something still to store (or a write that failed: the store may not hold this snapshot), a
      // resume's claim, a hand-off, or work holding the actor: later.
      if (session.writing || session.writeFailed || session.claimPending || session.handingOff || this.opts.busy(session)) return this.arm(session, this.opts.afterMs);
      session.hibernate();
    } catch (err) {
      // A timer callback must never take the process down: this call stays awake instead.
      session.log.error({ err }, 'hibernation check failed; the session stays running');
    }
  }
}

/** Connected and idle, with no child actor (reply, tool, keypad, timer) running: nothing can happen until an event comes. */
export function restsIdle(snapshot: SessionSnapshot): boolean {
  return (
    snapshot.status === 'active' &&
    snapshot.matches({ live: { link: 'connected', conversation: 'idle' } }) &&
    Object.keys(snapshot.children).length === 0
  );
}
