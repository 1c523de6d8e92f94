// The one redaction rule (src/server/redaction.ts) as a pure function, and the logger that applies it.
import { Writable } from 'node:stream';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { REDACTED, maskDigitRuns, maskNumber, redact } from '../src/server/redaction.js';
import { redactFrame } from '../src/server/inspector.js';
import { createLogger } from '../src/server/logger.js';

const phoneResult = { status: 'ok', kind: 'phoneNumber', value: '5550001234' };

describe('keypad input', () => {
  it('hides a DIGIT event, a collector buffer and sendDigits digits, at any depth', () => {
    expect(redact({ type: 'DIGIT', digit: '7' })).toEqual({ type: 'DIGIT', digit: REDACTED });
    const snapshot = { children: { dtmf: { snapshot: { context: { buffer: '555000', attempts: 1, input: { kind: 'phoneNumber' } } } } } };
    expect(redact(snapshot).children.dtmf.snapshot.context).toEqual({ buffer: REDACTED, attempts: 1, input: { kind: 'phoneNumber' } });
    expect(redact([{ type: 'sendDigits', digits: '1234w#' }])).toEqual([{ type: 'sendDigits', digits: REDACTED }]);
  });

  it.each([
    ['phoneNumber', '5550001234'],
    ['dateOfBirth', '1990-07-04'],
    ['digits', '4321'],
    ['language', 'es-US'],
  ])("hides the value of a %s result wherever it is: the collector's result, its output, the done event", (kind, value) => {
    const result = { status: 'ok', kind, value };
    const redacted = { status: 'ok', kind, value: REDACTED };
    expect(redact({ context: { result } })).toEqual({ context: { result: redacted } });
    expect(redact({ status: 'done', output: result })).toEqual({ status: 'done', output: redacted });
    expect(redact({ type: 'xstate.done.actor.dtmf', output: result })).toEqual({ type: 'xstate.done.actor.dtmf', output: redacted });
  });

  it('keeps what a failed result says (it holds no input) and objects that only look alike; any kind is a keypad result', () => {
    const failed = { status: 'failed', kind: 'phoneNumber', reason: 'timeout' };
    expect(redact({ output: failed })).toEqual({ output: failed });
    // An info frame's value, the state value: not keypad results.
    expect(redact({ name: 'agentSpeaking', value: 'on' })).toEqual({ name: 'agentSpeaking', value: 'on' });
    // An agent defines its own entry kinds (a PIN, a member number): every ok result's value is input.
    expect(redact({ status: 'ok', kind: 'memberPin', value: '123' })).toEqual({ status: 'ok', kind: 'memberPin', value: '[redacted]' });
  });
});

describe('history', () => {
  const history = [
    { role: 'user', content: 'I will use the keypad' },
    { role: 'assistant', content: '', toolCalls: [{ id: 'call_1', name: 'collect_digits', arguments: '{"kind":"phoneNumber"}' }] },
    { role: 'tool', toolCallId: 'call_1', content: JSON.stringify(phoneResult) },
    { role: 'assistant', content: '', toolCalls: [{ id: 'call_2', name: 'collect_digits', arguments: '{"kind":"digits"}' }] },
    { role: 'tool', toolCallId: 'call_2', content: 'not json 5550001234' },
    { role: 'assistant', content: '', toolCalls: [{ id: 'call_3', name: 'switch_language', arguments: '{"language":"es-US"}' }] },
    { role: 'tool', toolCallId: 'call_3', content: 'language switched to es-US' },
  ];

  it('hides the value of a keypad tool result but keeps its status and kind', () => {
    const out = redact({ context: { history } }).context.history;
    expect(JSON.parse(out[2]!.content)).toEqual({ status: 'ok', kind: 'phoneNumber', value: REDACTED });
    expect(out[4]!.content).toBe(REDACTED); // answers collect_digits but is not a result: hidden whole
    expect(out[6]!.content).toBe('language switched to es-US');
    expect(out[1]).toEqual(history[1]);
  });

  it('knows a keypad result by its content too, without the call that asked for it (e.g. an LLM actor input cut short)', () => {
    const turns = [{ role: 'tool', toolCallId: 'call_9', content: JSON.stringify({ status: 'ok', kind: 'digits', value: '98765' }) }];
    expect(JSON.stringify(redact({ input: { turns } }))).not.toContain('98765');
  });
});

describe('card-like digit runs in what was said', () => {
  it.each([
    ['my card is 4111 1111 1111 1111 thanks', 'my card is **** **** **** **** thanks'],
    ['4111-1111-1111-1111', '****-****-****-****'],
    ['call me at 555 000 1234 or 555-000-4321', 'call me at *** *** **** or ***-***-****'],
    ['account 123456', 'account ******'],
    ['room 12345, floor 3, 2 people', 'room 12345, floor 3, 2 people'],
    ['Please enter your 10-digit phone number.', 'Please enter your 10-digit phone number.'],
  ])('%s', (said, shown) => {
    expect(maskDigitRuns(said)).toBe(shown);
    expect(redact({ role: 'user', content: said })).toEqual({ role: 'user', content: shown });
  });

  it('applies to prompts, LLM deltas, replies in flight and interrupts; not to ids and timestamps', () => {
    const card = '4111 1111 1111 1111';
    const frames = [
      { type: 'PROMPT', text: `it is ${card}`, lang: 'en-US', last: true },
      { type: 'LLM.DELTA', text: card },
      { type: 'LLM.DELTAS', texts: ['Your card ', card, ' is on file.'] },
      { context: { reply: { text: card }, undelivered: card } },
      { type: 'INTERRUPT', utterance: card, durationMs: 1200 },
      { type: 'prompt', voicePrompt: card },
    ];
    expect(JSON.stringify(redact(frames))).not.toContain('4111');
    const ids = { callSid: 'CA0123456789abcdef', createdAt: '1712345678901', sessionId: 'VX99999999' };
    expect(redact(ids)).toEqual(ids);
  });
});

