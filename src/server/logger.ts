import pino, { type Logger } from 'pino';

export type { Logger };

/** JSON logs; every session-scoped line carries callSid via child loggers. Digits are never logged. */
export function createLogger(level: string): Logger {
  return pino({
    level,
    base: undefined,
    redact: { paths: ['digit', 'digits', '*.digit', '*.digits', 'buffer', '*.buffer'], censor: '[redacted]' },
  });
}
