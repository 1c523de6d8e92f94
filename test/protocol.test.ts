// The wire protocol: inbound parsing (never throws, typed rejections) and outbound validation. Pure and
// fast (no server): these tests also drive `npm run test:mutation` (the client end to end is in
// call-client.test.ts).
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { MAX_INBOUND_FRAME_BYTES, inboundMessage, type OutboundMessage } from '../src/protocol/messages.js';
import { InvalidOutboundMessageError, parseInbound, serializeOutbound } from '../src/protocol/parse.js';
import { toSessionEvent } from '../src/server/relay-socket.js';

function accepted(frame: unknown) {
  const result = parseInbound(typeof frame === 'string' ? frame : JSON.stringify(frame));
  if (!result.ok) throw new Error(`expected ${JSON.stringify(frame)} to parse, got ${result.reason}: ${result.detail}`);
  return result.message;
}

function rejection(frame: string | Buffer) {
  const result = parseInbound(frame);
  if (result.ok) throw new Error(`expected a rejection, parsed ${JSON.stringify(result.message)}`);
  return result;
}

describe('parseInbound', () => {
  it('setup: full Twilio frame, and defaults for optional fields', () => {
    const full = {
      type: 'setup',
      sessionId: 'VX123',
      callSid: 'CA123',
      accountSid: 'AC123',
      parentCallSid: '',
      from: '+15550100001',
      to: '+15550100002',
      forwardedFrom: '+15550100003',
      callType: 'PSTN',
      callerName: 'Ada',
      direction: 'inbound',
      callStatus: 'RINGING',
      customParameters: { tenant: 'acme' },
    };
    expect(accepted(full)).toEqual(full);
    expect(accepted({ type: 'setup', sessionId: 'VX1', callSid: 'CA1', reconnection: true })).toEqual({
      type: 'setup',
      sessionId: 'VX1',
      callSid: 'CA1',
      accountSid: '',
      parentCallSid: '',
      from: '',
      to: '',
      forwardedFrom: '',
      callType: '',
      callerName: '',
      direction: '',
      callStatus: '',
      customParameters: {},
      reconnection: true,
    });
    expect(rejection(JSON.stringify({ type: 'setup', sessionId: '', callSid: 'CA1' })).reason).toBe('invalid');
    // Braces would move a call's Redis keys to different cluster slots; spaces have no place in an id.
    for (const callSid of ['}x', 'CA{1}', 'CA 1', 'x'.repeat(129)]) {
      expect(rejection(JSON.stringify({ type: 'setup', sessionId: 'VX1', callSid })).reason).toBe('invalid');
    }
    expect(accepted({ type: 'setup', sessionId: 'VX1', callSid: 'v2:T3Vd-c_x' })).toMatchObject({ callSid: 'v2:T3Vd-c_x' });
    expect(rejection(JSON.stringify({ type: 'setup', sessionId: 'VX1' })).reason).toBe('invalid');
    expect(rejection(JSON.stringify({ type: 'setup', sessionId: 'VX1', callSid: 'CA1', customParameters: { n: 1 } })).reason).toBe('invalid');
  });

  it('prompt: text kept verbatim, lang and last defaulted', () => {
    expect(accepted({ type: 'prompt', voicePrompt: '  Hello there ', lang: 'es-US', last: false })).toEqual({
      type: 'prompt',
      voicePrompt: '  Hello there ',
      lang: 'es-US',
      last: false,
    });
    expect(accepted({ type: 'prompt', voicePrompt: 'Hi' })).toEqual({ type: 'prompt', voicePrompt: 'Hi', lang: 'en-US', last: true });
    expect(rejection(JSON.stringify({ type: 'prompt', voicePrompt: 42 })).reason).toBe('invalid');
    expect(rejection(JSON.stringify({ type: 'prompt', voicePrompt: 'Hi', last: 'true' })).reason).toBe('invalid');
  });

  it('prompt frames of every shape parse exactly as the schema parses them (the common shape skips it)', () => {
    const value = fc.oneof(fc.string(), fc.boolean(), fc.integer(), fc.constant(null), fc.array(fc.string(), { maxLength: 2 }));
    const promptLike = fc.record(
      {
        type: fc.constantFrom('prompt', 'Prompt', 'dtmf'),
        voicePrompt: fc.oneof(fc.string(), value),
        lang: fc.oneof(fc.constantFrom('en-US', 'es-US'), value),
        last: fc.oneof(fc.boolean(), value),
        extra: value,
      },
      { requiredKeys: ['type'] },
    );
    fc.assert(
      fc.property(promptLike, (frame) => {
        const text = JSON.stringify(frame);
        const viaSchema = inboundMessage.safeParse(JSON.parse(text));
        const result = parseInbound(text);
        expect(result.ok).toBe(viaSchema.success);
        if (result.ok && viaSchema.success) expect(result.message).toEqual(viaSchema.data);
      }),
      { numRuns: 2000 },
    );
    // A `__proto__` key in the JSON is one key more: the schema decides, and drops it.
    const withProto = '{"type":"prompt","voicePrompt":"hi","lang":"en-US","last":true,"__proto__":{"polluted":1}}';
    expect(parseInbound(withProto)).toEqual({ ok: true, message: { type: 'prompt', voicePrompt: 'hi', lang: 'en-US', last: true } });
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('setup frames of every shape parse exactly as the schema parses them (the common shape skips it)', () => {
    const value = fc.oneof(fc.string(), fc.boolean(), fc.integer(), fc.constant(null), fc.array(fc.string(), { maxLength: 2 }), fc.constant({}));
    const text = fc.oneof(fc.string(), fc.constantFrom('+14155550100', 'AC123', 'inbound', 'RINGING'), value);
    const parameters = fc.oneof(
      fc.dictionary(fc.oneof(fc.string(), fc.constantFrom('resumeToken', 'callToken', 'constructor', 'toString')), fc.string(), { maxKeys: 4 }),
      fc.dictionary(fc.string(), value, { maxKeys: 3 }),
      value,
    );
    const setupLike = fc.record(
      {
        type: fc.constantFrom('setup', 'Setup', 'prompt'),
        sessionId: fc.oneof(fc.constantFrom('VX1', ''), text),
        callSid: fc.oneof(fc.constantFrom('CA123', 'v2:abc-1', 'CA{x}', 'CA 1', 'x'.repeat(129)), text),
        accountSid: text,
        parentCallSid: text,
        from: text,
        to: text,
        forwardedFrom: text,
        callType: text,
        callerName: text,
        direction: text,
        callStatus: text,
        customParameters: parameters,
        reconnection: fc.oneof(fc.boolean(), value),
        extra: value,
      },
      { requiredKeys: ['type'] },
    );
    fc.assert(
      fc.property(setupLike, (frame) => {
        const raw = JSON.stringify(frame);
        const viaSchema = inboundMessage.safeParse(JSON.parse(raw));
        const result = parseInbound(raw);
        expect(result.ok).toBe(viaSchema.success);
        // Strict: a key the schema leaves out (reconnection) is left out here too, not set to undefined.
        if (result.ok && viaSchema.success) expect(result.message).toStrictEqual(viaSchema.data);
      }),
      { numRuns: 3000 },
    );
    // Valid plain setups, every field optional but the three required ones: the fast path takes all of these.
    const plain = fc.record(
      {
        type: fc.constant('setup'),
        sessionId: fc.string({ minLength: 1, unit: 'binary' }),
        callSid: fc.stringMatching(/^[^\s{}]{1,128}$/),
        accountSid: fc.string({ unit: 'binary' }),
        parentCallSid: fc.string(),
        from: fc.string({ unit: 'binary' }),
        to: fc.string(),
        forwardedFrom: fc.string(),
        callType: fc.string(),
        callerName: fc.string({ unit: 'binary' }),
        direction: fc.string(),
        callStatus: fc.string(),
        customParameters: fc.dictionary(fc.string({ unit: 'binary' }), fc.string({ unit: 'binary' }), { maxKeys: 5 }),
        reconnection: fc.boolean(),
      },
      { requiredKeys: ['type', 'sessionId', 'callSid'] },
    );
    fc.assert(
      fc.property(plain, (frame) => {
        const raw = JSON.stringify(frame);
        const viaSchema = inboundMessage.safeParse(JSON.parse(raw));
        expect(viaSchema.success).toBe(true);
        expect(parseInbound(raw)).toStrictEqual({ ok: true, message: viaSchema.data });
      }),
      { numRuns: 3000 },
    );
    // `__proto__` among the custom parameters (an object value would set a prototype if assigned): the
    // schema decides, and nothing anywhere is polluted.
    const withProto = '{"type":"setup","sessionId":"VX1","callSid":"CA1","customParameters":{"__proto__":{"polluted":"yes"},"a":"b"}}';
    const viaSchema = inboundMessage.safeParse(JSON.parse(withProto));
    const result = parseInbound(withProto);
    expect(result.ok).toBe(viaSchema.success);
    if (result.ok && viaSchema.success) expect(result.message).toStrictEqual(viaSchema.data);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('dtmf: every keypad key, nothing else', () => {
    for (const digit of '0123456789*#ABCD') expect(accepted({ type: 'dtmf', digit })).toEqual({ type: 'dtmf', digit });
    for (const digit of ['E', '12', '', 'w', 1]) expect(rejection(JSON.stringify({ type: 'dtmf', digit })).reason).toBe('invalid');
  });

  it('interrupt: duration as a number or a numeric string, defaults when absent', () => {
    expect(accepted({ type: 'interrupt', utteranceUntilInterrupt: 'Hello, how', durationUntilInterruptMs: 850 })).toEqual({
      type: 'interrupt',
      utteranceUntilInterrupt: 'Hello, how',
      durationUntilInterruptMs: 850,
    });
    expect(accepted({ type: 'interrupt', utteranceUntilInterrupt: 'Hi', durationUntilInterruptMs: '1234' })).toMatchObject({
      durationUntilInterruptMs: 1234,
    });
    expect(accepted({ type: 'interrupt' })).toEqual({ type: 'interrupt', utteranceUntilInterrupt: '', durationUntilInterruptMs: 0 });
    expect(rejection(JSON.stringify({ type: 'interrupt', durationUntilInterruptMs: 'soon' })).reason).toBe('invalid');
    expect(rejection(JSON.stringify({ type: 'interrupt', durationUntilInterruptMs: -5 })).reason).toBe('invalid');
    expect(rejection(JSON.stringify({ type: 'interrupt', utteranceUntilInterrupt: 7 })).reason).toBe('invalid');
  });

  it('info and error', () => {
    expect(accepted({ type: 'info', name: 'roundTripDelayMs', value: 120 })).toEqual({ type: 'info', name: 'roundTripDelayMs', value: 120 });
    expect(accepted({ type: 'info', name: 'agentSpeaking', value: 'on' })).toEqual({ type: 'info', name: 'agentSpeaking', value: 'on' });
    expect(accepted({ type: 'error', description: 'Invalid message received' })).toEqual({
      type: 'error',
      description: 'Invalid message received',
    });
    expect(accepted({ type: 'error' })).toEqual({ type: 'error', description: '' });
    expect(rejection(JSON.stringify({ type: 'info', value: 1 })).reason).toBe('invalid');
  });

  it('garbage becomes a typed rejection and never throws', () => {
    expect(rejection('not json').reason).toBe('bad-json');
    expect(rejection('').reason).toBe('bad-json');
    expect(rejection(Buffer.from([0xff, 0xfe, 0x00, 0x80])).reason).toBe('bad-json');
    for (const json of ['null', '42', '"prompt"', '[]', '{}', '{"type":"bogus"}', '{"type":"text","token":"hi","last":true}']) {
      expect(rejection(json).reason).toBe('invalid');
    }
    // Binary frames carrying JSON are read as UTF-8 text.
    expect(parseInbound(Buffer.from(JSON.stringify({ type: 'dtmf', digit: '5' }))).ok).toBe(true);
  });

  it('frames over the size limit are dropped unparsed; frames just under it parse', () => {
    const frame = (len: number) => JSON.stringify({ type: 'prompt', voicePrompt: 'x'.repeat(len) });
    const overhead = frame(0).length;
    expect(parseInbound(frame(MAX_INBOUND_FRAME_BYTES - overhead)).ok).toBe(true);
    const over = rejection(frame(MAX_INBOUND_FRAME_BYTES - overhead + 1));
    expect(over.reason).toBe('oversize');
    expect(over.detail).toBe(`${MAX_INBOUND_FRAME_BYTES + 1} bytes > ${MAX_INBOUND_FRAME_BYTES}`);
    expect(rejection(frame(100 * 1024)).reason).toBe('oversize');
    // Size counts bytes, not characters.
    expect(rejection(JSON.stringify({ type: 'prompt', voicePrompt: 'é'.repeat(40 * 1024) })).reason).toBe('oversize');
  });

  it('maps frames to session events, key presses stamped with their time (info and error carry nothing for the session)', () => {
    const at = 1_700_000_000_000;
    expect(toSessionEvent(accepted({ type: 'prompt', voicePrompt: 'Hi', last: false }), at)).toEqual({
      type: 'PROMPT',
      text: 'Hi',
      lang: 'en-US',
      last: false,
    });
    expect(toSessionEvent(accepted({ type: 'interrupt', utteranceUntilInterrupt: 'Hel', durationUntilInterruptMs: '300' }), at)).toEqual({
      type: 'INTERRUPT',
      utterance: 'Hel',
      durationMs: 300,
    });
    expect(toSessionEvent(accepted({ type: 'dtmf', digit: '#' }), at)).toEqual({ type: 'DIGIT', digit: '#', at });
    expect(toSessionEvent(accepted({ type: 'info', name: 'x', value: 1 }), at)).toBeUndefined();
    expect(toSessionEvent(accepted({ type: 'error', description: 'x' }), at)).toBeUndefined();
  });
});

describe('serializeOutbound', () => {
  const roundTrip = (m: OutboundMessage) => JSON.parse(serializeOutbound(m)) as unknown;

  it('serialises every valid outbound type, tokens untrimmed', () => {
    const valid: OutboundMessage[] = [
      { type: 'text', token: '  Hello, ', last: false },
      { type: 'text', token: '', last: true },
      { type: 'text', token: 'Hola', last: true, lang: 'es-US', interruptible: false, preemptible: true },
      { type: 'play', source: 'https://example.test/hold.mp3', loop: 0, interruptible: true },
      { type: 'sendDigits', digits: '12w34#*' },
      { type: 'language', ttsLanguage: 'es-US', transcriptionLanguage: 'es-US' },
      { type: 'language', ttsLanguage: 'es-US' },
      { type: 'language', transcriptionLanguage: 'en-US' },
      { type: 'end' },
      { type: 'end', handoffData: JSON.stringify({ reason: 'caller asked for a person' }) },
    ];
    for (const m of valid) expect(roundTrip(m)).toEqual(m);
  });

  it('refuses what Twilio would drop (64107)', () => {
    const invalid: unknown[] = [
      { type: 'sendDigits', digits: 'abc' },
      { type: 'sendDigits', digits: '' },
      // Every character must be a digit, w, # or *: not only the first or the last one.
      { type: 'sendDigits', digits: '12; rm' },
      { type: 'sendDigits', digits: 'x12' },
      { type: 'language' },
      { type: 'language', ttsLanguage: '' },
      { type: 'text', last: true },
      { type: 'text', token: 'hi' },
      { type: 'text', token: 5, last: true },
      { type: 'play', source: 'not a url' },
      { type: 'play', source: 'https://example.test/a.mp3', loop: -1 },
      { type: 'end', handoffData: { reason: 'object, not a string' } },
      { type: 'error', description: 'not a type Twilio knows' },
      { type: 'prompt', voicePrompt: 'inbound type' },
    ];
    for (const m of invalid) {
      expect(() => serializeOutbound(m as OutboundMessage), JSON.stringify(m)).toThrow(InvalidOutboundMessageError);
    }
  });

  it('says why, under its own error name (what a log line shows)', () => {
    const thrown = (m: unknown): Error => {
      try {
        serializeOutbound(m as OutboundMessage);
      } catch (err) {
        return err as Error;
      }
      throw new Error(`${JSON.stringify(m)} was accepted`);
    };
    const digits = thrown({ type: 'sendDigits', digits: '12a' });
    expect(digits).toBeInstanceOf(InvalidOutboundMessageError);
    expect(digits.name).toBe('InvalidOutboundMessageError');
    expect(digits.message).toContain('digits may only contain 0-9, w, # and *');
    expect(thrown({ type: 'language' }).message).toContain('language needs ttsLanguage or transcriptionLanguage');
  });
});
