// INSPECT=1: relay every actor's events to the Stately inspector (via @statelyai/inspect's
// local relay server), with keypad digits removed from events and context.
import { createWebSocketInspector } from '@statelyai/inspect';
import { createInspectorServer } from '@statelyai/inspect/server';
import type { InspectionEvent } from 'xstate';

function scrubDigits(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(scrubDigits);
  if (!value || typeof value !== 'object') return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = k === 'digit' || k === 'buffer' || k === 'digits' ? '[redacted]' : scrubDigits(v);
  return out;
}

export interface Inspector {
  inspect: (event: InspectionEvent) => void;
  stop(): void;
}

export function startInspector(port: number): Inspector {
  const server = createInspectorServer({ port, autoOpen: false });
  const inspector = createWebSocketInspector({
    url: `ws://localhost:${port}`,
    sanitizeEvent: (event) => scrubDigits(event) as typeof event,
    sanitizeContext: (context) => scrubDigits(context) as typeof context,
  });
  return {
    inspect: (event) => inspector.inspect.next?.(event),
    stop() {
      inspector.stop();
      server.stop();
    },
  };
}
