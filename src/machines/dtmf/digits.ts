// Generic digit entry (account number, PIN, ...): minLength..maxLength digits, ends with # or at maxLength.
import { createCollectorMachine, type CollectorSpec, type PromptTable, type Validation } from './collector.js';
import type { DtmfInput } from './types.js';

export const DEFAULT_MIN_DIGITS = 4;
export const DEFAULT_MAX_DIGITS = 12;

type DigitsReason = 'too-short';

const PROMPTS: PromptTable<DigitsReason> = {
  en: {
    prompt: 'Please enter your {label}, then press pound.',
    invalid: { 'too-short': 'That was too short. Your {label} has at least {min} digits.' },
  },
  es: {
    prompt: 'Por favor, marque su {label} y luego oprima la tecla de numeral.',
    invalid: { 'too-short': 'Eso fue muy corto. Su {label} tiene por lo menos {min} dígitos.' },
  },
};

const DEFAULT_LABEL: Record<string, string> = { en: 'number', es: 'número' };

/** Resolved length bounds: integers, 1 <= min <= max. */
export function digitBounds(input: DtmfInput): { min: number; max: number } {
  const max = Math.max(1, Math.floor(input.maxLength ?? DEFAULT_MAX_DIGITS));
  const min = Math.min(max, Math.max(1, Math.floor(input.minLength ?? DEFAULT_MIN_DIGITS)));
  return { min, max };
}

function validateDigits(buffer: string, input: DtmfInput): Validation<DigitsReason> {
  const { min, max } = digitBounds(input);
  const fits = buffer.length >= min && buffer.length <= max;
  return fits ? { ok: true, value: buffer } : { ok: false, reason: 'too-short' };
}

export const digitsSpec: CollectorSpec<DigitsReason> = {
  id: 'digits',
  isComplete: (buffer, input) => buffer.length >= digitBounds(input).max,
  validate: validateDigits,
  prompts: PROMPTS,
  promptVars: (input, language) => ({ label: input.label ?? DEFAULT_LABEL[language] ?? DEFAULT_LABEL.en!, ...digitBounds(input) }),
};

export const digitsMachine = createCollectorMachine(digitsSpec);
