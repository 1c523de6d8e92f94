// Coordinates the live calls of this instance: a setup starts or resumes a call's session, an action
// callback decides whether Twilio reconnects it, a drain hands every call on before a restart. The
// jobs it composes live in ./sessions: the registry of live sessions, their persistence, hibernating
// idle ones, restoring stored sessions, orphaned grace deadlines and the resume rules.
import { createActor, waitFor, type InspectionEvent } from 'xstate';
import type { Logger } from './logger.js';
import { closeCodeLabel, type Metrics } from './metrics.js';
import type { SetupMessage } from '../protocol/messages.js';
import type { HistoryLimits } from '../machines/history-bound.js';
import { systemClock, type Clock } from '../clock.js';
import { lifecycleOf, MAX_RESUME_TOKENS, type SessionEvent, type SessionMachine, type SessionTimeouts } from '../machines/session.js';
import { RecordChangedError, StaleLeaseError, type SnapshotStore } from '../stores/index.js';
import { KeyedMutex } from './keyed-mutex.js';
import { hashSecret, newProofToken, ticketMatches, withoutSecrets } from './resume-proof.js';
import { HeldSocket } from './held-socket.js';
import type { Session, SessionSnapshot, SessionSocket } from './sessions/live-session.js';
import { SessionRegistry } from './sessions/registry.js';
import { Hibernation } from './sessions/hibernation.js';
import { SessionPersistence } from './sessions/persistence.js';
import { MAX_LOOKS, SessionRestorer } from './sessions/restore.js';
import { OrphanedDeadlines } from './sessions/orphans.js';
import { keepContextShape } from './sessions/context-shape.js';
import { ACTION_CLOSE_WINDOW_MS, claimsResume, resumeRefusal, socketNamed } from './sessions/resume-rules.js';

export interface SessionManagerOptions {
  store: SnapshotStore;
  machine: SessionMachine;
  timeouts: SessionTimeouts;
  /** Bounds of each fresh session's history (the machine's defaults when omitted). */
  historyLimits?: HistoryLimits;
  /** Sessions this instance holds at most; a setup that would start one more is refused (1013). */
  maxSessions?: number;
  language: string;
  instanceId: string;
  logger: Logger;
  metrics: Metrics;
  inspect?: (event: InspectionEvent) => void;
  /** Stamps the events this edge sends and times grace checks and hibernation; the system clock by default. */
  clock?: Clock;
  /** A connected call idle this long holds no running actor until something needs it (0, the default here: never). */
  hibernateAfterMs?: number;
  /**
   * Socket upgrades carry Twilio's signature (TWILIO_AUTH_TOKEN set): a socket's path ticket is then
   * proof that Twilio opened it for the TwiML that issued its token, so a Twilio-path resume must come
   * on the ticket of its resumeToken, and a new call must redeem the callToken of its ticket.
   */
  signedUpgrades?: boolean;
}

export type ConnectResult =
  | { ok: true; session: Session; resumed: boolean }
  | { ok: false; code: number; reason: string };

/** `reconnect` carries the single-use token the reconnect TwiML hands Twilio (as a ConversationRelay Parameter). */
/** `retry`: the answer cannot be given now (its token could not be stored); Twilio retries a 503. */
export type ActionOutcome = { kind: 'reconnect'; resumeToken: string } | { kind: 'hangup' } | { kind: 'ack' } | { kind: 'retry' };

type ResumeEvent = Extract<SessionEvent, { type: 'RESUME' }>;

/** What an action callback says about the call (Twilio's form fields). */
interface ActionParams {
  callSid: string;
  callStatus: string;
  sessionStatus: string;
  errorCode: string;
  sessionId?: string;
}

