// The baseline: a raw `ws` server that answers each final prompt at once with the frames the real
// server sends for the fake LLM's echo reply (one `text` per word-sized chunk, then `last: true`).
import { WebSocketServer } from 'ws';
import type { AddressInfo } from 'node:net';
import { splitIntoChunks } from '../src/llm/fake-openai-server.js';

/** What the fake LLM's echoScript answers; frame-check.ts verifies both sides match. */
export const echoReplyText = (prompt: string) => `You said: ${prompt}`;

export interface EchoServer {
  port: number;
  connections(): number;
  close(): Promise<void>;
}

export async function startEchoServer(): Promise<EchoServer> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false, maxPayload: 1024 * 1024 });
  wss.on('connection', (ws) => {
    ws.on('error', () => {});
    ws.on('message', (data: Buffer) => {
      let frame: { type?: unknown; voicePrompt?: unknown; last?: unknown };
      try {
        frame = JSON.parse(data.toString('utf8')) as typeof frame;
      } catch {
        return;
      }
      if (frame.type !== 'prompt' || frame.last === false || typeof frame.voicePrompt !== 'string') return;
      for (const token of splitIntoChunks(echoReplyText(frame.voicePrompt))) ws.send(JSON.stringify({ type: 'text', token, last: false }));
      ws.send(JSON.stringify({ type: 'text', token: '', last: true }));
    });
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
