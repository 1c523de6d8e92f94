// DTMF input end to end: the real server, real WebSockets (SimulatedCall) and the real openai SDK
// against the fake OpenAI server. The model asks for keypad input with the collect_digits tool;
// the session runs the matching child machine and hands its result back as the tool result.
// Idle time is moved forward on the server's TestClock (which stands still otherwise), never slept:
// "nothing was said meanwhile" is shown by a round trip (a prompt and its answer arrive after
// anything said before them).
import { Writable } from 'node:stream';
import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { SimulatedCall } from '../src/testing/twilio-sim.js';
import { postAction } from '../src/testing/twilio-webhooks.js';
import { loadConfig, type Config } from '../src/config.js';
import { contentToText, startFakeOpenAI, type ChatMessageIn, type ChatRequestRecord, type FakeOpenAI, type ScriptFn } from '../src/testing/fake-openai-server.js';
import { resumeLine } from '../src/machines/phrases.js';
import { createLogger } from '../src/server/logger.js';
import { startServer, type RunningServer } from '../src/server/server.js';
import { startTestServer, type TestServer } from './support/harness.js';
import { connectCall } from './support/conditions.js';
import { nextSpokenReply, waitForRequest } from './support/resume-scenario.js';
import { TestClock } from './support/test-clock.js';

const THANKS = 'Thanks, noted.';
const SKIPPED = 'No problem, we can do without it.';

const servers: Array<{ close(): Promise<void> }> = [];
const calls: SimulatedCall[] = [];

