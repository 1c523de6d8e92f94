// The baseline: a raw `ws` server that answers each final prompt at once with the frames the real
// server sends for the fake LLM's echo reply (one `text` per word-sized chunk, then `last: true`).
import { WebSocketServer, type WebSocket } from 'ws';
import type { AddressInfo } from 'node:net';
import { splitIntoChunks } from '../src/testing/fake-openai-server.js';

/** What the fake LLM's echoScript answers; frame-check.ts verifies both sides match. */
export const echoReplyText = (prompt: string) => `You said: ${prompt}`;

export interface EchoServer {
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
export async function listenWs(onConnection: (ws: WebSocket) => void): Promise<EchoServer> {
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

export function startEchoServer(): Promise<EchoServer> {
  return listenWs((ws) =>
    ws.on('message', (data: Buffer) => {
      const prompt = finalPromptOf(data);
      if (prompt === null) return;
      for (const token of splitIntoChunks(echoReplyText(prompt))) ws.send(JSON.stringify({ type: 'text', token, last: false }));
      ws.send(JSON.stringify({ type: 'text', token: '', last: true }));
    }),
  );
}
