import { z } from 'zod';
import {
  CALL_SID_PATTERN,
  MAX_INBOUND_FRAME_BYTES,
  inboundMessage,
  outboundMessage,
  type InboundMessage,
  type OutboundMessage,
  type SetupMessage,
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
  // Every call starts with one, and a reconnect storm brings a thousand at once: Twilio's plain shape is
  // taken directly, as for prompts (in a storm the schema was half of a setup frame's whole handling).
  const setup = plainSetup(json);
  if (setup) return { ok: true, message: setup };
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

/** The setup's optional string fields: absent means '' (the schema's default). */
const SETUP_STRINGS = ['accountSid', 'parentCallSid', 'from', 'to', 'forwardedFrom', 'callType', 'callerName', 'direction', 'callStatus'] as const;
const SETUP_KEYS = new Set<string>(['type', 'sessionId', 'callSid', 'customParameters', 'reconnection', ...SETUP_STRINGS]);

/**
 * A setup frame with only the schema's keys, each of its type, as the schema would give it back (same
 * defaults); undefined for anything else, which the schema then judges. test/protocol.test.ts checks
 * the two agree on every frame it generates.
 */
function plainSetup(json: unknown): SetupMessage | undefined {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) return undefined;
  const frame = json as Record<string, unknown>;
  const { sessionId, callSid, customParameters, reconnection } = frame;
  if (frame.type !== 'setup' || typeof sessionId !== 'string' || sessionId === '') return undefined;
  if (typeof callSid !== 'string' || !CALL_SID_PATTERN.test(callSid)) return undefined;
  if (reconnection !== undefined && typeof reconnection !== 'boolean') return undefined;
  for (const key in frame) if (!SETUP_KEYS.has(key)) return undefined;
  const strings = {} as Record<(typeof SETUP_STRINGS)[number], string>;
  for (const key of SETUP_STRINGS) {
    const value = frame[key];
    if (value !== undefined && typeof value !== 'string') return undefined; // null too: the schema refuses it
    strings[key] = value ?? '';
  }
  const parameters = customParameters === undefined ? {} : customParameters;
  if (!isStringRecord(parameters)) return undefined;
  return { type: 'setup', sessionId, callSid, ...strings, customParameters: parameters, ...(reconnection === undefined ? {} : { reconnection }) };
}

/** A plain object of strings; not one with a `__proto__` key, which the schema copies differently. */
function isStringRecord(value: unknown): value is Record<string, string> {
  if (typeof value !== 'object' || value === null || Array.isArray(value) || Object.getPrototypeOf(value) !== Object.prototype) return false;
  if (Object.hasOwn(value, '__proto__')) return false;
  for (const key in value) if (typeof (value as Record<string, unknown>)[key] !== 'string') return false;
  return true;
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
