// Offline mode: without OPENAI_API_KEY or OPENAI_BASE_URL the server still answers calls,
// with canned replies and keyword-triggered tools, so a newcomer can watch the whole flow.
import { randomUUID } from 'node:crypto';
import { fromCallback } from 'xstate';
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

/** Chooses the canned answer for the latest caller turn or tool result. */
export function offlineAnswer(turns: ChatTurn[], language: string): Canned {
  const spanish = language.startsWith('es');
  const last = lastUserOrTool(turns);
  if (last?.role === 'tool') {
    return { text: spanish ? 'Gracias, lo tengo.' : 'Thanks, got it.', toolCalls: [] };
  }
  const said = last?.role === 'user' ? last.content.toLowerCase() : '';
  if (/spanish|español|espanol/.test(said)) return { text: '', toolCalls: [tool('switch_language', { language: 'es-US' })] };
  if (/english|inglés|ingles/.test(said)) return { text: '', toolCalls: [tool('switch_language', { language: 'en-US' })] };
  if (/phone number/.test(said)) return { text: '', toolCalls: [tool('collect_digits', { kind: 'phoneNumber' })] };
  if (/birth/.test(said)) return { text: '', toolCalls: [tool('collect_digits', { kind: 'dateOfBirth' })] };
  if (/agent|human|person/.test(said)) {
    return {
      text: spanish ? 'Le comunico con un agente.' : 'Connecting you to an agent.',
      toolCalls: [tool('human_agent_handoff', { reason: 'caller asked for a human' })],
    };
  }
  const prefix = spanish ? 'Modo sin conexión. Usted dijo: ' : 'I am running in offline mode. You said: ';
  return { text: `${prefix}${last?.role === 'user' ? last.content : ''}`, toolCalls: [] };
}

export function createOfflineReplyActor(opts: { wordDelayMs?: number } = {}) {
  const delay = opts.wordDelayMs ?? 20;
  return fromCallback<{ type: string }, ReplyInput>(({ input, sendBack }) => {
    const runId = randomUUID();
    const answer = offlineAnswer(input.turns, input.language);
    const words = answer.text.split(/(?<= )/).filter((w) => w.length > 0);
    let i = 0;
    let timer: NodeJS.Timeout;
    const step = () => {
      const word = words[i++];
      if (word === undefined) {
        sendBack({ type: 'LLM.DONE', runId, text: answer.text, toolCalls: answer.toolCalls } satisfies ReplyEvent);
        return;
      }
      sendBack({ type: 'LLM.DELTA', runId, text: word } satisfies ReplyEvent);
      timer = setTimeout(step, delay);
    };
    timer = setTimeout(step, delay);
    return () => clearTimeout(timer);
  });
}
