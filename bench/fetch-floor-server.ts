// The floor (issue 13): what relaying a streamed reply costs at minimum. A raw `ws` server that, for
// each final prompt, makes the same streamed request the server makes (the default agent's system
// prompt and model settings, the connection's history, the agent's tool schemas) to the same local
// fake LLM with plain `fetch`, parses the SSE body by hand and forwards each content delta as a
// `text` frame, then `last: true`. No SDK, validation, state machine, store, logging or metrics.
import { toChatMessages } from '../src/llm/prompts.js';
import type { ChatTurn } from '../src/llm/types.js';
import { benchAgent as agent, benchInstructions as instructions, listenReplyRelay, type WsServer } from './reply-relay.js';

interface StreamChunk {
  choices?: Array<{ delta?: { content?: string | null } }>;
}

/** Streams one chat completion and calls `onToken` for every content delta. */
async function streamReply(url: string, history: ChatTurn[], onToken: (token: string) => void): Promise<void> {
  const body = JSON.stringify({
    model: agent.model.name,
    messages: toChatMessages(history, instructions),
    ...(agent.toolSchemas.length ? { tools: agent.toolSchemas } : {}),
    ...(agent.model.temperature === undefined ? {} : { temperature: agent.model.temperature }),
    ...(agent.model.maxTokens === undefined ? {} : { max_completion_tokens: agent.model.maxTokens }),
    stream: true,
  });
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'text/event-stream', authorization: 'Bearer bench-key' },
    body,
  });
  if (!res.ok || !res.body) throw new Error(`LLM answered ${res.status}`);
  const decoder = new TextDecoder();
  let pending = '';
  const line = (raw: string) => {
    // SSE: only `data:` fields matter here; one event per line as OpenAI-compatible servers send them.
    if (!raw.startsWith('data:')) return;
    const data = raw.charCodeAt(5) === 32 ? raw.slice(6) : raw.slice(5);
    if (data === '[DONE]') return;
    const token = (JSON.parse(data) as StreamChunk).choices?.[0]?.delta?.content;
    if (token) onToken(token);
  };
  for await (const bytes of res.body as unknown as AsyncIterable<Uint8Array>) {
    pending += decoder.decode(bytes, { stream: true });
    let nl: number;
    while ((nl = pending.indexOf('\n')) >= 0) {
      const raw = pending.charCodeAt(nl - 1) === 13 ? pending.slice(0, nl - 1) : pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      if (raw) line(raw);
    }
  }
  pending += decoder.decode();
  if (pending) line(pending);
}

export function startFetchFloorServer(llmBaseUrl: string): Promise<WsServer> {
  const url = `${llmBaseUrl.replace(/\/+$/, '')}/chat/completions`;
  return listenReplyRelay((history, onToken) => streamReply(url, history, onToken));
}
