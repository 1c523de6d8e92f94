// Setups that claim a resume, handled a few per event-loop turn instead of as they are read. In a
// reconnect storm a thousand arrive at once, and the frames of brand-new calls sent just after them
// are read behind them; handling each (parsing it, starting its resume) as it was read made those
// frames wait for all of it, about two thirds of the time it took to read the burst. Held here, a
// burst is read at the cost of its reads alone, and its setups are handled in the turns after, a
// batch per turn, so the new calls' frames read meanwhile are handled between the batches.
import { setImmediate } from 'node:timers';

/** Setups handled per turn: a batch takes about a millisecond. */
export const SETUPS_PER_TURN = 64;

/** A socket whose first frame was held: `takeHeld` handles what it held, in order. */
export interface HeldSetup {
  takeHeld(): void;
}

export class SetupBacklog {
  private waiting: HeldSetup[] = [];
  private scheduled = false;

  constructor(private readonly perTurn = SETUPS_PER_TURN) {}

  /** How many sockets wait for their turn. */
  get size(): number {
    return this.waiting.length;
  }

  add(socket: HeldSetup): void {
    this.waiting.push(socket);
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(takeBatch, this);
  }

  /** The next batch, in arrival order; the rest on the next turn. */
  takeBatch(): void {
    this.scheduled = false;
    const batch = this.waiting.length <= this.perTurn ? this.waiting : this.waiting.slice(0, this.perTurn);
    this.waiting = batch === this.waiting ? [] : this.waiting.slice(this.perTurn);
    if (this.waiting.length > 0) {
      this.scheduled = true;
      setImmediate(takeBatch, this);
    }
    for (const socket of batch) socket.takeHeld();
  }
}

function takeBatch(backlog: SetupBacklog): void {
  backlog.takeBatch();
}
