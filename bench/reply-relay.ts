// What the floor and the LLM-hop baseline share: a loopback `ws` server with the relay's socket
// options, the request the server sends for the default agent, and the relay loop around one
// streamed reply per final prompt (tokens as `text` frames, then `last: true`). Each baseline only
// says how it streams a reply: plain fetch (the floor) or the openai SDK (the hop).
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import { resolveAgent } from '../src/agent/agent.js';
import type { ChatTurn } from '../src/llm/types.js';

/** The default agent's system prompt, model settings and tools, as the server sends them. */
export const benchAgent = resolveAgent();
export const benchInstructions = benchAgent.instructions({ callSid: 'bench', language: 'en-US', from: '', to: '', customParameters: {} });

export interface WsServer {
  port: number;
  connections(): number;
  close(): Promise<void>;
}

/** The words of a final `prompt` frame; null for anything else (no validation: baselines stay lean). */
export function finalPromptOf(data: Buffer): string | null {
  let frame: { type?: unknown; voicePrompt?: unknown; last?: unknown };
  try {
    frame = JSON.parse(data.toString('utf8')) as typeof frame;
  } catch {
    return null;
  }
  if (frame.type !== 'prompt' || frame.last === false || typeof frame.voicePrompt !== 'string') return null;
  return frame.voicePrompt;
}

/** A loopback `ws` server with the relay's socket options; `onConnection` does the rest. */
export async function listenWs(onConnection: (ws: WebSocket) => void): Promise<WsServer> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false, maxPayload: 1024 * 1024 });
  wss.on('connection', (ws) => {
    ws.on('error', () => {});
    onConnection(ws);
  });
  await new Promise<void>((resolve, reject) => {
    wss.once('listening', resolve);
    wss.once('error', reject);
  });
  return {
    port: (wss.address() as AddressInfo).port,
    connections: () => wss.clients.size,
    close: () =>
      new Promise<void>((resolve) => {
        for (const c of wss.clients) c.terminate();
        wss.close(() => resolve());
      }),
  };
}

/** Streams one reply to `history`, calling `onToken` for every content delta. */
export type StreamReply = (history: ChatTurn[], onToken: (token: string) => void) => Promise<void>;

export function listenReplyRelay(streamReply: StreamReply): Promise<WsServer> {
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
