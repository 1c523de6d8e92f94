// The contract between the session machine and the agent's tools (run at the edge as the `tool` actor).
import type { DtmfKind } from './dtmf/types.js';

/** A tool call the model made, parsed once (by the LLM edge, against the agent's tools). */
export type ParsedToolCall =
  | { id: string; name: string; args: unknown }
  /** Unknown tool or arguments that fail its schema: the model is told why. */
  | { id: string; name: string; error: string };

/** A keypad entry the model asked for (collect_digits). */
export interface KeypadRequest {
  kind: DtmfKind;
  label?: string;
  minLength?: number;
  maxLength?: number;
}

/** What the session does after a tool, besides answering the model: the built-in tools' effects. */
export type ToolEffect =
  | { type: 'switchLanguage'; language: string }
  | { type: 'collectDigits'; request: KeypadRequest }
  | { type: 'handoff'; reason: string };

/** The `tool` actor's output. */
export interface ToolOutcome {
  /** The tool result the model sees; absent when the effect answers later (a keypad entry's result). */
  content?: string;
  effect?: ToolEffect;
  /** When the tool finished (epoch ms, stamped by the edge): a keypad entry it starts counts from here. */
  at: number;
}

/** The `tool` actor's input: small and JSON, since it is persisted with the session while the tool runs. */
export interface ToolInput {
  call: ParsedToolCall;
  callSid: string;
  language: string;
  /** The caller's identity from setup, for the tool's context (absent in snapshots of earlier versions). */
  from?: string;
  to?: string;
  customParameters?: Record<string, string>;
}
