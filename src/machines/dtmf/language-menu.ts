// Language menu: one key per language of the agent, in order (1 = the first); the first key decides.
import { createCollectorMachine, type CollectorSpec, type PromptSet, type Validation } from './collector.js';

/** One menu option: the language it selects and the line that offers it, with `{digit}` for its key. */
export interface LanguageMenuOption {
  code: string;
  line: string;
}

export const DEFAULT_LANGUAGE_MENU: LanguageMenuOption[] = [
  { code: 'en-US', line: 'For English, press {digit}.' },
  { code: 'es-US', line: 'Para español, oprima {digit}.' },
];

type LanguageMenuReason = 'not-an-option';

/** The menu for `options` (at most 9: one key each). */
export function languageMenuSpec(options: LanguageMenuOption[] = DEFAULT_LANGUAGE_MENU): CollectorSpec<LanguageMenuReason> {
  const offered = options.slice(0, 9);
  // The caller has not chosen a language yet, so every prompt is multilingual whatever input.language says.
  const prompts: PromptSet<LanguageMenuReason> = {
    prompt: offered.map((option, i) => option.line.replaceAll('{digit}', String(i + 1))).join(' '),
    invalid: { 'not-an-option': "Sorry, that isn't an option. Lo siento, esa opción no es válida." },
    noInput: "Sorry, I didn't get a choice. Lo siento, no recibí ninguna opción.",
  };
  const validate = (buffer: string): Validation<LanguageMenuReason> => {
    const chosen = /^[1-9]$/.test(buffer) ? offered[Number(buffer) - 1] : undefined;
    return chosen ? { ok: true, value: chosen.code } : { ok: false, reason: 'not-an-option' };
  };
  return { id: 'languageMenu', isComplete: (buffer) => buffer.length >= 1, validate, prompts: { en: prompts } };
}

export const languageMenuMachine = createCollectorMachine(languageMenuSpec());