export class SessionManager {
  private readonly registry: SessionRegistry;
  private readonly restorer: SessionRestorer;
  private readonly orphans: OrphanedDeadlines;
  private readonly locks = new KeyedMutex();
  private readonly connecting = new Set<Promise<ConnectResult>>();
  /** Draining or closing: sessions are about to be handed on, none hibernates any more. */
  private stopping = false;
  readonly clock: Clock;

  constructor(private readonly opts: SessionManagerOptions) {
    this.clock = opts.clock ?? systemClock;
    const { store, instanceId, metrics, logger, machine, inspect } = opts;
    const clock = this.clock;
    // A fenced write lets go of the session: the registry is there by the time anything writes.
    const persistence = new SessionPersistence({ store, instanceId, metrics, timeouts: opts.timeouts, release: (s, why) => this.registry.release(s, why) });
    const hibernation = new Hibernation({
      clock,
      afterMs: opts.hibernateAfterMs ?? 0,
      holds: (session) => this.registry.holds(session),
      // Whoever holds the call's lock may be waiting on its actor (a resume, a callback, a hand-off).
      busy: (session) => this.stopping || this.locks.held(session.callSid),
    });
    this.registry = new SessionRegistry({
      metrics,
      logger,
      writerFor: (session) => persistence.writerFor(session),
      actorFrom: (persisted, inspected, log) => this.restorer.actorFrom(persisted, inspected, log),
      hibernation,
    });
    this.restorer = new SessionRestorer({ store, instanceId, metrics, clock, machine, inspect, registry: this.registry });
    this.orphans = new OrphanedDeadlines({ store, clock, logger, locks: this.locks, registry: this.registry, restorer: this.restorer });
    metrics.setSessionSource(
      () => this.countByState(),
      () => this.hibernated,
    );
    keepContextShape(machine, { language: opts.language, timeouts: opts.timeouts, historyLimits: opts.historyLimits, now: clock.now() });
    // Stores that announce lease changes let a stale owner stop at once instead of at its next write.
    store.onLeaseChange?.((callSid, epoch) => {
      const local = this.registry.get(callSid);
      // While our own claim is in flight its announcement may arrive before its reply; a racer's claim
      // makes ours fail (or our next write), which releases the session then.
      if (local && !local.claimPending && local.lease.epoch < epoch) this.registry.release(local, 'another instance took the session over');
    });
  }

  get size(): number {
    return this.registry.size;
  }

  /** Sessions held with no running actor (connected calls idle for `hibernateAfterMs`). */
  get hibernated(): number {
    return this.registry.hibernated;
  }

  get(callSid: string): Session | undefined {
    return this.registry.get(callSid);
  }

  all(): Session[] {
    return this.registry.all();
  }

  /**
   * A setup frame arrived: resume the call's session if this caller may, else start fresh.
   * `ticket`: the relay path segment the socket was opened at (see resume-proof.ts).
   */
  connect(setup: SetupMessage, socket: SessionSocket, ticket?: string): Promise<ConnectResult> {
    if (claimsResume(setup)) this.restorer.noteResumeArrival();
    const connecting = this.connectNow(setup, socket, ticket);
    // A drain waits for setups in flight: a session being restored has no socket yet, but will.
    this.connecting.add(connecting);
    void connecting.finally(() => this.connecting.delete(connecting)).catch(() => undefined);
    return connecting;
  }

