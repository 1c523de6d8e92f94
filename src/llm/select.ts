import OpenAI from 'openai';
import type { ResolvedAgent } from '../agent/agent.js';
import type { Clock } from '../clock.js';
import type { Config } from '../config.js';
import { createOpenAIReplyActor } from './openai-reply.js';
import { createOfflineReplyActor } from './offline-reply.js';

// What the selection needs of the server's logger and metrics, so the LLM edge does not depend on
// the server (imports point one way); the server's own logger and metrics fit these.
export interface SelectionLogger {
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
  warn(message: string): void;
}

export interface SelectionMetrics {
  firstTokenSeconds: { observe(seconds: number): void };
}

/** The real OpenAI(-compatible) endpoint when configured, otherwise the clearly logged offline mode. */
export function selectReplyActor(config: Config, agent: ResolvedAgent, logger: SelectionLogger, metrics: SelectionMetrics, clock?: Clock) {
  if (!config.openaiApiKey && !config.openaiBaseUrl) {
    logger.warn('OFFLINE MODE: neither OPENAI_API_KEY nor OPENAI_BASE_URL is set; calls get canned replies');
    return { mode: 'offline' as const, actor: createOfflineReplyActor({ tools: agent.tools, clock }) };
  }
  // The client holds the settings (key, base URL, org/project from the environment, timeout, retries);
  // chat-request.ts makes each request on them, retrying as the SDK does.
  const client = new OpenAI({ apiKey: config.openaiApiKey ?? 'unused', baseURL: config.openaiBaseUrl, maxRetries: 2, timeout: config.openaiTimeoutMs });
  logger.info({ model: agent.model.name, baseURL: client.baseURL }, 'LLM: OpenAI-compatible endpoint');
  return {
    mode: 'openai' as const,
    actor: createOpenAIReplyActor({
      client,
      agent,
      onFirstToken: (ms) => metrics.firstTokenSeconds.observe(ms / 1000),
      onError: (err) => logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'LLM request failed'),
      clock,
    }),
  };
}
