// DTMF input child machines. The session machine registers `dtmfMachines` as actors and
// invokes one of them by string src (`dtmfSrcFor(kind)`) with id 'dtmf'.
import { dateOfBirthMachine } from './date-of-birth.js';
import { digitsMachine } from './digits.js';
import { languageMenuMachine } from './language-menu.js';
import { phoneNumberMachine } from './phone-number.js';
import type { DtmfKind } from './types.js';

export const dtmfMachines = {
  languageMenu: languageMenuMachine,
  phoneNumber: phoneNumberMachine,
  dateOfBirth: dateOfBirthMachine,
  digits: digitsMachine,
};

export type DtmfSrc = keyof typeof dtmfMachines;

const SRC_BY_KIND: Record<DtmfKind, DtmfSrc> = {
  language: 'languageMenu',
  phoneNumber: 'phoneNumber',
  dateOfBirth: 'dateOfBirth',
  digits: 'digits',
};

export function dtmfSrcFor(kind: DtmfKind): DtmfSrc {
  return SRC_BY_KIND[kind];
}

export { languageMenuMachine, phoneNumberMachine, dateOfBirthMachine, digitsMachine };
export { parseDateOfBirth } from './date-of-birth.js';
export type { DateOfBirthReason } from './date-of-birth.js';
export type * from './types.js';