  private connectNow(setup: SetupMessage, socket: SessionSocket, ticket?: string): Promise<ConnectResult> {
    return this.locks.run(setup.callSid, async () => {
      const log = this.opts.logger.child({ callSid: setup.callSid });
      const via = setup.reconnection ? 'reconnection' : 'twilio';
      const event: ResumeEvent = { type: 'RESUME', sessionKeyHash: hashSecret(setup.sessionId), via, at: this.clock.now() };
      const { found, result } = await this.resumeIfStored(setup, socket, ticket, event, log);
      if (result) return result;
      if (setup.reconnection && !found) this.opts.metrics.resumeAttempts.inc({ via });
      if (found || setup.reconnection) this.opts.metrics.resumes.inc({ outcome: 'failed' });
      if (setup.reconnection) {
        log.warn('reconnect for an unknown or expired session: starting a fresh session');
      }
      // The upgrade is refused at the cap already; this catches sockets that were let in before it was reached.
      if (!this.registry.has(setup.callSid) && this.registry.size >= (this.opts.maxSessions ?? Infinity)) {
        this.opts.metrics.limitHit('sessions');
        log.warn({ sessions: this.registry.size }, 'session limit reached: new call refused');
        return { ok: false, code: 1013, reason: 'server busy' };
      }
      if (this.opts.signedUpgrades && !(await this.admitted(setup, ticket, event.at))) {
        this.opts.metrics.callsRefused.inc();
        log.warn({ via }, 'new call without a valid call token for its socket: refused');
        return { ok: false, code: 1008, reason: 'call not admitted' };
      }
      const session = await this.createFresh(setup, log);
      this.attach(session, socket);
      log.info({ epoch: session.lease.epoch }, 'session started');
      return { ok: true, session, resumed: false };
    });
  }

  /**
   * Resumes the call's session if one is stored (or ours) and this caller may. `result`: the outcome of
   * a resume tried; none when there was nothing to resume, or what was taken over had just expired.
   * `found`: whether there was a session (the attempt is counted then).
   */
  private async resumeIfStored(
    setup: SetupMessage,
    socket: SessionSocket,
    ticket: string | undefined,
    event: ResumeEvent,
    log: Logger,
  ): Promise<{ found: boolean; result?: ConnectResult }> {
    let found = false;
    for (let look = 1; ; look++) {
      let taking = false;
      let session: Session | undefined;
      let local = false;
      try {
        // A setup that claims no resume is a new call: its look-up does not queue behind restores.
        const located = await this.restorer.locate(setup.callSid, log, { queued: claimsResume(setup) });
        if (!located) return { found };
        if (!found) this.opts.metrics.resumeAttempts.inc({ via: event.via });
        found = true;
        // Checked before taking anything over, so a refused caller leaves the owner and the stored session
        // untouched. As of the setup's arrival, however long it waited for its look: a connection that
        // came moments after a resume is a duplicate of it, even when it is judged later.
        const refusal = resumeRefusal(setup, located.snapshot, {
          local: located.session !== undefined,
          signed: this.opts.signedUpgrades ? { ticket } : undefined,
          now: event.at,
        });
        if (refusal) return { found, result: this.refuseResume(located.snapshot, refusal.reason, event.via, log, refusal.code) };
        local = located.session !== undefined;
        taking = !local;
        // Only the session as judged: of two racing resumes one restores it, and none restores a
        // session another resume has already stored (and spoken on) since it was read.
        session = located.session ?? (await this.restorer.takeOver(setup.callSid, log, located.asRead));
      } catch (err) {
        if (!(err instanceof StaleLeaseError)) throw err;
        // Taken by a racer since it was read: it lost. Rewritten, not taken (a write by its owner), or an
        // expiry of it refused: judged again as it is now.
        const lost = taking && !(err instanceof RecordChangedError);
        if (!lost && look < MAX_LOOKS) continue;
        if (!found) throw err;
        return { found, result: this.lostRace(event.via, log) };
      }
      return { found, result: session && (await this.resume(session, socket, event, local, log)) };
    }
  }

  /** A new call must bring the callToken its /twiml issued, on that token's ticket; the store spends it once. */
  private async admitted(setup: SetupMessage, ticket: string | undefined, at: number): Promise<boolean> {
    const token = setup.customParameters.callToken;
    if (!token || !ticketMatches(ticket, token)) return false;
    // As of the setup's arrival: time spent queued behind restores does not count against the token.
    return this.opts.store.redeemCallToken(setup.callSid, hashSecret(token), at);
  }

