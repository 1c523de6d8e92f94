// The actors a session machine needs besides its LLM, as the server provides them for the built-in
// demo agent: the tool actor (built-in tools), keypad and timers on `clock`. Machine-level tests
// script only the LLM and take the rest from here.
import { resolveAgent } from '../../src/agent/agent.js';
import { parseToolCall } from '../../src/agent/tool.js';
import { createToolActor } from '../../src/agent/tool-runner.js';
import { systemClock, type Clock } from '../../src/clock.js';
import type { ReplyEvent, ToolCall } from '../../src/machines/reply.js';
import { timersOn } from '../../src/machines/session.js';

export const demoAgent = resolveAgent();

export function agentActors(clock: Clock = systemClock) {
  return { tool: createToolActor(demoAgent.tools, clock), ...timersOn(clock, demoAgent.keypad) };
}

/** LLM.DONE as the LLM edge sends it: the first tool call parsed against the demo agent's tools. */
export function llmDone(text: string, toolCalls: ToolCall[], at: number): ReplyEvent {
  const [first] = toolCalls;
  return { type: 'LLM.DONE', text, toolCalls, toolCall: first ? parseToolCall(first, demoAgent.tools) : undefined, at };
}
