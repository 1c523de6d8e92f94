import type OpenAI from 'openai';
import type { ChatTurn } from './types.js';

/** Maps our history to the chat-completions message format. */
export function toChatMessages(turns: ChatTurn[], instructions: string): OpenAI.Chat.Completions.ChatCompletionMessageParam[] {
  const messages: OpenAI.Chat.Completions.ChatCompletionMessageParam[] = [
    { role: 'system', content: instructions },
  ];
  for (const turn of turns) {
    if (turn.role === 'user') messages.push({ role: 'user', content: turn.content });
    else if (turn.role === 'tool') messages.push({ role: 'tool', tool_call_id: turn.toolCallId, content: turn.content });
    else if (turn.toolCalls?.length) {
      messages.push({
        role: 'assistant',
        content: turn.content || null,
        tool_calls: turn.toolCalls.map((c) => ({
          id: c.id,
          type: 'function' as const,
          function: { name: c.name, arguments: c.arguments },
        })),
      });
    } else messages.push({ role: 'assistant', content: turn.content });
  }
  return messages;
}
