// The appointments agent: finds free slots and books one for a caller it has verified by date of
// birth (the built-in `dateOfBirth` keypad entry) and a 4-digit PIN (its own keypad entry, with a
// check digit), in English or Spanish.
import { defineAgent, defineTool, type KeypadEntry } from 'relay-actors';
import { z } from 'zod';

const isoDate = z.string().regex(/^\d{4}-\d{2}-\d{2}$/, 'YYYY-MM-DD');

/** A PIN's last digit is the sum of the first three, mod 10: a mistyped digit is caught on the phone. */
export function pinChecksumOk(pin: string): boolean {
  if (!/^\d{4}$/.test(pin)) return false;
  const [a, b, c, check] = [...pin].map(Number) as [number, number, number, number];
  return (a + b + c) % 10 === check;
}

export const pinEntry: KeypadEntry = {
  name: 'pin',
  description: "the patient's 4-digit PIN",
  length: 4,
  validate: pinChecksumOk,
  prompts: {
    en: { ask: 'Please enter your four-digit PIN.', invalid: "That PIN isn't valid." },
    es: { ask: 'Por favor, marque su PIN de cuatro dígitos.', invalid: 'Ese PIN no es válido.' },
  },
};

/** The two tools, against the appointments service at `serviceUrl`. */
export function appointmentTools(serviceUrl: string) {
  const findSlots = defineTool({
    name: 'find_slots',
    description: 'Lists free appointment slots (id and start time), on one day if a date is given.',
    parameters: z.object({ date: isoDate.optional() }),
    async run({ date }, ctx) {
      const url = new URL('/slots', serviceUrl);
      if (date) url.searchParams.set('date', date);
      // ctx.signal: the caller hung up or interrupted, or the tool timed out: stop waiting.
      const res = await fetch(url, { signal: ctx.signal });
      if (!res.ok) throw new Error(`slot search failed (HTTP ${res.status})`);
      return await res.json(); // the model sees it as JSON
    },
  });

  const bookAppointment = defineTool({
    name: 'book_appointment',
    description: 'Books a slot from find_slots for the caller, after their date of birth and PIN were collected.',
    parameters: z.object({ slotId: z.string(), dateOfBirth: isoDate, pin: z.string().regex(/^\d{4}$/) }),
    // A run cut off by a restart runs again with the same idempotency key, and the service books a key once.
    safeToRepeat: true,
    timeoutMs: 8_000,
    async run(args, ctx) {
      const res = await fetch(new URL('/appointments', serviceUrl), {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': ctx.idempotencyKey },
        body: JSON.stringify(args),
        signal: ctx.signal,
      });
      const body = (await res.json()) as { error?: string };
      // A throw becomes "error: <message>" for the model, which can tell the caller.
      if (!res.ok) throw new Error(body.error ?? `booking failed (HTTP ${res.status})`);
      return body;
    },
  });

  return { findSlots, bookAppointment };
}

export function appointmentsAgent(options: { serviceUrl: string }) {
  const { findSlots, bookAppointment } = appointmentTools(options.serviceUrl);
  return defineAgent({
    instructions: (call) =>
      [
        'You book appointments for Riverside Clinic by phone. Your words are spoken aloud: short plain sentences.',
        'Find free slots with find_slots. Before booking, verify the caller: collect_digits with kind dateOfBirth,',
        'then collect_digits with kind pin. Then book_appointment with the slot, the date of birth and the PIN,',
        'and read the confirmation number back.',
        `The caller's number is ${call.from}.`,
      ].join(' '),
    model: { temperature: 0.2 },
    tools: [findSlots, bookAppointment],
    keypadEntries: [pinEntry],
    languages: [
      { code: 'en-US', ttsProvider: 'Google', voice: 'en-US-Journey-O', transcriptionProvider: 'Deepgram' },
      { code: 'es-US', ttsProvider: 'Google', voice: 'es-US-Journey-F', transcriptionProvider: 'Deepgram', menuLine: 'Para español, oprima {digit}.' },
    ],
    welcomeGreeting: {
      'en-US': 'Riverside Clinic, how can I help you?',
      'es-US': 'Clínica Riverside, ¿en qué puedo ayudarle?',
    },
  });
}
