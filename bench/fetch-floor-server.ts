// The floor (issue 13): what relaying a streamed reply costs at minimum. A raw `ws` server that, for
// each final prompt, makes the same streamed request the server makes (the default agent's system
// prompt and model settings, the connection's history, the agent's tool schemas) to the same local
// fake LLM with plain `fetch`, parses the SSE body by hand and forwards each content delta as a
// `text` frame, then `last: true`. No SDK, validation, state machine, store, logging or metrics.
import { toChatMessages } from '../src/llm/prompts.js';
import { resolveAgent } from '../src/agent/agent.js';
import type { ChatTurn } from '../src/llm/types.js';
import { finalPromptOf, listenWs, type EchoServer } from './echo-server.js';

/** The default agent's system prompt, model settings and tools, as the server sends them. */
const agent = resolveAgent();
const instructions = agent.instructions({ callSid: 'bench', language: 'en-US', from: '', to: '', customParameters: {} });

interface StreamChunk {
  choices?: Array<{ delta?: { content?: string | null } }>;
}

/** Streams one chat completion and calls `onToken` for every content delta; resolves with the whole text. */
async function streamReply(url: string, history: ChatTurn[], onToken: (token: string) => void): Promise<string> {
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
  let text = '';
  let pending = '';
  const line = (raw: string) => {
    // SSE: only `data:` fields matter here; one event per line as OpenAI-compatible servers send them.
    if (!raw.startsWith('data:')) return;
    const data = raw.charCodeAt(5) === 32 ? raw.slice(6) : raw.slice(5);
    if (data === '[DONE]') return;
    const token = (JSON.parse(data) as StreamChunk).choices?.[0]?.delta?.content;
    if (!token) return;
    text += token;
    onToken(token);
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
  return text;
}

export function startFetchFloorServer(llmBaseUrl: string): Promise<EchoServer> {
  const url = `${llmBaseUrl.replace(/\/+$/, '')}/chat/completions`;
  return listenWs((ws) => {
    const history: ChatTurn[] = [];
    ws.on('message', (data: Buffer) => {
      const prompt = finalPromptOf(data);
      if (prompt === null) return;
      history.push({ role: 'user', content: prompt });
      void (async () => {
        let reply = '';
        try {
          reply = await streamReply(url, history, (token) => ws.send(JSON.stringify({ type: 'text', token, last: false })));
        } catch {
          // The harness counts a reply with missing frames as failed; nothing else to do here.
        }
        history.push({ role: 'assistant', content: reply });
        ws.send(JSON.stringify({ type: 'text', token: '', last: true }));
      })();
    });
  });
}
