// Time is an input. Everything that reads the time or waits for it goes through a Clock: the edges
// stamp events with `now()` and the deadline timers wait on it, so machines never read the time and
// tests can run it on fake timers or move it forward.

export interface Clock {
  /** Epoch milliseconds. */
  now(): number;
  /** Calls `fn` once `ms` have passed on this clock; the handle is for clearTimeout. */
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** Wall-clock time and Node timers, looked up at each call so vi.useFakeTimers() applies to them. */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};
