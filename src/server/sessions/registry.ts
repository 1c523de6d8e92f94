// The live sessions of this instance, one per callSid: wires each session's actor (its outbound
// messages to its socket, its state changes to its writer, its activity to hibernation) until it
// finishes or is let go, and revives a hibernated session's actor from its snapshot.
import { createEmptyActor, type Actor } from 'xstate';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';
import { lifecycleOf, type SessionMachine } from '../../machines/session.js';
import type { CoalescingWriter, Lease } from '../../stores/index.js';
import { observe, unchanged, type Observed } from '../write-worthy.js';
import { Session, type SessionHost } from './live-session.js';
import type { Hibernation } from './hibernation.js';
import { fromDormant } from './dormant.js';

export interface SessionRegistryOptions {
  metrics: Metrics;
  /** Where sessions log (each session's lines carry its callSid). */
  logger: Logger;
  /** The writer that stores a session's snapshots. */
  writerFor: (session: Session) => CoalescingWriter<Actor<SessionMachine>>;
  /**
   * An unstarted actor from a persisted snapshot (the restore path's construction), or undefined
   * (logged) when it cannot be restored. `inspected`: the inspector sees it (revived actors), or not (a look).
   */
  actorFrom: (persisted: unknown, inspected: boolean, log: Logger) => Actor<SessionMachine> | undefined;
  hibernation: Hibernation;
}

export class SessionRegistry implements SessionHost {
  private readonly sessions = new Map<string, Session>();
  readonly logger: Logger;

  constructor(private readonly opts: SessionRegistryOptions) {
    this.logger = opts.logger;
  }

  get size(): number {
    return this.sessions.size;
  }

  /** Sessions held now with no running actor. */
  get hibernated(): number {
    let n = 0;
    for (const s of this.sessions.values()) if (s.hibernated) n++;
    return n;
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
    this.opts.hibernation.disarm(session);
    if (this.holds(session)) this.sessions.delete(session.callSid);
  }

  /** Holds `actor` (not yet started) as the call's session, replacing any previous one. */
  track(callSid: string, actor: Actor<SessionMachine>, lease: Lease, log: Logger): Session {
    const previous = this.sessions.get(callSid);
    if (previous) this.release(previous, 'replaced by a fresh session');
    const session = new Session(callSid, lease, this, log);
    this.sessions.set(callSid, session);
    // Nothing of this actor is stored yet: its first notification (its start) is always written.
    this.wire(session, actor, undefined);
    return session;
  }

  /**
   * A hibernated session's actor, running again from its snapshot. Its first notification (its start)
   * is not written: the store holds that snapshot already. A snapshot that cannot be revived (never
   * ours to produce) costs this call only: it is let go (the caller hears nothing more and Twilio's
   * callback finds the stored record), and a stopped stand-in answers whoever asked.
   */
  revive(session: Session, dormant: string): Actor<SessionMachine> {
    let actor: Actor<SessionMachine> | undefined;
    try {
      actor = this.opts.actorFrom(fromDormant(dormant), true, session.log);
    } catch (err) {
      session.log.error({ err }, 'hibernated session could not be revived');
    }
    if (!actor) return this.letGoUnrevivable(session);
    this.wire(session, actor, observe(actor.getSnapshot()));
    actor.start();
    if (actor.getSnapshot().status !== 'active') return this.letGoUnrevivable(session);
    return actor;
  }

  writerFor(session: Session): CoalescingWriter<Actor<SessionMachine>> {
    return this.opts.writerFor(session);
  }

  stoppedCopy(dormant: string): Actor<SessionMachine> {
    let actor: Actor<SessionMachine> | undefined;
    try {
      actor = this.opts.actorFrom(fromDormant(dormant), false, this.logger);
    } catch {
      // the stand-in below
    }
    return (actor ?? standIn()).stop();
  }

  private letGoUnrevivable(session: Session): Actor<SessionMachine> {
    const stopped = standIn().stop();
    session.adopt(stopped);
    this.forget(session);
    session.stop();
    session.socket?.close(1011, 'session unavailable');
    session.socket = null;
    return stopped;
  }

  /** Makes `actor` the session's running actor: outbound to its socket, changes to its writer. */
  private wire(session: Session, actor: Actor<SessionMachine>, stored: Observed | undefined): void {
    const { hibernation, metrics } = this.opts;
    session.adopt(actor);
    actor.on('outbound', ({ message }) => session.socket?.send(message));
    let seen = stored;
    actor.subscribe({
      next: (snapshot) => {
        hibernation.touch(session);
        if (seen && unchanged(seen, snapshot)) return;
        const dropped = seen ? (snapshot.context.historyDropped ?? 0) - (seen.snapshot.context.historyDropped ?? 0) : 0;
        if (dropped > 0) metrics.historyTurnsDropped.inc(dropped);
        session.writer.schedule(actor);
        seen = observe(snapshot);
      },
      error: (err) => session.log.error({ err }, 'session actor failed'),
      complete: () => {
        if (actor.getSnapshot().status !== 'done') return; // stopped by us (let go, hibernated), not finished
        // expired or ended: the final snapshot is stored (kept until retention), then memory is freed.
        session.writer.schedule(actor);
        void session.writer.flush().finally(() => this.forget(session));
        session.log.info({ state: lifecycleOf(actor.getSnapshot().value), reason: actor.getSnapshot().context.endedReason }, 'session finished');
      },
    });
  }

  /** Stops our copy of a session without writing: someone newer owns it. A hibernated one is not revived for it. */
  release(session: Session, why: string): void {
    session.log.warn({ epoch: session.lease.epoch }, `releasing session: ${why}`);
    this.forget(session);
    session.stop();
    session.socket?.close(4001, 'session moved');
    session.socket = null;
  }

  /** Sessions by lifecycle state (hibernated ones by the state they rest in), computed when metrics are scraped. */
  countByState(): Map<string, number> {
    const counts = new Map<string, number>();
    for (const s of this.sessions.values()) {
      const state = s.lifecycle;
      counts.set(state, (counts.get(state) ?? 0) + 1);
    }
    return counts;
  }
}

/** Answers a session that could not be revived: it ignores every event, like any stopped actor. */
function standIn(): Actor<SessionMachine> {
  return createEmptyActor() as unknown as Actor<SessionMachine>;
}
