// One keypad-entry state machine shared by every DTMF input kind; each kind only supplies
// when an entry is complete, how it is validated and what is said to the caller.
//
// Everything (buffer, attempts, idle deadline, result) lives in context so a persisted
// snapshot restores mid-entry. The idle timer is the invoked `deadlineTimer` with an absolute
// deadline, so a restored timer fires at the original time. Deadlines count from the time the
// events carry (`at`), never from a clock read here. Digits are never logged.
import { assign, sendParent, setup } from 'xstate';
import type { DtmfDigit } from '../../protocol/messages.js';
import { deadlineTimer, type DeadlineInput } from '../deadline-timer.js';
import type { DtmfEvent, DtmfFailureReason, DtmfInput, DtmfResult, DtmfSayEvent } from './types.js';

/** A prompt table's key: a language code (`fr-FR`) or its primary subtag (`fr`); `en` is the fallback. */
export type PromptLanguage = string;

export type Validation<R extends string = string> = { ok: true; value: string } | { ok: false; reason: R };

/**
 * Prompt text for one language. `{name}` placeholders are filled from the spec's `promptVars`.
 * A re-prompt is `<why> <prompt>`, where why is `invalid[reason]` or `noInput`.
 */
export interface PromptSet<R extends string> {
  prompt: string;
  invalid: Record<R, string>;
  /** Said before the prompt after an idle timeout; defaults to a generic sentence. */
  noInput?: string;
}

export type PromptTable<R extends string> = { en: PromptSet<R> } & Partial<Record<PromptLanguage, PromptSet<R>>>;

export interface CollectorSpec<R extends string> {
  /** Machine id (shown in the inspector). */
  id: string;
  /** True when the buffer (digits 0-9 only) holds a complete entry and should be validated now. */
  isComplete(buffer: string, input: DtmfInput): boolean;
  /** Validates a complete entry (after auto-completion or `#`, pressed at `at`) and maps it to the result value. */
  validate(buffer: string, input: DtmfInput, at: number): Validation<R>;
  /** Per language; a function of the input when the entry kind decides (the keypad machine). */
  prompts: PromptTable<R> | ((input: DtmfInput) => PromptTable<R>);
  /** Values for `{name}` placeholders in the prompt table. */
  promptVars?(input: DtmfInput, language: PromptLanguage): Record<string, string | number>;
}

export type Rejection = { kind: 'invalid'; reason: string } | { kind: 'timeout' };

export interface CollectorContext {
  input: DtmfInput;
  maxAttempts: number;
  /** Digits entered so far in the current attempt. Sensitive: never log it. */
  buffer: string;
  /** Failed attempts so far. */
  attempts: number;
  /** Absolute epoch ms at which the current idle timer fires. */
  deadline: number;
  /** Why the last attempt failed (selects the re-prompt). */
  rejection: Rejection | null;
  /** Set right before a final state is entered; becomes the machine output. */
  result: DtmfResult | null;
}

export const DEFAULT_MAX_ATTEMPTS = 3;
export const IDLE_TIMEOUT_EVENT = 'IDLE_TIMEOUT' satisfies DtmfEvent['type'];

const CLEAR_KEY: DtmfDigit = '*';
const TERMINATOR_KEY: DtmfDigit = '#';
const IGNORED_KEYS: ReadonlySet<DtmfDigit> = new Set<DtmfDigit>(['A', 'B', 'C', 'D']);

const GENERIC_TEXT: Record<string, { noInput: string; invalid: string }> = {
  en: { noInput: "Sorry, I didn't get any input.", invalid: "Sorry, that entry isn't valid." },
  es: { noInput: 'Lo siento, no recibí ninguna respuesta.', invalid: 'Lo siento, esa entrada no es válida.' },
};

/** The key of `table` for the entry's language: the exact code, else its primary subtag, else English. */
export function promptLanguageOf(input: DtmfInput, table: Record<string, unknown> = GENERIC_TEXT): PromptLanguage {
  const code = input.language ?? 'en';
  const primary = code.toLowerCase().split('-')[0] ?? 'en';
  if (code in table) return code;
  return primary in table ? primary : 'en';
}

function fillPlaceholders(template: string, vars: Record<string, string | number>): string {
  return template.replace(/\{(\w+)\}/g, (whole, name: string) => (name in vars ? String(vars[name]) : whole));
}

/** When `event` happened; the entry's start for its first idle period (no event carries a time then). */
function timeOf(event: DtmfEvent, context: CollectorContext): number {
  return 'at' in event ? event.at : context.input.startedAt;
}

function failedResult(context: CollectorContext, reason: DtmfFailureReason): DtmfResult {
  return { status: 'failed', kind: context.input.kind, reason };
}

/** The key a DIGIT event carries, for its guards and actions. */
const key = ({ event }: { event: Extract<DtmfEvent, { type: 'DIGIT' }> }) => ({ digit: event.digit });

function idleTimerInput({ context }: { context: CollectorContext }): DeadlineInput {
  return { at: context.deadline, event: IDLE_TIMEOUT_EVENT };
}

function initialContext({ input }: { input: DtmfInput }): CollectorContext {
  const maxAttempts = Math.max(1, Math.floor(input.maxAttempts ?? DEFAULT_MAX_ATTEMPTS));
  return { input, maxAttempts, buffer: '', attempts: 0, deadline: 0, rejection: null, result: null };
}

