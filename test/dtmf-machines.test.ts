// The DTMF child machines on fake timers: time only moves when a test advances it, so every idle
// deadline is checked to the millisecond and nothing waits on the real clock.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { assign, createActor, sendTo, setup, type Actor, type Snapshot } from 'xstate';
import { dtmfMachines, parseDateOfBirth, type DtmfSrc } from '../src/machines/dtmf/index.js';
import type { CollectorContext } from '../src/machines/dtmf/collector.js';
import type { BuiltInDtmfKind, DtmfDigit, DtmfEvent, DtmfInput, DtmfKind, DtmfResult, DtmfSayEvent } from '../src/machines/dtmf/types.js';

interface HarnessContext {
  dtmfInput: DtmfInput;
  said: string[];
  result: DtmfResult | null;
}

/** A stand-in for the session machine: invokes one DTMF machine by string src with id 'dtmf'. */
function harnessFor(src: DtmfSrc) {
  return setup({
    types: {
      context: {} as HarnessContext,
      input: {} as DtmfInput,
      events: {} as DtmfEvent | DtmfSayEvent,
    },
    actors: dtmfMachines,
    actions: {
      forwardToDtmf: sendTo('dtmf', ({ event }) => event),
      recordSay: assign({
        said: ({ context, event }) => (event.type === 'DTMF.SAY' ? [...context.said, event.text] : context.said),
      }),
    },
  }).createMachine({
    id: `harness-${src}`,
    context: ({ input }) => ({ dtmfInput: input, said: [], result: null }),
    initial: 'entering',
    states: {
      entering: {
        invoke: {
          id: 'dtmf',
          src,
          input: ({ context }) => context.dtmfInput,
          onDone: { target: 'finished', actions: assign({ result: ({ event }) => event.output }) },
        },
        on: {
          DIGIT: { actions: 'forwardToDtmf' },
          CANCEL: { actions: 'forwardToDtmf' },
          PAUSE: { actions: 'forwardToDtmf' },
          CONTINUE: { actions: 'forwardToDtmf' },
          'DTMF.SAY': { actions: 'recordSay' },
        },
      },
      finished: { type: 'final' },
    },
  });
}

type Harness = ReturnType<typeof harnessFor>;

/** The machine of each kind of entry, as the session machine's keypad states invoke them. */
const SRC_OF: Record<BuiltInDtmfKind, DtmfSrc> = {
  language: 'languageMenu',
  phoneNumber: 'phoneNumber',
  dateOfBirth: 'dateOfBirth',
  digits: 'digits',
};

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

/** Starts an entry now (fake time), as the session does when the model asks for one. */
function start(input: Omit<DtmfInput, 'startedAt'>): Actor<Harness> {
  return createActor(harnessFor(SRC_OF[input.kind as BuiltInDtmfKind]), { input: { ...input, startedAt: Date.now() } }).start();
}

/** Key presses stamped with the current (fake) time, as the socket edge stamps them. */
function press(actor: Actor<Harness>, keys: string): void {
  for (const digit of keys) actor.send({ type: 'DIGIT', digit: digit as DtmfDigit, at: Date.now() });
}

function texts(actor: Actor<Harness>): string[] {
  return actor.getSnapshot().context.said;
}

function resultOf(actor: Actor<Harness>): DtmfResult | null {
  return actor.getSnapshot().context.result;
}

function dtmfContext(actor: Actor<Harness>): CollectorContext {
  const child = actor.getSnapshot().children.dtmf;
  if (!child) throw new Error('dtmf child is not running');
  return child.getSnapshot().context;
}

function restore(persisted: Snapshot<unknown>): Actor<Harness> {
  const snapshot = JSON.parse(JSON.stringify(persisted)) as Snapshot<unknown> & { context: HarnessContext };
  const input = snapshot.context.dtmfInput; // required by the types, unused on restore
  return createActor(harnessFor(SRC_OF[input.kind as BuiltInDtmfKind]), { snapshot, input }).start();
}

const LONG_IDLE = 60_000;
const NO_INPUT = /didn't get any input/;

