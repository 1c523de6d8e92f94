// The one redaction rule for everything people read: log lines, the admin views (/sessions) and the
// inspector stream. It works on plain JSON (events, snapshots, contexts, log objects alike), so no
// caller has to know where in its data keypad input or a caller's number can hide.
//
// Hidden: resume proofs and their hashes, keypad input (a DIGIT's `digit`, a collector's `buffer`, `digits`), every keypad result's
// `value` (a collector's result or output, the done event, the collect_digits tool result in the
// history), card-like digit runs in what the caller or the agent said, and all but the last four
// characters of the caller's and called numbers.
export const REDACTED = '[redacted]';

/** Keys whose value is keypad input wherever they appear. */
const KEYPAD_KEYS: ReadonlySet<string> = new Set(['digit', 'digits', 'buffer']);
/** Resume proofs (and their hashes), wherever they appear: a custom parameter, a context, a RESUME or ACTION event. */
const SECRET_KEYS: ReadonlySet<string> = new Set(['resumeToken', 'resumeKey', 'callToken', 'sessionKeyHash', 'resumeKeyHash', 'resumeTokenHash', 'resumeTokenHashes', 'earlierSessionKeyHashes']);
/** The call's numbers: only the last four characters stay. */
const NUMBER_KEYS: ReadonlySet<string> = new Set(['from', 'to']);
/**
 * Free text said by the caller or the agent: turns, prompts, LLM deltas (one, or the list of one read:
 * `texts`), interrupts, replies in flight. A list under such a key is masked item by item.
 */
const TRANSCRIPT_KEYS: ReadonlySet<string> = new Set([
  'content',
  'text',
  'texts',
  'token',
  'utterance',
  'undelivered',
  'voicePrompt',
  'utteranceUntilInterrupt',
]);
const KEYPAD_TOOL = 'collect_digits';
/** What the model passes to a tool (raw JSON text, or parsed): a card or account number in it is masked too. */
const TOOL_ARGUMENT_KEYS: ReadonlySet<string> = new Set(['arguments', 'args']);

/** Six or more digits, possibly split by spaces or dashes: card, account and phone numbers said aloud. */
const DIGIT_RUN = /\d(?:[ -]*\d){5,}/g;

export function maskNumber(value: string): string {
  return value.length > 4 ? `${'*'.repeat(value.length - 4)}${value.slice(-4)}` : '****';
}

/** Every digit of a card-like run becomes `*` (spacing kept, so the text still reads naturally). */
export function maskDigitRuns(text: string): string {
  return text.replace(DIGIT_RUN, (run) => run.replace(/\d/g, '*'));
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: unknown };

/**
 * The redacted copy of `value`. Pure and idempotent (redacting twice changes nothing more). Only
 * plain objects and arrays are walked: anything else that is not a primitive (an Error in a log
 * line, a class instance) is passed through as it is.
 */
export function redact<T>(value: T): T {
  return walk(value, undefined) as T;
}

function walk(value: unknown, key: string | undefined): unknown {
  if (key !== undefined && KEYPAD_KEYS.has(key) && value !== undefined) return REDACTED;
  // A proof that is not there (null) stays visible as such: "no resume key" is not a secret.
  if (key !== undefined && SECRET_KEYS.has(key) && value !== undefined && value !== null) return REDACTED;
  if (key !== undefined && TOOL_ARGUMENT_KEYS.has(key)) return maskDigitRunsDeep(value);
  if (key !== undefined && TRANSCRIPT_KEYS.has(key) && Array.isArray(value)) return value.map((item) => walk(item, key));
  if (typeof value === 'string') {
    if (key !== undefined && NUMBER_KEYS.has(key)) return maskNumber(value);
    if (key !== undefined && TRANSCRIPT_KEYS.has(key)) return maskDigitRuns(value);
    return value;
  }
  if (Array.isArray(value)) return walkArray(value);
  if (isPlainObject(value)) return walkObject(value, new Set());
  return value;
}

function maskDigitRunsDeep(value: unknown): unknown {
  if (typeof value === 'string') return maskDigitRuns(value);
  if (Array.isArray(value)) return value.map(maskDigitRunsDeep);
  if (isPlainObject(value)) return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, maskDigitRunsDeep(v)]));
  return value;
}

/** Arrays may be a conversation history: a tool turn answering collect_digits is known by its call id. */
function walkArray(items: unknown[]): unknown[] {
  const keypadCalls = keypadToolCallIds(items);
  return items.map((item) => (isPlainObject(item) ? walkObject(item, keypadCalls) : walk(item, undefined)));
}

function walkObject(object: JsonObject, keypadCalls: ReadonlySet<string>): JsonObject {
  const out: JsonObject = {};
  const keypadResult = isKeypadResult(object);
  const toolTurn = object.role === 'tool' && typeof object.content === 'string';
  for (const [k, v] of Object.entries(object)) {
    if (keypadResult && k === 'value') out[k] = REDACTED;
    else if (toolTurn && k === 'content') out[k] = redactToolResult(v as string, keypadCalls.has(String(object.toolCallId)));
    else out[k] = walk(v, k);
  }
  return out;
}

/** A collect_digits result is JSON of a keypad result; one that is not (odd or cut) is hidden whole. */
function redactToolResult(content: string, answersKeypad: boolean): string {
  let parsed: unknown;
  try {
    parsed = JSON.parse(content);
  } catch {
    return answersKeypad ? REDACTED : maskDigitRuns(content);
  }
  if (isPlainObject(parsed) && isKeypadResult(parsed)) return JSON.stringify(walkObject(parsed, new Set()));
  return answersKeypad ? REDACTED : maskDigitRuns(content);
}

function keypadToolCallIds(items: unknown[]): Set<string> {
  const ids = new Set<string>();
  for (const item of items) {
    if (!isPlainObject(item) || item.role !== 'assistant' || !Array.isArray(item.toolCalls)) continue;
    for (const call of item.toolCalls) {
      if (isPlainObject(call) && call.name === KEYPAD_TOOL && typeof call.id === 'string') ids.add(call.id);
    }
  }
  return ids;
}

/** A DTMF collector's result (its context `result`, its output, the done event's `output`). */
function isKeypadResult(object: JsonObject): boolean {
  return (object.status === 'ok' || object.status === 'failed') && typeof object.kind === 'string' && 'value' in object;
}

function isPlainObject(value: unknown): value is JsonObject {
  if (value === null || typeof value !== 'object') return false;
  const proto = Object.getPrototypeOf(value) as unknown;
  return proto === Object.prototype || proto === null;
}

/**
 * Plain JSON of anything JSON-serialisable (xstate snapshots and actor refs serialise themselves),
 * or undefined when it is not (a cycle, a BigInt).
 */
export function toPlainJson(value: unknown): Json | undefined {
  try {
    const text = JSON.stringify(value);
    return text === undefined ? undefined : (JSON.parse(text) as Json);
  } catch {
    return undefined;
  }
}
