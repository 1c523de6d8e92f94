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
    serializers: { err: serializeError },
  };
  return destination ? pino(options, destination) : pino(options);
}

/**
 * pino's error serializer without what clients attach to their errors: ioredis puts the failed
 * command and its arguments (a whole stored snapshot) on `command`, which would bypass redaction.
 */
function serializeError(err: unknown): unknown {
  const serialized = pino.stdSerializers.err(err as Error) as unknown as Record<string, unknown> | undefined;
  if (!serialized || typeof serialized !== 'object') return serialized;
  const { command: _command, args: _args, ...rest } = serialized;
  return rest;
}
