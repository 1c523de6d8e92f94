// The LLM edge: one streamed chat completion per invocation, as an XState callback actor.
import { randomUUID } from 'node:crypto';
import OpenAI from 'openai';
import type { ResolvedAgent } from '../agent/agent.js';
import { parseToolCall } from '../agent/tool.js';
import { systemClock, type Clock } from '../clock.js';
import { fromReplyStream } from '../machines/reply.js';
import { toChatMessages } from './prompts.js';
import type { ReplyEvent, ToolCall } from './types.js';

export interface OpenAIReplyOptions {
  client: OpenAI;
  /** Instructions, tools and model settings. */
  agent: Pick<ResolvedAgent, 'instructions' | 'model' | 'tools' | 'toolSchemas'>;
  /** Called once per run with ms from request to first streamed token. */
  onFirstToken?: (ms: number) => void;
  onError?: (err: unknown) => void;
  /** Stamps LLM.DONE; defaults to the system clock. */
  clock?: Clock;
}

/**
 * Streams a reply: each content delta is sent back as LLM.DELTA, tool calls are assembled
 * by index and delivered with LLM.DONE. Stopping the actor aborts the HTTP stream.
 */
export function createOpenAIReplyActor(opts: OpenAIReplyOptions) {
  const { agent } = opts;
  return fromReplyStream(({ input, sendBack }) => {
    const abort = new AbortController();
    let settled = false;
    const runId = randomUUID();
    const send = (event: ReplyEvent) => {
      if (!abort.signal.aborted) sendBack(event);
    };
    void (async () => {
      const started = performance.now();
      let firstToken = true;
      let text = '';
      const calls = new Map<number, ToolCall>();
      try {
        const stream = await opts.client.chat.completions.create(
          {
            model: agent.model.name,
            messages: toChatMessages(input.turns, agent.instructions(input.call)),
            ...(agent.toolSchemas.length ? { tools: agent.toolSchemas } : {}),
            ...(agent.model.temperature === undefined ? {} : { temperature: agent.model.temperature }),
            ...(agent.model.maxTokens === undefined ? {} : { max_completion_tokens: agent.model.maxTokens }),
            stream: true,
          },
          { signal: abort.signal },
        );
        for await (const chunk of stream) {
          const delta = chunk.choices[0]?.delta;
          if (!delta) continue;
          if (delta.content) {
            if (firstToken) {
              firstToken = false;
              opts.onFirstToken?.(performance.now() - started);
            }
            text += delta.content;
            send({ type: 'LLM.DELTA', text: delta.content });
          }
          for (const piece of delta.tool_calls ?? []) {
            const call = calls.get(piece.index) ?? { id: '', name: '', arguments: '' };
            if (piece.id) call.id = piece.id;
            if (piece.function?.name) call.name += piece.function.name;
            if (piece.function?.arguments) call.arguments += piece.function.arguments;
            calls.set(piece.index, call);
          }
        }
        const toolCalls = [...calls.entries()]
          .sort(([a], [b]) => a - b)
          .map(([index, call]) => ({ ...call, id: call.id || `call_${runId}_${index}` }));
        settled = true;
        // Parsed once, here: the session gets a typed call (or the reason it is invalid).
        const toolCall = toolCalls[0] ? parseToolCall(toolCalls[0], agent.tools) : undefined;
        send({ type: 'LLM.DONE', text, toolCalls, toolCall, at: (opts.clock ?? systemClock).now() });
      } catch (err) {
        if (abort.signal.aborted) return;
        settled = true;
        opts.onError?.(err);
        send({ type: 'LLM.ERROR', message: err instanceof Error ? err.message : String(err) });
      }
    })();
    // Only a stream still running needs aborting; aborting a finished one still costs a DOMException.
    return () => {
      if (!settled) abort.abort();
    };
  });
}
