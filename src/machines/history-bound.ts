// Keeps a call's conversation history within a size budget: what the LLM is sent and what every
// snapshot write stores. Without it a long (or hostile) call grows both on every turn.
import type { ChatTurn } from './reply.js';

export interface HistoryLimits {
  /** Most turns (messages) kept. */
  maxTurns: number;
  /** Most UTF-8 bytes of turn text (content, tool-call names, arguments and ids) kept. */
  maxBytes: number;
}

export const DEFAULT_HISTORY_LIMITS: HistoryLimits = { maxTurns: 60, maxBytes: 32 * 1024 };

/** The size of a turn's counted text (content, tool-call ids, names and arguments), each piece measured by `size`. */
function turnSize(turn: ChatTurn, size: (text: string) => number): number {
  let total = size(turn.content);
  if (turn.role === 'tool') total += size(turn.toolCallId);
  if (turn.role === 'assistant') for (const call of turn.toolCalls ?? []) total += size(call.id) + size(call.name) + size(call.arguments);
  return total;
}

const utf8Bytes = (text: string) => Buffer.byteLength(text);
const codeUnits = (text: string) => text.length;

export function turnBytes(turn: ChatTurn): number {
  return turnSize(turn, utf8Bytes);
}

/** An upper bound on the turns' UTF-8 bytes / 3: their text's length in UTF-16 code units. */
function turnChars(history: readonly ChatTurn[]): number {
  let chars = 0;
  for (const turn of history) chars += turnSize(turn, codeUnits);
  return chars;
}

export interface BoundedHistory {
  history: ChatTurn[];
  /** Turns dropped from the front. */
  dropped: number;
}

/**
 * Drops the oldest turns until `history` fits `limits`. Turns go in groups: a turn together with
 * the tool results that follow it (the machine always appends an assistant turn's tool results right
 * after it), so a tool call is never kept without its result or a result without its call, which
 * the chat API would reject. The newest group is always kept, even alone over the limits: it holds
 * what the model must answer. Returns the same array when nothing is dropped.
 */
export function boundHistory(history: ChatTurn[], limits: HistoryLimits): BoundedHistory {
  // Most histories are far inside the byte budget: a UTF-16 code unit is at most 3 UTF-8 bytes, so
  // counting characters settles it without encoding every turn on every append.
  if (history.length <= limits.maxTurns && 3 * turnChars(history) <= limits.maxBytes) return { history, dropped: 0 };
  let bytes = 0;
  for (const turn of history) bytes += turnBytes(turn);
  let turns = history.length;
  if (turns <= limits.maxTurns && bytes <= limits.maxBytes) return { history, dropped: 0 };
  let lastGroup = history.length - 1;
  while (lastGroup > 0 && history[lastGroup]!.role === 'tool') lastGroup--;
  let start = 0;
  while ((turns > limits.maxTurns || bytes > limits.maxBytes) && start < lastGroup) {
    let end = start + 1;
    while (end < history.length && history[end]!.role === 'tool') end++;
    for (let i = start; i < end; i++) bytes -= turnBytes(history[i]!);
    turns -= end - start;
    start = end;
  }
  return start === 0 ? { history, dropped: 0 } : { history: history.slice(start), dropped: start };
}
