// Starts the real server in-process on an ephemeral loopback port, talking to a local
// OpenAI-compatible server through the real `openai` SDK.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { loadConfig, type Config } from '../../src/config.js';
import { startServer, type RunningServer } from '../../src/server/server.js';
import { startFakeOpenAI, type FakeOpenAI, type FakeOpenAIOptions } from '../../src/testing/fake-openai-server.js';
import { createLogger, type Logger } from '../../src/server/logger.js';
import { REDIS_URL } from './redis.js';
import type { SnapshotStore } from '../../src/stores/types.js';
import type { Clock } from '../../src/clock.js';
import type { AgentDefinition } from '../../src/agent/agent.js';

export interface TestServer {
  server: RunningServer;
  llm: FakeOpenAI;
  config: Config;
  close(): Promise<void>;
}

export interface TestServerOptions {
  config?: Partial<Config>;
  llm?: FakeOpenAIOptions;
  /** Reuse an already running fake LLM (e.g. across a restart). */
  sharedLlm?: FakeOpenAI;
  redisPrefix?: string;
  /** A store built by the test (e.g. a real store wrapped to slow it down). */
  store?: SnapshotStore;
  /** The server's clock (e.g. a test clock the test moves forward instead of sleeping). */
  clock?: Clock;
  /** Where the server logs (e.g. a logger writing to a stream the test reads); else stdout at config.logLevel. */
  logger?: Logger;
  /** The agent the server runs (the built-in demo agent when omitted). */
  agent?: AgentDefinition;
}

export function tempSqlitePath(): string {
  return join(mkdtempSync(join(tmpdir(), 'relay-actors-')), 'sessions.db');
}

export async function startTestServer(opts: TestServerOptions = {}): Promise<TestServer> {
  const llm = opts.sharedLlm ?? (await startFakeOpenAI(opts.llm));
  // SESSION_HIBERNATE_MS in the test environment (e.g. 1) applies to every test server that does not set it.
  const config = loadConfig(
    { SESSION_HIBERNATE_MS: process.env.SESSION_HIBERNATE_MS },
    {
      port: 0,
      host: '127.0.0.1',
      store: 'memory',
      sqlitePath: tempSqlitePath(),
      redisUrl: REDIS_URL,
      openaiApiKey: 'test-key',
      openaiBaseUrl: llm.baseURL,
      logLevel: process.env.TEST_LOG_LEVEL ?? 'silent',
      ...opts.config,
    },
  );
  const server = await startServer(config, {
    store: opts.store,
    logger: opts.logger ?? createLogger(config.logLevel),
    redisPrefix: opts.redisPrefix ?? `test:${randomUUID()}:`,
    clock: opts.clock,
    agent: opts.agent,
  });
  return {
    server,
    llm,
    config,
    async close() {
      await server.close();
      if (!opts.sharedLlm) await llm.close();
    },
  };
}
