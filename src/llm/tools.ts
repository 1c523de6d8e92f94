// Tools the model may call, with their JSON schemas (sent to the model) and zod parsers (applied to its output).
import { z } from 'zod';
import type { ToolCall } from './types.js';

export const SUPPORTED_LANGUAGES = ['en-US', 'es-US'] as const;

export const switchLanguageArgs = z.object({ language: z.enum(SUPPORTED_LANGUAGES) });
export const collectDigitsArgs = z.object({
  kind: z.enum(['language', 'phoneNumber', 'dateOfBirth', 'digits']),
  label: z.string().max(40).optional(),
  minLength: z.number().int().min(1).max(32).optional(),
  maxLength: z.number().int().min(1).max(32).optional(),
});
export const handoffArgs = z.object({ reason: z.string().max(500).default('caller asked for a human') });

export type CollectDigitsArgs = z.infer<typeof collectDigitsArgs>;

export type ParsedToolCall =
  | { name: 'switch_language'; call: ToolCall; args: z.infer<typeof switchLanguageArgs> }
  | { name: 'collect_digits'; call: ToolCall; args: CollectDigitsArgs }
  | { name: 'human_agent_handoff'; call: ToolCall; args: z.infer<typeof handoffArgs> }
  | { name: 'invalid'; call: ToolCall; error: string };

const parsers = {
  switch_language: switchLanguageArgs,
  collect_digits: collectDigitsArgs,
  human_agent_handoff: handoffArgs,
} as const;

/** Validates a model-produced tool call; a bad one becomes 'invalid' so the model can be told why. */
export function parseToolCall(call: ToolCall): ParsedToolCall {
  if (!(call.name in parsers)) return { name: 'invalid', call, error: `unknown tool ${call.name}` };
  let json: unknown;
  try {
    json = call.arguments.trim() === '' ? {} : JSON.parse(call.arguments);
  } catch {
    return { name: 'invalid', call, error: 'arguments are not valid JSON' };
  }
  const name = call.name as keyof typeof parsers;
  const parsed = parsers[name].safeParse(json);
  if (!parsed.success) return { name: 'invalid', call, error: z.prettifyError(parsed.error) };
  return { name, call, args: parsed.data } as ParsedToolCall;
}

/** Tool definitions in the OpenAI chat-completions format. */
export const toolDefinitions = [
  {
    type: 'function' as const,
    function: {
      name: 'switch_language',
      description: 'Switch the spoken language of the call (speech recognition and voice).',
      parameters: z.toJSONSchema(switchLanguageArgs),
    },
  },
  {
    type: 'function' as const,
    function: {
      name: 'collect_digits',
      description:
        'Ask the caller to type something on the keypad: language menu, 10-digit phone number, date of birth (MMDDYYYY), or generic digits such as an account number or PIN. The result comes back as the tool result.',
      parameters: z.toJSONSchema(collectDigitsArgs),
    },
  },
  {
    type: 'function' as const,
    function: {
      name: 'human_agent_handoff',
      description: 'Hand the call over to a human agent. Say a short goodbye in the same reply.',
      parameters: z.toJSONSchema(handoffArgs),
    },
  },
];