function collectorOutput({ context }: { context: CollectorContext }): DtmfResult {
  return context.result ?? failedResult(context, 'cancelled');
}

export function createCollectorMachine<R extends string>(spec: CollectorSpec<R>) {
  function say(context: CollectorContext, rejection: Rejection | null): DtmfSayEvent {
    const table = typeof spec.prompts === 'function' ? spec.prompts(context.input) : spec.prompts;
    const language = promptLanguageOf(context.input, table);
    const set = table[language] ?? table.en;
    const generic = GENERIC_TEXT[promptLanguageOf(context.input)] ?? GENERIC_TEXT.en!;
    const invalid: Partial<Record<string, string>> = set.invalid;
    let why = '';
    if (rejection?.kind === 'timeout') why = `${set.noInput ?? generic.noInput} `;
    else if (rejection?.kind === 'invalid') why = `${invalid[rejection.reason] ?? generic.invalid} `;
    const vars = spec.promptVars?.(context.input, language) ?? {};
    return { type: 'DTMF.SAY', text: fillPlaceholders(why + set.prompt, vars) };
  }

  return setup({
    types: {
      context: {} as CollectorContext,
      input: {} as DtmfInput,
      output: {} as DtmfResult,
      events: {} as DtmfEvent,
      children: {} as { idleTimer: 'deadlineTimer' },
    },
    actors: { deadlineTimer },
    actions: {
      sayPrompt: sendParent(({ context }) => say(context, null)),
      sayReprompt: sendParent(({ context }) => say(context, context.rejection)),
      armIdleTimer: assign({ deadline: ({ context, event }) => timeOf(event, context) + context.input.idleMs }),
      appendDigit: assign({ buffer: ({ context }, params: { digit: DtmfDigit }) => context.buffer + params.digit }),
      clearBuffer: assign({ buffer: '' }),
      countAttempt: assign({ attempts: ({ context }) => context.attempts + 1 }),
      evaluateEntry: assign(({ context, event }) => {
        const checked = spec.validate(context.buffer, context.input, timeOf(event, context));
        return checked.ok
          ? { result: { status: 'ok', kind: context.input.kind, value: checked.value } satisfies DtmfResult }
          : { rejection: { kind: 'invalid', reason: checked.reason } satisfies Rejection };
      }),
      recordNoInput: assign({ rejection: { kind: 'timeout' } satisfies Rejection }),
      recordAttemptsExhausted: assign({
        result: ({ context }) =>
          failedResult(context, context.rejection?.kind === 'timeout' ? 'timeout' : 'too-many-attempts'),
      }),
      recordCancelled: assign({ result: ({ context }) => failedResult(context, 'cancelled') }),
    },
    guards: {
      isIgnoredKey: (_, params: { digit: DtmfDigit }) => IGNORED_KEYS.has(params.digit),
      isClearKey: (_, params: { digit: DtmfDigit }) => params.digit === CLEAR_KEY,
      isTerminatorKey: (_, params: { digit: DtmfDigit }) => params.digit === TERMINATOR_KEY,
      completesEntry: ({ context }, params: { digit: DtmfDigit }) => spec.isComplete(context.buffer + params.digit, context.input),
      entryAccepted: ({ context }) => context.result?.status === 'ok',
      attemptsExhausted: ({ context }) => context.attempts >= context.maxAttempts,
    },
  }).createMachine({
    id: spec.id,
    context: initialContext,
    entry: 'sayPrompt',
    initial: 'collecting',
    on: {
      CANCEL: { target: '.failed', actions: 'recordCancelled' },
    },
    states: {
      collecting: {
        description: 'Buffers keys; every (re-)entry re-arms the idle deadline.',
        entry: 'armIdleTimer',
        invoke: { id: 'idleTimer', src: 'deadlineTimer', input: idleTimerInput },
        on: {
          DIGIT: [
            { guard: { type: 'isIgnoredKey', params: key } },
            { guard: { type: 'isClearKey', params: key }, target: 'collecting', reenter: true, actions: 'clearBuffer' },
            { guard: { type: 'isTerminatorKey', params: key }, target: 'checking' },
            { guard: { type: 'completesEntry', params: key }, target: 'checking', actions: { type: 'appendDigit', params: key } },
            { target: 'collecting', reenter: true, actions: { type: 'appendDigit', params: key } },
          ],
          IDLE_TIMEOUT: { target: 'rejected', actions: 'recordNoInput' },
          PAUSE: 'paused',
        },
      },
      paused: {
        description: 'The socket dropped: nobody can type, so no idle timer runs; the buffer is kept for the resume.',
        on: { CONTINUE: 'collecting' },
      },
      checking: {
        description: 'Validates the complete entry.',
        entry: 'evaluateEntry',
        always: [{ guard: 'entryAccepted', target: 'accepted' }, { target: 'rejected' }],
      },
      rejected: {
        description: 'Counts a failed attempt (invalid entry or idle timeout), then re-prompts or gives up.',
        entry: ['countAttempt', 'clearBuffer'],
        always: [
          { guard: 'attemptsExhausted', target: 'failed', actions: 'recordAttemptsExhausted' },
          { target: 'collecting', actions: 'sayReprompt' },
        ],
      },
      accepted: { type: 'final' },
      failed: { type: 'final' },
    },
    output: collectorOutput,
  });
}
