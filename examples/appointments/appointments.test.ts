// The appointments agent on a whole call, offline: the real server (createRelayServer), a scripted
// fake LLM standing in for the model, a simulated Twilio call, and the local appointments service.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createRelayServer, type RelayServer } from 'relay-actors';
import { lastUserText, placeTwilioCall, startFakeOpenAI, type FakeOpenAI, type Script, type ScriptRequest, type SimulatedCall } from 'relay-actors/testing';
import { appointmentsAgent, appointmentTools, pinChecksumOk } from './agent.js';
import { PATIENT, startAppointmentsService, type AppointmentsService } from './service.js';

// A loaded machine may take a while between a frame and the next one.
const WAIT_MS = 15_000;

let service: AppointmentsService;
let llm: FakeOpenAI | undefined;
let server: RelayServer | undefined;
let call: SimulatedCall | undefined;

beforeEach(async () => {
  service = await startAppointmentsService();
});

afterEach(async () => {
  await call?.close();
  await server?.close();
  await llm?.close();
  await service.close();
  call = server = llm = undefined;
});

/** Starts the fake model with `script` and the relay server with the appointments agent, pointed at it. */
async function startAgent(script: Script): Promise<void> {
  llm = await startFakeOpenAI({ script });
  server = await createRelayServer({
    agent: appointmentsAgent({ serviceUrl: service.url }),
    port: 0,
    host: '127.0.0.1',
    store: 'memory',
    openai: { baseURL: llm.baseURL, apiKey: 'test-key' },
    logLevel: 'warn',
  });
}

/** The content of the tool result the model was last sent, parsed. */
function lastToolResult(req: ScriptRequest): { status?: string; kind?: string; value?: string } & Record<string, unknown> {
  const message = req.messages.at(-1)!;
  if (message.role !== 'tool') throw new Error(`expected a tool result last, got a ${message.role} message`);
  return JSON.parse(String(message.content)) as never;
}

/** The text the caller hears next, up to the end of that talk cycle. */
const heard = async (c: SimulatedCall) => (await c.nextReply(WAIT_MS)).text;

describe('booking by phone', () => {
  it('finds slots, verifies date of birth and PIN (a mistyped PIN is asked again), books once and confirms', async () => {
    await startAgent([
      // 1. "I'd like an appointment": the model looks for free slots.
      { toolCall: { name: 'find_slots', arguments: { date: '2031-03-04' } } },
      // 2. It offers the first slot and starts the verification.
      (req) => {
        const { slots } = lastToolResult(req) as unknown as { slots: { id: string; start: string }[] };
        return {
          reply: `I have ${slots.length} times that day, the first at ${slots[0]!.start.slice(11)}. First, let me verify you.`,
          toolCall: { name: 'collect_digits', arguments: { kind: 'dateOfBirth' } },
        };
      },
      // 3. The date of birth came back from the keypad: now the PIN.
      { toolCall: { name: 'collect_digits', arguments: { kind: 'pin' } } },
      // 4. Verified: book the slot with what the keypad entries returned.
      (req) => {
        const dobResult = req.messages.filter((m) => m.role === 'tool' && String(m.content).includes('"dateOfBirth"')).at(-1)!;
        const dob = JSON.parse(String(dobResult.content)) as { value: string };
        const pin = lastToolResult(req);
        return { toolCall: { id: 'call_book_1', name: 'book_appointment', arguments: { slotId: 'slot-0900', dateOfBirth: dob.value, pin: pin.value } } };
      },
      // 5. Booked: read the confirmation back.
      (req) => {
        const booking = lastToolResult(req) as unknown as { confirmation: string };
        return { reply: `You're booked for March 4th at 9 AM. Your confirmation number is ${booking.confirmation}.` };
      },
    ]);

    call = (await placeTwilioCall({ baseUrl: server!.httpUrl })).call;
    call.prompt("Hi, I'd like to book a check-up on March 4th.");
    expect(await heard(call)).toBe('I have 2 times that day, the first at 09:00. First, let me verify you.');
    expect(await heard(call)).toMatch(/^Please enter your date of birth as eight digits/);
    call.digits('07041985');
    expect(await heard(call)).toBe('Please enter your four-digit PIN.');
    call.digits('1235'); // 1 + 2 + 3 = 6, not 5
    expect(await heard(call)).toBe("That PIN isn't valid. Please enter your four-digit PIN.");
    call.digits(PATIENT.pin);
    expect(await heard(call)).toBe("You're booked for March 4th at 9 AM. Your confirmation number is RC-1001.");
    expect(call.invalidFrames).toBe(0);

    // What the service received: one slot search and one booking, keyed by the call and the model's tool call id.
    expect(service.received.map((r) => `${r.method} ${r.path}`)).toEqual(['GET /slots', 'POST /appointments']);
    expect(service.received[1]).toMatchObject({ idempotencyKey: `${call.setup.callSid}:call_book_1`, body: { slotId: 'slot-0900', dateOfBirth: '1985-07-04', pin: '1236' } });
    expect(service.bookings).toEqual([{ confirmation: 'RC-1001', slotId: 'slot-0900', start: '2031-03-04T09:00' }]);

    // What the model was sent: the agent's instructions and tools, then each tool's result in turn.
    const sent = llm!.requests;
    expect(sent).toHaveLength(5);
    expect(sent[0]!.messages[0]).toMatchObject({ role: 'system', content: expect.stringContaining('Riverside Clinic') });
    expect(lastUserText(sent[0]!)).toBe("Hi, I'd like to book a check-up on March 4th.");
    const toolNames = (sent[0]!.tools as { function: { name: string } }[]).map((t) => t.function.name);
    expect(toolNames).toEqual(expect.arrayContaining(['find_slots', 'book_appointment', 'collect_digits', 'switch_language']));
    expect(JSON.stringify(sent[0]!.tools)).toContain('"pin"'); // the agent's keypad entry is a kind of collect_digits
    expect(lastToolResult(sent[1]!)).toEqual({ slots: [{ id: 'slot-0900', start: '2031-03-04T09:00' }, { id: 'slot-1130', start: '2031-03-04T11:30' }] });
    expect(lastToolResult(sent[2]!)).toEqual({ status: 'ok', kind: 'dateOfBirth', value: '1985-07-04' });
    // Only the valid PIN reaches the model: the mistyped one was caught on the keypad.
    expect(lastToolResult(sent[3]!)).toEqual({ status: 'ok', kind: 'pin', value: '1236' });
    expect(sent[4]!.messages.at(-1)).toMatchObject({ role: 'tool', tool_call_id: 'call_book_1' });
    expect(lastToolResult(sent[4]!)).toEqual({ confirmation: 'RC-1001', slotId: 'slot-0900', start: '2031-03-04T09:00' });
  });

  it('a booking run again with the same idempotency key (as after a restart) books once', async () => {
    const { bookAppointment } = appointmentTools(service.url);
    expect(bookAppointment.safeToRepeat).toBe(true);
    const args = { slotId: 'slot-1130', dateOfBirth: PATIENT.dateOfBirth, pin: PATIENT.pin };
    const call = { callSid: 'CA0001', language: 'en-US', from: '+15550100001', to: '+15550100002', customParameters: {} };
    const ctx = { callSid: 'CA0001', language: 'en-US', call, signal: new AbortController().signal, idempotencyKey: 'CA0001:call_abc', repeated: false };
    const first = await bookAppointment.run(args, ctx);
    const again = await bookAppointment.run(args, { ...ctx, repeated: true });
    expect(again).toEqual(first);
    expect(service.bookings).toHaveLength(1);
    expect(service.received.map((r) => r.idempotencyKey)).toEqual(['CA0001:call_abc', 'CA0001:call_abc']);
  });
});

