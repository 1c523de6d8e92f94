// A tool the model may call: a name, a description, a zod schema for its arguments and `run`.
import { z } from 'zod';
import type { ToolCall } from '../machines/reply.js';
import type { ParsedToolCall, ToolOutcome } from '../machines/tool-call.js';

export interface ToolContext {
  callSid: string;
  /** The call's current language code, e.g. 'en-US'. */
  language: string;
  /** Aborted when the caller interrupts or hangs up, the tool times out, or the server shuts down. */
  signal: AbortSignal;
  /**
   * The model's tool call id: the same when a tool in flight at a crash is run again after the
   * restore, so a service can recognise the repeat (use it as your idempotency key).
   */
  idempotencyKey: string;
  /** True when this run repeats one that was in flight when its process stopped. */
  repeated: boolean;
}

export interface Tool<Args = unknown> {
  name: string;
  /** Told to the model: when to use the tool and what it returns. */
  description: string;
  /** Arguments, validated before `run`; a call that fails them is answered with the reason, not run. */
  parameters: z.ZodType<Args>;
  /** The result the model sees: a string as is, anything else as JSON. A throw becomes `error: <message>`. */
  run(args: Args, ctx: ToolContext): unknown;
  /** After this long the tool is aborted and the model told it timed out. Default 10 s. */
  timeoutMs?: number;
  /**
   * Whether a run cut off by a crash or restart may run again after the restore (with the same
   * idempotency key). Default true; false: the model is told the outcome is unknown instead.
   */
  safeToRepeat?: boolean;
}

/** A built-in tool: instead of running anything it asks the session for an effect. */
export interface EffectTool<Args = unknown> extends Omit<Tool<Args>, 'run'> {
  outcome(args: Args, ctx: { language: string }): Omit<ToolOutcome, 'at'>;
}

export type AnyTool = Tool<any> | EffectTool<any>; // eslint-disable-line @typescript-eslint/no-explicit-any

export const DEFAULT_TOOL_TIMEOUT_MS = 10_000;

/** Declares a tool with typed arguments: `run` receives what `parameters` parses. */
export function defineTool<S extends z.ZodType>(tool: {
  name: string;
  description: string;
  parameters: S;
  run(args: z.output<S>, ctx: ToolContext): unknown;
  timeoutMs?: number;
  safeToRepeat?: boolean;
}): Tool<z.output<S>> {
  if (!/^[a-zA-Z0-9_-]{1,64}$/.test(tool.name)) throw new Error(`tool name "${tool.name}" must be 1-64 letters, digits, _ or -`);
  return tool as Tool<z.output<S>>;
}

/** The tool in the chat-completions `tools` format. */
export function toolSchema(tool: AnyTool) {
  return {
    type: 'function' as const,
    function: { name: tool.name, description: tool.description, parameters: z.toJSONSchema(tool.parameters) as Record<string, unknown> },
  };
}

/** Validates a model-produced tool call against the agent's tools; a bad one carries the reason for the model. */
export function parseToolCall(call: ToolCall, tools: ReadonlyMap<string, AnyTool>): ParsedToolCall {
  const tool = tools.get(call.name);
  if (!tool) return { id: call.id, name: call.name, error: `unknown tool ${call.name}` };
  let json: unknown;
  try {
    json = call.arguments.trim() === '' ? {} : JSON.parse(call.arguments);
  } catch {
    return { id: call.id, name: call.name, error: 'arguments are not valid JSON' };
  }
  const parsed = tool.parameters.safeParse(json);
  if (!parsed.success) return { id: call.id, name: call.name, error: z.prettifyError(parsed.error) };
  return { id: call.id, name: call.name, args: parsed.data };
}
