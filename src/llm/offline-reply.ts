// Offline mode: without OPENAI_API_KEY or OPENAI_BASE_URL the server still answers calls,
// with canned replies and keyword-triggered tools, so a newcomer can watch the whole flow.
import { randomUUID } from 'node:crypto';
import { systemClock, type Clock } from '../clock.js';
import { parseToolCall, type AnyTool } from '../agent/tool.js';
import { fromReplyStream } from '../machines/reply.js';
import type { KeypadRequest } from '../machines/tool-call.js';
import type { ChatTurn, ReplyEvent, ReplyInput, ToolCall } from './types.js';

interface Canned {
  text: string;
  toolCalls: ToolCall[];
}

const tool = (name: string, args: object): ToolCall => ({
  id: `offline_${randomUUID()}`,
  name,
  arguments: JSON.stringify(args),
});

function lastUserOrTool(turns: ChatTurn[]): ChatTurn | undefined {
  return turns.filter((t) => t.role !== 'assistant').at(-1);
}

/** Keywords that start a keypad entry, so every DTMF input type can be tried without an LLM. */
function keypadRequest(said: string, spanish: boolean): KeypadRequest | undefined {
  if (/\bmenu\b|menú/.test(said)) return { kind: 'language' };
  if (/phone number|número de teléfono|numero de telefono/.test(said)) return { kind: 'phoneNumber' };
  if (/birth|nacimiento/.test(said)) return { kind: 'dateOfBirth' };
  if (/\bpin\b/.test(said)) return { kind: 'digits', label: 'PIN', minLength: 4, maxLength: 4 };
  if (/account|cuenta/.test(said)) return { kind: 'digits', label: spanish ? 'número de cuenta' : 'account number', minLength: 6, maxLength: 10 };
  return undefined;
}

/** A collect_digits result the caller could not complete (see DtmfResult). */
function isFailedResult(content: string): boolean {
  try {
    const parsed: unknown = JSON.parse(content);
    return typeof parsed === 'object' && parsed !== null && 'status' in parsed && parsed.status === 'failed';
  } catch {
    return false;
  }
}

/** Chooses the canned answer for the latest caller turn or tool result. */
export function offlineAnswer(turns: ChatTurn[], language: string): Canned {
  const spanish = language.startsWith('es');
  const last = lastUserOrTool(turns);
  if (last?.role === 'tool') {
    if (isFailedResult(last.content)) {
      return { text: spanish ? 'Lo siento, no pude obtener eso.' : 'Sorry, I could not get that.', toolCalls: [] };
    }
    return { text: spanish ? 'Gracias, lo tengo.' : 'Thanks, got it.', toolCalls: [] };
  }
  const said = last?.role === 'user' ? last.content.toLowerCase() : '';
  // Keypad entries first: "language menu" must open the menu, not switch the language.
  const keypad = keypadRequest(said, spanish);
  if (keypad) return { text: '', toolCalls: [tool('collect_digits', keypad)] };
  if (/spanish|español|espanol/.test(said)) return { text: '', toolCalls: [tool('switch_language', { language: 'es-US' })] };
  if (/english|inglés|ingles/.test(said)) return { text: '', toolCalls: [tool('switch_language', { language: 'en-US' })] };
  if (/agent|human|person/.test(said)) {
    return {
      text: spanish ? 'Le comunico con un agente.' : 'Connecting you to an agent.',
      toolCalls: [tool('human_agent_handoff', { reason: 'caller asked for a human' })],
    };
  }
  const prefix = spanish ? 'Modo sin conexión. Usted dijo: ' : 'I am running in offline mode. You said: ';
  return { text: `${prefix}${last?.role === 'user' ? last.content : ''}`, toolCalls: [] };
}

export function createOfflineReplyActor(opts: { tools: ReadonlyMap<string, AnyTool>; wordDelayMs?: number; clock?: Clock }) {
  const delay = opts.wordDelayMs ?? 20;
  const clock = opts.clock ?? systemClock;
  return fromReplyStream(({ input, sendBack }) => {
    const answer = offlineAnswer(input.turns, input.call.language);
    const words = answer.text.split(/(?<= )/).filter((w) => w.length > 0);
    const [first] = answer.toolCalls;
    const toolCall = first ? parseToolCall(first, opts.tools) : undefined;
    let i = 0;
    let timer: unknown;
    const step = () => {
      const word = words[i++];
      if (word === undefined) {
        sendBack({ type: 'LLM.DONE', text: answer.text, toolCalls: answer.toolCalls, toolCall, at: clock.now() } satisfies ReplyEvent);
        return;
      }
      sendBack({ type: 'LLM.DELTA', text: word } satisfies ReplyEvent);
      timer = clock.setTimeout(step, delay);
    };
    timer = clock.setTimeout(step, delay);
    return () => clock.clearTimeout(timer);
  });
}