describe('en español', () => {
  it('switches to Spanish and asks for the PIN in Spanish', async () => {
    await startAgent([
      { toolCall: { name: 'switch_language', arguments: { language: 'es-US' } } },
      { reply: 'Claro. Primero necesito su PIN.', toolCall: { name: 'collect_digits', arguments: { kind: 'pin' } } },
      (req) => ({ reply: lastToolResult(req).status === 'ok' ? 'Gracias, su PIN es correcto.' : 'No pude verificar su PIN.' }),
    ]);

    call = (await placeTwilioCall({ baseUrl: server!.httpUrl })).call;
    call.prompt('Hola, ¿puede atenderme en español?', { lang: 'es-US' });
    // Twilio is told to speak and listen in Spanish.
    expect(await call.waitForType('language', WAIT_MS)).toMatchObject({ ttsLanguage: 'es-US', transcriptionLanguage: 'es-US' });
    expect(await heard(call)).toBe('Claro. Primero necesito su PIN.');
    expect(await heard(call)).toBe('Por favor, marque su PIN de cuatro dígitos.');
    call.digits('4321'); // 4 + 3 + 2 = 9, not 1
    expect(await heard(call)).toBe('Ese PIN no es válido. Por favor, marque su PIN de cuatro dígitos.');
    call.digits('4329');
    expect(await heard(call)).toBe('Gracias, su PIN es correcto.');

    expect(llm!.requests[1]!.messages.at(-1)).toMatchObject({ role: 'tool', content: 'language switched to es-US' });
    // The instructions name the caller's language from then on.
    expect(llm!.requests[1]!.messages[0]!.content).toContain('es-US');
    expect(lastToolResult(llm!.requests[2]!)).toEqual({ status: 'ok', kind: 'pin', value: '4329' });
  });
});

describe('the PIN check digit', () => {
  it('is the sum of the first three digits, mod 10', () => {
    expect(['1236', '4329', '9997', '0000'].map(pinChecksumOk)).toEqual([true, true, true, true]);
    expect(['1235', '4321', '123', '12345', '12a6'].map(pinChecksumOk)).toEqual([false, false, false, false, false]);
  });
});
