// The `llm` child's fake OpenAI server: instant by default, its pace switched between runs.
// Loaded only by that role (child.ts imports it when it starts).
import { echoScript, startFakeOpenAI, type FakeOpenAI } from '../src/testing/fake-openai-server.js';

/**
 * When a thousand paced replies start at once, the measured process opens that many connections to
 * the fake in a moment: node's default accept queue (511) overflowed, and those requests waited for
 * TCP's SYN retries. That is the test rig, not the relay. Linux caps this at net.core.somaxconn
 * (4,096 on the dev machine).
 */
const ACCEPT_QUEUE = 8192;

export function startLlm(): Promise<FakeOpenAI> {
  return startFakeOpenAI({ chunkDelayMs: 0, backlog: ACCEPT_QUEUE });
}

/** The same echo reply, its tokens `chunkDelayMs` apart: what startFakeOpenAI({ chunkDelayMs }) sends. */
export function pace(llm: FakeOpenAI, chunkDelayMs: number): void {
  llm.setScript(async (req) => ({ ...(await echoScript(req)), delayMs: chunkDelayMs }));
  // The fake keeps a record of every request; a run needs none of them, and they would pile up.
  llm.requests.length = 0;
}
