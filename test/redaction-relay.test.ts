// The redaction rule where people read a call: the real inspector relay's traffic (INSPECT=1, a plain
// ws client of the @statelyai/inspect relay, as the browser page is), /sessions and the server's log
// lines, during a call where the caller says a card number and types a phone number on the keypad.
import net from 'node:net';
import { Writable } from 'node:stream';
import { afterEach, expect, it } from 'vitest';
import WebSocket from 'ws';
import { SimulatedCall } from '../src/testing/twilio-sim.js';
import { postAction } from '../src/testing/twilio-webhooks.js';
import { contentToText, type ScriptFn } from '../src/testing/fake-openai-server.js';
import { createLogger } from '../src/server/logger.js';
import { REDACTED } from '../src/server/redaction.js';
import { startTestServer, type TestServer } from './support/harness.js';
import { waitUntil, waitUntilAsync } from './support/conditions.js';

const ADMIN = 'admin-secret';
const FROM = '+14155550199';
const PHONE = '7203948615';
const CARD = '4111 1111 1111 1111';
const THANKS = 'Thanks, noted.';
const PHONE_PROMPT = 'Please enter your 10-digit phone number, starting with the area code.';

const cleanups: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/** "keypad" -> collect_digits(phoneNumber); a tool result -> THANKS; anything else is echoed. */
const script: ScriptFn = ({ messages }) => {
  const last = messages.at(-1);
  if (last?.role === 'tool') return { text: THANKS };
  const said = contentToText(last?.content);
  if (said.includes('keypad')) return { toolCalls: [{ name: 'collect_digits', arguments: '{"kind":"phoneNumber"}' }] };
  return { text: `You said: ${said}` };
};

async function nextSpoken(call: SimulatedCall): Promise<string> {
  for (;;) {
    const reply = await call.nextReply(10_000);
    if (reply.text !== '') return reply.text;
  }
}

interface Frame {
  type: string;
  sessionId: string;
  name?: string;
  event?: { type: string; digit?: string; output?: unknown };
  snapshot?: { context?: unknown; input?: unknown };
}

/** Every string that would show one of the secrets: as typed or said, and squeezed together. */
function leaks(text: string): string[] {
  const secrets = [PHONE, CARD, CARD.replace(/ /g, ''), FROM, FROM.slice(2)];
  const found = secrets.filter((s) => text.includes(s));
  // Structure, not luck: no digit, buffer or keypad value with a digit in it, wherever it sits.
  for (const pattern of [/"digit":"[0-9#*A-D]"/, /"buffer":"[0-9]/, /\\?"value\\?":\\?"[0-9]/]) {
    const m = pattern.exec(text);
    if (m) found.push(m[0]);
  }
  return found;
}

