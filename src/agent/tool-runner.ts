// The session's `tool` actor: runs one parsed tool call of the agent as an invoked promise. Leaving
// the session's `tool` state (interrupt, hang-up, shutdown) aborts it; a timeout or a throw becomes
// the result the model sees, never a failure of the session.
import { fromPromise, type PromiseActorLogic, type PromiseSnapshot } from 'xstate';
import { systemClock, type Clock } from '../clock.js';
import type { ToolInput, ToolOutcome } from '../machines/tool-call.js';
import { DEFAULT_TOOL_TIMEOUT_MS, type AnyTool, type Tool, type ToolContext } from './tool.js';

/** Restored input: `repeated` is set when the run was in flight in a snapshot its process left behind. */
type RunInput = ToolInput & { repeated?: boolean };

class ToolTimeout extends Error {}

/** A result longer than this is cut (it goes to the model, into the history and every store write). */
export const MAX_TOOL_RESULT_BYTES = 8 * 1024;
/** Timers cannot wait longer (a larger delay fires at once). */
const MAX_TIMEOUT_MS = 2 ** 31 - 1;

/** `text` cut to `max` UTF-8 bytes at a character boundary, saying how much was cut. */
export function capResult(text: string, max = MAX_TOOL_RESULT_BYTES): string {
  const bytes = Buffer.byteLength(text);
  if (bytes <= max) return text;
  let cut = Buffer.from(text).subarray(0, max).toString('utf8');
  // A character split by the cut decodes as U+FFFD: drop it.
  if (cut.endsWith('\uFFFD')) cut = cut.slice(0, -1);
  return `${cut}…[truncated ${bytes - Buffer.byteLength(cut)} bytes]`;
}

export const OUTCOME_UNKNOWN =
  'outcome unknown: the server restarted while this tool ran and it is not safe to run again; check its effect before calling it again';

/** `failed`: a tool threw or timed out (`content` is what the model is told), for the server's log. */
export interface ToolActorHooks {
  failed?(tool: string, content: string): void;
}

export function createToolActor(tools: ReadonlyMap<string, AnyTool>, clock: Clock = systemClock, hooks: ToolActorHooks = {}): PromiseActorLogic<ToolOutcome, ToolInput> {
  const logic = fromPromise<ToolOutcome, RunInput>(async ({ input, signal }) => {
    const outcome = await contentOf(input, tools, signal, clock, hooks);
    return { ...outcome, ...(outcome.content === undefined ? {} : { content: capResult(outcome.content) }), at: clock.now() };
  });
  return {
    ...logic,
    // A restored run repeats one that may have done its work already: the tool's rule decides.
    restoreSnapshot: (persisted, scope) => {
      const snapshot = persisted as PromiseSnapshot<ToolOutcome, RunInput>;
      return logic.restoreSnapshot!({ ...snapshot, input: { ...snapshot.input, repeated: true } } as unknown as typeof persisted, scope);
    },
  } as PromiseActorLogic<ToolOutcome, ToolInput>;
}

async function contentOf(input: RunInput, tools: ReadonlyMap<string, AnyTool>, signal: AbortSignal, clock: Clock, hooks: ToolActorHooks): Promise<Omit<ToolOutcome, 'at'>> {
  const { call } = input;
  if ('error' in call) return { content: `error: ${call.error}` };
  const tool = tools.get(call.name);
  // The agent no longer has it (changed between a save and its restore).
  if (!tool) return { content: `error: unknown tool ${call.name}` };
  if ('outcome' in tool) return tool.outcome(call.args, { language: input.language });
  if (input.repeated && tool.safeToRepeat === false) return { content: OUTCOME_UNKNOWN };
  return { content: await run(tool, input, signal, clock, hooks) };
}

/** The tool's timeout as a timer can wait it: the default when unset, at most MAX_TIMEOUT_MS (also for Infinity or NaN). */
function timeoutOf(tool: Tool): number {
  const ms = tool.timeoutMs ?? DEFAULT_TOOL_TIMEOUT_MS;
  return Number.isNaN(ms) ? MAX_TIMEOUT_MS : Math.min(Math.max(0, ms), MAX_TIMEOUT_MS);
}

async function run(tool: Tool, input: RunInput, signal: AbortSignal, clock: Clock, hooks: ToolActorHooks): Promise<string> {
  const timeoutMs = timeoutOf(tool);
  const controller = new AbortController();
  let timer: unknown;
  // Settles when the run is cut short (interrupt, hang-up, shutdown, timeout), so nothing waits on a tool that ignores its signal.
  const cutShort = new Promise<never>((_, reject) => {
    const stop = (reason: unknown) => {
      clock.clearTimeout(timer);
      controller.abort(reason);
      reject(reason);
    };
    signal.addEventListener('abort', () => stop(signal.reason), { once: true });
    timer = clock.setTimeout(() => stop(new ToolTimeout()), timeoutMs);
  });
  cutShort.catch(() => undefined);
  try {
    const ctx: ToolContext = {
      callSid: input.callSid,
      language: input.language,
      call: { callSid: input.callSid, language: input.language, from: input.from ?? '', to: input.to ?? '', customParameters: input.customParameters ?? {} },
      signal: controller.signal,
      // Scoped to the call: models reuse short ids like "call_0" across calls.
      idempotencyKey: `${input.callSid}:${input.call.id}`,
      repeated: input.repeated === true,
    };
    // Started at once (a synchronous throw is an error result like a rejection).
    let running: Promise<unknown>;
    try {
      running = Promise.resolve(tool.run((input.call as { args: unknown }).args, ctx));
    } catch (err) {
      running = Promise.reject(err);
    }
    const value: unknown = await Promise.race([running, cutShort]);
    return typeof value === 'string' ? value : (JSON.stringify(value) ?? 'done');
  } catch (err) {
    // Cut short by the session (interrupt, hang-up, shutdown): nothing failed, and nobody reads the result.
    if (signal.aborted) return 'aborted';
    const content = err instanceof ToolTimeout ? `error: ${tool.name} timed out after ${timeoutMs} ms` : `error: ${err instanceof Error ? err.message : String(err)}`;
    hooks.failed?.(tool.name, content);
    return content;
  } finally {
    clock.clearTimeout(timer);
  }
}
