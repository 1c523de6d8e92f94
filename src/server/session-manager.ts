// Owns the live session actors of this instance: creates or restores them, binds sockets to
// them, persists every state change through the store, and gives them up when another
// instance takes a session over (fencing epochs).
import { createActor, type Actor, type ActorOptions, type InspectionEvent, type Snapshot } from 'xstate';
import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';
import type { OutboundMessage, SetupMessage } from '../protocol/messages.js';
import { lifecycleOf, type SessionEvent, type SessionInput, type SessionMachine, type SessionTimeouts } from '../machines/session.js';
import { CoalescingWriter, StaleLeaseError, type Lease, type SaveInput, type SnapshotStore } from '../stores/index.js';
import { KeyedMutex } from './keyed-mutex.js';

/** What the session needs of a socket: the socket edge validates and serialises. */
export interface SessionSocket {
  send(message: OutboundMessage): void;
  close(code: number, reason: string): void;
}

export interface Session {
  callSid: string;
  actor: Actor<SessionMachine>;
  lease: Lease;
  writer: CoalescingWriter<Actor<SessionMachine>>;
  socket: SessionSocket | null;
  log: Logger;
}

export interface SessionManagerOptions {
  store: SnapshotStore;
  machine: SessionMachine;
  timeouts: SessionTimeouts;
  language: string;
  instanceId: string;
  logger: Logger;
  metrics: Metrics;
  inspect?: (event: InspectionEvent) => void;
}

export type ConnectResult =
  | { ok: true; session: Session; resumed: boolean }
  | { ok: false; code: number; reason: string };

export type ActionOutcome = 'reconnect' | 'hangup' | 'ack';

const RESUMABLE_STATES = new Set(['connected', 'disconnected', 'grace']);

export class SessionManager {
  private readonly sessions = new Map<string, Session>();
  private readonly locks = new KeyedMutex();

  constructor(private readonly opts: SessionManagerOptions) {
    opts.metrics.setSessionSource(() => this.countByState());
  }

  get size(): number {
    return this.sessions.size;
  }

  get(callSid: string): Session | undefined {
    return this.sessions.get(callSid);
  }

  all(): Session[] {
    return [...this.sessions.values()];
  }

  /** A setup frame arrived: resume the call's session if this caller may, else start fresh. */
  connect(setup: SetupMessage, socket: SessionSocket): Promise<ConnectResult> {
    return this.locks.run(setup.callSid, async () => {
      const log = this.opts.logger.child({ callSid: setup.callSid });
      const existing = await this.findLive(setup.callSid, log);
      if (existing) {
        const snapshot = existing.actor.getSnapshot();
        const link = lifecycleOf(snapshot.value);
        const via = setup.reconnection ? 'reconnection' : 'twilio';
        // Twilio's path brings a new sessionId after the action callback; our own clients
        // prove themselves with the session's current sessionId.
        const rightful = setup.reconnection
          ? setup.sessionId === snapshot.context.sessionId
          : link === 'disconnected' || link === 'grace';
        const event: SessionEvent = { type: 'RESUME', sessionId: setup.sessionId, via };
        if (rightful && snapshot.can(event)) {
          this.attach(existing, socket);
          existing.actor.send(event);
          this.opts.metrics.resumes.inc({ outcome: 'succeeded' });
          log.info({ via, sessionId: setup.sessionId, link }, 'session resumed');
          return { ok: true, session: existing, resumed: true };
        }
        this.opts.metrics.resumes.inc({ outcome: 'failed' });
        log.warn({ via, link, rightful, resumes: snapshot.context.resumes }, 'resume refused; existing session left untouched');
        return { ok: false, code: 1008, reason: rightful ? 'resume limit reached' : 'not allowed to resume this session' };
      }
      if (setup.reconnection) {
        this.opts.metrics.resumes.inc({ outcome: 'failed' });
        log.warn({ sessionId: setup.sessionId }, 'reconnect for an unknown or expired session: starting a fresh session');
      }
      const session = await this.createFresh(setup, log);
      this.attach(session, socket);
      log.info({ sessionId: setup.sessionId, epoch: session.lease.epoch }, 'session started');
      return { ok: true, session, resumed: false };
    });
  }

  /** Delivers an inbound event if `socket` is still the session's current socket. */
  send(session: Session, socket: SessionSocket, event: SessionEvent): void {
    if (session.socket !== socket || this.sessions.get(session.callSid) !== session) return;
    session.actor.send(event);
  }

  socketClosed(session: Session, socket: SessionSocket, code: number): void {
    this.opts.metrics.disconnects.inc({ code: String(code) });
    if (session.socket !== socket) return; // superseded by a newer socket
    session.socket = null;
    if (this.sessions.get(session.callSid) === session) session.actor.send({ type: 'SOCKET.CLOSED', code });
  }

  /** The `<Connect action>` callback: decides whether Twilio should reconnect the call. */
  handleAction(params: { callSid: string; callStatus: string; sessionStatus: string; errorCode: string }): Promise<ActionOutcome> {
    return this.locks.run(params.callSid, async () => {
      const log = this.opts.logger.child({ callSid: params.callSid });
      const resumable = params.errorCode === '64105' && params.callStatus === 'in-progress';
      const session = await this.findLive(params.callSid, log);
      if (!session) {
        log.info({ callStatus: params.callStatus, errorCode: params.errorCode }, 'action callback for an unknown or finished session');
        return resumable ? 'hangup' : 'ack';
      }
      session.actor.send({ type: 'ACTION', resumable, sessionStatus: params.sessionStatus, errorCode: params.errorCode });
      const state = lifecycleOf(session.actor.getSnapshot().value);
      log.info({ callStatus: params.callStatus, sessionStatus: params.sessionStatus, errorCode: params.errorCode, state }, 'action callback');
      if (!resumable) return 'ack';
      return state === 'grace' ? 'reconnect' : 'hangup';
    });
  }

