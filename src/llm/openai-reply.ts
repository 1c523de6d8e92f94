// The LLM edge: one streamed chat completion per invocation, as an XState callback actor.
import { randomUUID } from 'node:crypto';
import OpenAI, { APIError } from 'openai';
import type { ChatCompletionChunk, ChatCompletionCreateParamsStreaming } from 'openai/resources/chat/completions';
import { createParser } from 'eventsource-parser';
import type { ResolvedAgent } from '../agent/agent.js';
import { parseToolCall } from '../agent/tool.js';
import { systemClock, type Clock } from '../clock.js';
import { fromReplyStream } from '../machines/reply.js';
import { bodyOf, headersOf, requestChatStream, type ChatStream } from './chat-request.js';
import { toChatMessages } from './prompts.js';
import type { ReplyEvent, ToolCall } from './types.js';

export interface OpenAIReplyOptions {
  client: OpenAI;
  /** Instructions, tools and model settings. */
  agent: Pick<ResolvedAgent, 'instructions' | 'model' | 'tools' | 'toolSchemas'>;
  /** Called once per run with ms from request to first streamed token. */
  onFirstToken?: (ms: number) => void;
  onError?: (err: unknown) => void;
  /** Stamps LLM.DONE, times requests out and waits between retries; defaults to the system clock. */
  clock?: Clock;
}

/**
 * Streams a reply: the content deltas of each read are sent back as LLM.DELTA (one) or LLM.DELTAS
 * (several), tool calls are assembled
 * by index and delivered with LLM.DONE. Stopping the actor aborts the HTTP stream.
 */
export function createOpenAIReplyActor(opts: OpenAIReplyOptions) {
  const { agent } = opts;
  const clock = opts.clock ?? systemClock;
  return fromReplyStream(({ input, sendBack }) => {
    const abort = new AbortController();
    let settled = false;
    const send = (event: ReplyEvent) => {
      if (!abort.signal.aborted) sendBack(event);
    };
    void (async () => {
      const started = performance.now();
      let firstToken = true;
      let text = '';
      const calls = new Map<number, ToolCall>();
      try {
        // The request is made on the SDK client's settings (chat-request.ts) and the body is read here:
        // the SDK's request path and its stream wrapper were the largest per-request and per-token costs
        // in the relay's profile.
        const body: ChatCompletionCreateParamsStreaming = {
          model: agent.model.name,
          messages: toChatMessages(input.turns, agent.instructions(input.call)),
          ...(agent.toolSchemas.length ? { tools: agent.toolSchemas } : {}),
          ...(agent.model.temperature === undefined ? {} : { temperature: agent.model.temperature }),
          ...(agent.model.maxTokens === undefined ? {} : { max_completion_tokens: agent.model.maxTokens }),
          stream: true,
        };
        const response = await requestChatStream(body, { client: opts.client, clock, signal: abort.signal });
        // The deltas of one read of the body go to the session as one event (each still its own
        // frame): a model streaming fast delivers many per read, and every event is a macrostep.
        let arrived: string[] = [];
        const flush = () => {
          if (arrived.length === 1) send({ type: 'LLM.DELTA', text: arrived[0]! });
          else if (arrived.length > 1) send({ type: 'LLM.DELTAS', texts: arrived });
          arrived = [];
        };
        const onChunk = (chunk: ChatCompletionChunk) => {
          const delta = chunk.choices?.[0]?.delta;
          if (!delta) return;
          if (delta.content) {
            if (firstToken) {
              firstToken = false;
              opts.onFirstToken?.(performance.now() - started);
            }
            text += delta.content;
            arrived.push(delta.content);
          }
          for (const piece of delta.tool_calls ?? []) {
            const call = calls.get(piece.index) ?? { id: '', name: '', arguments: '' };
            if (piece.id) call.id = piece.id;
            if (piece.function?.name) call.name += piece.function.name;
            if (piece.function?.arguments) call.arguments += piece.function.arguments;
            calls.set(piece.index, call);
          }
        };
        await readChunks(response, onChunk, flush);
        const toolCalls = [...calls.entries()]
          .sort(([a], [b]) => a - b)
          .map(([index, call]) => ({ ...call, id: call.id || `call_${randomUUID()}_${index}` }));
        settled = true;
        // Parsed once, here: the session gets a typed call (or the reason it is invalid).
        const toolCall = toolCalls[0] ? parseToolCall(toolCalls[0], agent.tools) : undefined;
        send({ type: 'LLM.DONE', text, toolCalls, toolCall, at: clock.now() });
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

/**
 * Reads a streamed chat completion's SSE body (eventsource-parser), as the SDK's own stream does:
 * `[DONE]` ends it, an `error` in the data is thrown as the SDK's APIError, other events are chunks;
 * an `error` event or data that is not a chunk is thrown too.
 */
async function readChunks(response: ChatStream, onChunk: (chunk: ChatCompletionChunk) => void, afterRead: () => void): Promise<void> {
  let done = false;
  const parser = createParser({
    onEvent: ({ event, data }) => {
      if (done) return;
      if (data.startsWith('[DONE]')) {
        done = true;
        return;
      }
      // The Assistants API's `thread.*` events never come from a chat completion.
      if (event?.startsWith('thread.')) return;
      const chunk = JSON.parse(data) as (ChatCompletionChunk & { error?: unknown }) | null;
      if (chunk?.error) throw new APIError(undefined, chunk.error as object, undefined, headersOf(response));
      // OpenAI-compatible servers also fail mid-stream as `event: error`, or with a body-level error
      // object (`{"object":"error","message":…}`): neither is a chunk, and neither may end as a silent reply.
      if (event === 'error' || !Array.isArray(chunk?.choices)) throw new APIError(undefined, (chunk ?? {}) as object, undefined, headersOf(response));
      onChunk(chunk!);
    },
  });
  const decoder = new TextDecoder();
  for await (const bytes of bodyOf(response) as AsyncIterable<Buffer>) {
    // Read to the end even after [DONE], so the connection goes back to the pool.
    try {
      parser.feed(decoder.decode(bytes, { stream: true }));
    } finally {
      // Deltas parsed before a failure in the same read were streamed: they count as said.
      afterRead();
    }
  }
  parser.feed(decoder.decode());
  afterRead();
}
