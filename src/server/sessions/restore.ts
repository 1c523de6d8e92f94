// Finds a call's session (our live actor or a resumable stored record) and takes stored sessions
// over: the lease first, fencing the old owner, then the record, restored as a running actor.
import { createActor, type Actor, type ActorOptions, type InspectionEvent, type Snapshot } from 'xstate';
import type { Logger } from '../logger.js';
import type { Metrics } from '../metrics.js';
import type { Clock } from '../../clock.js';
import type { SessionInput, SessionMachine } from '../../machines/session.js';
import type { AcquireOptions, Lease, SessionRecord, SnapshotStore } from '../../stores/index.js';
import type { Session, SessionSnapshot } from './live-session.js';
import type { SessionRegistry } from './registry.js';
import { graceDeadlineOf, upgradeStoredSnapshot } from './stored-snapshot.js';
import { graceOver, graceOverAt, RESUMABLE_STATES } from './resume-rules.js';
import { RestoreQueue } from './restore-queue.js';

/**
 * Times a caller looks a session up before giving up, when it changed between the look and the
 * takeover that followed (refused): each time someone else wrote it in between, so this is rare.
 */
export const MAX_LOOKS = 3;

/**
 * A call's session as found: our own live actor, or a resumable record someone else (maybe dead)
 * wrote, with what a takeover must find unchanged: the session's fencing epoch as it was when the
 * record was read, and the epoch the record was written under.
 */
type Located = { session: Session; snapshot: SessionSnapshot } | { session?: undefined; snapshot: SessionSnapshot; asRead: Required<AcquireOptions> };

export interface SessionRestorerOptions {
  store: SnapshotStore;
  machine: SessionMachine;
  instanceId: string;
  metrics: Metrics;
  clock: Clock;
  registry: SessionRegistry;
  inspect?: (event: InspectionEvent) => void;
}

export class SessionRestorer {
  private readonly queue = new RestoreQueue();

  /** A setup claiming a resume came to be handled (read, or handed on by the setup backlog): while they keep coming, they come first. */
  noteResumeArrival(): void {
    this.queue.noteArrival();
  }

  constructor(private readonly opts: SessionRestorerOptions) {}

  /**
   * Where the call's session is: our actor while we hold the newest lease, else a resumable stored
   * record (looked at, not yet taken over). A session whose grace deadline has passed is expired now
   * (its owner died before its timer fired) and counts as gone; StaleLeaseError when that expiry is
   * refused because someone took or rewrote the session since it was read (look again).
   */
  async locate(callSid: string, log: Logger, opts: { queued?: boolean } = {}): Promise<Located | undefined> {
    const { registry, store, clock } = this.opts;
    let local = registry.get(callSid);
    // A hibernated session rests connected: it is never done.
    if (local && !local.hibernated && local.actor.getSnapshot().status === 'done') {
      // Expired or ended, with its last write maybe still in flight: let it land, then it is gone.
      await local.writer.flush();
      registry.forget(local);
      local = undefined;
    }
    if (local) {
      const epoch = await store.currentEpoch(callSid);
      if (epoch === local.lease.epoch) {
        const snapshot = local.actor.getSnapshot();
        // Reading the actor revives a hibernated session; one that could not be revived was let go on
        // the way, and then the stored record is what counts.
        if (registry.holds(local)) {
          if (!graceOver(snapshot, clock.now())) return { session: local, snapshot };
          local.actor.send({ type: 'GRACE.EXPIRED' }); // due this instant: do not race the timer
          return undefined;
        }
      } else {
        registry.release(local, 'another instance took the session over');
      }
    }
    // The epoch is asked for first (in one round trip with the record: every store answers in the
    // order asked), so a takeover after that read makes a conditional restore fail. Look-ups for
    // resumes go through the same limit as restores, so a storm of them cannot queue ahead of the
    // restores in the store; a new call's look-up (`queued: false`) never waits behind a storm.
    const read = () => Promise.all([store.currentEpoch(callSid), store.load(callSid)]);
    const [epoch, record] = await (opts.queued === false ? read() : this.queue.run(read));
    if (!record || !RESUMABLE_STATES.has(record.state)) return undefined;
    const snapshot = this.peek(record, log);
    if (!snapshot) return undefined;
    const asRead = { ifEpoch: epoch, ifRecordEpoch: record.epoch };
    if (graceOver(snapshot, clock.now())) {
      // Restored to be expired, so the store says so; only as read: a resume since may have saved it.
      await this.takeOver(callSid, log, asRead);
      return undefined;
    }
    return { snapshot, asRead };
  }

