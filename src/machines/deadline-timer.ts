import { fromCallback } from 'xstate';

export interface DeadlineInput {
  /** Absolute epoch milliseconds at which `event` fires. */
  at: number;
  /** Event type sent to the parent when the deadline passes. */
  event: string;
}

/**
 * Fires `event` at an absolute time. Invoked (never `after`) because a restored snapshot
 * re-starts invoked callback actors with their persisted input, so a timer resumes at its
 * remaining time instead of restarting from zero or being lost.
 */
export const deadlineTimer = fromCallback<{ type: string }, DeadlineInput>(({ input, sendBack }) => {
  const handle = setTimeout(() => sendBack({ type: input.event }), Math.max(0, input.at - Date.now()));
  return () => clearTimeout(handle);
});
