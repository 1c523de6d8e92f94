// The LLM hop's own client-side cost: the same streamed request the server makes per reply (system
// prompt, one user turn, tool definitions) through the real `openai` SDK against the fake LLM,
// timed in this process. It is a floor under the server's CPU per reply that the baseline never pays.
import OpenAI from 'openai';
import { toChatMessages } from '../src/llm/prompts.js';
import { PROMPT } from './load.js';
import { benchAgent as agent, benchInstructions as instructions } from './reply-relay.js';

export interface LlmFloor {
  requests: number;
  concurrency: number;
  cpuUsPerRequest: number;
  wallMsPerRequest: number;
}

export async function measureLlmFloor(baseURL: string, requests: number, concurrency: number): Promise<LlmFloor> {
  const client = new OpenAI({ apiKey: 'bench-key', baseURL, maxRetries: 0 });
  const messages = toChatMessages([{ role: 'user', content: PROMPT }], instructions);
  const one = async () => {
    const stream = await client.chat.completions.create({ model: 'gpt-4o-mini', messages, tools: agent.toolSchemas, stream: true });
    for await (const chunk of stream) void chunk.choices[0]?.delta?.content;
  };
  const batches = Math.max(1, Math.ceil(requests / concurrency));
  const run = async () => {
    for (let b = 0; b < batches; b++) await Promise.all(Array.from({ length: concurrency }, one));
  };
  await run(); // warm-up: JIT and the keep-alive pool
  const cpu = process.cpuUsage();
  const start = performance.now();
  await run();
  const used = process.cpuUsage(cpu);
  const total = batches * concurrency;
  return {
    requests: total,
    concurrency,
    cpuUsPerRequest: (used.user + used.system) / total,
    wallMsPerRequest: (performance.now() - start) / total,
  };
}
