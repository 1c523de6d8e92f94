// What the two LLM baselines share: the request the server sends for the default agent, and the
// raw `ws` relay loop around one streamed reply per final prompt (tokens as `text` frames, then
// `last: true`). Each baseline only says how it streams a reply: the SDK, or plain fetch.
import { resolveAgent } from '../src/agent/agent.js';
import type { ChatTurn } from '../src/llm/types.js';
import { finalPromptOf, listenWs, type EchoServer } from './echo-server.js';

/** The default agent's system prompt, model settings and tools, as the server sends them. */
export const benchAgent = resolveAgent();
export const benchInstructions = benchAgent.instructions({ callSid: 'bench', language: 'en-US', from: '', to: '', customParameters: {} });

/** Streams one reply to `history`, calling `onToken` for every content delta. */
export type StreamReply = (history: ChatTurn[], onToken: (token: string) => void) => Promise<void>;

export function listenReplyRelay(streamReply: StreamReply): Promise<EchoServer> {
  return listenWs((ws) => {
    const history: ChatTurn[] = [];
    ws.on('message', (data: Buffer) => {
      const prompt = finalPromptOf(data);
      if (prompt === null) return;
      history.push({ role: 'user', content: prompt });
      void (async () => {
        let reply = '';
        try {
          await streamReply(history, (token) => {
            reply += token;
            ws.send(JSON.stringify({ type: 'text', token, last: false }));
          });
        } catch {
          // The harness counts a reply with missing frames as failed; nothing else to do here.
        }
        history.push({ role: 'assistant', content: reply });
        ws.send(JSON.stringify({ type: 'text', token: '', last: true }));
      })();
    });
  });
}
