import pino, { type DestinationStream, type Logger } from 'pino';

export type { Logger };

/**
 * JSON logs; every session-scoped line carries callSid via child loggers. Digits are never logged.
 * `destination` defaults to stdout; tests pass a stream to inspect what would be written.
 */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  const options = {
    level,
    base: undefined,
    redact: { paths: ['digit', 'digits', '*.digit', '*.digits', 'buffer', '*.buffer'], censor: '[redacted]' },
  };
  return destination ? pino(options, destination) : pino(options);
}
