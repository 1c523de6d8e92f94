// An agent's own keypad entry (a PIN, a member number...), run by the same collector as the built-in kinds.
import type { CollectorSpec, PromptSet, PromptTable } from '../machines/dtmf/index.js';

export interface KeypadEntry {
  /** The kind the model names in collect_digits, e.g. 'pin'. */
  name: string;
  /** Told to the model: what the entry is for. */
  description: string;
  /** Complete at exactly this many digits; without it the caller ends the entry with #. */
  length?: number;
  /** Longest entry accepted without `length` (reaching it completes the entry). Default 32. */
  maxLength?: number;
  /** Checks a complete entry: true/false, or the value to hand the model (e.g. normalised). Default: any digits. */
  validate?(digits: string): boolean | { value: string };
  /**
   * What the caller hears, per language code ('fr-FR') or primary subtag ('fr'); the first one is the
   * fallback. `ask`: the prompt; `invalid`: said before it again after a rejected entry.
   */
  prompts: Record<string, { ask: string; invalid?: string; noInput?: string }>;
}

const DEFAULT_MAX = 32;

export function keypadEntrySpec(entry: KeypadEntry): CollectorSpec<'invalid'> {
  const sets = Object.entries(entry.prompts).map(([language, p]): [string, PromptSet<'invalid'>] => [
    language,
    {
      prompt: p.ask,
      // Without `invalid` the collector says its generic sentence.
      invalid: (p.invalid ? { invalid: p.invalid } : {}) as Record<'invalid', string>,
      ...(p.noInput ? { noInput: p.noInput } : {}),
    },
  ]);
  const first = sets[0];
  if (!first) throw new Error(`keypad entry "${entry.name}" needs prompts in at least one language`);
  const prompts: PromptTable<'invalid'> = { en: first[1], ...Object.fromEntries(sets) };
  const max = entry.length ?? entry.maxLength ?? DEFAULT_MAX;
  return {
    id: entry.name,
    isComplete: (buffer) => buffer.length >= max,
    validate: (buffer) => {
      if (buffer.length === 0 || (entry.length !== undefined && buffer.length !== entry.length)) return { ok: false, reason: 'invalid' };
      let checked: unknown;
      try {
        checked = entry.validate ? entry.validate(buffer) : true;
      } catch {
        // A bug in the agent's check must not stop the session: the entry counts as invalid.
        checked = false;
      }
      if (checked === true) return { ok: true, value: buffer };
      const value = (checked as { value?: unknown } | null)?.value;
      // Anything else (false, undefined, a Promise: the check must be synchronous) is a rejected entry.
      return typeof value === 'string' ? { ok: true, value } : { ok: false, reason: 'invalid' };
    },
    prompts,
  };
}
