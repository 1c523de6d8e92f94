// A second, informational baseline: a raw `ws` server that does what the relay must do per reply
// and nothing else. Each final prompt makes the same streamed request through the `openai` SDK
// (system prompt, the connection's history, tool definitions) and forwards each delta as a `text`
// frame, then `last: true`. No validation, state machine, persistence, logging or metrics, so
// server / this baseline is what the relay adds on top of the SDK request it makes; hop / floor is
// what the SDK adds on top of plain fetch.
import OpenAI from 'openai';
import { toChatMessages } from '../src/llm/prompts.js';
import { benchAgent as agent, benchInstructions as instructions, listenReplyRelay, type WsServer } from './reply-relay.js';

export function startLlmHopServer(llmBaseUrl: string): Promise<WsServer> {
  const client = new OpenAI({ apiKey: 'bench-key', baseURL: llmBaseUrl, maxRetries: 0 });
  return listenReplyRelay(async (history, onToken) => {
    const stream = await client.chat.completions.create({
      model: 'gpt-4o-mini',
      messages: toChatMessages(history, instructions),
      tools: agent.toolSchemas,
      stream: true,
    });
    for await (const chunk of stream) {
      const token = chunk.choices[0]?.delta?.content;
      if (token) onToken(token);
    }
  });
}
