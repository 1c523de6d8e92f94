// Child process entry for the benchmark: `llm` (fake OpenAI server), `fetch-floor` (the floor: the
// same request with plain fetch; later also the informational LLM-hop listener, the same request
// through the SDK) or `server` (the real relay server). Separate processes keep the harness's client
// work, the LLM and the measured server from sharing one event loop, and make memory readings per process.
//
// A role loads only its own modules (imported when it starts): a child spends about 2 s of CPU
// loading the whole server, and the run starts every child at once.
import { readFileSync } from 'node:fs';
import v8 from 'node:v8';
import type { FakeOpenAI } from '../src/testing/fake-openai-server.js';
import type { RunningServer } from './relay-child.js';
import type { WsServer } from './reply-relay.js';
import type { ChildRole, CommandMessage, MemorySample, ReplyMessage, ServerChildOptions, ServerStats } from './child-protocol.js';

const role = process.argv[2] as ChildRole;
const gc = (globalThis as { gc?: () => void }).gc;

let llm: FakeOpenAI | undefined;
/** fetch-floor: the floor's listener, and the LLM-hop listener once asked for. */
let floor: WsServer | undefined;
let hop: WsServer | undefined;
let server: RunningServer | undefined;
let serverOptions: ServerChildOptions | undefined;
let relay: typeof import('./relay-child.js') | undefined;

/** Resident anonymous memory (Linux: RssAnon in /proc/self/status), or null elsewhere. */
function rssAnon(): number | null {
  try {
    const kb = /^RssAnon:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1];
    return kb === undefined ? null : Number(kb) * 1024;
  } catch {
    return null;
  }
}

/** Two forced full GCs: the first pass can leave finalizer-held objects for the second. */
function collectGarbage(): void {
  gc?.();
  gc?.();
}

function sample(): MemorySample {
  collectGarbage();
  const m = process.memoryUsage();
  let young = 0;
  for (const space of v8.getHeapSpaceStatistics()) if (space.space_name.startsWith('new_')) young += space.physical_space_size;
  const anon = rssAnon();
  return { heapUsed: m.heapUsed, rss: m.rss, rssAnon: anon ?? m.rss, youngGeneration: young, external: m.external, arrayBuffers: m.arrayBuffers, gc: gc !== undefined };
}

/**
 * Memory after forced full GCs, read until two readings 150 ms apart agree: V8 also shrinks the
 * young generation by itself some time after a burst of allocation, and the pages leave RSS a
 * moment after it says so.
 */
async function memory(): Promise<MemorySample> {
  const live = (m: MemorySample) => m.rssAnon - m.youngGeneration;
  let last = sample();
  for (let i = 0; i < 6; i++) {
    await new Promise((resolve) => setTimeout(resolve, 150));
    const next = sample();
    if (Math.abs(live(next) - live(last)) < 256 * 1024) return next;
    last = next;
  }
  return last;
}

async function handle(cmd: CommandMessage['cmd'], arg: unknown): Promise<unknown> {
  switch (cmd) {
    case 'start':
      if (role === 'llm') {
        llm = await (await import('./llm-child.js')).startLlm();
        return { port: llm.port, baseURL: llm.baseURL };
      }
      if (role === 'fetch-floor') {
        floor = await (await import('./fetch-floor-server.js')).startFetchFloorServer((arg as { llmBaseUrl: string }).llmBaseUrl);
        return { port: floor.port };
      }
      relay = await import('./relay-child.js');
      serverOptions = arg as ServerChildOptions;
      server = await relay.startRelay(serverOptions);
      return { port: server.port };
    case 'pace':
      if (!llm) throw new Error('pace before start');
      (await import('./llm-child.js')).pace(llm, (arg as { chunkDelayMs: number }).chunkDelayMs);
      return null;
    case 'start-hop':
      if (role !== 'fetch-floor') throw new Error('start-hop: fetch-floor only');
      hop ??= await (await import('./llm-hop-server.js')).startLlmHopServer((arg as { llmBaseUrl: string }).llmBaseUrl);
      return { port: hop.port };
    case 'restart': {
      if (!relay || !server || !serverOptions) throw new Error('restart before start');
      await server.close();
      serverOptions = (arg as { options?: ServerChildOptions }).options ?? serverOptions;
      server = await relay.startRelay(serverOptions);
      return { port: server.port };
    }
    case 'stats': {
      const counts = server?.manager.countByState() ?? new Map<string, number>();
      const connections = (floor?.connections() ?? 0) + (hop?.connections() ?? 0);
      const stats: ServerStats = {
        sessions: server?.manager.size ?? connections,
        byState: Object.fromEntries(counts),
        ...(server ? { hibernated: server.manager.hibernated } : {}),
      };
      return stats;
    }
    case 'cpu':
      return process.cpuUsage();
    case 'flush':
      await server?.manager.flush();
      return null;
    case 'gc':
      collectGarbage();
      return null;
    case 'memory':
      return memory();
    case 'stop':
      await server?.close();
      await relay?.closeMemoryStore();
      await floor?.close();
      await hop?.close();
      await llm?.close();
      server = undefined;
      floor = undefined;
      hop = undefined;
      llm = undefined;
      return null;
  }
}

process.on('message', (raw) => {
  const msg = raw as CommandMessage;
  handle(msg.cmd, msg.arg).then(
    (result) => {
      const reply: ReplyMessage = { id: msg.id, ok: true, result };
      process.send?.(reply, () => {
        if (msg.cmd === 'stop') process.exit(0);
      });
    },
    (err: unknown) => {
      const reply: ReplyMessage = { id: msg.id, ok: false, error: err instanceof Error ? (err.stack ?? err.message) : String(err) };
      process.send?.(reply, () => {
        if (msg.cmd === 'stop') process.exit(1);
      });
    },
  );
});
// The benchmark went away (crash, Ctrl-C): do not linger.
process.on('disconnect', () => process.exit(0));
