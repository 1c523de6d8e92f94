// Language menu: 1 = English, 2 = Spanish; the first key decides.
import { createCollectorMachine, type PromptSet, type Validation } from './collector.js';

const LANGUAGES: Partial<Record<string, string>> = { '1': 'en-US', '2': 'es-US' };

type LanguageMenuReason = 'not-an-option';

// The caller has not chosen a language yet, so every prompt is bilingual whatever input.language says.
const BILINGUAL: PromptSet<LanguageMenuReason> = {
  prompt: 'For English, press 1. Para español, oprima 2.',
  invalid: { 'not-an-option': "Sorry, that isn't an option. Lo siento, esa opción no es válida." },
  noInput: "Sorry, I didn't get a choice. Lo siento, no recibí ninguna opción.",
};

function validateLanguageChoice(buffer: string): Validation<LanguageMenuReason> {
  const language = LANGUAGES[buffer];
  return language ? { ok: true, value: language } : { ok: false, reason: 'not-an-option' };
}

export const languageMenuMachine = createCollectorMachine<LanguageMenuReason>({
  id: 'languageMenu',
  isComplete: (buffer) => buffer.length >= 1,
  validate: validateLanguageChoice,
  prompts: { en: BILINGUAL, es: BILINGUAL },
});
