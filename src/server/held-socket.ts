// Stands in for a caller's socket while a resume is being claimed: the session's first words after a
// resume wait here until its claim is stored, so a racer that loses never says anything.
import type { OutboundMessage } from '../protocol/messages.js';
import type { SessionSocket } from './sessions/live-session.js';

export class HeldSocket implements SessionSocket {
  private readonly held: OutboundMessage[] = [];
  private closed = false;

  send(message: OutboundMessage): void {
    if (!this.closed) this.held.push(message);
  }

  /** The session let go of it (lost the claim): what it held is dropped. */
  close(): void {
    this.closed = true;
    this.held.length = 0;
  }

  /** Sends what was held, in order, to the socket the session now speaks on. */
  releaseTo(socket: SessionSocket): void {
    for (const message of this.held.splice(0)) socket.send(message);
  }
}