  /**
   * Resumes on `socket`, once the resume is stored: the session speaks into a HeldSocket until its
   * write lands (a local session first takes its lease over again, conditionally), so a racer fenced
   * meanwhile never says a word and never writes. A session that cannot take the resume is untouched.
   */
  private async resume(session: Session, socket: SessionSocket, event: ResumeEvent, local: boolean, log: Logger): Promise<ConnectResult> {
    const snapshot = session.actor.getSnapshot();
    if (!snapshot.can(event)) return this.refuseResume(snapshot, 'resume limit reached', event.via, log);
    const previous = session.socket;
    const held = new HeldSocket();
    session.socket = held;
    session.claimPending = local;
    session.actor.send(event);
    await session.writer.flush();
    if (!this.registry.holds(session) || session.socket !== held) {
      // Another instance took the session while we claimed it (released, our copy stopped).
      previous?.close(4001, 'session moved');
      return this.lostRace(event.via, log);
    }
    if (session.claimPending || session.writeFailed) {
      // Not stored, so not ours to say: the socket is gone as far as the session knows.
      session.claimPending = false;
      session.socket = null;
      previous?.close(1011, 'store unavailable');
      session.actor.send({ type: 'SOCKET.CLOSED', code: 1011, at: this.clock.now() });
      this.opts.metrics.resumes.inc({ outcome: 'failed' });
      log.error('resume could not be stored: refused');
      return { ok: false, code: 1011, reason: 'store unavailable' };
    }
    session.socket = previous;
    this.attach(session, socket);
    held.releaseTo(socket);
    this.opts.metrics.resumes.inc({ outcome: 'succeeded' });
    log.info({ via: event.via, link: lifecycleOf(snapshot.value), epoch: session.lease.epoch }, 'session resumed');
    return { ok: true, session, resumed: true };
  }

  /** A racing resume took the session first: this one says nothing and writes nothing. */
  private lostRace(via: ResumeEvent['via'], log: Logger): ConnectResult {
    this.opts.metrics.resumes.inc({ outcome: 'failed' });
    log.warn({ via }, 'resume lost a race: another connection resumed the session first');
    return { ok: false, code: 4001, reason: 'resumed on another connection' };
  }

  private refuseResume(snapshot: SessionSnapshot, reason: string, via: ResumeEvent['via'], log: Logger, code = 1008): ConnectResult {
    this.opts.metrics.resumes.inc({ outcome: 'failed' });
    log.warn({ via, link: lifecycleOf(snapshot.value), resumes: snapshot.context.resumes, reason }, 'resume refused; existing session left untouched');
    return { ok: false, code, reason };
  }

  /** Delivers an inbound event if `socket` is still the session's current socket. */
  send(session: Session, socket: SessionSocket, event: SessionEvent): void {
    if ((session.socket !== socket && session.handingOff !== socket) || !this.registry.holds(session)) return;
    session.actor.send(event);
  }

  socketClosed(session: Session, socket: SessionSocket, code: number): void {
    this.opts.metrics.disconnects.inc({ code: closeCodeLabel(code) });
    if (session.socket !== socket) return; // superseded by a newer socket
    session.socket = null;
    if (this.registry.holds(session)) session.actor.send({ type: 'SOCKET.CLOSED', code, at: this.clock.now() });
  }

  /** The `<Connect action>` callback: decides whether Twilio should reconnect the call. */
  handleAction(params: ActionParams): Promise<ActionOutcome> {
    return this.locks.run(params.callSid, async () => {
      const log = this.opts.logger.child({ callSid: params.callSid });
      const resumable = params.errorCode === '64105' && params.callStatus === 'in-progress';
      const target = await this.actionTarget(params, resumable, log);
      return 'answer' in target ? target.answer : this.applyAction(params, resumable, target, log);
    });
  }

