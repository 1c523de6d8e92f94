// DTMF input child machines. The session machine registers `dtmfMachines` as actors and
// invokes one of them by string src with id 'dtmf'.
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

export { parseDateOfBirth } from './date-of-birth.js';
export type * from './types.js';
