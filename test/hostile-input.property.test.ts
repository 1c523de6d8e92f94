// Hostile input as properties (fast-check), on real sockets against the real server (memory store,
// fake LLM). For any sequence of frames a client sends on one socket (valid frames, mutated ones,
// garbage JSON, huge strings, binary frames, setups naming another call, odd unicode, bad digits):
//   1. the server does not crash: /healthz answers and a fresh call is served afterwards;
//   2. it never sends an invalid outbound frame (to anyone), nor tries to (no error is logged);
//   3. it never changes another call: a bystander call's live state, its socket and its stored
//      record are exactly as before, and it goes on normally at the end.
// Each run waits for the server to have handled its frames by an event: a final prompt on the same
// socket is answered (frames on one socket are handled in order), or the server closed the socket.
import { randomBytes, randomUUID } from 'node:crypto';
import { Writable } from 'node:stream';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SimulatedCall, type SetupFrame } from '../src/testing/twilio-sim.js';
import { contentToText, type ScriptFn } from '../src/testing/fake-openai-server.js';
import { createLogger } from '../src/server/logger.js';
import { startTestServer, type TestServer } from './support/harness.js';
import { waitUntil } from './support/conditions.js';

const THANKS = 'Thanks, got it.';
const KEYPAD_PROMPT = 'Please enter your PIN, then press pound.';
/** A run that neither answers its final prompt nor closes in this time fails (a hang is a finding). */
const SETTLE_LIMIT_MS = 15_000;
/** HOSTILE_RUNS=1000 for a longer hunt. */
const RUNS = Number(process.env.HOSTILE_RUNS ?? 40);

/** "keypad" opens a PIN entry (so hostile sockets can reach the keypad too); a tool result -> THANKS; else echo. */
const script: ScriptFn = ({ messages }) => {
  const last = messages.at(-1);
  if (last?.role === 'tool') return { text: THANKS };
  const said = contentToText(last?.content);
  if (said.includes('keypad')) return { toolCalls: [{ name: 'collect_digits', arguments: '{"kind":"digits","label":"PIN","minLength":4,"maxLength":6}' }] };
  return { text: `You said: ${said}` };
};

let ts: TestServer;
const logLines: string[] = [];
let bystander: SimulatedCall;

const sid = (prefix: string) => prefix + randomBytes(16).toString('hex');

function setupFrame(callSid: string, extra: Partial<SetupFrame> = {}): SetupFrame {
  return {
    type: 'setup',
    sessionId: sid('VX'),
    callSid,
    accountSid: sid('AC'),
    parentCallSid: '',
    from: '+15550100001',
    to: '+15550100002',
    forwardedFrom: '',
    callType: 'PSTN',
    callerName: '',
    direction: 'inbound',
    callStatus: 'RINGING',
    customParameters: {},
    ...extra,
  };
}

async function nextSpoken(call: SimulatedCall): Promise<string> {
  for (;;) {
    const reply = await call.nextReply(10_000);
    if (reply.text !== '') return reply.text;
  }
}

// ---------------------------------------------------------------- frames

/** What a client puts on the socket: text (usually JSON) or bytes in a binary frame. */
type Wire = { text: string } | { binary: Buffer };

/** Text a caller could say, and text nobody should: controls, bidi overrides, lone surrogates, combining marks. */
const oddText = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.string({ unit: 'grapheme', maxLength: 20 }),
  fc.constantFrom('', ' ', '\u0000', '\u202eevil', '\ufeff', '\ud800', 'x\udfffy', 'e\u0301\u0301\u0301', '👩‍👩‍👧‍👦', '\r\n\t', 'use the keypad', '{"type":"setup"}'),
);
const keypadKey = fc.constantFrom(...'0123456789*#ABCD');
const badKey = fc.oneof(fc.constantFrom('10', 'E', 'a', '', ' ', '٣', '５', '#1', 'null'), fc.integer(), fc.constant(null), fc.string({ maxLength: 3 }));
const numberish = fc.oneof(fc.integer(), fc.double(), fc.constantFrom('250', ' 12 ', '1e3', '-5', 'abc', '', '0x10', 'Infinity', '1e400'), fc.constant(null), fc.boolean());

