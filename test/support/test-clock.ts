// A manual clock for a server under test: its time stands still until the test moves it, so grace
// and keypad idle deadlines pass exactly when the test says and never on a slow machine's own. Only
// the server's own time runs on it (event stamps, deadline timers, an LLM request's timeout and its
// waits between retries: advancing it past OPENAI_TIMEOUT_MS while a request waits for its answer
// times that request out); sockets, the fake LLM and the stores keep real time. Timers due by the new time fire inside `advance`, earliest first, so
// the server has handled them when `advance` returns.
import type { Clock } from '../../src/clock.js';

interface Pending {
  due: number;
  fn: () => void;
}

export class TestClock implements Clock {
  private time: number;
  private nextId = 1;
  private readonly timers = new Map<number, Pending>();

  constructor(start = Date.now()) {
    this.time = start;
  }

  now(): number {
    return this.time;
  }

  setTimeout(fn: () => void, ms: number): number {
    const id = this.nextId++;
    this.timers.set(id, { due: this.time + Math.max(0, ms), fn });
    return id;
  }

  clearTimeout(handle: unknown): void {
    this.timers.delete(handle as number);
  }

  /** Timers waiting on this clock (e.g. 0 once a session's grace and keypad timers are gone). */
  get pending(): number {
    return this.timers.size;
  }

  /** Moves time forward by `ms`; every timer due by then (including ones those timers set) fires, in order. */
  advance(ms: number): void {
    const target = this.time + Math.max(0, ms);
    for (;;) {
      let next: [number, Pending] | undefined;
      for (const entry of this.timers) if (entry[1].due <= target && (!next || entry[1].due < next[1].due)) next = entry;
      if (!next) break;
      this.timers.delete(next[0]);
      this.time = Math.max(this.time, next[1].due);
      next[1].fn();
    }
    this.time = target;
  }

  /** Moves time forward to `at` (no-op when it is already past). */
  advanceTo(at: number): void {
    this.advance(at - this.time);
  }
}
