// Who may resume a session, and when: pure rules over the session's snapshot, no I/O.
import { hasResumesLeft, lifecycleOf } from '../../machines/session.js';
import type { SetupMessage } from '../../protocol/messages.js';
import { hashSecret, matchesHash, ticketMatches } from '../resume-proof.js';
import type { SessionSnapshot } from './live-session.js';

/** Lifecycle states of a stored session that a caller can come back to. */
export const RESUMABLE_STATES = new Set(['connected', 'disconnected', 'grace']);

/**
 * Twilio posts the action callback the moment it closes the socket, so our close event arrives first
 * or right after. A callback whose call still has its socket after this long is not about this
 * socket (a replay): it is answered without touching the call.
 */
export const ACTION_CLOSE_WINDOW_MS = 2000;

/**
 * A second connection this soon after a resume, with the same proof, is a duplicate of the one that
 * resumed (a client racing itself over two instances), not a reconnect: it is refused (1013, try again).
 */
export const RESUME_SETTLE_MS = 2000;

/** Waiting for a reconnect and past its grace deadline: the session is due to expire now. */
export function graceOver(snapshot: SessionSnapshot, now: number): boolean {
  return graceOverAt(lifecycleOf(snapshot.value), snapshot.context.graceDeadline, now);
}

/** The rule itself, for a session as stored too (its record's state and its snapshot's deadline). */
export function graceOverAt(link: string, deadline: number | null, now: number): boolean {
  return (link === 'disconnected' || link === 'grace') && deadline !== null && deadline <= now;
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
 * Whether a setup brings a resume's proof at all (our clients' `reconnection`, or the reconnect
 * TwiML's `resumeToken`), before anything is looked up: only those wait in the restore queue.
 */
export function claimsResume(setup: SetupMessage): boolean {
  return setup.reconnection === true || setup.customParameters.resumeToken !== undefined;
}

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
export function socketNamed(sessionId: string, snapshot: SessionSnapshot): 'current' | 'earlier' | 'other' {
  if (matchesHash(sessionId, sessionKeyHashOf(snapshot))) return 'current';
  const earlier = (snapshot.context.earlierSessionKeyHashes ?? []).some((hash) => matchesHash(sessionId, hash));
  return earlier ? 'earlier' : 'other';
}

/** The hash of the session's current sessionId (snapshots stored before the hash was kept name the id itself). */
function sessionKeyHashOf(snapshot: { context: StoredContext }): string | null {
  const { context } = snapshot;
  return context.sessionKeyHash ?? (context.sessionId ? hashSecret(context.sessionId) : null);
}
