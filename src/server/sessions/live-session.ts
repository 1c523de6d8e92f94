// A session this instance holds, with what binds it to its socket and to the store. Its actor runs
// while the call has something going on; an idle call may be hibernated (hibernation.ts): the actor
// is stopped and only its persisted snapshot is kept, and `actor` revives it the moment anything
// asks for it, so callers never see the difference.
import type { Actor, SnapshotFrom } from 'xstate';
import type { Logger } from '../logger.js';
import type { OutboundMessage } from '../../protocol/messages.js';
import { lifecycleOf, type SessionMachine } from '../../machines/session.js';
import type { CoalescingWriter, Lease } from '../../stores/index.js';
import { fromDormant, toDormant } from './dormant.js';
import { persistedSnapshotOf } from './persisted-snapshot.js';

export type SessionSnapshot = SnapshotFrom<SessionMachine>;

/** What the session needs of a socket: the socket edge validates and serialises. */
export interface SessionSocket {
  send(message: OutboundMessage): void;
  close(code: number, reason: string): void;
}

/** A session's state, context and children, as the admin views read them. */
export type SessionView = Pick<SessionSnapshot, 'value' | 'context'> & { children: Partial<SessionSnapshot['children']> };

/** What a session needs of whoever holds it: the logger its lines go to, and a way back to a running actor. */
export interface SessionHost {
  readonly logger: Logger;
  /** The writer that stores the session's snapshots. */
  writerFor(session: Session): CoalescingWriter<Actor<SessionMachine>>;
  /**
   * A running actor from the session's hibernated snapshot (packed, dormant.ts), wired like any
   * tracked actor and handed to `session.adopt` before it starts. Never throws: when the snapshot
   * cannot be revived it lets go of the session and returns a stopped stand-in that ignores events.
   */
  revive(session: Session, dormant: string): Actor<SessionMachine>;
  /** A stopped actor of that snapshot, never started: its snapshot can be read, events are ignored. */
  stoppedCopy(dormant: string): Actor<SessionMachine>;
}

export class Session {
  socket: SessionSocket | null = null;
  /** The socket of a call being handed on (deploys): its late frames still reach the session. */
  handingOff: SessionSocket | null = null;
  /**
   * The next write first takes the lease over from our own epoch, conditionally (a local resume): it
   * fails if another instance took the session meanwhile. Done in the writer, so no write of the old
   * epoch can land after it.
   */
  claimPending = false;
  /** The latest write failed for a reason other than fencing (store fault); cleared by the next success. */
  writeFailed = false;
  /** When the actor last took an event (clock ms): idleness counts from here. */
  lastActive = 0;
  /** The hibernation timer, while one is armed. */
  idleTimer: unknown = undefined;
  private running: Actor<SessionMachine> | undefined;
  /** While hibernated: the persisted snapshot (packed JSON, dormant.ts), and its lifecycle state. */
  private dormant: string | undefined;
  private dormantState = '';
  private logger: Logger | undefined;
  private writes: CoalescingWriter<Actor<SessionMachine>> | undefined;
  private stopped = false;

  constructor(
    readonly callSid: string,
    public lease: Lease,
    private readonly host: SessionHost,
    log?: Logger,
  ) {
    this.logger = log;
  }

  /** The running actor, revived first if the session is hibernated. */
  get actor(): Actor<SessionMachine> {
    if (this.running) return this.running;
    const dormant = this.dormant ?? '';
    // Let go while hibernated: late readers get its last state, as they would of a stopped actor.
    if (this.stopped) return (this.running = this.host.stoppedCopy(dormant));
    this.dormant = undefined;
    return this.host.revive(this, dormant);
  }

  get hibernated(): boolean {
    return this.running === undefined && this.dormant !== undefined && !this.stopped;
  }

  /** The lifecycle state (connected, disconnected...) without reviving a hibernated session. */
  get lifecycle(): string {
    return this.running ? lifecycleOf(this.running.getSnapshot().value) : this.dormantState;
  }

  /**
   * What the admin views show of the session, read without reviving a hibernated one (its stored
   * snapshot, parsed; it has no children); undefined if that cannot be read.
   */
  peek(): SessionView | undefined {
    if (this.running) return this.running.getSnapshot();
    try {
      const { value, context } = fromDormant(this.dormant ?? '') as Pick<SessionSnapshot, 'value' | 'context'>;
      return context ? { value, context, children: {} } : undefined;
    } catch {
      return undefined;
    }
  }

  /** Created when first needed: a hibernated session keeps none. */
  get log(): Logger {
    return (this.logger ??= this.host.logger.child({ callSid: this.callSid }));
  }

  /** Created when first needed: a hibernated session has nothing to write and keeps none. */
  get writer(): CoalescingWriter<Actor<SessionMachine>> {
    return (this.writes ??= this.host.writerFor(this));
  }

  /** Whether some snapshot is scheduled or being written. */
  get writing(): boolean {
    return this.writes?.pending ?? false;
  }

  /** Resolves once every scheduled snapshot is written (at once when there is none). */
  flushWrites(): Promise<void> {
    return this.writes?.flush() ?? Promise.resolve();
  }

  /** Makes `actor` (wired, not yet started) the session's running actor. */
  adopt(actor: Actor<SessionMachine>): void {
    this.running = actor;
    this.dormant = undefined;
  }

  /**
   * Stops the actor, keeping its persisted snapshot as packed JSON text (a tenth of the snapshot
   * object and its context). Not a finish: nothing is written, the store already holds this snapshot.
   * Only with nothing left to write (`writing` false).
   */
  hibernate(): void {
    const actor = this.running;
    if (!actor || this.writing) return;
    this.dormant = toDormant(persistedSnapshotOf(actor));
    this.dormantState = lifecycleOf(actor.getSnapshot().value);
    this.running = undefined;
    this.logger = undefined;
    this.writes = undefined;
    actor.stop();
  }

  /** Stops the session for good (let go, handed on, shut down), without reviving a hibernated one. */
  stop(): void {
    this.stopped = true;
    this.running?.stop();
  }
}
