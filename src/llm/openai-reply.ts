// The LLM edge: one streamed chat completion per invocation, as an XState callback actor.
import { randomUUID } from 'node:crypto';
import OpenAI from 'openai';
import { fromCallback } from 'xstate';
import { systemClock, type Clock } from '../clock.js';
import { toChatMessages } from './prompts.js';
import { toolDefinitions } from './tools.js';
import type { ReplyEvent, ReplyInput, ToolCall } from './types.js';

export interface OpenAIReplyOptions {
  client: OpenAI;
  model: string;
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
  return fromCallback<{ type: string }, ReplyInput>(({ input, sendBack }) => {
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
            model: opts.model,
            messages: toChatMessages(input.turns, input.language),
            tools: toolDefinitions,
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
            send({ type: 'LLM.DELTA', runId, text: delta.content });
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
        send({ type: 'LLM.DONE', runId, text, toolCalls, at: (opts.clock ?? systemClock).now() });
      } catch (err) {
        if (abort.signal.aborted) return;
        settled = true;
        opts.onError?.(err);
        send({ type: 'LLM.ERROR', runId, message: err instanceof Error ? err.message : String(err) });
      }
    })();
    // Only a stream still running needs aborting; aborting a finished one still costs a DOMException.
    return () => {
      if (!settled) abort.abort();
    };
  });
}