  /**
   * The session an action callback is about, ours or taken over from whoever held it (Twilio's signed
   * callback may move the call here), or the answer when the callback may not touch it.
   */
  private async actionTarget(
    params: ActionParams,
    resumable: boolean,
    log: Logger,
  ): Promise<{ answer: ActionOutcome } | { session: Session; named: ReturnType<typeof socketNamed> | undefined }> {
    for (let look = 1; ; look++) {
      try {
        const found = await this.restorer.locate(params.callSid, log);
        // Twilio posts a callback once per socket, once it has closed it, naming it (SessionId).
        const named = found && params.sessionId !== undefined ? socketNamed(params.sessionId, found.snapshot) : undefined;
        if (found && (named === 'earlier' || (named === 'other' && lifecycleOf(found.snapshot.value) === 'connected'))) {
          // About a socket the call has moved on from (a replay), or one it never talked on while it talks
          // on another: it may neither move the call here nor end it.
          log.warn({ callStatus: params.callStatus, errorCode: params.errorCode }, 'action callback for another socket of this call: ignored');
          return { answer: { kind: 'ack' } };
        }
        if (resumable && found && (found.snapshot.context.resumeTokenHashes?.length ?? 0) >= MAX_RESUME_TOKENS) {
          // Twilio answers a drop at most 1 + 5 times; more are replays, which must not crowd out its tokens.
          log.warn('action callback past the reconnect tokens a drop may have: ignored');
          return { answer: { kind: 'ack' } };
        }
        // Only as judged: a resume stored since may have made this socket an earlier one.
        const session = found && (found.session ?? (await this.restorer.takeOver(params.callSid, log, found.asRead)));
        if (session) return { session, named };
        log.info({ callStatus: params.callStatus, errorCode: params.errorCode }, 'action callback for an unknown or finished session');
        return { answer: { kind: resumable ? 'hangup' : 'ack' } };
      } catch (err) {
        // Taken or rewritten by someone else since it was read, before anything was done: judged again.
        if (!(err instanceof StaleLeaseError)) throw err;
        if (look < MAX_LOOKS) continue;
        log.warn('session kept changing while the action callback was judged: asking Twilio to retry');
        return { answer: { kind: 'retry' } };
      }
    }
  }

  /** Applies an action callback to its session: a dropped call waits for Twilio's reconnect, an ended one ends. */
  private async applyAction(
    params: ActionParams,
    resumable: boolean,
    { session, named }: { session: Session; named: ReturnType<typeof socketNamed> | undefined },
    log: Logger,
  ): Promise<ActionOutcome> {
    if (session.socket && named === 'current' && this.opts.signedUpgrades) {
      // A signed callback naming the call's own socket: Twilio has closed it, whatever our side of a
      // half-open connection still believes. It is gone now.
      const dead = session.socket;
      session.socket = null;
      dead.close(1001, 'closed by Twilio');
      session.actor.send({ type: 'SOCKET.CLOSED', code: 1006, at: this.clock.now() });
    } else if (session.socket && !(await this.socketGone(session, log))) {
      // The call is still talking on its socket: a replayed callback may neither move nor end it.
      // Only a call that already said its last words (`end` sent) is let go with its socket.
      const finished = session.actor.getSnapshot().matches({ live: { conversation: 'finished' } });
      if (!finished || resumable) {
        log.warn({ callStatus: params.callStatus, errorCode: params.errorCode }, 'action callback for a call whose socket is still open: ignored');
        return { kind: 'ack' };
      }
    }
    // Only the hash goes into the session; the token itself leaves once, in this answer's TwiML.
    const resumeToken = resumable ? newProofToken() : undefined;
    session.actor.send({
      type: 'ACTION',
      resumable,
      sessionStatus: params.sessionStatus,
      errorCode: params.errorCode,
      at: this.clock.now(),
      ...(resumeToken ? { resumeTokenHash: hashSecret(resumeToken) } : {}),
    });
    const state = lifecycleOf(session.actor.getSnapshot().value);
    // Stored before Twilio hears of the token: its new socket may reach another instance at once.
    if (resumeToken && state === 'grace') {
      await session.writer.flush();
      if (session.writeFailed || !this.registry.holds(session)) {
        log.warn('reconnect token could not be stored: asking Twilio to retry the callback');
        return { kind: 'retry' };
      }
    }
    // Ended with a socket still attached: the call is over, so is its socket.
    if (session.actor.getSnapshot().status === 'done' && session.socket) {
      session.socket.close(1000, 'call ended');
      session.socket = null;
    }
    log.info({ callStatus: params.callStatus, sessionStatus: params.sessionStatus, errorCode: params.errorCode, state }, 'action callback');
    if (!resumeToken) return { kind: 'ack' };
    return state === 'grace' ? { kind: 'reconnect', resumeToken } : { kind: 'hangup' };
  }

