// Date of birth: 8 digits MMDDYYYY; a real calendar date, not before 1900 and before today.
import { createCollectorMachine, type CollectorSpec, type PromptTable, type Validation } from './collector.js';
import type { DtmfInput } from './types.js';

export const DATE_OF_BIRTH_LENGTH = 8;
export const EARLIEST_BIRTH_YEAR = 1900;

export type DateOfBirthReason = 'wrong-length' | 'not-a-date' | 'before-1900' | 'not-in-past';

function isLeapYear(year: number): boolean {
  return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0;
}

function daysInMonth(year: number, month: number): number {
  if (month === 2) return isLeapYear(year) ? 29 : 28;
  return [4, 6, 9, 11].includes(month) ? 30 : 31;
}

const pad = (n: number, width: number): string => String(n).padStart(width, '0');

/**
 * Parses MMDDYYYY keypad digits. `today` is read in the server's local time zone; the date of
 * birth must be strictly before it (the ISO strings compare chronologically).
 */
export function parseDateOfBirth(
  digits: string,
  today: Date,
): { ok: true; iso: string } | { ok: false; reason: DateOfBirthReason } {
  if (!/^\d{8}$/.test(digits)) return { ok: false, reason: 'wrong-length' };
  const month = Number(digits.slice(0, 2));
  const day = Number(digits.slice(2, 4));
  const year = Number(digits.slice(4, 8));
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month)) return { ok: false, reason: 'not-a-date' };
  if (year < EARLIEST_BIRTH_YEAR) return { ok: false, reason: 'before-1900' };
  const iso = `${pad(year, 4)}-${pad(month, 2)}-${pad(day, 2)}`;
  const todayIso = `${pad(today.getFullYear(), 4)}-${pad(today.getMonth() + 1, 2)}-${pad(today.getDate(), 2)}`;
  if (iso >= todayIso) return { ok: false, reason: 'not-in-past' };
  return { ok: true, iso };
}

const PROMPTS: PromptTable<DateOfBirthReason> = {
  en: {
    prompt:
      'Please enter your date of birth as eight digits: two for the month, two for the day and four for the year.',
    invalid: {
      'wrong-length': 'That was not eight digits.',
      'not-a-date': "That isn't a valid date.",
      'before-1900': 'That date is too far in the past.',
      'not-in-past': 'That date is not in the past.',
    },
  },
  es: {
    prompt:
      'Por favor, marque su fecha de nacimiento con ocho dígitos: ' +
      'dos para el mes, dos para el día y cuatro para el año.',
    invalid: {
      'wrong-length': 'Eso no fueron ocho dígitos.',
      'not-a-date': 'Esa no es una fecha válida.',
      'before-1900': 'Esa fecha es demasiado antigua.',
      'not-in-past': 'Esa fecha no está en el pasado.',
    },
  },
};

/** "In the past" is judged at the time of the key press that completed the entry. */
function validateDateOfBirth(buffer: string, _input: DtmfInput, at: number): Validation<DateOfBirthReason> {
  const parsed = parseDateOfBirth(buffer, new Date(at));
  return parsed.ok ? { ok: true, value: parsed.iso } : parsed;
}

export const dateOfBirthSpec: CollectorSpec<DateOfBirthReason> = {
  id: 'dateOfBirth',
  isComplete: (buffer) => buffer.length >= DATE_OF_BIRTH_LENGTH,
  validate: validateDateOfBirth,
  prompts: PROMPTS,
};

export const dateOfBirthMachine = createCollectorMachine(dateOfBirthSpec);
