// The contract between the session machine and its LLM edge (the `llmReply` actor): the history it
// sends, the events a reply streams back, and the persistence rule every reply actor follows.
import { fromCallback, type CallbackActorLogic, type CallbackLogicFunction, type CallbackSnapshot } from 'xstate';
import type { ParsedToolCall } from './tool-call.js';

export interface ToolCall {
  id: string;
  name: string;
  /** Raw JSON text as produced by the model; kept verbatim in the history the model is sent. */
  arguments: string;
}

export type ChatTurn =
  | { role: 'user'; content: string }
  | { role: 'assistant'; content: string; toolCalls?: ToolCall[]; interrupted?: boolean }
  | { role: 'tool'; toolCallId: string; content: string };

/** Who is calling, for the agent's instructions. */
export interface CallInfo {
  callSid: string;
  language: string;
  from: string;
  to: string;
  customParameters: Record<string, string>;
}

export interface ReplyInput {
  turns: ChatTurn[];
  call: CallInfo;
}

/**
 * LLM.DONE carries the raw tool calls (kept in the history) and the first one parsed against the
 * agent's tools, and when the reply finished (epoch ms). LLM.RESTART: a restored reply asks to be run
 * again. LLM.ERROR's `text` is what had streamed before the failure, and LLM.CUT_OFF the whole text
 * streamed so far, sent when the session asks for it with REPLAY; fromReplyStream adds both.
 */
export type ReplyEvent =
  | { type: 'LLM.DELTA'; text: string }
  /** Several deltas that arrived together (one read of the stream): one event, still one frame each. */
  | { type: 'LLM.DELTAS'; texts: readonly string[] }
  | { type: 'LLM.DONE'; text: string; toolCalls: ToolCall[]; toolCall?: ParsedToolCall; at: number }
  | { type: 'LLM.ERROR'; message: string; text?: string }
  | { type: 'LLM.RESTART' }
  | { type: 'LLM.CUT_OFF'; text: string };

/** What the session tells its reply actor: a resumed caller needs to hear again what streamed so far. */
export type ReplyCommand = { type: 'REPLAY' };

/**
 * A reply actor from a streaming callback. The streamed text is kept here, not in the session's
 * context: a token then costs the session no new snapshot, and the session asks for the text only
 * when a resumed caller must hear it again (REPLAY, answered with LLM.CUT_OFF).
 *
 * Its input (the whole history) is not persisted: the session's context holds the history already.
 * A reply restored from a snapshot (its process died mid-stream) therefore has no input, runs
 * nothing, and asks the session to start the reply over, which re-invokes it with the current
 * history: the one place that rule lives.
 */
export function fromReplyStream(
  stream: CallbackLogicFunction<ReplyCommand, ReplyEvent, ReplyInput>,
): CallbackActorLogic<ReplyCommand, ReplyInput> {
  const logic = fromCallback<ReplyCommand, ReplyInput>((params) => {
    // Typed as present for the session's invoke; absent (undefined) only in a restored snapshot.
    if (!(params.input as ReplyInput | undefined)) {
      params.sendBack({ type: 'LLM.RESTART' } satisfies ReplyEvent);
      return;
    }
    let soFar = '';
    const sendBack = (event: ReplyEvent) => {
      if (event.type === 'LLM.DELTA') soFar += event.text;
      else if (event.type === 'LLM.DELTAS') soFar += event.texts.join('');
      params.sendBack(event.type === 'LLM.ERROR' ? { ...event, text: event.text ?? soFar } : event);
    };
    params.receive((command) => {
      if (command.type === 'REPLAY') params.sendBack({ type: 'LLM.CUT_OFF', text: soFar } satisfies ReplyEvent);
    });
    try {
      return stream({ ...params, sendBack } as Parameters<typeof stream>[0]);
    } catch (err) {
      // A stream that fails as it starts: an LLM error like any other, with what it streamed before.
      sendBack({ type: 'LLM.ERROR', message: err instanceof Error ? err.message : String(err) });
      return;
    }
  });
  const withoutInput = (snapshot: CallbackSnapshot<ReplyInput>) => ({ ...snapshot, input: undefined as unknown as ReplyInput });
  return {
    ...logic,
    getPersistedSnapshot: withoutInput,
    // Snapshots stored before this rule carry their input: they restart the same way.
    restoreSnapshot: (persisted) => withoutInput(persisted as CallbackSnapshot<ReplyInput>),
  };
}
