// The one keypad actor a session invokes: every entry kind (built-in or the agent's own) is a
// collector spec, and this machine runs the spec its input names. One src for all kinds keeps the
// session's `collecting` state a single invoke, and a restored snapshot names that one src.
import { createCollectorMachine, type CollectorSpec } from './collector.js';
import { dateOfBirthSpec } from './date-of-birth.js';
import { digitsSpec } from './digits.js';
import { languageMenuSpec } from './language-menu.js';
import { phoneNumberSpec } from './phone-number.js';
import type { DtmfInput } from './types.js';

export type KeypadSpecs = Record<string, CollectorSpec<string>>;

export const BUILT_IN_KEYPAD_SPECS: KeypadSpecs = {
  language: languageMenuSpec(),
  phoneNumber: phoneNumberSpec,
  dateOfBirth: dateOfBirthSpec,
  digits: digitsSpec,
};

export function createKeypadMachine(specs: KeypadSpecs = BUILT_IN_KEYPAD_SPECS) {
  // A kind no longer defined (an agent changed between a call's save and its restore) is taken as digits.
  const specFor = (input: DtmfInput): CollectorSpec<string> => specs[input.kind] ?? specs.digits ?? digitsSpec;
  return createCollectorMachine<string>({
    id: 'keypad',
    isComplete: (buffer, input) => specFor(input).isComplete(buffer, input),
    validate: (buffer, input, at) => specFor(input).validate(buffer, input, at),
    prompts: (input) => {
      const { prompts } = specFor(input);
      return typeof prompts === 'function' ? prompts(input) : prompts;
    },
    promptVars: (input, language) => specFor(input).promptVars?.(input, language) ?? {},
  });
}

export const keypadMachine = createKeypadMachine();