  /**
   * Whether the session's socket closes within ACTION_CLOSE_WINDOW_MS (on the injected clock).
   * Resolves true as soon as it is gone (or the session is no longer ours), false when the window ends.
   */
  private socketGone(session: Session, log: Logger): Promise<boolean> {
    log.info('action callback while the socket is open: waiting for it to close');
    return new Promise((resolve) => {
      const gone = () => session.socket === null || !this.registry.holds(session);
      const done = () => {
        this.clock.clearTimeout(timer);
        subscription.unsubscribe();
        resolve(gone());
      };
      const timer = this.clock.setTimeout(done, ACTION_CLOSE_WINDOW_MS);
      // socketClosed clears the socket and then tells the actor: its next snapshot (or its stop) is the signal.
      const subscription = session.actor.subscribe({ next: () => gone() && done(), complete: done, error: done });
      if (gone()) done();
    });
  }

  /** Writes every pending snapshot; used at shutdown and by tests. */
  async flush(): Promise<void> {
    await Promise.all(this.all().map((s) => s.flushWrites()));
  }

  /**
   * Sessions a dead owner left waiting for a reconnect still expire at their own (absolute) deadline:
   * called at start-up, it schedules a check per waiting session shortly after that deadline.
   */
  adoptOrphanedDeadlines(): Promise<number> {
    return this.orphans.adopt();
  }

