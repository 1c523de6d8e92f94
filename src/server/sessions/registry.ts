// The live session actors of this instance, one per callSid: tracks each actor (its outbound
// messages to its socket, its state changes to its writer) until it finishes or is let go.
import type { Actor } from 'xstate';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';
import { lifecycleOf, type SessionMachine } from '../../machines/session.js';
import type { CoalescingWriter, Lease } from '../../stores/index.js';
import { observe, unchanged, type Observed } from '../write-worthy.js';
import type { Session } from './live-session.js';

export class SessionRegistry {
  private readonly sessions = new Map<string, Session>();

  constructor(
    private readonly metrics: Metrics,
    /** The writer that stores a session's snapshots. */
    private readonly writerFor: (session: () => Session) => CoalescingWriter<Actor<SessionMachine>>,
  ) {}

  get size(): number {
    return this.sessions.size;
  }

  get(callSid: string): Session | undefined {
    return this.sessions.get(callSid);
  }

  has(callSid: string): boolean {
    return this.sessions.has(callSid);
  }

  all(): Session[] {
    return [...this.sessions.values()];
  }

  /** Whether `session` is still the one this instance holds for its call. */
  holds(session: Session): boolean {
    return this.sessions.get(session.callSid) === session;
  }

  /** Forgets `session` if it is still the one held for its call (a newer one is left alone). */
  forget(session: Session): void {
    if (this.holds(session)) this.sessions.delete(session.callSid);
  }

  /** Holds `actor` (not yet started) as the call's session, replacing any previous one. */
  track(callSid: string, actor: Actor<SessionMachine>, lease: Lease, log: Logger): Session {
    const previous = this.sessions.get(callSid);
    if (previous) this.release(previous, 'replaced by a fresh session');
    // The writer reaches its session only when it writes, by then built.
    const writer = this.writerFor(() => session);
    const session: Session = { callSid, actor, lease, writer, socket: null, handingOff: null, claimPending: false, writeFailed: false, log };
    this.sessions.set(callSid, session);
    actor.on('outbound', ({ message }) => session.socket?.send(message));
    // Nothing of this actor is stored yet: its first notification (its start) is always written.
    let seen: Observed | undefined;
    actor.subscribe({
      next: (snapshot) => {
        if (seen && unchanged(seen, snapshot)) return;
        const dropped = seen ? (snapshot.context.historyDropped ?? 0) - (seen.snapshot.context.historyDropped ?? 0) : 0;
        if (dropped > 0) this.metrics.historyTurnsDropped.inc(dropped);
        writer.schedule(actor);
        seen = observe(snapshot);
      },
      error: (err) => log.error({ err }, 'session actor failed'),
      complete: () => {
        if (actor.getSnapshot().status !== 'done') return; // stopped by us, not finished
        // expired or ended: the final snapshot is stored (kept until retention), then memory is freed.
        writer.schedule(actor);
        void writer.flush().finally(() => this.forget(session));
        log.info({ state: lifecycleOf(actor.getSnapshot().value), reason: actor.getSnapshot().context.endedReason }, 'session finished');
      },
    });
    return session;
  }

  /** Stops our copy of a session without writing: someone newer owns it. */
  release(session: Session, why: string): void {
    session.log.warn({ epoch: session.lease.epoch }, `releasing session: ${why}`);
    this.forget(session);
    session.actor.stop();
    session.socket?.close(4001, 'session moved');
    session.socket = null;
  }

  /** Sessions by lifecycle state, computed when metrics are scraped rather than on every change. */
  countByState(): Map<string, number> {
    const counts = new Map<string, number>();
    for (const s of this.sessions.values()) {
      const state = lifecycleOf(s.actor.getSnapshot().value);
      counts.set(state, (counts.get(state) ?? 0) + 1);
    }
    return counts;
  }
}