it('inspector frames, /sessions and log lines never show the typed digits, the card said aloud or the numbers', async () => {
  const logLines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer | string, _encoding, done) {
      logLines.push(chunk.toString());
      done();
    },
  });
  const inspectPort = await freePort();
  const ts: TestServer = await startTestServer({
    config: { inspect: '1', inspectPort, adminToken: ADMIN, logLevel: 'trace' },
    llm: { script },
    logger: createLogger('trace', sink),
  });
  cleanups.push(() => ts.close());

  // A viewer of the relay, like the browser page: every frame the server's inspector sends reaches it.
  const raw: string[] = [];
  const viewer = new WebSocket(`ws://localhost:${inspectPort}`);
  viewer.on('message', (data) => raw.push(data.toString()));
  await new Promise<void>((resolve, reject) => {
    viewer.once('open', () => resolve());
    viewer.once('error', reject);
  });
  cleanups.push(() => viewer.close());
  const frames = () => raw.map((f) => JSON.parse(f) as Frame);

  const admin = async (path: string) => {
    const res = await fetch(`${ts.server.httpUrl}${path}`, { headers: { authorization: `Bearer ${ADMIN}` } });
    expect(res.status).toBe(200);
    return res.text();
  };
  const adminBodies: string[] = [];

  const call = await SimulatedCall.connect({ url: ts.server.relayUrl, from: FROM });
  cleanups.push(() => call.drop());
  call.prompt(`my card is ${CARD}`);
  // The caller hears it back: the wire to Twilio is not a place people read.
  expect(await nextSpoken(call)).toBe(`You said: my card is ${CARD}`);

  call.prompt('I will use the keypad');
  expect(await nextSpoken(call)).toBe(PHONE_PROMPT);
  call.digits(PHONE.slice(0, 4));
  // /sessions shows how far the entry is, never what was typed.
  await waitUntilAsync(async () => {
    const body = await admin(`/sessions/${call.callSid}`);
    adminBodies.push(body);
    return (JSON.parse(body) as { dtmf: { digitsEntered: number } | null }).dtmf?.digitsEntered === 4;
  }, '/sessions showing 4 digits entered');
  const before = ts.llm.requests.length;
  call.digits(PHONE.slice(4));
  expect(await nextSpoken(call)).toBe(THANKS);
  // The digits really were typed and used: the model got them (the LLM is not a place people read either).
  expect(contentToText(ts.llm.requests.slice(before).find((r) => r.messages.at(-1)?.role === 'tool')?.messages.at(-1)?.content)).toContain(PHONE);

  adminBodies.push(await admin(`/sessions/${call.callSid}`), await admin('/sessions'));
  const view = JSON.parse(adminBodies.at(-2)!) as { from: string; dtmf: unknown; history: Array<{ role: string; content: string }> };
  expect(view.from).toBe('********0199');
  expect(view.dtmf).toBeNull();
  expect(view.history.map((t) => t.role)).toEqual(['user', 'assistant', 'user', 'assistant', 'tool', 'assistant']);
  expect(view.history[0]!.content).toBe('my card is **** **** **** ****');
  expect(JSON.parse(view.history[4]!.content)).toEqual({ status: 'ok', kind: 'phoneNumber', value: REDACTED });

  // The relay showed the entry as it went: the collector started, got ten (hidden) keys and finished.
  const collectorId = () => frames().find((f) => f.type === '@xstate.actor' && f.name === 'dtmf')?.sessionId;
  const keysToCollector = () => frames().filter((f) => f.type === '@xstate.event' && f.event?.type === 'DIGIT' && f.sessionId === collectorId());
  const done = () => frames().find((f) => f.type === '@xstate.event' && f.event?.type === 'xstate.done.actor.dtmf');
  await waitUntil(() => keysToCollector().length === PHONE.length && done() !== undefined, 'the keypad entry on the relay');
  expect(keysToCollector().map((f) => f.event?.digit)).toEqual(Array<string>(PHONE.length).fill(REDACTED));
  expect(done()?.event?.output).toEqual({ status: 'ok', kind: 'phoneNumber', value: REDACTED });
  // The session's snapshots went out too, with the conversation (masked) in them.
  await waitUntil(() => raw.some((f) => f.includes('You said: my card is **** **** **** ****') && f.includes('@xstate.snapshot')), 'a session snapshot with the transcript');
  // The LLM actor's input (the history handed to the model) is in its actor frame: the tool result is hidden there too.
  await waitUntil(() => raw.some((f) => f.includes('"turns":[') && f.includes(`\\"value\\":\\"${REDACTED}\\"`)), 'an LLM actor frame carrying the keypad result');

  // The caller hangs up: the session ends and says so in the logs.
  await call.close();
  expect((await postAction(ts.server.httpUrl, { CallSid: call.callSid, CallStatus: 'completed', SessionStatus: 'completed' })).status).toBe(200);
  await waitUntil(() => logLines.some((l) => l.includes('"session finished"')), 'the session finished log line');

  const relayed = raw.join('\n');
  expect(relayed).toContain(call.callSid);
  expect(relayed).toContain('********0199');
  expect(leaks(relayed)).toEqual([]);
  expect(leaks(adminBodies.join('\n'))).toEqual([]);
  const logs = logLines.join('');
  expect(logs).toContain(call.callSid);
  expect(leaks(logs)).toEqual([]);
});
