// The built-in tools: each asks the session for an effect (switch language, keypad entry, handoff)
// and goes through the same tool actor as the agent's own tools.
import { z } from 'zod';
import type { EffectTool } from './tool.js';

export function switchLanguageTool(languages: string[]): EffectTool<{ language: string }> {
  return {
    name: 'switch_language',
    description: 'Switch the spoken language of the call (speech recognition and voice).',
    parameters: z.object({ language: z.enum(languages as [string, ...string[]]) }),
    outcome: ({ language }) => ({ content: `language switched to ${language}`, effect: { type: 'switchLanguage', language } }),
  };
}

const KIND_HELP: Record<string, string> = {
  language: 'language menu',
  phoneNumber: '10-digit phone number',
  dateOfBirth: 'date of birth (MMDDYYYY)',
  digits: 'generic digits such as an account number',
};

/** `entries`: the keypad entry kinds (built-in and the agent's), with what each is for. */
export function collectDigitsTool(entries: { kind: string; description: string }[]) {
  const kinds = entries.map((e) => e.kind) as [string, ...string[]];
  const parameters = z.object({
    kind: z.enum(kinds),
    label: z.string().max(40).optional(),
    minLength: z.number().int().min(1).max(32).optional(),
    maxLength: z.number().int().min(1).max(32).optional(),
  });
  const tool: EffectTool<z.output<typeof parameters>> = {
    name: 'collect_digits',
    description: `Ask the caller to type something on the keypad: ${entries.map((e) => `${e.kind} (${e.description})`).join(', ')}. The result comes back as the tool result.`,
    parameters,
    // The keypad entry's result is the answer, once the caller has typed it.
    outcome: (request) => ({ effect: { type: 'collectDigits', request } }),
  };
  return tool;
}

export const BUILT_IN_KEYPAD_ENTRIES = Object.entries(KIND_HELP).map(([kind, description]) => ({ kind, description }));

export const handoffTool: EffectTool<{ reason: string }> = {
  name: 'human_agent_handoff',
  description: 'Hand the call over to a human agent. Say a short goodbye in the same reply.',
  parameters: z.object({ reason: z.string().max(500).default('caller asked for a human') }),
  outcome: ({ reason }) => ({ content: 'handing off to a human agent', effect: { type: 'handoff', reason } }),
};
