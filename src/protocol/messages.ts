// ConversationRelay wire protocol (see ../shared/conversation-relay.md).
// Inbound frames are validated once here; everything downstream works with typed values.
import { z } from 'zod';

/** Frames larger than this are dropped unparsed: Twilio's own frames are far smaller. */
export const MAX_INBOUND_FRAME_BYTES = 64 * 1024;

const stringRecord = z.record(z.string(), z.string());

/** What a call id may look like, on the socket and in webhooks (see setupMessage.callSid). */
export const CALL_SID_PATTERN = /^[^\s{}]{1,128}$/;

export const setupMessage = z.object({
  type: z.literal('setup'),
  sessionId: z.string().min(1),
  /**
   * Twilio's `CA…`, Telnyx's `v2:…`: printable, no spaces, and no braces, which would change the Redis
   * hash tag that keeps a call's keys on one cluster slot.
   */
  callSid: z.string().regex(CALL_SID_PATTERN, 'callSid must be 1-128 printable characters without spaces or braces'),
  accountSid: z.string().default(''),
  parentCallSid: z.string().default(''),
  from: z.string().default(''),
  to: z.string().default(''),
  forwardedFrom: z.string().default(''),
  callType: z.string().default(''),
  callerName: z.string().default(''),
  direction: z.string().default(''),
  callStatus: z.string().default(''),
  customParameters: stringRecord.default({}),
  /** Non-Twilio clients ask to resume an existing session this way. */
  reconnection: z.boolean().optional(),
});

export const promptMessage = z.object({
  type: z.literal('prompt'),
  voicePrompt: z.string(),
  lang: z.string().default('en-US'),
  last: z.boolean().default(true),
});

export const dtmfDigit = z.enum(['0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '*', '#', 'A', 'B', 'C', 'D']);
export type DtmfDigit = z.infer<typeof dtmfDigit>;

export const dtmfMessage = z.object({
  type: z.literal('dtmf'),
  digit: dtmfDigit,
});

export const interruptMessage = z.object({
  type: z.literal('interrupt'),
  utteranceUntilInterrupt: z.string().default(''),
  // Twilio sometimes sends the duration as a numeric string.
  durationUntilInterruptMs: z.coerce.number().nonnegative().default(0),
});

export const infoMessage = z.object({
  type: z.literal('info'),
  name: z.string(),
  value: z.unknown(),
});

export const errorMessage = z.object({
  type: z.literal('error'),
  description: z.string().default(''),
});

export const inboundMessage = z.discriminatedUnion('type', [
  setupMessage,
  promptMessage,
  dtmfMessage,
  interruptMessage,
  infoMessage,
  errorMessage,
]);

export type SetupMessage = z.infer<typeof setupMessage>;
export type PromptMessage = z.infer<typeof promptMessage>;
export type DtmfMessage = z.infer<typeof dtmfMessage>;
export type InterruptMessage = z.infer<typeof interruptMessage>;
export type InfoMessage = z.infer<typeof infoMessage>;
export type ErrorMessage = z.infer<typeof errorMessage>;
export type InboundMessage = z.infer<typeof inboundMessage>;

// ---- server -> Twilio ----

export const textMessage = z.object({
  type: z.literal('text'),
  token: z.string(),
  last: z.boolean(),
  lang: z.string().min(1).optional(),
  interruptible: z.boolean().optional(),
  preemptible: z.boolean().optional(),
});

export const playMessage = z.object({
  type: z.literal('play'),
  source: z.url(),
  loop: z.number().int().nonnegative().optional(),
  interruptible: z.boolean().optional(),
  preemptible: z.boolean().optional(),
});

export const sendDigitsMessage = z.object({
  type: z.literal('sendDigits'),
  digits: z.string().regex(/^[0-9w#*]+$/, 'digits may only contain 0-9, w, # and *'),
});

export const languageMessage = z
  .object({
    type: z.literal('language'),
    ttsLanguage: z.string().min(1).optional(),
    transcriptionLanguage: z.string().min(1).optional(),
  })
  .refine((m) => m.ttsLanguage !== undefined || m.transcriptionLanguage !== undefined, {
    message: 'language needs ttsLanguage or transcriptionLanguage',
  });

export const endMessage = z.object({
  type: z.literal('end'),
  handoffData: z.string().optional(),
});

export const outboundMessage = z.union([textMessage, playMessage, sendDigitsMessage, languageMessage, endMessage]);

export type TextMessage = z.infer<typeof textMessage>;
export type PlayMessage = z.infer<typeof playMessage>;
export type SendDigitsMessage = z.infer<typeof sendDigitsMessage>;
export type LanguageMessage = z.infer<typeof languageMessage>;
export type EndMessage = z.infer<typeof endMessage>;
export type OutboundMessage = z.infer<typeof outboundMessage>;
