// Conversation history and the events an LLM reply actor sends back to its session.

export interface ToolCall {
  id: string;
  name: string;
  /** Raw JSON text as produced by the model; parsed and validated by tools.ts. */
  arguments: string;
}

export type ChatTurn =
  | { role: 'user'; content: string }
  | { role: 'assistant'; content: string; toolCalls?: ToolCall[]; interrupted?: boolean }
  | { role: 'tool'; toolCallId: string; content: string };

export interface ReplyInput {
  turns: ChatTurn[];
  language: string;
}

/** LLM.DONE carries when the reply finished (epoch ms): a keypad entry it asks for starts then. */
export type ReplyEvent =
  | { type: 'LLM.DELTA'; runId: string; text: string }
  | { type: 'LLM.DONE'; runId: string; text: string; toolCalls: ToolCall[]; at: number }
  | { type: 'LLM.ERROR'; runId: string; message: string };