function validFrames(bystanderCall: () => SimulatedCall) {
  const callSid = fc.oneof(
    { weight: 3, arbitrary: fc.constant(null).map(() => sid('CA')) }, // a new call
    { weight: 2, arbitrary: fc.constant(null).map(() => bystanderCall().callSid) }, // another caller's call
    { weight: 1, arbitrary: fc.constantFrom('CA1', 'x', '\u0000', 'CA'.padEnd(300, '9')) }, // odd, and reused across runs
  );
  const setup = fc
    .record({ callSid, reconnection: fc.option(fc.boolean(), { nil: undefined }), knowsSessionId: fc.boolean(), customParameters: fc.dictionary(fc.string({ maxLength: 8 }), fc.string({ maxLength: 8 }), { maxKeys: 3 }) })
    .map(({ callSid, reconnection, knowsSessionId, customParameters }) => {
      // The bystander's sessionId is its credential for a non-Twilio resume (reconnection: true): a
      // client holding both ids is that caller, so it is only used without reconnection.
      const sessionId = knowsSessionId && callSid === bystanderCall().callSid && reconnection !== true ? bystanderCall().sessionId : sid('VX');
      return setupFrame(callSid, { sessionId, customParameters, ...(reconnection === undefined ? {} : { reconnection: reconnection as true }) });
    });
  return fc.oneof(
    { weight: 3, arbitrary: setup },
    { weight: 4, arbitrary: fc.record({ type: fc.constant('prompt'), voicePrompt: oddText, lang: fc.constantFrom('en-US', 'es-US', '', 'xx'), last: fc.boolean() }) },
    { weight: 3, arbitrary: fc.record({ type: fc.constant('dtmf'), digit: fc.oneof(keypadKey, badKey) }) },
    { weight: 2, arbitrary: fc.record({ type: fc.constant('interrupt'), utteranceUntilInterrupt: oddText, durationUntilInterruptMs: numberish }) },
    { weight: 1, arbitrary: fc.record({ type: fc.constant('info'), name: fc.string({ maxLength: 10 }), value: fc.anything({ maxDepth: 2 }) }) },
    { weight: 1, arbitrary: fc.record({ type: fc.constant('error'), description: oddText }) },
  );
}

/** A valid frame bent: a field dropped, given a value of any type, or the type name changed. */
function mutated(frames: fc.Arbitrary<Record<string, unknown>>) {
  return fc
    .tuple(frames, fc.nat(), fc.anything({ maxDepth: 2 }), fc.constantFrom('drop', 'set', 'retype', 'extra'))
    .map(([frame, pick, value, how]) => {
      const out: Record<string, unknown> = { ...frame };
      const keys = Object.keys(out);
      const key = keys[pick % keys.length]!;
      if (how === 'drop') delete out[key];
      else if (how === 'set') out[key] = value;
      else if (how === 'retype') out.type = typeof value === 'string' ? value : String(out.type).toUpperCase();
      else out[`x${pick % 7}`] = value;
      return out;
    });
}

function hostileFrame(bystanderCall: () => SimulatedCall): fc.Arbitrary<Wire> {
  const valid = validFrames(bystanderCall) as fc.Arbitrary<Record<string, unknown>>;
  const json = (a: fc.Arbitrary<unknown>) => a.map((v): Wire => ({ text: JSON.stringify(v) ?? 'undefined' }));
  return fc.oneof(
    { weight: 6, arbitrary: json(valid) },
    { weight: 4, arbitrary: json(mutated(valid)) },
    // Garbage JSON: not JSON, JSON that is no frame, a frame cut short.
    { weight: 2, arbitrary: fc.string({ maxLength: 30 }).map((text): Wire => ({ text })) },
    { weight: 1, arbitrary: json(fc.jsonValue({ maxDepth: 2 })) },
    { weight: 1, arbitrary: fc.tuple(json(valid), fc.nat()).map(([w, n]): Wire => ({ text: 'text' in w ? w.text.slice(0, n % w.text.length) : '' })) },
    { weight: 1, arbitrary: fc.constantFrom<Wire>({ text: 'null' }, { text: '[]' }, { text: '"prompt"' }, { text: '{"type":"setup","callSid":{}}' }, { text: '{"__proto__":{"type":"prompt"},"voicePrompt":"x"}' }) },
    // Binary frames: a valid frame's bytes, or noise.
    { weight: 1, arbitrary: valid.map((v): Wire => ({ binary: Buffer.from(JSON.stringify(v)) })) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 64 }).map((b): Wire => ({ binary: Buffer.from(b) })) },
    // Huge: over the prompt cap (cut), over the frame cap (dropped), over the socket's payload cap (closed).
    {
      weight: 1,
      arbitrary: fc
        .tuple(fc.constantFrom(5_000, 70_000, 1_100_000), fc.constantFrom('voicePrompt', 'description', 'callSid'))
        .map(([size, field]): Wire => ({ text: JSON.stringify({ type: field === 'voicePrompt' ? 'prompt' : field === 'callSid' ? 'setup' : 'error', sessionId: 'VX1', [field]: 'é'.repeat(size / 2) }) })),
    },
  );
}

