// A session actor this instance holds, with what binds it to its socket and to the store.
import type { Actor, SnapshotFrom } from 'xstate';
import type { Logger } from '../logger.js';
import type { OutboundMessage } from '../../protocol/messages.js';
import type { SessionMachine } from '../../machines/session.js';
import type { CoalescingWriter, Lease } from '../../stores/index.js';

export type SessionSnapshot = SnapshotFrom<SessionMachine>;

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