  /**
   * Takes a stored session over: the lease first, fencing the old owner, then its final record.
   * With `asRead` (what locate() found), only if neither the epoch nor the record changed since
   * (else StaleLeaseError): a resume takes over only the session it judged.
   */
  takeOver(callSid: string, log: Logger, asRead: AcquireOptions = {}): Promise<Session | undefined> {
    // Bounded: in a reconnect storm each restore then completes in a few round trips instead of
    // all of them crawling forward together behind each other's store I/O.
    return this.queue.run(() => this.restoreNow(callSid, log, asRead));
  }

  private async restoreNow(callSid: string, log: Logger, asRead: AcquireOptions): Promise<Session | undefined> {
    const started = performance.now();
    const { lease, record } = await this.acquireAndLoad(callSid, asRead);
    if (!record || !RESUMABLE_STATES.has(record.state)) return undefined;
    // A reply in flight restarts by the reply actor's own rule (fromReplyStream): nothing to patch here.
    // A session whose grace ran out is only restored to be expired: its children (a tool, a reply) must
    // not run again on the way.
    const expiring = graceOverAt(record.state, graceDeadlineOf(record), this.opts.clock.now());
    const actor = this.actorFrom(expiring ? withoutChildren(record.snapshot) : record.snapshot, true, log);
    if (!actor) return undefined;
    const session = this.opts.registry.track(callSid, actor, lease, log);
    actor.start();
    // The previous owner died with the socket attached (or lost it to us): that socket is gone.
    if (record.state === 'connected') actor.send({ type: 'SOCKET.CLOSED', code: 1006, at: this.opts.clock.now() });
    this.opts.metrics.restoreSeconds.observe((performance.now() - started) / 1000);
    log.info({ epoch: lease.epoch, state: record.state, previousEpoch: record.epoch }, 'session restored from store');
    if (graceOver(actor.getSnapshot(), this.opts.clock.now())) {
      log.info('grace ran out while no instance owned the session');
      actor.send({ type: 'GRACE.EXPIRED' });
      return undefined;
    }
    return session;
  }

  /** The lease first, fencing the old owner, then its final record: in one round trip where the store can. */
  private async acquireAndLoad(callSid: string, opts: AcquireOptions): Promise<{ lease: Lease; record: SessionRecord | undefined }> {
    const { store, instanceId } = this.opts;
    if (store.acquireAndLoad) return store.acquireAndLoad(callSid, instanceId, opts);
    const lease = await store.acquire(callSid, instanceId, opts);
    return { lease, record: await store.load(callSid) };
  }

  /** The stored session as an unstarted actor's snapshot: typed and checkable, with no side effects. */
  private peek(record: SessionRecord, log: Logger): SessionSnapshot | undefined {
    return this.actorFrom(record.snapshot, false, log)?.getSnapshot();
  }

  /**
   * An unstarted actor from a persisted snapshot, or undefined (logged) when it cannot be restored.
   * Also how a hibernated session's actor is revived (registry.ts).
   */
  actorFrom(persisted: unknown, inspected: boolean, log: Logger): Actor<SessionMachine> | undefined {
    // Input is only read when a machine starts fresh; a restored actor takes everything from the snapshot.
    const options = { snapshot: upgradeStoredSnapshot(persisted) as Snapshot<unknown>, inspect: inspected ? this.opts.inspect : undefined };
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
}

function withoutChildren(persisted: unknown): unknown {
  return { ...(persisted as object), children: {} };
}