/** Most sequences open with a valid setup for a new call, so what follows reaches a live session. */
function hostileSequence(bystanderCall: () => SimulatedCall): fc.Arbitrary<Wire[]> {
  const opening = fc.constant(null).map((): Wire => ({ text: JSON.stringify(setupFrame(sid('CA'))) }));
  return fc
    .tuple(fc.option(opening, { freq: 3 }), fc.array(hostileFrame(bystanderCall), { minLength: 1, maxLength: 40 }))
    .map(([first, rest]) => (first ? [first, ...rest] : rest));
}

// ---------------------------------------------------------------- the bystander's state

interface Observed {
  snapshot: string;
  record: string;
  messages: number;
  socketAttached: boolean;
}

async function observeBystander(): Promise<Observed> {
  const session = ts.server.manager.get(bystander.callSid);
  if (!session) throw new Error('the bystander session is gone');
  // Pending writes land first, so a change to it would show in the stored record as well.
  await session.writer.flush();
  const record = await ts.server.store.load(bystander.callSid);
  return {
    snapshot: JSON.stringify(session.actor.getPersistedSnapshot()),
    record: JSON.stringify(record),
    messages: bystander.messages.length,
    socketAttached: session.socket !== null && bystander.isOpen,
  };
}

// ---------------------------------------------------------------- one run

type Outcome = 'answered' | 'closed';

/** Sends the frames, then waits until the server has handled them: its answer to a last prompt, or its close. */
async function runHostile(frames: Wire[]): Promise<{ hostile: SimulatedCall; outcome: Outcome }> {
  const hostile = await SimulatedCall.connect({ url: ts.server.relayUrl, sendSetup: false });
  for (const frame of frames) {
    if (!hostile.sendRaw('text' in frame ? frame.text : frame.binary)) break;
  }
  const marker = `final-${randomUUID()}`;
  let heard = '';
  const answered = new Promise<Outcome>((resolve) => {
    hostile.onMessage((m) => {
      if (m.type !== 'text') return;
      heard += m.token;
      if (heard.includes(`You said: ${marker}`)) resolve('answered');
    });
  });
  // Ignored as a duplicate when an earlier setup got this socket a session; otherwise it starts one.
  hostile.sendJson(setupFrame(sid('CA')));
  hostile.prompt(marker);
  let timer: NodeJS.Timeout | undefined;
  const stuck = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`hostile socket neither answered nor closed; it received:\n${heard.slice(-500)}`)), SETTLE_LIMIT_MS);
  });
  try {
    const outcome = await Promise.race([answered, hostile.closed.then((): Outcome => 'closed'), stuck]);
    return { hostile, outcome };
  } finally {
    clearTimeout(timer);
  }
}

async function freshCallWorks(): Promise<void> {
  const call = await SimulatedCall.connect({ url: ts.server.relayUrl });
  try {
    call.prompt('hello after the storm');
    expect(await nextSpoken(call)).toBe('You said: hello after the storm');
    expect(call.invalidFrames).toBe(0);
  } finally {
    await call.close();
  }
}

const errorLines = () => logLines.filter((l) => (JSON.parse(l) as { level: number }).level >= 50);

