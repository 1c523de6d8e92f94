// The restore queue's turns (src/server/sessions/restore-queue.ts), counted in event-loop turns, not
// time: jobs run one at a time, each on a turn of its own, and while resume setups keep being read (a
// storm's burst) the next job waits for a turn that reads none, within a budget of turns.
import { setImmediate as nextTurn } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { MAX_BURST_TURNS, RestoreQueue } from '../src/server/sessions/restore-queue.js';

/** Counts event-loop turns from now on; `each` runs at the start of every counted turn. */
function turns(each: (turn: number) => boolean) {
  const state = { turn: 0, done: false };
  const running = (async () => {
    while (!state.done && each(state.turn)) {
      await nextTurn();
      state.turn++;
    }
  })();
  return { state, stop: async () => ((state.done = true), await running) };
}

describe('the restore queue', () => {
  it('runs jobs one at a time, in order, each on a later turn', async () => {
    const queue = new RestoreQueue();
    const clock = turns(() => true);
    const log: string[] = [];
    let running = 0;
    const job = (name: string) => async () => {
      running++;
      expect(running).toBe(1);
      log.push(`${name}@${clock.state.turn}`);
      await Promise.resolve();
      running--;
    };
    await Promise.all([queue.run(job('a')), queue.run(job('b')), queue.run(job('c'))]);
    await clock.stop();
    const at = log.map((entry) => Number(entry.split('@')[1]));
    expect(log.map((entry) => entry.split('@')[0])).toEqual(['a', 'b', 'c']);
    expect(at[1]).toBeGreaterThan(at[0]!);
    expect(at[2]).toBeGreaterThan(at[1]!);
  });

  it('holds the next job back while resume setups keep arriving, and runs it once a turn reads none', async () => {
    const queue = new RestoreQueue();
    const burst = 10;
    // A resume setup read on each of the first `burst` turns.
    const feed = turns((turn) => {
      if (turn < burst) queue.noteArrival();
      return true;
    });
    queue.noteArrival();
    let startedAt = -1;
    await queue.run(async () => {
      startedAt = feed.state.turn;
    });
    await feed.stop();
    expect(startedAt).toBeGreaterThanOrEqual(burst);
    expect(startedAt).toBeLessThanOrEqual(burst + 3);
  });

  it('holds a storm back no longer than its budget of turns in all; a storm after the queue ran dry has a new one', async () => {
    const queue = new RestoreQueue();
    const feed = turns(() => {
      queue.noteArrival(); // an endless stream
      return true;
    });
    const started: number[] = [];
    const job = async () => {
      started.push(feed.state.turn);
    };
    await Promise.all([queue.run(job), queue.run(job), queue.run(job)]);
    await feed.stop();
    expect(started[0]).toBeGreaterThanOrEqual(MAX_BURST_TURNS);
    expect(started[0]).toBeLessThanOrEqual(MAX_BURST_TURNS + 3);
    // The budget is spent: the next ones are not held back again while the stream goes on.
    expect(started[2]! - started[0]!).toBeLessThanOrEqual(4);

    // The queue ran dry; a later burst of 10 turns holds its first job back again.
    const burst = 10;
    const next = turns((turn) => {
      if (turn < burst) queue.noteArrival();
      return true;
    });
    let startedAt = -1;
    await queue.run(async () => {
      startedAt = next.state.turn;
    });
    await next.stop();
    expect(startedAt).toBeGreaterThanOrEqual(burst);
  });

  it('a stream that pauses for a turn now and then does not get a new budget while the queue is busy', async () => {
    const queue = new RestoreQueue();
    // Resume setups on 31 turns of every 32.
    const feed = turns((turn) => {
      if (turn % 32 !== 31) queue.noteArrival();
      return true;
    });
    const started: number[] = [];
    const job = async () => {
      started.push(feed.state.turn);
    };
    await Promise.all(Array.from({ length: 6 }, () => queue.run(job)));
    await feed.stop();
    // However the pauses fall, the six jobs are held back MAX_BURST_TURNS turns in all, plus a turn each.
    expect(started.at(-1)).toBeLessThanOrEqual(MAX_BURST_TURNS + 6 * 2 + 2);
  });

  it('does not hold a lone job back', async () => {
    const queue = new RestoreQueue();
    const clock = turns(() => true);
    queue.noteArrival(); // its own setup
    let startedAt = -1;
    await queue.run(async () => {
      startedAt = clock.state.turn;
    });
    await clock.stop();
    expect(startedAt).toBeLessThanOrEqual(3);
  });
});
