// INSPECT=1: relay every actor's events to the Stately inspector (via @statelyai/inspect's
// local relay server), under the one redaction rule (redaction.ts).
import { createWebSocketInspector } from '@statelyai/inspect';
import { createInspectorServer } from '@statelyai/inspect/server';
import type { InspectionEvent } from 'xstate';
import { redact, toPlainJson } from './redaction.js';

type Frame = { type: string; sessionId?: string };

/**
 * The whole frame is redacted, not only what the sanitizeEvent/sanitizeContext hooks see (an event
 * and a context): a finished collector's `snapshot.output` and an LLM actor's `snapshot.input` (the
 * history) carry keypad results too. A frame that is not JSON is cut to its type rather than sent as is.
 */
export function redactFrame<T extends Frame>(frame: T): T {
  const plain = toPlainJson(frame);
  return (plain === undefined ? { type: frame.type, sessionId: frame.sessionId } : redact(plain)) as T;
}

export interface Inspector {
  inspect: (event: InspectionEvent) => void;
  stop(): void;
}

export function startInspector(port: number): Inspector {
  const server = createInspectorServer({ port, autoOpen: false });
  const inspector = createWebSocketInspector({ url: `ws://localhost:${port}`, serialize: redactFrame });
  return {
    inspect: (event) => inspector.inspect.next?.(event),
    stop() {
      inspector.stop();
      server.stop();
    },
  };
}
