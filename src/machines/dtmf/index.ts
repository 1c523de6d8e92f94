// DTMF input: one collector state machine shared by every keypad entry kind. The session machine
// invokes `keypad` with id 'dtmf'; the per-kind machines are the same specs run on their own.
import { dateOfBirthMachine } from './date-of-birth.js';
import { digitsMachine } from './digits.js';
import { languageMenuMachine } from './language-menu.js';
import { phoneNumberMachine } from './phone-number.js';

export const dtmfMachines = {
  languageMenu: languageMenuMachine,
  phoneNumber: phoneNumberMachine,
  dateOfBirth: dateOfBirthMachine,
  digits: digitsMachine,
};

export type DtmfSrc = keyof typeof dtmfMachines;

export { BUILT_IN_KEYPAD_SPECS, createKeypadMachine, keypadMachine, type KeypadSpecs } from './keypad.js';
export { languageMenuSpec, DEFAULT_LANGUAGE_MENU, type LanguageMenuOption } from './language-menu.js';
export type { CollectorSpec, PromptSet, PromptTable, Validation } from './collector.js';
export { parseDateOfBirth } from './date-of-birth.js';
export type * from './types.js';