  /** Writes every pending snapshot; used at shutdown and by tests. */
  async flush(): Promise<void> {
    await Promise.all(this.all().map((s) => s.writer.flush()));
  }

  /** Persists and stops every actor without touching the stored state (another instance may resume them). */
  async close(): Promise<void> {
    await this.flush();
    for (const session of this.all()) {
      this.sessions.delete(session.callSid);
      session.actor.stop();
      session.socket?.close(1001, 'server shutting down');
    }
  }

  /** The live session for a call: ours if we still hold the newest lease, else restored from the store. */
  private async findLive(callSid: string, log: Logger): Promise<Session | undefined> {
    const local = this.sessions.get(callSid);
    if (local) {
      const epoch = await this.opts.store.currentEpoch(callSid);
      if (epoch === local.lease.epoch) return local;
      this.release(local, 'another instance took the session over');
    }
    const record = await this.opts.store.load(callSid);
    if (!record || !RESUMABLE_STATES.has(record.state)) return undefined;
    return this.restore(callSid, record.snapshot, record.state, log);
  }

  private async restore(callSid: string, persisted: unknown, state: string, log: Logger): Promise<Session | undefined> {
    const started = performance.now();
    const lease = await this.opts.store.acquire(callSid, this.opts.instanceId);
    let actor: Actor<SessionMachine>;
    try {
      // Input is only read when a machine starts fresh; a restored actor takes everything from the snapshot.
      const options = { snapshot: persisted as Snapshot<unknown>, inspect: this.opts.inspect } as ActorOptions<SessionMachine> & {
        input: SessionInput;
      };
      actor = createActor(this.opts.machine, options);
    } catch (err) {
      log.error({ err }, 'stored snapshot could not be restored; treating the session as unknown');
      return undefined;
    }
    const session = this.track(callSid, actor, lease, log);
    actor.start();
    // The previous owner died with the socket attached: that socket is gone.
    if (state === 'connected') actor.send({ type: 'SOCKET.CLOSED', code: 1006 });
    this.opts.metrics.restoreSeconds.observe((performance.now() - started) / 1000);
    log.info({ epoch: lease.epoch, state }, 'session restored from store');
    return session;
  }

  private async createFresh(setup: SetupMessage, log: Logger): Promise<Session> {
    const lease = await this.opts.store.acquire(setup.callSid, this.opts.instanceId);
    const actor = createActor(this.opts.machine, {
      input: {
        callSid: setup.callSid,
        sessionId: setup.sessionId,
        from: setup.from,
        to: setup.to,
        customParameters: setup.customParameters,
        language: this.opts.language,
        timeouts: this.opts.timeouts,
        now: Date.now(),
      },
      inspect: this.opts.inspect,
    });
    const session = this.track(setup.callSid, actor, lease, log);
    actor.start();
    return session;
  }

  private track(callSid: string, actor: Actor<SessionMachine>, lease: Lease, log: Logger): Session {
    const previous = this.sessions.get(callSid);
    if (previous) this.release(previous, 'replaced by a fresh session');
    const writer = new CoalescingWriter<Actor<SessionMachine>>(
      (a) => this.persist(lease, a),
      (err) => this.onWriteError(session, err),
    );
    const session: Session = { callSid, actor, lease, writer, socket: null, log };
    this.sessions.set(callSid, session);
    actor.on('outbound', ({ message }) => session.socket?.send(message));
    actor.subscribe({
      next: () => writer.schedule(actor),
      error: (err) => log.error({ err }, 'session actor failed'),
      complete: () => {
        if (actor.getSnapshot().status !== 'done') return; // stopped by us, not finished
        // expired or ended: the final snapshot is stored (kept until retention), then memory is freed.
        writer.schedule(actor);
        void writer.flush().finally(() => {
          if (this.sessions.get(callSid) === session) this.sessions.delete(callSid);
        });
        log.info({ state: lifecycleOf(actor.getSnapshot().value), reason: actor.getSnapshot().context.endedReason }, 'session finished');
      },
    });
    return session;
  }

  private attach(session: Session, socket: SessionSocket): void {
    const old = session.socket;
    session.socket = socket;
    // Newest authenticated connection wins; the old socket's close is then ignored.
    if (old && old !== socket) old.close(4000, 'superseded by a newer connection');
  }

  private async persist(lease: Lease, actor: Actor<SessionMachine>): Promise<void> {
    const snapshot = actor.getSnapshot();
    const now = Date.now();
    const input: SaveInput = {
      snapshot: actor.getPersistedSnapshot(),
      state: lifecycleOf(snapshot.value),
      retainUntil: Math.max(now + this.opts.timeouts.retentionMs, snapshot.context.graceDeadline ?? 0),
    };
    await this.opts.store.save(lease, input);
  }

  private onWriteError(session: Session, err: unknown): void {
    if (err instanceof StaleLeaseError) {
      this.opts.metrics.staleWrites.inc();
      this.release(session, 'stale lease: another instance owns the session');
      return;
    }
    session.log.error({ err }, 'snapshot write failed');
  }

  /** Stops our copy of a session without writing: someone newer owns it. */
  private release(session: Session, why: string): void {
    session.log.warn({ epoch: session.lease.epoch }, `releasing session: ${why}`);
    if (this.sessions.get(session.callSid) === session) this.sessions.delete(session.callSid);
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
