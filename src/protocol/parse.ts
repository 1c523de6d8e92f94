import { z } from 'zod';
import {
  MAX_INBOUND_FRAME_BYTES,
  inboundMessage,
  outboundMessage,
  type InboundMessage,
  type OutboundMessage,
} from './messages.js';

export type ParseResult =
  | { ok: true; message: InboundMessage }
  | { ok: false; reason: 'oversize' | 'bad-json' | 'invalid'; detail: string };

/** Parses one inbound WebSocket frame. Never throws: garbage becomes a typed rejection. */
export function parseInbound(raw: string | Buffer): ParseResult {
  const size = typeof raw === 'string' ? Buffer.byteLength(raw) : raw.length;
  if (size > MAX_INBOUND_FRAME_BYTES) {
    return { ok: false, reason: 'oversize', detail: `${size} bytes > ${MAX_INBOUND_FRAME_BYTES}` };
  }
  let json: unknown;
  try {
    json = JSON.parse(typeof raw === 'string' ? raw : raw.toString('utf8'));
  } catch (err) {
    return { ok: false, reason: 'bad-json', detail: (err as Error).message };
  }
  // A caller's utterances are nearly every frame: a prompt of exactly the schema's shape is taken as
  // it is (what the schema would give back), anything else goes through the schema.
  if (isPlainPrompt(json)) return { ok: true, message: { type: 'prompt', voicePrompt: json.voicePrompt, lang: json.lang, last: json.last } };
  const parsed = inboundMessage.safeParse(json);
  if (!parsed.success) {
    return { ok: false, reason: 'invalid', detail: z.prettifyError(parsed.error) };
  }
  return { ok: true, message: parsed.data };
}

/** `{ type: 'prompt', voicePrompt, lang, last }` with those types and no other key. */
function isPlainPrompt(json: unknown): json is { type: 'prompt'; voicePrompt: string; lang: string; last: boolean } {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) return false;
  const frame = json as Record<string, unknown>;
  return (
    frame.type === 'prompt' &&
    typeof frame.voicePrompt === 'string' &&
    typeof frame.lang === 'string' &&
    typeof frame.last === 'boolean' &&
    Object.keys(frame).length === 4
  );
}

export class InvalidOutboundMessageError extends Error {
  override name = 'InvalidOutboundMessageError';
}

/**
 * Validates an outbound message before it goes on the wire: Twilio drops invalid ones (64107)
 * and hangs up after ten in a row, so a bug here must fail loudly on our side instead.
 */
export function serializeOutbound(message: OutboundMessage): string {
  // Streamed tokens are nearly every frame: their plain shape is checked directly, the rest by the schema.
  if (isPlainText(message)) return JSON.stringify(message);
  const parsed = outboundMessage.safeParse(message);
  if (!parsed.success) {
    throw new InvalidOutboundMessageError(z.prettifyError(parsed.error));
  }
  return JSON.stringify(parsed.data);
}

/** `{ type: 'text', token, last }` and nothing else: exactly what the schema would let through unchanged. */
function isPlainText(message: OutboundMessage): boolean {
  return message.type === 'text' && typeof message.token === 'string' && typeof message.last === 'boolean' && Object.keys(message).length === 3;
}
