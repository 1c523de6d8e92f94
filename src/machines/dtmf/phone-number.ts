// Phone number: exactly 10 digits (US/NANP without the leading 1); completes at the 10th digit.
import { createCollectorMachine, type CollectorSpec, type PromptTable, type Validation } from './collector.js';

export const PHONE_NUMBER_LENGTH = 10;

type PhoneNumberReason = 'wrong-length';

const PROMPTS: PromptTable<PhoneNumberReason> = {
  en: {
    prompt: 'Please enter your 10-digit phone number, starting with the area code.',
    invalid: { 'wrong-length': 'That was not a full 10-digit number.' },
  },
  es: {
    prompt: 'Por favor, marque su número de teléfono de 10 dígitos, empezando con el código de área.',
    invalid: { 'wrong-length': 'Ese no es un número completo de 10 dígitos.' },
  },
};

function validatePhoneNumber(buffer: string): Validation<PhoneNumberReason> {
  return buffer.length === PHONE_NUMBER_LENGTH ? { ok: true, value: buffer } : { ok: false, reason: 'wrong-length' };
}

export const phoneNumberSpec: CollectorSpec<PhoneNumberReason> = {
  id: 'phoneNumber',
  isComplete: (buffer) => buffer.length >= PHONE_NUMBER_LENGTH,
  validate: validatePhoneNumber,
  prompts: PROMPTS,
};

export const phoneNumberMachine = createCollectorMachine(phoneNumberSpec);
