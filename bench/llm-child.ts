// The `llm` child's fake OpenAI server: instant by default, its pace switched between runs.
// Loaded only by that role (child.ts imports it when it starts).
import http from 'node:http';
import { echoScript, startFakeOpenAI, type FakeOpenAI } from '../src/testing/fake-openai-server.js';

/**
 * The fake LLM listens with node's default accept queue (511). When a thousand paced replies start
 * at once, the measured process opens that many connections to it in a moment; the kernel drops
 * what overflows the queue, and those requests wait for TCP's SYN retries (1 s, 3 s, 7 s...). That
 * is the test rig, not the relay: while the fake starts, its listen() gets the queue the kernel allows.
 */
async function withDeepAcceptQueue<T>(start: () => Promise<T>): Promise<T> {
  const proto = http.Server.prototype as unknown as { listen: (...args: unknown[]) => unknown };
  const listen = proto.listen;
  proto.listen = function (this: unknown, ...args: unknown[]) {
    // listen(port, host, callback) -> listen(port, host, backlog, callback)
    if (args.length === 3 && typeof args[2] === 'function') return listen.call(this, args[0], args[1], ACCEPT_QUEUE, args[2]);
    return listen.apply(this, args);
  };
  try {
    return await start();
  } finally {
    delete (proto as { listen?: unknown }).listen; // back to net.Server's own
  }
}

/** Linux caps it at net.core.somaxconn (4,096 on the dev machine). */
const ACCEPT_QUEUE = 8192;

export function startLlm(): Promise<FakeOpenAI> {
  return withDeepAcceptQueue(() => startFakeOpenAI({ chunkDelayMs: 0 }));
}

/** The same echo reply, its tokens `chunkDelayMs` apart: what startFakeOpenAI({ chunkDelayMs }) sends. */
export function pace(llm: FakeOpenAI, chunkDelayMs: number): void {
  llm.setScript(async (req) => ({ ...(await echoScript(req)), delayMs: chunkDelayMs }));
  // The fake keeps a record of every request; a run needs none of them, and they would pile up.
  llm.requests.length = 0;
}
