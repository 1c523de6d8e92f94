import { fromCallback } from 'xstate';
import { systemClock, type Clock } from '../clock.js';

export interface DeadlineInput {
  /** Absolute epoch milliseconds at which `event` fires. */
  at: number;
  /** Event type sent to the parent when the deadline passes. */
  event: string;
}

/** What the timer sends: the event, stamped with the clock's time when it fired (never before `at`). */
export interface DeadlineEvent {
  type: string;
  at: number;
}

/**
 * Fires `event` at an absolute time on `clock`. Invoked (never `after`) because a restored snapshot
 * re-starts invoked callback actors with their persisted input, so a timer resumes at its
 * remaining time instead of restarting from zero or being lost. The first check is always
 * asynchronous: a restored deadline that already passed fires after the restore's own events.
 */
export function createDeadlineTimer(clock: Clock = systemClock) {
  return fromCallback<{ type: string }, DeadlineInput>(({ input, sendBack }) => {
    let handle: unknown;
    const check = () => {
      const now = clock.now();
      // A timer may run a little early (timer granularity): wait out the rest instead of firing.
      if (now >= input.at) sendBack({ type: input.event, at: now } satisfies DeadlineEvent);
      else handle = clock.setTimeout(check, input.at - now);
    };
    handle = clock.setTimeout(check, Math.max(0, input.at - clock.now()));
    return () => clock.clearTimeout(handle);
  });
}

/** The deadline timer on the system clock (what the machines use unless a clock is provided). */
export const deadlineTimer = createDeadlineTimer();
