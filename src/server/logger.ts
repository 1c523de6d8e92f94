import pino, { type DestinationStream, type Logger } from 'pino';
import { redact } from './redaction.js';

export type { Logger };

/**
 * JSON logs; every session-scoped line carries callSid via child loggers. Every line's object goes
 * through the one redaction rule (redaction.ts), at any depth: no keypad digits or results, masked
 * numbers, no card-like runs in logged text.
 * `destination` defaults to stdout; tests pass a stream to inspect what would be written.
 */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  const options = {
    level,
    base: undefined,
    formatters: { log: (object: Record<string, unknown>) => redact(object) },
  };
  return destination ? pino(options, destination) : pino(options);
}
