import type OpenAI from 'openai';
import type { ChatTurn } from './types.js';

export function systemPrompt(language: string): string {
  return [
    'You are a friendly phone assistant. Your words are spoken aloud by text-to-speech:',
    'keep answers short, plain sentences, no markdown, lists or emoji.',
    `Reply in the caller's current language: ${language}.`,
    'Use collect_digits when you need a number typed on the keypad, switch_language when the caller asks for another language,',
    'and human_agent_handoff when the caller wants a person.',
  ].join(' ');
}

/** Maps our history to the chat-completions message format. */
export function toChatMessages(turns: ChatTurn[], language: string): OpenAI.Chat.Completions.ChatCompletionMessageParam[] {
  const messages: OpenAI.Chat.Completions.ChatCompletionMessageParam[] = [
    { role: 'system', content: systemPrompt(language) },
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