describe('hostile frames on one socket', () => {
  beforeAll(async () => {
    const sink = new Writable({
      write(chunk: Buffer | string, _encoding, done) {
        logLines.push(...chunk.toString().split('\n').filter((l) => l.trim() !== ''));
        done();
      },
    });
    // No idle re-prompts during the test: the bystander sits mid-entry and must not change by itself.
    // Every run leaves a call or two waiting out its grace period: room for long hunts (HOSTILE_RUNS).
    ts = await startTestServer({ llm: { script }, config: { dtmfIdleMs: 3_600_000, maxSessions: 100_000 }, logger: createLogger('warn', sink) });
    bystander = await SimulatedCall.connect({ url: ts.server.relayUrl, from: '+15557654321' });
    bystander.prompt('hello');
    expect(await nextSpoken(bystander)).toBe('You said: hello');
    bystander.prompt('I will use the keypad');
    expect(await nextSpoken(bystander)).toBe(KEYPAD_PROMPT);
    // Half an entry typed: a live keypad buffer is the most a stray event could spoil.
    bystander.digits('73');
    const typed = () =>
      (ts.server.manager.get(bystander.callSid)?.actor.getSnapshot().children.dtmf?.getSnapshot() as { context: { buffer: string } } | undefined)?.context
        .buffer;
    await waitUntil(() => typed() === '73', 'two keys buffered');
  });

  afterAll(async () => {
    await bystander?.drop();
    await ts?.close();
  });

  it('never crash the server, never get an invalid frame sent, never change another call', async () => {
    const outcomes: Record<Outcome, number> = { answered: 0, closed: 0 };
    const wire = (frame: object): Wire => ({ text: JSON.stringify(frame) });
    const { callSid, sessionId } = bystander;
    // Always tried, whatever is generated: the ways a socket can name another caller's call.
    const examples: Array<[Wire[]]> = [
      [[wire(setupFrame(callSid)), wire({ type: 'dtmf', digit: '5' })]],
      [[wire(setupFrame(callSid, { sessionId })), wire({ type: 'prompt', voicePrompt: 'it is me' })]],
      [[wire(setupFrame(callSid, { reconnection: true })), wire({ type: 'interrupt', utteranceUntilInterrupt: 'x', durationUntilInterruptMs: '12' })]],
      [[{ binary: Buffer.from(JSON.stringify(setupFrame(callSid))) }, wire({ type: 'dtmf', digit: '#' })]],
      [[wire(setupFrame(sid('CA'))), wire(setupFrame(callSid)), wire({ type: 'dtmf', digit: '1' }), wire({ type: 'prompt', voicePrompt: 'use the keypad' }), wire({ type: 'dtmf', digit: '2' })]],
    ];
    await fc.assert(
      fc.asyncProperty(hostileSequence(() => bystander), async (frames) => {
        const before = await observeBystander();
        const { hostile, outcome } = await runHostile(frames);
        outcomes[outcome]++;
        try {
          expect(hostile.invalidFrames, hostile.invalidRaw.join('\n')).toBe(0);
          expect(bystander.invalidFrames).toBe(0);
          expect(await observeBystander()).toEqual(before);
          const health = await fetch(`${ts.server.httpUrl}/healthz`);
          expect(health.status).toBe(200);
          expect(((await health.json()) as { ok: boolean }).ok).toBe(true);
          await freshCallWorks();
          expect(errorLines()).toEqual([]);
        } finally {
          await hostile.close();
        }
      }),
      { numRuns: RUNS, examples },
    );
    // Both ways a run can end were exercised, and setups naming the bystander's call were refused
    // (each example but the last is one), so none of the checks above was vacuous.
    expect(outcomes.answered).toBeGreaterThan(0);
    expect(outcomes.closed).toBeGreaterThan(0);
    const refused = logLines.filter((l) => l.includes('"resume refused; existing session left untouched"') && l.includes(callSid));
    expect(refused.length).toBeGreaterThanOrEqual(4);

    // The bystander's call goes on as if nothing happened: its entry completes with exactly its keys.
    const before = ts.llm.requests.length;
    bystander.digits('91#');
    expect(await nextSpoken(bystander)).toBe(THANKS);
    const toolResult = ts.llm.requests.slice(before).find((r) => r.messages.at(-1)?.role === 'tool')?.messages.at(-1);
    expect(JSON.parse(contentToText(toolResult?.content))).toEqual({ status: 'ok', kind: 'digits', value: '7391' });
    bystander.prompt('still here');
    expect(await nextSpoken(bystander)).toBe('You said: still here');
    expect(bystander.invalidFrames).toBe(0);
    expect(bystander.closeInfo).toBeUndefined();
  }, 30_000 + RUNS * 1_000);
});