  /**
   * Hands every live call on before the process stops (deploys, restarts): each call finishes the
   * reply it is speaking (at most `timeoutMs`), its final snapshot is written while frames are still
   * handled, then this instance lets go of it and closes the socket. Twilio then posts the action
   * callback, and whichever instance answers it restores the call from the store.
   */
  async drain(timeoutMs: number): Promise<void> {
    this.stopping = true;
    let timeUp = false;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        timeUp = true;
        resolve();
      }, timeoutMs);
    });
    try {
      // A socket upgraded just before the drain began may still bring its setup, and a setup in flight
      // (a restore, a resume being stored) attaches its socket when it is done: go on until neither is left.
      for (;;) {
        if (this.connecting.size > 0) await Promise.race([Promise.allSettled([...this.connecting]), deadline]);
        const live = this.attached();
        if (live.length === 0 && (this.connecting.size === 0 || timeUp)) break;
        await Promise.all(live.map((s) => this.handOff(s, () => timeUp, deadline)));
      }
    } finally {
      clearTimeout(timer);
    }
  }

  private attached(): Session[] {
    // A hibernated session is an active one: its hand-off revives it, under its lock.
    return this.all().filter((s) => s.socket !== null && (s.hibernated || s.actor.getSnapshot().status === 'active'));
  }

  private handOff(session: Session, timeUp: () => boolean, deadline: Promise<void>): Promise<void> {
    const untilQuiet = () => Promise.race([waitFor(session.actor, notSpeaking).catch(() => undefined), deadline]);
    return this.locks.run(session.callSid, async () => {
      const ours = () => this.registry.holds(session);
      // The reply being spoken finishes first, frames handled as usual.
      await untilQuiet();
      const socket = session.socket;
      if (!ours() || !socket) return;
      // From here the session counts the socket as gone (its grace deadline starts, so the call still
      // expires on time if nobody takes it back). A frame that still arrives is taken all the same:
      // what it makes the session say is kept for after the resume.
      session.socket = null;
      session.handingOff = socket;
      session.actor.send({ type: 'SOCKET.CLOSED', code: 1001, at: this.clock.now() });
      for (;;) {
        await session.writer.flush();
        // Taken over meanwhile (the newer owner has the call): this socket has nothing left to carry.
        if (!ours()) return socket.close(1001, 'server restarting');
        if (!session.writer.pending) break;
        if (timeUp()) {
          await session.writer.flush();
          break;
        }
        await untilQuiet();
      }
      // Nothing arrived during the last write: what is stored is the whole call. Let go in this same turn.
      if (ours()) this.letGo(session, socket);
      else socket.close(1001, 'server restarting');
    });
  }

  /** Stops our copy (its last state is stored) and closes its socket, so the call moves on. */
  private letGo(session: Session, socket: SessionSocket): void {
    session.handingOff = null;
    this.registry.forget(session);
    session.stop();
    session.log.info({ epoch: session.lease.epoch }, 'call handed on for a restart');
    socket.close(1001, 'server restarting');
  }

  /**
   * Closes every socket as a disconnect like any other (persisted, so grace deadlines keep running
   * and another instance or the restarted one can resume the calls), then stops the actors.
   */
  async close(): Promise<void> {
    this.stopping = true;
    this.orphans.stop();
    for (const session of this.all()) {
      const socket = session.socket;
      if (!socket) continue;
      session.socket = null;
      socket.close(1001, 'server shutting down');
      session.actor.send({ type: 'SOCKET.CLOSED', code: 1001, at: this.clock.now() });
    }
    await this.flush();
    for (const session of this.all()) {
      this.registry.forget(session);
      session.stop();
      session.socket?.close(1001, 'server shutting down');
    }
  }

  private async createFresh(setup: SetupMessage, log: Logger): Promise<Session> {
    const lease = await this.opts.store.acquire(setup.callSid, this.opts.instanceId);
    const actor = createActor(this.opts.machine, {
      input: {
        callSid: setup.callSid,
        sessionKeyHash: hashSecret(setup.sessionId),
        resumeKeyHash: setup.customParameters.resumeKey ? hashSecret(setup.customParameters.resumeKey) : null,
        accountSid: setup.accountSid,
        from: setup.from,
        to: setup.to,
        // Proofs are checked, never kept: the context is stored, listed and inspected.
        customParameters: withoutSecrets(setup.customParameters),
        language: this.opts.language,
        timeouts: this.opts.timeouts,
        historyLimits: this.opts.historyLimits,
        now: this.clock.now(),
      },
      inspect: this.opts.inspect,
    });
    const session = this.registry.track(setup.callSid, actor, lease, log);
    actor.start();
    return session;
  }

  private attach(session: Session, socket: SessionSocket): void {
    const old = session.socket;
    session.socket = socket;
    // Newest authenticated connection wins; the old socket's close is then ignored.
    if (old && old !== socket) old.close(4000, 'superseded by a newer connection');
  }

  /** Sessions by lifecycle state, computed when metrics are scraped rather than on every change. */
  countByState(): Map<string, number> {
    return this.registry.countByState();
  }
}

/**
 * Not in the middle of a reply or a tool: a restart may hand the call on now without cutting words
 * off, and a tool that finishes in time is not run a second time on the next instance.
 */
function notSpeaking(snapshot: SessionSnapshot): boolean {
  if (snapshot.status !== 'active') return true;
  return !snapshot.matches({ live: { conversation: 'responding' } }) && !snapshot.matches({ live: { conversation: 'tool' } });
}
