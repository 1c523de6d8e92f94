// The LLM edge's side of the reply contract (defined by the session machine, which it serves).
export type { CallInfo, ChatTurn, ReplyEvent, ReplyInput, ToolCall } from '../machines/reply.js';
