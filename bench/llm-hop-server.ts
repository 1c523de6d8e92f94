// A second, informational baseline: a raw `ws` server that does what the relay must do per reply
// and nothing else. Each final prompt makes the same streamed request through the `openai` SDK
// (system prompt, the connection's history, tool definitions) and forwards each delta as a `text`
// frame, then `last: true`. No validation, state machine, persistence, logging or metrics, so
// server / this baseline is what the relay adds on top of the LLM hop it cannot avoid.
import OpenAI from 'openai';
import { toChatMessages } from '../src/llm/prompts.js';
import { resolveAgent } from '../src/agent/agent.js';
import type { ChatTurn } from '../src/llm/types.js';
import { finalPromptOf, listenWs, type EchoServer } from './echo-server.js';

/** The default agent's system prompt and tools, as the server sends them. */
const agent = resolveAgent();
const instructions = agent.instructions({ callSid: 'bench', language: 'en-US', from: '', to: '', customParameters: {} });

export function startLlmHopServer(llmBaseUrl: string): Promise<EchoServer> {
  const client = new OpenAI({ apiKey: 'bench-key', baseURL: llmBaseUrl, maxRetries: 0 });
  return listenWs((ws) => {
    const history: ChatTurn[] = [];
    ws.on('message', (data: Buffer) => {
      const prompt = finalPromptOf(data);
      if (prompt === null) return;
      history.push({ role: 'user', content: prompt });
      void (async () => {
        let reply = '';
        try {
          const stream = await client.chat.completions.create({
            model: 'gpt-4o-mini',
            messages: toChatMessages(history, instructions),
            tools: agent.toolSchemas,
            stream: true,
          });
          for await (const chunk of stream) {
            const token = chunk.choices[0]?.delta?.content;
            if (!token) continue;
            reply += token;
            ws.send(JSON.stringify({ type: 'text', token, last: false }));
          }
        } catch {
          // The harness counts a reply with missing frames as failed; nothing else to do here.
        }
        history.push({ role: 'assistant', content: reply });
        ws.send(JSON.stringify({ type: 'text', token: '', last: true }));
      })();
    });
  });
}
