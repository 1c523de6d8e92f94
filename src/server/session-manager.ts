// Owns the live session actors of this instance: creates or restores them, binds sockets to
// them, persists every state change through the store, and gives them up when another
// instance takes a session over (fencing epochs).
import { createActor, waitFor, type Actor, type ActorOptions, type InspectionEvent, type Snapshot, type SnapshotFrom } from 'xstate';
import type { Logger } from './logger.js';
import { closeCodeLabel, type Metrics } from './metrics.js';
import type { OutboundMessage, SetupMessage } from '../protocol/messages.js';
import type { HistoryLimits } from '../machines/history-bound.js';
import { systemClock, type Clock } from '../clock.js';
import { hasResumesLeft, lifecycleOf, MAX_RESUME_TOKENS, type SessionEvent, type SessionInput, type SessionMachine, type SessionTimeouts } from '../machines/session.js';
import { CoalescingWriter, StaleLeaseError, type Lease, type SaveInput, type SessionRecord, type SnapshotStore } from '../stores/index.js';
import pLimit from 'p-limit';
import { KeyedMutex } from './keyed-mutex.js';
import { onlyReplyTextChanged } from './write-worthy.js';
import { hashSecret, matchesHash, newProofToken, ticketMatches, withoutSecrets } from './resume-proof.js';
import { HeldSocket } from './held-socket.js';

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
  /** The socket of a call being handed on (deploys): its late frames still reach the session. */
  handingOff: SessionSocket | null;
  /**
   * The next write first takes the lease over from our own epoch, conditionally (a local resume): it
   * fails if another instance took the session meanwhile. Done in the writer, so no write of the old
   * epoch can land after it.
   */
  claimPending: boolean;
  /** The latest write failed for a reason other than fencing (store fault); cleared by the next success. */
  writeFailed: boolean;
  log: Logger;
}

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
  /** Stamps the events this edge sends and times grace checks; the system clock by default. */
  clock?: Clock;
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

/**
 * Restores in flight at once. One: a restore is a single store round trip plus a short actor start,
 * and anything else on the event loop lands inside that round trip, so in a reconnect storm
 * running them one after another keeps each one short (the storm as a whole takes about as long).
 */
const RESTORE_CONCURRENCY = 1;

const RESUMABLE_STATES = new Set(['connected', 'disconnected', 'grace']);
/**
 * Twilio posts the action callback the moment it closes the socket, so our close event arrives first
 * or right after. A callback whose call still has its socket after this long is not about this
 * socket (a replay): it is answered without touching the call.
 */
export const ACTION_CLOSE_WINDOW_MS = 2000;
/** An orphaned session is expired this long after its deadline, leaving its owner (if alive) the first go. */
const ORPHAN_EXPIRY_SLACK_MS = 250;

type SessionSnapshot = SnapshotFrom<SessionMachine>;
type ResumeEvent = Extract<SessionEvent, { type: 'RESUME' }>;

/**
 * A call's session as found: our own live actor, or a resumable record someone else (maybe dead)
 * wrote, with the session's fencing epoch as it was when the record was read.
 */
type Located = { session: Session; snapshot: SessionSnapshot } | { session?: undefined; snapshot: SessionSnapshot; epoch: number };

/**
 * A second connection this soon after a resume, with the same proof, is a duplicate of the one that
 * resumed (a client racing itself over two instances), not a reconnect: it is refused (1013, try again).
 */
export const RESUME_SETTLE_MS = 2000;

export class SessionManager {
  private readonly sessions = new Map<string, Session>();
  private readonly locks = new KeyedMutex();
  private readonly restoreLimit = pLimit(RESTORE_CONCURRENCY);
  private readonly orphanTimers = new Set<unknown>();
  private readonly connecting = new Set<Promise<ConnectResult>>();
  readonly clock: Clock;

