// The restore queue: restores (and resumes' look-ups) run one at a time, each on a fresh event-loop
// turn. One at a time: a restore is a store round trip plus a short actor start, and anything else on
// the event loop lands inside that round trip, so in a storm running them in turn keeps each one short
// (the storm as a whole takes about as long). A fresh turn each: with a store that answers at once
// (memory, SQLite) they would otherwise run back to back in microtasks, and the frames of calls
// already talking (a new call's prompt) would wait for all of them. In a reconnect storm the
// resumes' setup frames arrive as one burst spread over a few turns of socket reads, and the frames
// of brand-new calls sent just after it are read behind it; a restore run between those reads pushed
// them back. So while resume setups keep arriving (read, or handed on by the setup backlog a batch
// per turn), the next job waits for a turn with none. Within a budget of turns per storm: it is spent
// across the storm and refilled only once the queue has run dry, so a stream of resumes (or a storm
// that never pauses) holds restores back no longer than that in all.
import pLimit from 'p-limit';
import { setImmediate as nextTurn } from 'node:timers/promises';

/** Turns one storm may hold jobs back in all: the backlog hands a 1,000-call storm's setups on in 16. */
export const MAX_BURST_TURNS = 32;

export class RestoreQueue {
  private readonly limit = pLimit(1);
  /** A setup claiming a resume came to be handled since the queue last looked. */
  private arrived = false;
  /** Turns the current storm may still hold jobs back. */
  private budget = MAX_BURST_TURNS;

  /** A setup claiming a resume came to be handled (read, or handed on by the setup backlog): it will queue here. */
  noteArrival(): void {
    this.arrived = true;
  }

  /** Runs `job` in its turn: after the jobs ahead of it, on a turn of its own, once resume setups stop coming. */
  run<T>(job: () => Promise<T>): Promise<T> {
    // A job queued on an idle queue starts a storm (or is a lone one): the budget is whole again.
    if (this.limit.activeCount === 0 && this.limit.pendingCount === 0) this.budget = MAX_BURST_TURNS;
    return this.limit(async () => {
      await nextTurn();
      while (this.arrived && this.budget > 0) {
        this.arrived = false;
        this.budget--;
        await nextTurn();
      }
      this.arrived = false;
      return job();
    });
  }
}