describe("the call's numbers", () => {
  it('keep only their last four characters', () => {
    expect(redact({ from: '+15559876543', to: '+15550100002', callSid: 'CA1' })).toEqual({ from: '********6543', to: '********0002', callSid: 'CA1' });
    expect(maskNumber('123')).toBe('****');
  });
});

describe('as a function', () => {
  it('is idempotent, keeps the shape and never changes its input (any JSON)', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        const before = JSON.stringify(value);
        const once = redact(value);
        expect(JSON.stringify(value)).toBe(before);
        expect(redact(once)).toEqual(once);
      }),
      { numRuns: 300 },
    );
  });

  it('hides every keypad digit typed, whatever else surrounds it', () => {
    const digits = fc.string({ unit: fc.constantFrom(...'0123456789'), minLength: 6, maxLength: 12 });
    fc.assert(
      fc.property(digits, fc.jsonValue(), fc.constantFrom('phoneNumber', 'digits'), (typed, noise, kind) => {
        const result = { status: 'ok', kind, value: typed };
        const data = {
          noise,
          event: { type: 'xstate.done.actor.dtmf', output: result },
          context: { history: [{ role: 'tool', toolCallId: 'c', content: JSON.stringify(result) }], dtmf: { buffer: typed } },
          said: { role: 'user', content: `it is ${typed.split('').join(' ')}` },
        };
        const shown = JSON.stringify(redact(data));
        const noiseShown = JSON.stringify(redact(noise));
        // Whatever the noise itself shows is not the redaction's doing.
        if (!noiseShown.includes(typed)) expect(shown).not.toContain(typed);
      }),
      { numRuns: 200 },
    );
  });

  it('passes non-plain objects through (an Error keeps its message and stack in a log line)', () => {
    const err = new Error('boom');
    expect(redact({ err }).err).toBe(err);
  });
});

describe('inspector frames', () => {
  it('are redacted whole: snapshot output and actor input too, and a frame that is not JSON is cut to its type', () => {
    const frame = {
      type: '@xstate.snapshot',
      sessionId: 'x:3',
      event: { type: 'DIGIT', digit: '4' },
      snapshot: { status: 'done', output: phoneResult, context: { buffer: '5550001234' }, input: { turns: [{ role: 'user', content: '5550001234' }] } },
    };
    expect(JSON.stringify(redactFrame(frame))).not.toMatch(/5550001234|"digit":"4"/);
    const cyclic: { type: string; sessionId: string; self?: unknown; digit: string } = { type: '@xstate.event', sessionId: 'x:1', digit: '5' };
    cyclic.self = cyclic;
    expect(redactFrame(cyclic)).toEqual({ type: '@xstate.event', sessionId: 'x:1' });
  });
});

describe('logger', () => {
  it('writes no keypad input or numbers from any logged object, and keeps errors readable', () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer | string, _encoding, done) {
        lines.push(chunk.toString());
        done();
      },
    });
    const log = createLogger('trace', sink).child({ callSid: 'CAabc' });
    log.info({ event: { type: 'DIGIT', digit: '9' }, snapshot: { context: { from: '+15559876543', history: [{ role: 'tool', toolCallId: 'c', content: JSON.stringify(phoneResult) }] } } }, 'debugging');
    log.debug({ digits: '1234', said: { role: 'user', content: 'card 4111 1111 1111 1111' } }, 'more');
    log.error({ err: new Error('store down') }, 'write failed');
    // ioredis puts the failed command on its errors: the arguments are a whole stored snapshot.
    const replyError = Object.assign(new Error('OOM command not allowed'), {
      command: { name: 'evalsha', args: ['relay:{CAabc}:rec', '{"history":[{"content":"card 4111 1111 1111 1111"}]}'] },
    });
    log.error({ err: replyError }, 'redis write failed');
    const out = lines.join('');
    expect(out).not.toMatch(/"digit":"9"|1234|4111|9876543|5550001234/);
    const entries = lines.map((l) => JSON.parse(l) as { callSid: string; msg: string; err?: { message: string; stack: string } });
    expect(entries.map((e) => [e.callSid, e.msg])).toEqual([
      ['CAabc', 'debugging'],
      ['CAabc', 'more'],
      ['CAabc', 'write failed'],
      ['CAabc', 'redis write failed'],
    ]);
    expect(entries[3]!.err).toMatchObject({ message: 'OOM command not allowed' });
    expect(entries[2]!.err).toMatchObject({ message: 'store down', stack: expect.stringContaining('Error: store down') });
    expect(out).toContain('********6543');
  });
});

describe('tool arguments', () => {
  it('a card number the model passes to a tool is masked in the raw arguments, the parsed args and the tool input', () => {
    const card = '4111111111111111';
    const history = [{ role: 'assistant', content: '', toolCalls: [{ id: 'call_pay', name: 'take_payment', arguments: `{"cardNumber":"${card}","amount":"12"}` }] }];
    const out = JSON.stringify(
      redact({ context: { history, toolCall: { id: 'call_pay', name: 'take_payment', args: { cardNumber: card, nested: [{ card }] } } }, children: { tool: { snapshot: { input: { call: { args: { cardNumber: card } } } } } } }),
    );
    expect(out).not.toContain(card);
    expect(out).toContain('take_payment');
    expect(out).toContain('"amount\\":\\"12');
  });
});