afterEach(async () => {
  await Promise.all(calls.splice(0).map((c) => c.drop()));
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

/**
 * "keypad" -> collect_digits with `args`; a tool result -> THANKS when it is ok, SKIPPED when the
 * entry failed; anything else -> "You said: <text>".
 */
function keypadScript(args: object): ScriptFn {
  return ({ messages }) => {
    const last = messages.at(-1);
    if (last?.role === 'tool') {
      const result = JSON.parse(contentToText(last.content)) as { status: string };
      return { text: result.status === 'ok' ? THANKS : SKIPPED };
    }
    const said = contentToText(last?.content);
    if (said.includes('keypad')) return { toolCalls: [{ name: 'collect_digits', arguments: JSON.stringify(args) }] };
    return { text: `You said: ${said}` };
  };
}

async function start(args: object, config: Partial<Config> = {}): Promise<{ ts: TestServer; call: SimulatedCall; clock: TestClock }> {
  const clock = new TestClock();
  const ts = await startTestServer({ llm: { script: keypadScript(args) }, config, clock });
  servers.push(ts);
  const call = await connectCall(ts);
  calls.push(call);
  return { ts, call, clock };
}

/** The next reply that says something: skips the empty talk-cycle close that follows a tool call. */
async function nextSpoken(call: SimulatedCall): Promise<string> {
  return (await nextSpokenReply(call)).text;
}

interface EntryState {
  buffer: string;
  attempts: number;
  deadline: number;
}

/** The keypad entry the server is running for the call (its DTMF child's context), if any. */
function entryOf(server: RunningServer, callSid: string): EntryState | undefined {
  const child = server.manager.get(callSid)?.actor.getSnapshot().children.dtmf?.getSnapshot() as { context: EntryState } | undefined;
  return child?.context;
}

/** Timers on the server's clock besides the sessions' hibernation timers (one per resting session at most). */
function keypadTimers(clock: TestClock, server: RunningServer): number {
  return clock.pending - server.manager.all().filter((s) => s.idleTimer !== undefined).length;
}

/** The caller speaks and the agent echoes it: anything the server said before then arrived first. */
async function roundTrip(call: SimulatedCall, text: string): Promise<void> {
  call.prompt(text);
  expect(await nextSpoken(call)).toBe(`You said: ${text}`);
}

/** Asks the model for keypad input and returns the spoken keypad prompt. */
async function openKeypad(call: SimulatedCall): Promise<string> {
  call.prompt('I will use the keypad');
  return nextSpoken(call);
}

/** The first model request from index `from` on whose last message is a tool result. */
function toolRequest(llm: FakeOpenAI, from: number): Promise<ChatRequestRecord> {
  return waitForRequest(llm, (m) => m.at(-1)?.role === 'tool', 10_000, from);
}

const toolResultOf = (request: ChatRequestRecord): unknown => JSON.parse(contentToText(request.messages.at(-1)!.content));
const systemPromptOf = (messages: ChatMessageIn[]) => contentToText(messages[0]?.content);
const spokenSince = (call: SimulatedCall, from: number) =>
  call.messages.slice(from).flatMap((m) => (m.type === 'text' && m.token !== '' ? [m.token] : []));

const PHONE_PROMPT = 'Please enter your 10-digit phone number, starting with the area code.';
const DOB_PROMPT =
  'Please enter your date of birth as eight digits: two for the month, two for the day and four for the year.';
const MENU_PROMPT = 'For English, press 1. Para español, oprima 2.';
const NO_INPUT = "Sorry, I didn't get any input.";

describe('language menu', () => {
  it.each([
    ['1', 'en-US'],
    ['2', 'es-US'],
  ])('key %s selects %s: a language frame is sent and the model continues in it', async (key, language) => {
    const { ts, call } = await start({ kind: 'language' });
    expect(await openKeypad(call)).toBe(MENU_PROMPT);

    // Not an option: re-prompted, in both languages since none is chosen yet.
    call.dtmf('7');
    expect(await nextSpoken(call)).toBe(`Sorry, that isn't an option. Lo siento, esa opción no es válida. ${MENU_PROMPT}`);

    const before = ts.llm.requests.length;
    const cursor = call.readCursor;
    call.dtmf(key);
    const request = await toolRequest(ts.llm, before);
    expect(toolResultOf(request)).toEqual({ status: 'ok', kind: 'language', value: language });
    expect(systemPromptOf(request.messages)).toContain(`current language: ${language}`);
    const frame = await call.waitForType('language');
    expect(frame).toEqual({ type: 'language', ttsLanguage: language, transcriptionLanguage: language });
    expect(await nextSpoken(call)).toBe(THANKS);
    // The language switch comes before the reply that is spoken in it.
    const switchAt = call.messages.indexOf(frame);
    expect(switchAt).toBeGreaterThanOrEqual(cursor);
    expect(call.messages.findIndex((m, i) => i > switchAt && m.type === 'text' && m.token !== '')).toBeGreaterThan(switchAt);

    // And the following turns too.
    call.prompt('hola');
    expect(await nextSpoken(call)).toBe('You said: hola');
    expect(systemPromptOf(ts.llm.requests.at(-1)!.messages)).toContain(`current language: ${language}`);
  });
});

describe('phone number', () => {
  it('completes at the 10th digit without a terminator', async () => {
    const { ts, call } = await start({ kind: 'phoneNumber' });
    expect(await openKeypad(call)).toBe(PHONE_PROMPT);
    const before = ts.llm.requests.length;
    call.digits('5550001234');
    expect(toolResultOf(await toolRequest(ts.llm, before))).toEqual({ status: 'ok', kind: 'phoneNumber', value: '5550001234' });
    expect(await nextSpoken(call)).toBe(THANKS);
  });

  it('`*` clears the entry, A-D are ignored, `#` on a short number re-prompts', async () => {
    const { ts, call } = await start({ kind: 'phoneNumber' });
    expect(await openKeypad(call)).toBe(PHONE_PROMPT);
    call.digits('123#');
    expect(await nextSpoken(call)).toBe(`That was not a full 10-digit number. ${PHONE_PROMPT}`);
    const before = ts.llm.requests.length;
    call.digits('999*55A50B00C1D234');
    expect(toolResultOf(await toolRequest(ts.llm, before))).toEqual({ status: 'ok', kind: 'phoneNumber', value: '5550001234' });
    expect(await nextSpoken(call)).toBe(THANKS);
  });

  it('after the retry limit the failure is the tool result and the conversation goes on', async () => {
    const { ts, call } = await start({ kind: 'phoneNumber' });
    expect(await openKeypad(call)).toBe(PHONE_PROMPT);
    const before = ts.llm.requests.length;
    call.digits('123#');
    expect(await nextSpoken(call)).toBe(`That was not a full 10-digit number. ${PHONE_PROMPT}`);
    call.digits('4567#');
    expect(await nextSpoken(call)).toBe(`That was not a full 10-digit number. ${PHONE_PROMPT}`);
    call.digits('#');
    const request = await toolRequest(ts.llm, before);
    expect(toolResultOf(request)).toEqual({ status: 'failed', kind: 'phoneNumber', reason: 'too-many-attempts' });
    // Exactly one request after the tool call: the one carrying its result.
    expect(ts.llm.requests.length - before).toBe(1);
    expect(await nextSpoken(call)).toBe(SKIPPED);

    // The conversation continues normally; keys pressed now go nowhere.
    call.digits('12');
    call.prompt('what next');
    expect(await nextSpoken(call)).toBe('You said: what next');
  });
});

describe('date of birth', () => {
  it('takes 8 digits MMDDYYYY and re-prompts for dates that are not real past dates', async () => {
    const { ts, call } = await start({ kind: 'dateOfBirth' });
    expect(await openKeypad(call)).toBe(DOB_PROMPT);
    call.digits('02302000'); // February 30th
    expect(await nextSpoken(call)).toBe(`That isn't a valid date. ${DOB_PROMPT}`);
    call.digits(`0101${new Date().getFullYear() + 1}`);
    expect(await nextSpoken(call)).toBe(`That date is not in the past. ${DOB_PROMPT}`);
    const before = ts.llm.requests.length;
    call.digits('07041990');
    expect(toolResultOf(await toolRequest(ts.llm, before))).toEqual({ status: 'ok', kind: 'dateOfBirth', value: '1990-07-04' });
    expect(await nextSpoken(call)).toBe(THANKS);
  });

  it('`#` ends a short entry early and counts as a wrong length', async () => {
    const { call } = await start({ kind: 'dateOfBirth' });
    expect(await openKeypad(call)).toBe(DOB_PROMPT);
    call.digits('0704#');
    expect(await nextSpoken(call)).toBe(`That was not eight digits. ${DOB_PROMPT}`);
  });
});

describe('generic digits', () => {
  it('a PIN with length bounds from the tool arguments, ended by #', async () => {
    const { ts, call } = await start({ kind: 'digits', label: 'PIN', minLength: 4, maxLength: 6 });
    const prompt = 'Please enter your PIN, then press pound.';
    expect(await openKeypad(call)).toBe(prompt);
    call.digits('12#');
    expect(await nextSpoken(call)).toBe(`That was too short. Your PIN has at least 4 digits. ${prompt}`);
    const before = ts.llm.requests.length;
    call.digits('98*4A3B21#');
    expect(toolResultOf(await toolRequest(ts.llm, before))).toEqual({ status: 'ok', kind: 'digits', value: '4321' });
    expect(await nextSpoken(call)).toBe(THANKS);
  });

  it('an account number completes at maxLength', async () => {
    const { ts, call } = await start({ kind: 'digits', label: 'account number', minLength: 6, maxLength: 8 });
    expect(await openKeypad(call)).toBe('Please enter your account number, then press pound.');
    const before = ts.llm.requests.length;
    call.digits('12345678');
    expect(toolResultOf(await toolRequest(ts.llm, before))).toEqual({ status: 'ok', kind: 'digits', value: '12345678' });
    expect(await nextSpoken(call)).toBe(THANKS);
  });
});

describe('idle timer', () => {
  it('re-prompts exactly dtmfIdleMs after the prompt and ends with a timeout result after the retry limit', async () => {
    const idleMs = 200;
    const { ts, call, clock } = await start({ kind: 'phoneNumber' }, { dtmfIdleMs: idleMs });
    const before = ts.llm.requests.length;
    expect(await openKeypad(call)).toBe(PHONE_PROMPT);

    for (let attempt = 0; attempt < 3; attempt++) {
      const entry = entryOf(ts.server, call.callSid)!;
      expect(entry.attempts).toBe(attempt);
      // The idle period counts from the prompt (the model's answer) or the previous re-prompt, in full.
      clock.advanceTo(entry.deadline - 1);
      expect(entryOf(ts.server, call.callSid)?.attempts).toBe(attempt);
      clock.advanceTo(entry.deadline);
      if (attempt < 2) {
        expect(entryOf(ts.server, call.callSid)).toMatchObject({ attempts: attempt + 1, deadline: entry.deadline + idleMs });
        expect(await nextSpoken(call)).toBe(`${NO_INPUT} ${PHONE_PROMPT}`);
      }
    }
    const request = await toolRequest(ts.llm, before);
    expect(toolResultOf(request)).toEqual({ status: 'failed', kind: 'phoneNumber', reason: 'timeout' });
    expect(await nextSpoken(call)).toBe(SKIPPED);

    // The collection is over: its timer is gone with it.
    expect(entryOf(ts.server, call.callSid)).toBeUndefined();
    expect(keypadTimers(clock, ts.server)).toBe(0);
    const cursor = call.messages.length;
    clock.advance(idleMs * 4);
    await roundTrip(call, 'still there');
    expect(spokenSince(call, cursor).join('')).toBe('You said: still there');
  });

  it('a key press restarts the idle period', async () => {
    const idleMs = 1000;
    const { ts, call, clock } = await start({ kind: 'phoneNumber' }, { dtmfIdleMs: idleMs });
    expect(await openKeypad(call)).toBe(PHONE_PROMPT);
    const cursor = call.messages.length;
    // A key every three quarters of an idle period, for well over one idle period: no re-prompt in between.
    let typed = '';
    for (const key of '555000') {
      call.dtmf(key);
      typed += key;
      await expect.poll(() => entryOf(ts.server, call.callSid)?.buffer).toBe(typed);
      // Stamped on arrival: the server's clock stands still until the test moves it.
      expect(entryOf(ts.server, call.callSid)?.deadline).toBe(clock.now() + idleMs);
      clock.advance((idleMs * 3) / 4);
      expect(entryOf(ts.server, call.callSid)?.attempts).toBe(0);
    }
    const before = ts.llm.requests.length;
    call.digits('1234');
    expect(toolResultOf(await toolRequest(ts.llm, before))).toEqual({ status: 'ok', kind: 'phoneNumber', value: '5550001234' });
    expect(await nextSpoken(call)).toBe(THANKS);
    expect(spokenSince(call, cursor).join('')).toBe(THANKS);
  });

  it('does not run without a collection: no re-prompt, and stray keys are ignored', async () => {
    const idleMs = 200;
    const { ts, call, clock } = await start({ kind: 'phoneNumber' }, { dtmfIdleMs: idleMs });
    call.prompt('hello');
    expect(await nextSpoken(call)).toBe('You said: hello');
    const cursor = call.messages.length;
    const requests = ts.llm.requests.length;
    call.digits('123#');
    expect(keypadTimers(clock, ts.server)).toBe(0);
    clock.advance(idleMs * 4);
    await roundTrip(call, 'anything?');
    expect(spokenSince(call, cursor).join('')).toBe('You said: anything?');
    expect(ts.llm.requests.length).toBe(requests + 1);
  });
});

describe('a drop mid-entry', () => {
  it('keeps the digits typed so far and uses up no idle attempts while the caller is away', async () => {
    const idleMs = 400;
    const { ts, call, clock } = await start({ kind: 'phoneNumber' }, { dtmfIdleMs: idleMs, graceMs: 30_000 });
    expect(await openKeypad(call)).toBe(PHONE_PROMPT);
    call.digits('5550');
    await expect.poll(() => entryOf(ts.server, call.callSid)?.buffer).toBe('5550');
    await call.drop();
    await expect.poll(() => ts.server.manager.get(call.callSid)?.socket, { message: 'the server noticing the drop' }).toBeNull();
    // Longer than all idle attempts together: none may be spent while nobody can type.
    clock.advance(idleMs * 4);
    expect(entryOf(ts.server, call.callSid)).toMatchObject({ buffer: '5550', attempts: 0 });

    const resumed = await SimulatedCall.connect({ url: ts.server.relayUrl, callSid: call.callSid, sessionId: call.sessionId, reconnection: true });
    calls.push(resumed);
    expect(await nextSpoken(resumed)).toBe(resumeLine('en-US'));
    const before = ts.llm.requests.length;
    resumed.digits('001234');
    expect(toolResultOf(await toolRequest(ts.llm, before))).toEqual({ status: 'ok', kind: 'phoneNumber', value: '5550001234' });
    expect(await nextSpoken(resumed)).toBe(THANKS);
  });
});

describe('speaking during a collection', () => {
  it('cancels the entry (tool result "cancelled") and the utterance is answered', async () => {
    const idleMs = 800;
    const { ts, call, clock } = await start({ kind: 'phoneNumber' }, { dtmfIdleMs: idleMs });
    expect(await openKeypad(call)).toBe(PHONE_PROMPT);
    call.digits('555');
    await expect.poll(() => entryOf(ts.server, call.callSid)?.buffer).toBe('555');
    const before = ts.llm.requests.length;
    call.prompt('actually I will just say it');
    expect(await nextSpoken(call)).toBe('You said: actually I will just say it');
    const request = ts.llm.requests[before]!;
    const [tool, user] = request.messages.slice(-2);
    expect(tool?.role).toBe('tool');
    expect(JSON.parse(contentToText(tool?.content))).toEqual({ status: 'failed', kind: 'phoneNumber', reason: 'cancelled' });
    expect(user).toMatchObject({ role: 'user', content: 'actually I will just say it' });
    expect(ts.llm.requests.length - before).toBe(1);

    // The keypad entry is gone: no idle re-prompts and no result for later keys.
    expect(entryOf(ts.server, call.callSid)).toBeUndefined();
    const cursor = call.messages.length;
    call.digits('0001234');
    clock.advance(idleMs * 4);
    expect(keypadTimers(clock, ts.server)).toBe(0);
    await roundTrip(call, 'and now?');
    expect(spokenSince(call, cursor).join('')).toBe('You said: and now?');
    expect(ts.llm.requests.length - before).toBe(2);
  });
});

describe('offline mode', () => {
  it('keyword tools start keypad entries a newcomer can try without an LLM', async () => {
    const ts = await startTestServer({ config: { openaiApiKey: undefined, openaiBaseUrl: undefined } });
    servers.push(ts);
    expect(ts.server.llmMode).toBe('offline');
    const call = await connectCall(ts);
    calls.push(call);

    call.prompt('I want to give you my phone number');
    expect(await nextSpoken(call)).toBe(PHONE_PROMPT);
    call.digits('5550001234');
    expect(await nextSpoken(call)).toBe('Thanks, got it.');

    call.prompt('the language menu please');
    expect(await nextSpoken(call)).toBe(MENU_PROMPT);
    call.dtmf('2');
    expect(await call.waitForType('language')).toMatchObject({ ttsLanguage: 'es-US' });
    expect(await nextSpoken(call)).toBe('Gracias, lo tengo.');

    call.prompt('mi pin');
    expect(await nextSpoken(call)).toBe('Por favor, marque su PIN y luego oprima la tecla de numeral.');
    call.digits('1#');
    expect(await nextSpoken(call)).toMatch(/^Eso fue muy corto\. Su PIN tiene por lo menos 4 dígitos\./);
    call.digits('#');
    expect(await nextSpoken(call)).toMatch(/^Eso fue muy corto\./);
    call.digits('#');
    expect(await nextSpoken(call)).toBe('Lo siento, no pude obtener eso.');
  });
});

describe('logs', () => {
  it('never contain the digits, even at trace level', async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer | string, _encoding, done) {
        lines.push(chunk.toString());
        done();
      },
    });
    const llm = await startFakeOpenAI({ script: keypadScript({ kind: 'phoneNumber' }) });
    const config = loadConfig({}, { port: 0, host: '127.0.0.1', store: 'memory', openaiApiKey: 'test-key', openaiBaseUrl: llm.baseURL, logLevel: 'trace' });
    let server: RunningServer | undefined;
    servers.push({
      async close() {
        await server?.close();
        await llm.close();
      },
    });
    server = await startServer(config, { logger: createLogger('trace', sink), redisPrefix: `test:${randomUUID()}:` });

    let call = await SimulatedCall.connect({ url: server.relayUrl });
    calls.push(call);
    const { callSid, sessionId } = call;
    expect(await openKeypad(call)).toBe(PHONE_PROMPT);
    // A wrong entry, a partial one cut by a drop, and the rest after the resume.
    call.digits('5550001#');
    expect(await nextSpoken(call)).toBe(`That was not a full 10-digit number. ${PHONE_PROMPT}`);
    call.digits('5550');
    const live = server;
    await expect.poll(() => entryOf(live, callSid)?.buffer).toBe('5550');
    await call.drop();
    await expect.poll(() => live.manager.get(callSid)?.socket, { message: 'the server noticing the drop' }).toBeNull();
    call = await SimulatedCall.connect({ url: server.relayUrl, callSid, sessionId, reconnection: true });
    calls.push(call);
    expect(await nextSpoken(call)).toBe(resumeLine('en-US'));
    const before = llm.requests.length;
    call.digits('001234');
    expect(toolResultOf(await toolRequest(llm, before))).toEqual({ status: 'ok', kind: 'phoneNumber', value: '5550001234' });
    expect(await nextSpoken(call)).toBe(THANKS);
    // The caller hangs up: Twilio closes the socket and posts the action callback.
    await call.close();
    const action = await postAction(server.httpUrl, { CallSid: callSid, CallStatus: 'completed', SessionStatus: 'completed' });
    expect(action.status).toBe(200);
    await expect.poll(() => live.manager.get(callSid), { message: 'the session to end' }).toBeUndefined();

    const log = lines.join('');
    const entries = lines.flatMap((l) => l.split('\n')).filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(entries.length).toBeGreaterThan(3);
    const sessionLines = entries.filter((e) => e.callSid === callSid);
    expect(sessionLines.map((e) => e.msg)).toEqual(expect.arrayContaining(['session started', 'session resumed', 'session finished']));
    expect(log).not.toContain('5550001234');
    expect(log).not.toContain('5550001');
  });
});