  constructor(private readonly opts: SessionManagerOptions) {
    this.clock = opts.clock ?? systemClock;
    opts.metrics.setSessionSource(() => this.countByState());
    // Stores that announce lease changes let a stale owner stop at once instead of at its next write.
    opts.store.onLeaseChange?.((callSid, epoch) => {
      const local = this.sessions.get(callSid);
      // While our own claim is in flight its announcement may arrive before its reply; a racer's claim
      // makes ours fail (or our next write), which releases the session then.
      if (local && !local.claimPending && local.lease.epoch < epoch) this.release(local, 'another instance took the session over');
    });
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

  /**
   * A setup frame arrived: resume the call's session if this caller may, else start fresh.
   * `ticket`: the relay path segment the socket was opened at (see resume-proof.ts).
   */
  connect(setup: SetupMessage, socket: SessionSocket, ticket?: string): Promise<ConnectResult> {
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
      const found = await this.locate(setup.callSid, log);
      const attempt = found !== undefined || setup.reconnection === true;
      if (attempt) this.opts.metrics.resumeAttempts.inc({ via });
      if (found) {
        // Checked before taking anything over, so a refused caller leaves the owner and the stored session untouched.
        const refusal = resumeRefusal(setup, found.snapshot, {
          local: found.session !== undefined,
          signed: this.opts.signedUpgrades ? { ticket } : undefined,
          now: this.clock.now(),
        });
        if (refusal) return this.refuseResume(found.snapshot, refusal.reason, via, log, refusal.code);
        if (found.session) return this.resume(found.session, socket, event, true, log);
        let restored: Session | undefined;
        try {
          // Only if nobody took the session since it was read: of two racing resumes, one restores it.
          restored = await this.takeOver(setup.callSid, log, found.epoch);
        } catch (err) {
          if (!(err instanceof StaleLeaseError)) throw err;
          return this.lostRace(via, log);
        }
        if (restored) return this.resume(restored, socket, event, false, log);
      }
      if (attempt) this.opts.metrics.resumes.inc({ outcome: 'failed' });
      if (setup.reconnection) {
        log.warn('reconnect for an unknown or expired session: starting a fresh session');
      }
      // The upgrade is refused at the cap already; this catches sockets that were let in before it was reached.
      if (!this.sessions.has(setup.callSid) && this.sessions.size >= (this.opts.maxSessions ?? Infinity)) {
        this.opts.metrics.limitHit('sessions');
        log.warn({ sessions: this.sessions.size }, 'session limit reached: new call refused');
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
    if (this.sessions.get(session.callSid) !== session || session.socket !== held) {
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
    if ((session.socket !== socket && session.handingOff !== socket) || this.sessions.get(session.callSid) !== session) return;
    session.actor.send(event);
  }

  socketClosed(session: Session, socket: SessionSocket, code: number): void {
    this.opts.metrics.disconnects.inc({ code: closeCodeLabel(code) });
    if (session.socket !== socket) return; // superseded by a newer socket
    session.socket = null;
    if (this.sessions.get(session.callSid) === session) session.actor.send({ type: 'SOCKET.CLOSED', code, at: this.clock.now() });
  }

  /** The `<Connect action>` callback: decides whether Twilio should reconnect the call. */
  handleAction(params: { callSid: string; callStatus: string; sessionStatus: string; errorCode: string; sessionId?: string }): Promise<ActionOutcome> {
    return this.locks.run(params.callSid, async () => {
      const log = this.opts.logger.child({ callSid: params.callSid });
      const resumable = params.errorCode === '64105' && params.callStatus === 'in-progress';
      // Twilio's signed callback may move the session here: take it over from whoever held it.
      const found = await this.locate(params.callSid, log);
      // Twilio posts a callback once per socket, once it has closed it, naming it (SessionId).
      const named = found && params.sessionId !== undefined ? socketNamed(params.sessionId, found.snapshot) : undefined;
      if (found && (named === 'earlier' || (named === 'other' && lifecycleOf(found.snapshot.value) === 'connected'))) {
        // About a socket the call has moved on from (a replay), or one it never talked on while it talks
        // on another: it may neither move the call here nor end it.
        log.warn({ callStatus: params.callStatus, errorCode: params.errorCode }, 'action callback for another socket of this call: ignored');
        return { kind: 'ack' };
      }
      if (resumable && found && (found.snapshot.context.resumeTokenHashes?.length ?? 0) >= MAX_RESUME_TOKENS) {
        // Twilio answers a drop at most 1 + 5 times; more are replays, which must not crowd out its tokens.
        log.warn('action callback past the reconnect tokens a drop may have: ignored');
        return { kind: 'ack' };
      }
      const session = found && (found.session ?? (await this.takeOver(params.callSid, log)));
      if (!session) {
        log.info({ callStatus: params.callStatus, errorCode: params.errorCode }, 'action callback for an unknown or finished session');
        return { kind: resumable ? 'hangup' : 'ack' };
      }
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
        if (session.writeFailed || this.sessions.get(params.callSid) !== session) {
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
    });
  }

  /**
   * Whether the session's socket closes within ACTION_CLOSE_WINDOW_MS (on the injected clock).
   * Resolves true as soon as it is gone (or the session is no longer ours), false when the window ends.
   */
  private socketGone(session: Session, log: Logger): Promise<boolean> {
    log.info('action callback while the socket is open: waiting for it to close');
    return new Promise((resolve) => {
      const gone = () => session.socket === null || this.sessions.get(session.callSid) !== session;
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
    await Promise.all(this.all().map((s) => s.writer.flush()));
  }

  /**
   * Sessions a dead owner left waiting for a reconnect still expire at their own (absolute) deadline:
   * called at start-up, it schedules a check per waiting session shortly after that deadline.
   */
  async adoptOrphanedDeadlines(): Promise<number> {
    let records: SessionRecord[];
    try {
      records = await this.opts.store.list();
    } catch (err) {
      // Not fatal: such sessions still expire when someone next asks for them.
      this.opts.logger.error({ err }, 'could not list stored sessions to watch their grace deadlines');
      return 0;
    }
    let scheduled = 0;
    for (const record of records) {
      if (record.state !== 'disconnected' && record.state !== 'grace') continue;
      const deadline = graceDeadlineOf(record);
      if (deadline === null) continue;
      const timer = this.clock.setTimeout(() => {
        this.orphanTimers.delete(timer);
        this.expireIfOrphaned(record.callSid).catch((err: unknown) =>
          this.opts.logger.error({ err, callSid: record.callSid }, 'could not expire an orphaned session'),
        );
      }, Math.max(0, deadline - this.clock.now()) + ORPHAN_EXPIRY_SLACK_MS);
      (timer as { unref?: () => void }).unref?.();
      this.orphanTimers.add(timer);
      scheduled++;
    }
    if (scheduled > 0) this.opts.logger.info({ sessions: scheduled }, 'watching grace deadlines of sessions left by a previous owner');
    return scheduled;
  }

  /**
   * Hands every live call on before the process stops (deploys, restarts): each call finishes the
   * reply it is speaking (at most `timeoutMs`), its final snapshot is written while frames are still
   * handled, then this instance lets go of it and closes the socket. Twilio then posts the action
   * callback, and whichever instance answers it restores the call from the store.
   */
  async drain(timeoutMs: number): Promise<void> {
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
    return this.all().filter((s) => s.socket !== null && s.actor.getSnapshot().status === 'active');
  }

  private handOff(session: Session, timeUp: () => boolean, deadline: Promise<void>): Promise<void> {
    const untilQuiet = () => Promise.race([waitFor(session.actor, notSpeaking).catch(() => undefined), deadline]);
    return this.locks.run(session.callSid, async () => {
      const ours = () => this.sessions.get(session.callSid) === session;
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
    this.sessions.delete(session.callSid);
    session.actor.stop();
    session.log.info({ epoch: session.lease.epoch }, 'call handed on for a restart');
    socket.close(1001, 'server restarting');
  }

  /**
   * Closes every socket as a disconnect like any other (persisted, so grace deadlines keep running
   * and another instance or the restarted one can resume the calls), then stops the actors.
   */
  async close(): Promise<void> {
    for (const timer of this.orphanTimers) this.clock.clearTimeout(timer);
    this.orphanTimers.clear();
    for (const session of this.all()) {
      const socket = session.socket;
      if (!socket) continue;
      session.socket = null;
      socket.close(1001, 'server shutting down');
      session.actor.send({ type: 'SOCKET.CLOSED', code: 1001, at: this.clock.now() });
    }
    await this.flush();
    for (const session of this.all()) {
      this.sessions.delete(session.callSid);
      session.actor.stop();
      session.socket?.close(1001, 'server shutting down');
    }
  }

  /**
   * Where the call's session is: our actor while we hold the newest lease, else a resumable stored
   * record (looked at, not yet taken over). A session whose grace deadline has passed is expired now
   * (its owner died before its timer fired) and counts as gone.
   */
  private async locate(callSid: string, log: Logger): Promise<Located | undefined> {
    let local = this.sessions.get(callSid);
    if (local?.actor.getSnapshot().status === 'done') {
      // Expired or ended, with its last write maybe still in flight: let it land, then it is gone.
      await local.writer.flush();
      if (this.sessions.get(callSid) === local) this.sessions.delete(callSid);
      local = undefined;
    }
    if (local) {
      const epoch = await this.opts.store.currentEpoch(callSid);
      if (epoch === local.lease.epoch) {
        const snapshot = local.actor.getSnapshot();
        if (!graceOver(snapshot, this.clock.now())) return { session: local, snapshot };
        local.actor.send({ type: 'GRACE.EXPIRED' }); // due this instant: do not race the timer
        return undefined;
      }
      this.release(local, 'another instance took the session over');
    }
    // Through the same limit as restores, so a storm of look-ups cannot queue ahead of them in the store.
    // The epoch is asked for first (in one round trip with the record: every store answers in the
    // order asked), so a takeover after that read makes a conditional restore fail.
    const [epoch, record] = await this.restoreLimit(() => Promise.all([this.opts.store.currentEpoch(callSid), this.opts.store.load(callSid)]));
    if (!record || !RESUMABLE_STATES.has(record.state)) return undefined;
    const snapshot = this.peek(record, log);
    if (!snapshot) return undefined;
    if (graceOver(snapshot, this.clock.now())) {
      await this.takeOver(callSid, log); // restores and expires it, so the store says so
      return undefined;
    }
    return { snapshot, epoch };
  }

  /** The stored session as an unstarted actor's snapshot: typed and checkable, with no side effects. */
  private peek(record: SessionRecord, log: Logger): SessionSnapshot | undefined {
    return this.actorFrom(record.snapshot, false, log)?.getSnapshot();
  }

  /** An unstarted actor from a persisted snapshot, or undefined (logged) when it cannot be restored. */
  private actorFrom(persisted: unknown, inspected: boolean, log: Logger): Actor<SessionMachine> | undefined {
    // Input is only read when a machine starts fresh; a restored actor takes everything from the snapshot.
    const options = { snapshot: persisted as Snapshot<unknown>, inspect: inspected ? this.opts.inspect : undefined };
    const status = (persisted as { status?: unknown } | null)?.status;
    if (status !== 'active') {
      // A stopped actor's snapshot would restore as an actor that ignores every event: a silent call.
      log.error({ status }, 'stored snapshot is not of a running session; treating the session as unknown');
      return undefined;
    }
    try {
      return createActor(this.opts.machine, options as ActorOptions<SessionMachine> & { input: SessionInput });
    } catch (err) {
      log.error({ err }, 'stored snapshot could not be restored; treating the session as unknown');
      return undefined;
    }
  }

  /**
   * Takes a stored session over: the lease first, fencing the old owner, then its final record.
   * With `ifEpoch`, only if the session's epoch is still that one (else StaleLeaseError).
   */
  private takeOver(callSid: string, log: Logger, ifEpoch?: number): Promise<Session | undefined> {
    // Bounded: in a reconnect storm each restore then completes in a few round trips instead of
    // all of them crawling forward together behind each other's store I/O.
    return this.restoreLimit(() => this.restoreNow(callSid, log, ifEpoch));
  }

  private async restoreNow(callSid: string, log: Logger, ifEpoch?: number): Promise<Session | undefined> {
    const started = performance.now();
    const { lease, record } = await this.acquireAndLoad(callSid, ifEpoch);
    if (!record || !RESUMABLE_STATES.has(record.state)) return undefined;
    const actor = this.actorFrom(withRestartedReply(record.snapshot), true, log);
    if (!actor) return undefined;
    const session = this.track(callSid, actor, lease, log);
    actor.start();
    // The previous owner died with the socket attached (or lost it to us): that socket is gone.
    if (record.state === 'connected') actor.send({ type: 'SOCKET.CLOSED', code: 1006, at: this.clock.now() });
    this.opts.metrics.restoreSeconds.observe((performance.now() - started) / 1000);
    log.info({ epoch: lease.epoch, state: record.state, previousEpoch: record.epoch }, 'session restored from store');
    if (graceOver(actor.getSnapshot(), this.clock.now())) {
      log.info('grace ran out while no instance owned the session');
      actor.send({ type: 'GRACE.EXPIRED' });
      return undefined;
    }
    return session;
  }

  private expireIfOrphaned(callSid: string): Promise<void> {
    return this.locks.run(callSid, async () => {
      if (this.sessions.has(callSid)) return; // ours: its own timer runs
      await this.locate(callSid, this.opts.logger.child({ callSid }));
    });
  }

  /** The lease first, fencing the old owner, then its final record: in one round trip where the store can. */
  private async acquireAndLoad(callSid: string, ifEpoch?: number): Promise<{ lease: Lease; record: SessionRecord | undefined }> {
    const { store, instanceId } = this.opts;
    const opts = ifEpoch === undefined ? {} : { ifEpoch };
    if (store.acquireAndLoad) return store.acquireAndLoad(callSid, instanceId, opts);
    const lease = await store.acquire(callSid, instanceId, opts);
    return { lease, record: await store.load(callSid) };
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
    const session = this.track(setup.callSid, actor, lease, log);
    actor.start();
    return session;
  }

  private track(callSid: string, actor: Actor<SessionMachine>, lease: Lease, log: Logger): Session {
    const previous = this.sessions.get(callSid);
    if (previous) this.release(previous, 'replaced by a fresh session');
    const writer = new CoalescingWriter<Actor<SessionMachine>>(
      (a) => this.persist(session, a),
      (err) => this.onWriteError(session, err),
    );
    const session: Session = { callSid, actor, lease, writer, socket: null, handingOff: null, claimPending: false, writeFailed: false, log };
    this.sessions.set(callSid, session);
    actor.on('outbound', ({ message }) => session.socket?.send(message));
    let seen = actor.getSnapshot();
    actor.subscribe({
      next: (snapshot) => {
        const dropped = (snapshot.context.historyDropped ?? 0) - (seen.context.historyDropped ?? 0);
        if (dropped > 0) this.opts.metrics.historyTurnsDropped.inc(dropped);
        if (!onlyReplyTextChanged(seen, snapshot)) writer.schedule(actor);
        seen = snapshot;
      },
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
      snapshot: actor.getPersistedSnapshot(),
      state: lifecycleOf(snapshot.value),
      retainUntil: Math.max(now + this.opts.timeouts.retentionMs, snapshot.context.graceDeadline ?? 0),
    };
    await this.opts.store.save(session.lease, input);
    session.writeFailed = false;
  }

  private onWriteError(session: Session, err: unknown): void {
    if (err instanceof StaleLeaseError) {
      this.opts.metrics.staleWrites.inc();
      this.release(session, 'stale lease: another instance owns the session');
      return;
    }
    session.writeFailed = true;
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

/** Not in the middle of a reply: a restart may hand the call on now without cutting words off. */
function notSpeaking(snapshot: SessionSnapshot): boolean {
  return snapshot.status !== 'active' || !snapshot.matches({ live: { conversation: 'responding' } });
}

function graceOver(snapshot: SessionSnapshot, now: number): boolean {
  const link = lifecycleOf(snapshot.value);
  const deadline = snapshot.context.graceDeadline;
  return (link === 'disconnected' || link === 'grace') && deadline !== null && deadline <= now;
}

function graceDeadlineOf(record: SessionRecord): number | null {
  const context = (record.snapshot as { context?: { graceDeadline?: unknown } } | null)?.context;
  return typeof context?.graceDeadline === 'number' ? context.graceDeadline : null;
}

/**
 * Why `setup` may not resume this session (with the close code to refuse it with), or undefined when
 * it may. The call's identity (account, numbers) must match, and the caller must prove it is the same
 * call: our own clients (`reconnection: true`) repeat the session's current sessionId (and their
 * resumeKey if they set one); Twilio's path brings a new sessionId, so it must bring the single-use
 * token of the reconnect TwiML we answered the action callback with (Twilio hands it over in
 * customParameters), on that token's relay path when upgrades are signed.
 */
export function resumeRefusal(
  setup: SetupMessage,
  snapshot: SessionSnapshot,
  opts: { local: boolean; signed?: { ticket: string | undefined }; now: number },
): { reason: string; code: number } | undefined {
  const context = snapshot.context as StoredContext;
  const link = lifecycleOf(snapshot.value);
  // Snapshots stored before accountSid was kept have none: their numbers still have to match.
  const sameCall =
    (context.accountSid === undefined || setup.accountSid === context.accountSid) && setup.from === context.from && setup.to === context.to;
  if (!sameCall || !provesResume(setup, context, opts.signed)) return { reason: 'not allowed to resume this session', code: 1008 };
  if (link === 'connected' && context.resumedAt != null && opts.now - context.resumedAt < RESUME_SETTLE_MS) {
    return { reason: 'resumed moments ago on another connection', code: 1013 };
  }
  // Taking over a live socket (newest connection wins) is not a resume; everything else is capped.
  const takesOverLiveSocket = opts.local && link === 'connected';
  if (!takesOverLiveSocket && !hasResumesLeft(snapshot.context)) return { reason: 'resume limit reached', code: 1008 };
  return undefined;
}

/** Fields of snapshots stored by earlier versions, read for compatibility. */
type StoredContext = SessionSnapshot['context'] & { sessionId?: string; resumeTokenHash?: string | null };

/**
 * `signed` (signed upgrades only): a Twilio-path resume must come on the socket path (ticket) of the
 * token it brings, which only Twilio can have signed.
 */
function provesResume(setup: SetupMessage, context: StoredContext, signed: { ticket: string | undefined } | undefined): boolean {
  // With signed upgrades every socket is Twilio's, and Twilio never sends `reconnection`: its sessionId
  // (which every action callback names) is no proof there.
  if (signed && setup.reconnection) return false;
  if (!setup.reconnection) {
    const token = setup.customParameters.resumeToken;
    if (signed && !ticketMatches(signed.ticket, token)) return false;
    const hashes = context.resumeTokenHashes ?? (context.resumeTokenHash ? [context.resumeTokenHash] : []);
    return hashes.some((hash) => matchesHash(token, hash));
  }
  if (!matchesHash(setup.sessionId, sessionKeyHashOf({ context }))) return false;
  return !context.resumeKeyHash || matchesHash(setup.customParameters.resumeKey, context.resumeKeyHash);
}

/** Which of the call's sockets `sessionId` names: its current one, one a resume replaced, or another (e.g. a refused one). */
function socketNamed(sessionId: string, snapshot: SessionSnapshot): 'current' | 'earlier' | 'other' {
  if (matchesHash(sessionId, sessionKeyHashOf(snapshot))) return 'current';
  const earlier = (snapshot.context.earlierSessionKeyHashes ?? []).some((hash) => matchesHash(sessionId, hash));
  return earlier ? 'earlier' : 'other';
}

/** The hash of the session's current sessionId (snapshots stored before the hash was kept name the id itself). */
function sessionKeyHashOf(snapshot: { context: StoredContext }): string | null {
  const { context } = snapshot;
  return context.sessionKeyHash ?? (context.sessionId ? hashSecret(context.sessionId) : null);
}

/**
 * A restored snapshot's LLM run died with its process; its invoke restarts from scratch, so its
 * partial text must too, or the caller would hear the start of the reply twice after the resume.
 */
function withRestartedReply(persisted: unknown): unknown {
  const snapshot = persisted as { context?: { reply?: unknown } } | null;
  if (!snapshot?.context?.reply) return persisted;
  return { ...snapshot, context: { ...snapshot.context, reply: { runId: null, text: '' } } };
}
