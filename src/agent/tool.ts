// A tool the model may call: a name, a description, a zod schema for its arguments and `run`.
import { z } from 'zod';
import type { CallInfo, ToolCall } from '../machines/reply.js';
import type { ParsedToolCall, ToolOutcome } from '../machines/tool-call.js';

export interface ToolContext {
  callSid: string;
  /** Who is calling, from Twilio's setup (not from the model): numbers and the TwiML's custom parameters. */
  call: CallInfo;
  /** The call's current language code, e.g. 'en-US'. */
  language: string;
  /** Aborted when the caller interrupts or hangs up, the tool times out, or the server shuts down. */
  signal: AbortSignal;
  /**
   * `<callSid>:<the model's tool call id>`: the same when a tool in flight at a crash is run again
   * after the restore, so a service can recognise the repeat (use it as your idempotency key).
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
  /** After this long the tool is aborted and the model told it timed out. Default 10 s. Results over 8 KiB are cut. */
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
  let parameters: Record<string, unknown>;
  try {
    // What the model must send (the input side: a field with a default is optional to it).
    parameters = z.toJSONSchema(tool.parameters, { io: 'input' }) as Record<string, unknown>;
  } catch (err) {
    throw new Error(`tool "${tool.name}": its parameters cannot be sent to the model as JSON Schema (${err instanceof Error ? err.message : String(err)})`);
  }
  return { type: 'function' as const, function: { name: tool.name, description: tool.description, parameters } };
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
  let parsed;
  try {
    parsed = tool.parameters.safeParse(json);
  } catch (err) {
    // An async refinement, or a refinement or transform that throws: the model is told, nothing runs.
    return { id: call.id, name: call.name, error: `arguments could not be checked: ${err instanceof Error ? err.message : String(err)}` };
  }
  if (!parsed.success) return { id: call.id, name: call.name, error: z.prettifyError(parsed.error) };
  return { id: call.id, name: call.name, args: parsed.data };
}