describe('language menu', () => {
  it('speaks the bilingual prompt and maps 1 / 2 to en-US / es-US', () => {
    for (const [key, value] of [
      ['1', 'en-US'],
      ['2', 'es-US'],
    ] as const) {
      const actor = start({ kind: 'language', idleMs: LONG_IDLE });
      expect(texts(actor)).toEqual(['For English, press 1. Para español, oprima 2.']);
      press(actor, key);
      expect(resultOf(actor)).toEqual({ status: 'ok', kind: 'language', value });
      expect(actor.getSnapshot().status).toBe('done');
    }
  });

  it('re-prompts on another key, then accepts a valid one', () => {
    const actor = start({ kind: 'language', idleMs: LONG_IDLE });
    press(actor, 'A*3');
    expect(texts(actor)).toHaveLength(2);
    expect(texts(actor)[1]).toMatch(/isn't an option.*For English, press 1/);
    press(actor, '2');
    expect(resultOf(actor)).toEqual({ status: 'ok', kind: 'language', value: 'es-US' });
  });

  it('fails with too-many-attempts after maxAttempts invalid keys', () => {
    const actor = start({ kind: 'language', idleMs: LONG_IDLE, maxAttempts: 3 });
    press(actor, '9');
    press(actor, '#');
    expect(resultOf(actor)).toBeNull();
    press(actor, '0');
    expect(resultOf(actor)).toEqual({ status: 'failed', kind: 'language', reason: 'too-many-attempts' });
    // Initial prompt + one re-prompt per failed attempt except the last.
    expect(texts(actor)).toHaveLength(3);
  });
});

describe('phone number', () => {
  it('auto-completes at 10 digits', () => {
    const actor = start({ kind: 'phoneNumber', idleMs: LONG_IDLE });
    expect(texts(actor)[0]).toMatch(/10-digit phone number/);
    press(actor, '555012345');
    expect(resultOf(actor)).toBeNull();
    press(actor, '6');
    expect(resultOf(actor)).toEqual({ status: 'ok', kind: 'phoneNumber', value: '5550123456' });
    expect(texts(actor)).toHaveLength(1);
  });

  it('treats an early # as invalid and re-prompts with a cleared buffer', () => {
    const actor = start({ kind: 'phoneNumber', idleMs: LONG_IDLE });
    press(actor, '55501#');
    expect(texts(actor)[1]).toMatch(/not a full 10-digit number.*Please enter/);
    expect(dtmfContext(actor)).toMatchObject({ buffer: '', attempts: 1 });
    press(actor, '2125550199');
    expect(resultOf(actor)).toEqual({ status: 'ok', kind: 'phoneNumber', value: '2125550199' });
  });

  it('* clears the buffer and A-D are ignored', () => {
    const actor = start({ kind: 'phoneNumber', idleMs: LONG_IDLE });
    press(actor, '999*');
    expect(dtmfContext(actor).buffer).toBe('');
    press(actor, 'A21B25C55D0199');
    expect(resultOf(actor)).toEqual({ status: 'ok', kind: 'phoneNumber', value: '2125550199' });
    expect(texts(actor)).toHaveLength(1);
  });

  it('speaks Spanish prompts when the language starts with es', () => {
    const actor = start({ kind: 'phoneNumber', idleMs: LONG_IDLE, language: 'es-US' });
    press(actor, '1#');
    expect(texts(actor)[0]).toMatch(/^Por favor, marque su número de teléfono/);
    expect(texts(actor)[1]).toMatch(/^Ese no es un número completo/);
  });

  it('CANCEL ends with failed / cancelled', () => {
    const actor = start({ kind: 'phoneNumber', idleMs: LONG_IDLE });
    press(actor, '555');
    actor.send({ type: 'CANCEL' });
    expect(resultOf(actor)).toEqual({ status: 'failed', kind: 'phoneNumber', reason: 'cancelled' });
  });
});

describe('date of birth', () => {
  it('accepts MMDDYYYY and outputs ISO', () => {
    const actor = start({ kind: 'dateOfBirth', idleMs: LONG_IDLE });
    press(actor, '02291996');
    expect(resultOf(actor)).toEqual({ status: 'ok', kind: 'dateOfBirth', value: '1996-02-29' });
  });

  it('re-prompts on an impossible date and fails after maxAttempts', () => {
    const actor = start({ kind: 'dateOfBirth', idleMs: LONG_IDLE, maxAttempts: 2 });
    press(actor, '02301990');
    expect(texts(actor)[1]).toMatch(/^That isn't a valid date\. Please enter your date of birth/);
    press(actor, '01011850');
    expect(resultOf(actor)).toEqual({ status: 'failed', kind: 'dateOfBirth', reason: 'too-many-attempts' });
  });

  // Noon local time so the local calendar date is unambiguous.
  const today = new Date(2024, 5, 15, 12);
  it.each([
    ['02292024', { ok: true, iso: '2024-02-29' }], // leap year
    ['02291900', { ok: false, reason: 'not-a-date' }], // 1900 is not a leap year
    ['02292000', { ok: true, iso: '2000-02-29' }], // 2000 is
    ['02291999', { ok: false, reason: 'not-a-date' }],
    ['02301990', { ok: false, reason: 'not-a-date' }],
    ['04311990', { ok: false, reason: 'not-a-date' }],
    ['12311999', { ok: true, iso: '1999-12-31' }],
    ['13011990', { ok: false, reason: 'not-a-date' }],
    ['00101990', { ok: false, reason: 'not-a-date' }],
    ['01001990', { ok: false, reason: 'not-a-date' }],
    ['01011900', { ok: true, iso: '1900-01-01' }],
    ['12311899', { ok: false, reason: 'before-1900' }],
    ['06142024', { ok: true, iso: '2024-06-14' }], // yesterday
    ['06152024', { ok: false, reason: 'not-in-past' }], // today
    ['06162024', { ok: false, reason: 'not-in-past' }],
    ['01012099', { ok: false, reason: 'not-in-past' }],
    ['0101199', { ok: false, reason: 'wrong-length' }],
    ['010119900', { ok: false, reason: 'wrong-length' }],
    ['0101199#', { ok: false, reason: 'wrong-length' }],
  ])('parseDateOfBirth(%s)', (digits, expected) => {
    expect(parseDateOfBirth(digits, today)).toEqual(expected);
  });
});

describe('digits', () => {
  it('completes on # within bounds and uses the label in prompts', () => {
    const actor = start({ kind: 'digits', idleMs: LONG_IDLE, label: 'PIN', minLength: 4, maxLength: 6 });
    expect(texts(actor)[0]).toBe('Please enter your PIN, then press pound.');
    press(actor, '12#');
    expect(texts(actor)[1]).toBe(
      'That was too short. Your PIN has at least 4 digits. Please enter your PIN, then press pound.',
    );
    press(actor, '1234#');
    expect(resultOf(actor)).toEqual({ status: 'ok', kind: 'digits', value: '1234' });
  });

  it('auto-completes at maxLength (default 12)', () => {
    const short = start({ kind: 'digits', idleMs: LONG_IDLE, minLength: 4, maxLength: 6 });
    press(short, '123456');
    expect(resultOf(short)).toEqual({ status: 'ok', kind: 'digits', value: '123456' });

    const defaults = start({ kind: 'digits', idleMs: LONG_IDLE, label: 'account number' });
    press(defaults, '123#');
    expect(texts(defaults)[1]).toMatch(/at least 4 digits/);
    press(defaults, '12345678901');
    expect(resultOf(defaults)).toBeNull();
    press(defaults, '2');
    expect(resultOf(defaults)).toEqual({ status: 'ok', kind: 'digits', value: '123456789012' });
  });
});

describe('idle timer', () => {
  it('every digit and * re-arms the deadline from the key press time; A-D do not', () => {
    const actor = start({ kind: 'phoneNumber', idleMs: LONG_IDLE });
    const first = dtmfContext(actor).deadline;
    expect(first).toBe(Date.now() + LONG_IDLE);
    vi.advanceTimersByTime(15);
    press(actor, '5');
    const second = dtmfContext(actor).deadline;
    expect(second).toBe(first + 15);
    vi.advanceTimersByTime(15);
    press(actor, 'A');
    expect(dtmfContext(actor).deadline).toBe(second);
    press(actor, '*');
    const third = dtmfContext(actor).deadline;
    expect(third).toBe(second + 15);
    // The persisted timer input carries the same absolute deadline (what a restore re-starts it with).
    type Persisted = { children: Record<string, { snapshot: Persisted & { input?: unknown } } | undefined> };
    const persisted = actor.getPersistedSnapshot() as unknown as Persisted;
    const timer = persisted.children.dtmf?.snapshot.children.idleTimer?.snapshot;
    expect(timer?.input).toEqual({ at: third, event: 'IDLE_TIMEOUT' });
    actor.stop();
  });

  it('re-prompts exactly one idle period after the last key and fails with timeout after maxAttempts', () => {
    const actor = start({ kind: 'digits', idleMs: 60, maxAttempts: 2, label: 'PIN' });
    vi.advanceTimersByTime(30);
    press(actor, '12');
    vi.advanceTimersByTime(59);
    expect(texts(actor)).toHaveLength(1);
    vi.advanceTimersByTime(1);
    expect(texts(actor)[1]).toBe("Sorry, I didn't get any input. Please enter your PIN, then press pound.");
    expect(dtmfContext(actor)).toMatchObject({ buffer: '', attempts: 1 });
    // The next idle period counts from the re-prompt.
    vi.advanceTimersByTime(59);
    expect(actor.getSnapshot().status).toBe('active');
    vi.advanceTimersByTime(1);
    expect(actor.getSnapshot().status).toBe('done');
    expect(resultOf(actor)).toEqual({ status: 'failed', kind: 'digits', reason: 'timeout' });
    expect(texts(actor)).toHaveLength(2);
  });

  it('mixes invalid entries and timeouts in one attempt budget', () => {
    const actor = start({ kind: 'phoneNumber', idleMs: 60, maxAttempts: 2 });
    press(actor, '#');
    expect(texts(actor)).toHaveLength(2);
    vi.advanceTimersByTime(60);
    expect(resultOf(actor)).toEqual({ status: 'failed', kind: 'phoneNumber', reason: 'timeout' });
  });

  it('no idle period runs while paused; CONTINUE starts a fresh one at its own time', () => {
    const actor = start({ kind: 'phoneNumber', idleMs: 100 });
    press(actor, '55');
    actor.send({ type: 'PAUSE' });
    vi.advanceTimersByTime(10_000);
    expect(texts(actor)).toHaveLength(1);
    expect(dtmfContext(actor)).toMatchObject({ buffer: '55', attempts: 0 });
    actor.send({ type: 'CONTINUE', at: Date.now() });
    expect(dtmfContext(actor).deadline).toBe(Date.now() + 100);
    vi.advanceTimersByTime(99);
    expect(texts(actor)).toHaveLength(1);
    vi.advanceTimersByTime(1);
    expect(texts(actor)[1]).toMatch(NO_INPUT);
  });
});

describe('time of a date of birth', () => {
  it('judges "in the past" at the time of the completing key press', () => {
    vi.setSystemTime(new Date(2024, 5, 15, 12));
    const actor = start({ kind: 'dateOfBirth', idleMs: LONG_IDLE });
    press(actor, '06152024'); // today
    expect(texts(actor)[1]).toMatch(/^That date is not in the past\./);
    vi.setSystemTime(new Date(2024, 5, 16, 12));
    press(actor, '06152024'); // yesterday now
    expect(resultOf(actor)).toEqual({ status: 'ok', kind: 'dateOfBirth', value: '2024-06-15' });
  });
});

describe('persistence', () => {
  it('restores mid-entry from a JSON round-tripped snapshot and completes the value', () => {
    const actor = start({ kind: 'phoneNumber', idleMs: LONG_IDLE });
    press(actor, '212');
    const persisted = actor.getPersistedSnapshot();
    actor.stop();

    const restored = restore(persisted);
    expect(dtmfContext(restored).buffer).toBe('212');
    press(restored, '5550199');
    expect(resultOf(restored)).toEqual({ status: 'ok', kind: 'phoneNumber', value: '2125550199' });
    // The prompt is not repeated on restore.
    expect(texts(restored)).toHaveLength(1);
    restored.stop();
  });

  it('keeps attempts across a restore', () => {
    const actor = start({ kind: 'dateOfBirth', idleMs: LONG_IDLE, maxAttempts: 2 });
    press(actor, '13131990');
    press(actor, '010');
    const persisted = actor.getPersistedSnapshot();
    actor.stop();

    const restored = restore(persisted);
    press(restored, '11850');
    expect(resultOf(restored)).toEqual({ status: 'failed', kind: 'dateOfBirth', reason: 'too-many-attempts' });
  });

  it('the idle timeout fires at the original absolute deadline after a restore, not a full period later', () => {
    const idleMs = 1_500;
    const actor = start({ kind: 'phoneNumber', idleMs });
    press(actor, '212');
    const deadline = dtmfContext(actor).deadline;
    vi.advanceTimersByTime(900);
    const persisted = actor.getPersistedSnapshot();
    actor.stop();
    vi.advanceTimersByTime(100); // "downtime" between the two processes

    const restored = restore(persisted);
    expect(dtmfContext(restored).deadline).toBe(deadline);
    vi.advanceTimersByTime(deadline - Date.now() - 1);
    expect(texts(restored)).toHaveLength(1);
    vi.advanceTimersByTime(1);
    expect(Date.now()).toBe(deadline);
    expect(texts(restored)[1]).toMatch(NO_INPUT);
    expect(dtmfContext(restored)).toMatchObject({ buffer: '', attempts: 1, deadline: deadline + idleMs });
    restored.stop();
  });

  it('a deadline that passed while the session was down fires right after restore', async () => {
    const idleMs = 400;
    const actor = start({ kind: 'phoneNumber', idleMs });
    press(actor, '2');
    const persisted = actor.getPersistedSnapshot();
    actor.stop();
    vi.advanceTimersByTime(idleMs + 200);

    const restoredAt = Date.now();
    const restored = restore(persisted);
    // Not during the restore itself (the restorer's own events come first), but on the next timer turn.
    expect(texts(restored)).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(0);
    expect(texts(restored)[1]).toMatch(NO_INPUT);
    // The re-prompt's idle period counts from when the timer fired.
    expect(dtmfContext(restored).deadline).toBe(restoredAt + idleMs);
    restored.stop();
  });
});

describe('prompts in both languages', () => {
  /** The re-prompt after `keys`: the reason's own sentence, then the prompt again. */
  function repromptAfter(actor: Actor<Harness>, keys: string): string {
    const before = texts(actor).length;
    press(actor, keys);
    expect(texts(actor)).toHaveLength(before + 1);
    return texts(actor).at(-1)!;
  }
  const whyOf = (reprompt: string, prompt: string): string => {
    expect(reprompt.endsWith(` ${prompt}`), `"${reprompt}" ends with the prompt`).toBe(true);
    return reprompt.slice(0, -prompt.length - 1);
  };

  it('date of birth: every rejection has its own sentence, in English and in Spanish', () => {
    vi.setSystemTime(new Date(2024, 5, 15, 12));
    const whys: Record<string, string[]> = {};
    for (const language of ['en-US', 'es-US']) {
      const actor = start({ kind: 'dateOfBirth', idleMs: LONG_IDLE, maxAttempts: 10, language });
      const prompt = texts(actor)[0]!;
      whys[language] = [
        repromptAfter(actor, '0101#'), // wrong length
        repromptAfter(actor, '13011990'), // not a date
        repromptAfter(actor, '12311899'), // before 1900
        repromptAfter(actor, '06152024'), // today: not in the past
      ].map((r) => whyOf(r, prompt));
      for (const why of whys[language]!) expect(why.trim().length).toBeGreaterThan(0);
      expect(new Set(whys[language]).size).toBe(4);
      press(actor, '06142024');
      expect(resultOf(actor)).toEqual({ status: 'ok', kind: 'dateOfBirth', value: '2024-06-14' });
    }
    expect(whys['en-US']).toEqual(['That was not eight digits.', "That isn't a valid date.", 'That date is too far in the past.', 'That date is not in the past.']);
    expect(whys['es-US']).toEqual(['Eso no fueron ocho dígitos.', 'Esa no es una fecha válida.', 'Esa fecha es demasiado antigua.', 'Esa fecha no está en el pasado.']);
    const spanish = start({ kind: 'dateOfBirth', idleMs: LONG_IDLE, language: 'es-US' });
    expect(texts(spanish)).toEqual([
      'Por favor, marque su fecha de nacimiento con ocho dígitos: dos para el mes, dos para el día y cuatro para el año.',
    ]);
  });

  it('digits in Spanish: the default label and the minimum are filled in', () => {
    const actor = start({ kind: 'digits', idleMs: LONG_IDLE, language: 'es-US', minLength: 5 });
    expect(texts(actor)).toEqual(['Por favor, marque su número y luego oprima la tecla de numeral.']);
    press(actor, '12#');
    expect(texts(actor)[1]).toBe(
      'Eso fue muy corto. Su número tiene por lo menos 5 dígitos. Por favor, marque su número y luego oprima la tecla de numeral.',
    );
  });

  it('an idle timeout says the generic no-input sentence in the entry language before the prompt', () => {
    for (const [language, why] of [
      ['en-US', "Sorry, I didn't get any input."],
      ['es-US', 'Lo siento, no recibí ninguna respuesta.'],
      // The language tag is matched without regard to case.
      ['ES-mx', 'Lo siento, no recibí ninguna respuesta.'],
    ] as const) {
      const actor = start({ kind: 'phoneNumber', idleMs: 50, language });
      vi.advanceTimersByTime(50);
      expect(whyOf(texts(actor)[1]!, texts(actor)[0]!), language).toBe(why);
      actor.stop();
    }
  });

  it('the language menu has its own bilingual no-input sentence', () => {
    const actor = start({ kind: 'language', idleMs: 50, language: 'es-US' });
    vi.advanceTimersByTime(50);
    expect(texts(actor)[1]).toBe(
      "Sorry, I didn't get a choice. Lo siento, no recibí ninguna opción. For English, press 1. Para español, oprima 2.",
    );
    actor.stop();
  });
});

describe('attempt budget', () => {
  it('is a whole number of at least one', () => {
    const none = start({ kind: 'phoneNumber', idleMs: LONG_IDLE, maxAttempts: 0 });
    press(none, '#');
    expect(resultOf(none)).toEqual({ status: 'failed', kind: 'phoneNumber', reason: 'too-many-attempts' });
    expect(texts(none)).toHaveLength(1);

    const fractional = start({ kind: 'phoneNumber', idleMs: LONG_IDLE, maxAttempts: 2.9 });
    press(fractional, '#');
    expect(resultOf(fractional)).toBeNull();
    press(fractional, '#');
    expect(resultOf(fractional)).toEqual({ status: 'failed', kind: 'phoneNumber', reason: 'too-many-attempts' });
  });

  it('a timeout after invalid entries fails as timeout; an invalid entry after timeouts as too-many-attempts', () => {
    const timedOut = start({ kind: 'digits', idleMs: 50, maxAttempts: 2, minLength: 4 });
    press(timedOut, '1#');
    vi.advanceTimersByTime(50);
    expect(resultOf(timedOut)).toEqual({ status: 'failed', kind: 'digits', reason: 'timeout' });

    const invalid = start({ kind: 'digits', idleMs: 50, maxAttempts: 2, minLength: 4 });
    vi.advanceTimersByTime(50);
    press(invalid, '1#');
    expect(resultOf(invalid)).toEqual({ status: 'failed', kind: 'digits', reason: 'too-many-attempts' });
  });
});

describe('pause', () => {
  it('a cancel while paused ends the entry as cancelled, and keys are not taken while paused', () => {
    const actor = start({ kind: 'phoneNumber', idleMs: 50 });
    press(actor, '55');
    actor.send({ type: 'PAUSE' });
    press(actor, '5');
    expect(dtmfContext(actor).buffer).toBe('55');
    actor.send({ type: 'CANCEL' });
    expect(resultOf(actor)).toEqual({ status: 'failed', kind: 'phoneNumber', reason: 'cancelled' });
  });
});
