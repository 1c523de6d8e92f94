// Machine-level tests of what the session machine keeps and says around a reply: interrupts (only what
// the caller heard is kept), replies cut off by a drop and completed after the resume, restarted LLM
// runs, LLM errors, tool calls and the tool-loop bound, handoff, and the link region's less common
// edges (a callback that overtakes the close, a takeover, the resume cap in grace).
//
// The LLM stand-in does nothing on its own: the test releases every delta, the end of the reply or an
// error, so each step is exact. All session time runs on a TestClock given to the machine through
// `timersOn`, and every event is stamped with that clock: no test sleeps or reads the wall clock.
import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { createActor, fromCallback, type Actor, type Snapshot } from 'xstate';
import type { ChatTurn, ReplyEvent, ReplyInput, ToolCall } from '../src/llm/types.js';
import { hashSecret } from '../src/server/resume-proof.js';
import { hasResumesLeft, lifecycleOf, sessionMachine, timersOn, type SessionTimeouts } from '../src/machines/session.js';
import { llmFailureLine, resumeLine } from '../src/machines/phrases.js';
import type { DtmfDigit } from '../src/machines/dtmf/types.js';
import type { OutboundMessage } from '../src/protocol/messages.js';
import { sessionInput } from './support/session-input.js';
import { persistedSnapshotOf } from '../src/server/sessions/persisted-snapshot.js';
import { agentActors, llmDone } from './support/session-actors.js';
import { fromReplyStream } from '../src/machines/reply.js';
import { TestClock } from './support/test-clock.js';

/** One invocation of the LLM actor: what it was asked, and handles to answer as the real edge would. */
interface Run {
  input: ReplyInput;
  stopped: boolean;
  delta(text: string): void;
  /** Several deltas that arrived in one read of the stream: one event. */
  deltas(texts: string[]): void;
  /** Resolves once a tool it called has answered (the tool actor settles on the microtask queue). */
  done(text: string, toolCalls?: ToolCall[]): Promise<void>;
  error(message?: string): void;
}

function controlledMachine(runs: Run[], clock: TestClock) {
  const llmReply = fromReplyStream(({ input, sendBack }) => {
    const run: Run = {
      input,
      stopped: false,
      delta: (text) => sendBack({ type: 'LLM.DELTA', text } satisfies ReplyEvent),
      deltas: (texts) => sendBack({ type: 'LLM.DELTAS', texts } satisfies ReplyEvent),
      done: async (text, toolCalls = []) => {
        sendBack(llmDone(text, toolCalls, clock.now()));
        if (toolCalls.length) await new Promise((resolve) => setImmediate(resolve));
      },
      error: (message = 'stream reset') => sendBack({ type: 'LLM.ERROR', message } satisfies ReplyEvent),
    };
    runs.push(run);
    return () => {
      run.stopped = true;
    };
  });
  return sessionMachine.provide({ actors: { llmReply, ...agentActors(clock) } });
}

type Machine = ReturnType<typeof controlledMachine>;

interface Session {
  actor: Actor<Machine>;
  machine: Machine;
  runs: Run[];
  outbound: OutboundMessage[];
  clock: TestClock;
  /** The newest LLM run. */
  run(): Run;
  say(text: string, last?: boolean): void;
  interrupt(utterance: string): void;
  closeSocket(code?: number): void;
  action(resumable: boolean, extra?: { sessionStatus?: string; errorCode?: string; resumeTokenHash?: string }): void;
  resume(sessionId?: string): void;
  press(keys: string): void;
  /** What was sent since `from` (an index into `outbound`). */
  since(from: number): OutboundMessage[];
}

const live: Actor<Machine>[] = [];
afterEach(() => {
  for (const a of live.splice(0)) a.stop();
});

function wire(actor: Actor<Machine>, machine: Machine, runs: Run[], clock: TestClock): Session {
  const outbound: OutboundMessage[] = [];
  actor.on('outbound', ({ message }) => outbound.push(message));
  live.push(actor);
  actor.start();
  return {
    actor,
    machine,
    runs,
    outbound,
    clock,
    run: () => {
      const run = runs.at(-1);
      if (!run) throw new Error('no LLM run yet');
      return run;
    },
    say: (text, last = true) => actor.send({ type: 'PROMPT', text, lang: 'en-US', last }),
    interrupt: (utterance) => actor.send({ type: 'INTERRUPT', utterance, durationMs: 800 }),
    closeSocket: (code = 1006) => actor.send({ type: 'SOCKET.CLOSED', code, at: clock.now() }),
    action: (resumable, extra = {}) =>
      actor.send({
        type: 'ACTION',
        resumable,
        sessionStatus: resumable ? 'in-progress' : 'completed',
        errorCode: resumable ? '64105' : '',
        at: clock.now(),
        ...extra,
      }),
    resume: (sessionId = `VX${randomUUID()}`) =>
      actor.send({ type: 'RESUME', sessionKeyHash: hashSecret(sessionId), via: 'twilio', at: clock.now() }),
    press: (keys) => {
      for (const digit of keys) actor.send({ type: 'DIGIT', digit: digit as DtmfDigit, at: clock.now() });
    },
    since: (from) => outbound.slice(from),
  };
}

function start(timeouts: Partial<SessionTimeouts> = {}, language = 'en-US'): Session {
  const clock = new TestClock(1_700_000_000_000);
  const runs: Run[] = [];
  const machine = controlledMachine(runs, clock);
  const input = { ...sessionInput(timeouts), now: clock.now(), language };
  return wire(createActor(machine, { input }), machine, runs, clock);
}

/** A JSON round trip of the persisted snapshot into a new actor on the same machine and clock (a restart). */
function restart(s: Session): Session {
  const persisted = JSON.parse(JSON.stringify(s.actor.getPersistedSnapshot())) as Snapshot<unknown>;
  s.actor.stop();
  return wire(createActor(s.machine, { snapshot: persisted, input: sessionInput() }), s.machine, s.runs, s.clock);
}

const ctx = (s: Session) => s.actor.getSnapshot().context;
const history = (s: Session) => ctx(s).history;
const conversation = (s: Session) => {
  const value = s.actor.getSnapshot().value;
  return typeof value === 'object' ? value.live.conversation : value;
};
const link = (s: Session) => lifecycleOf(s.actor.getSnapshot().value);
const text = (token: string, last: boolean): OutboundMessage => ({ type: 'text', token, last });
const CLOSE_CYCLE = text('', true);
const languageMessage = (language: string): OutboundMessage => ({ type: 'language', ttsLanguage: language, transcriptionLanguage: language });
const toolCall = (name: string, args: unknown = {}): ToolCall => ({
  id: `call_${randomUUID()}`,
  name,
  arguments: typeof args === 'string' ? args : JSON.stringify(args),
});
const toolResults = (turns: ChatTurn[]) => turns.filter((t): t is Extract<ChatTurn, { role: 'tool' }> => t.role === 'tool');

describe('an interrupt keeps only what the caller heard', () => {
  it('mid-stream: speech lags the stream, so the heard part (shorter than what streamed) becomes the assistant turn', async () => {
    const s = start();
    s.say('When are you open?');
    const run = s.run();
    for (const piece of ['We are open ', 'from nine to five, ', 'Monday to Friday, ', 'and on Saturdays until noon.']) run.delta(piece);
    expect(s.outbound.map((m) => (m.type === 'text' ? m.token : '')).join('')).toBe('We are open from nine to five, Monday to Friday, and on Saturdays until noon.');
    const before = s.outbound.length;

    s.interrupt('We are open from nine');

    expect(history(s)).toEqual([
      { role: 'user', content: 'When are you open?' },
      { role: 'assistant', content: 'We are open from nine', interrupted: true },
    ]);
    expect(conversation(s)).toBe('idle');
    // The talk cycle is closed and the stream in flight is stopped.
    expect(s.since(before)).toEqual([CLOSE_CYCLE]);
    expect(run.stopped).toBe(true);

    // The next model call sees the truncated turn, not the text the caller never heard.
    s.say('And on Sunday?');
    expect(s.run().input.turns.map((t) => t.content)).toEqual(['When are you open?', 'We are open from nine', 'And on Sunday?']);
  });

  it('before anything was heard: no assistant turn at all', async () => {
    const s = start();
    s.say('Tell me a story');
    s.run().delta('Once upon a time');
    s.interrupt('   ');
    expect(history(s)).toEqual([{ role: 'user', content: 'Tell me a story' }]);
    expect(conversation(s)).toBe('idle');
  });

  it('after the reply finished generating but while it was still spoken: the stored turn is cut to the heard part', async () => {
    const s = start();
    s.say('Where are you?');
    s.run().delta('We are at 12 Main Street, next to the station.');
    await s.run().done('We are at 12 Main Street, next to the station.');
    expect(conversation(s)).toBe('idle');
    expect(history(s).at(-1)).toEqual({ role: 'assistant', content: 'We are at 12 Main Street, next to the station.' });
    const before = s.outbound.length;

    s.interrupt('We are at 12 Main');

    expect(history(s)).toEqual([
      { role: 'user', content: 'Where are you?' },
      { role: 'assistant', content: 'We are at 12 Main', interrupted: true },
    ]);
    // Nothing is being generated, so there is no talk cycle to close.
    expect(s.since(before)).toEqual([]);
  });

  it('cuts only the last reply: the earlier turns stay as they were', async () => {
    const s = start();
    s.say('Hi');
    await s.run().done('Hello, how can I help?');
    s.say('Where are you?');
    await s.run().done('We are at 12 Main Street, next to the station.');
    s.interrupt('We are at 12');
    expect(history(s)).toEqual([
      { role: 'user', content: 'Hi' },
      { role: 'assistant', content: 'Hello, how can I help?' },
      { role: 'user', content: 'Where are you?' },
      { role: 'assistant', content: 'We are at 12', interrupted: true },
    ]);
  });

  it('in idle with no assistant turn last, an interrupt changes nothing', async () => {
    const s = start();
    s.interrupt('stray'); // before anything was said: no history at all, and no error
    expect(s.actor.getSnapshot().status).toBe('active');
    expect(history(s)).toEqual([]);
    expect(s.outbound).toEqual([]);
  });

  it('after a refused tool loop (a tool result last), an interrupt in idle changes nothing', async () => {
    const s = start();
    s.say('do things');
    for (let i = 0; i < 5; i++) await s.run().done('', [toolCall('mystery_tool')]);
    expect(conversation(s)).toBe('idle');
    const kept = history(s);
    s.interrupt('Sorry');
    expect(history(s)).toBe(kept);
  });

  it('a reply that finished with a tool call is not rewritten by an interrupt', async () => {
    // A stored session whose last turn is an assistant tool call (e.g. written by an older version
    // between the call and its result): truncating it would drop the call the chat API pairs with results.
    const s = start();
    s.say('hi');
    await s.run().done('Hello!');
    const persisted = JSON.parse(JSON.stringify(s.actor.getPersistedSnapshot())) as Snapshot<unknown> & { context: { history: ChatTurn[] } };
    const withCall: ChatTurn = { role: 'assistant', content: 'Let me check.', toolCalls: [toolCall('switch_language', { language: 'es-US' })] };
    persisted.context.history = [...persisted.context.history, withCall];
    s.actor.stop();
    const restored = wire(createActor(s.machine, { snapshot: persisted, input: sessionInput() }), s.machine, s.runs, s.clock);
    restored.interrupt('Let me');
    expect(history(restored).at(-1)).toEqual(withCall);
  });

  it('an interrupt that still arrives after the close cuts a reply kept for after the resume: nothing is repeated', async () => {
    // Frames that arrive after the session counted its socket as gone are still taken (e.g. during a drain).
    const s = start();
    s.say('What is my balance?');
    s.run().delta('Your balance is ');
    s.closeSocket();
    await s.run().done('Your balance is forty dollars.');
    expect(ctx(s).undelivered).toBe('Your balance is forty dollars.');
    s.interrupt('Your balance');
    expect(ctx(s).undelivered).toBeNull();
    expect(history(s).at(-1)).toEqual({ role: 'assistant', content: 'Your balance', interrupted: true });
    const before = s.outbound.length;
    s.resume();
    expect(s.since(before)).toEqual([languageMessage('en-US'), text(resumeLine('en-US'), true)]);
  });
});

describe('a reply cut off by a drop', () => {
  it('that finished while the socket was gone is kept whole and spoken after the resume line', async () => {
    const s = start();
    s.say('What is my balance?');
    s.run().delta('Your balance ');
    s.closeSocket();
    expect(link(s)).toBe('disconnected');
    s.run().delta('is forty dollars.');
    await s.run().done('Your balance is forty dollars.');
    expect(conversation(s)).toBe('idle');
    expect(history(s).at(-1)).toEqual({ role: 'assistant', content: 'Your balance is forty dollars.' });
    expect(ctx(s).undelivered).toBe('Your balance is forty dollars.');
    s.action(true);
    const before = s.outbound.length;

    s.resume();

    expect(s.since(before)).toEqual([
      languageMessage('en-US'),
      text(resumeLine('en-US'), false),
      text(' Your balance is forty dollars.', true),
    ]);
    expect(ctx(s).undelivered).toBeNull();
  });

  it('still streaming at the resume: the part so far is repeated and the stream goes on in the same talk cycle', async () => {
    const s = start();
    s.say('Tell me about your plans');
    s.run().delta('We have three ');
    s.closeSocket();
    s.run().delta('plans: ');
    const before = s.outbound.length;

    s.resume();
    s.run().delta('basic.');
    await s.run().done('We have three plans: basic.');

    expect(s.since(before)).toEqual([
      languageMessage('en-US'),
      text(resumeLine('en-US'), false),
      text(' We have three plans: ', false),
      text('basic.', false),
      CLOSE_CYCLE,
    ]);
    expect(ctx(s).undelivered).toBeNull();
  });

  it('deltas that arrived together (one event) are each a frame, and count in what a resume repeats', async () => {
    const s = start();
    s.say('Tell me about your plans');
    const from = s.outbound.length;
    s.run().deltas(['We have ', 'three ']);
    expect(s.since(from)).toEqual([text('We have ', false), text('three ', false)]);
    s.closeSocket();
    s.run().deltas(['plans', ': ']);
    const before = s.outbound.length;

    s.resume();
    s.run().deltas(['basic', '.']);
    await s.run().done('We have three plans: basic.');

    expect(s.since(before)).toEqual([
      languageMessage('en-US'),
      text(resumeLine('en-US'), false),
      text(' We have three plans: ', false),
      text('basic', false),
      text('.', false),
      CLOSE_CYCLE,
    ]);
    expect(history(s).at(-1)).toEqual({ role: 'assistant', content: 'We have three plans: basic.' });
  });

  it('a reply that finished while away with no text leaves nothing to repeat', async () => {
    const s = start();
    s.say('hello');
    s.closeSocket();
    await s.run().done('');
    expect(ctx(s).undelivered).toBeNull();
    const before = s.outbound.length;
    s.resume();
    expect(s.since(before)).toEqual([languageMessage('en-US'), text(resumeLine('en-US'), true)]);
  });

  it('two replies finished while away are both kept, in order', async () => {
    const s = start();
    s.say('first');
    s.closeSocket();
    await s.run().done('One.');
    // A frame that still arrives after the close is taken (e.g. during a drain).
    s.say('second');
    await s.run().done('Two.');
    // Spoken after the resume as one answer, with a space between them (not "One.Two.").
    expect(ctx(s).undelivered).toBe('One. Two.');
  });

  it('a restored session regenerates the reply in flight: the new run starts the text over', async () => {
    const s = start();
    s.say('Read me the terms');
    s.run().delta('Our terms are ');
    s.run().delta('simple');
    const first = s.run();

    const restored = restart(s);
    const second = restored.run();
    expect(second).not.toBe(first);
    // The new run is asked the same question.
    expect(second.input.turns).toEqual([{ role: 'user', content: 'Read me the terms' }]);
    second.delta('The terms: ');
    second.delta('none.');
    await second.done('The terms: none.');
    expect(history(restored).at(-1)).toEqual({ role: 'assistant', content: 'The terms: none.' });
    expect(restored.outbound).toEqual([text('The terms: ', false), text('none.', false), CLOSE_CYCLE]);
  });
});

describe('prompts', () => {
  it('a partial or blank prompt starts nothing', async () => {
    const s = start();
    s.say('I would like', false);
    s.say('   ');
    expect(s.runs).toHaveLength(0);
    expect(history(s)).toEqual([]);
    expect(conversation(s)).toBe('idle');
  });

  it('a new final prompt while replying drops the reply in flight and asks again with both user turns', async () => {
    const s = start();
    s.say('What are your hours?');
    const first = s.run();
    first.delta('Our hours');
    s.say('I would like', false); // partial: ignored, the reply goes on
    expect(s.runs).toHaveLength(1);
    first.delta(' are');
    expect(s.outbound.slice(-2)).toEqual([text('Our hours', false), text(' are', false)]);
    const before = s.outbound.length;

    s.say('Actually, where are you?');

    expect(first.stopped).toBe(true);
    expect(s.since(before)).toEqual([CLOSE_CYCLE]);
    expect(s.runs).toHaveLength(2);
    expect(s.run().input.turns).toEqual([
      { role: 'user', content: 'What are your hours?' },
      { role: 'user', content: 'Actually, where are you?' },
    ]);
    expect(conversation(s)).toBe('responding');
  });

  it('the model is sent the history and the current language', async () => {
    const s = start({}, 'es-US');
    s.say('Hola');
    expect(s.run().input).toMatchObject({ turns: [{ role: 'user', content: 'Hola' }], call: { language: 'es-US' } });
  });
  it('without limits in its input a session keeps the default 60 turns of history', async () => {
    const s = start();
    expect(ctx(s).historyLimits).toEqual({ maxTurns: 60, maxBytes: 32 * 1024 });
    for (let i = 1; i <= 31; i++) {
      s.say(`turn ${i}`);
      await s.run().done(`reply ${i}`);
    }
    expect(history(s)).toHaveLength(60);
    expect(ctx(s).historyDropped).toBe(2);
    expect(history(s)[0]).toEqual({ role: 'user', content: 'turn 2' });
  });
});

describe('without an LLM actor', () => {
  it('the first reply fails at once with the apology instead of waiting forever; the session lives on', async () => {
    const actor = createActor(sessionMachine, { input: sessionInput() });
    const outbound: OutboundMessage[] = [];
    actor.on('outbound', ({ message }) => outbound.push(message));
    actor.start();
    actor.send({ type: 'PROMPT', text: 'Hello?', lang: 'en-US', last: true });
    expect(actor.getSnapshot().status).toBe('active');
    expect(actor.getSnapshot().matches({ live: { conversation: 'idle' } })).toBe(true);
    expect(outbound).toEqual([text(llmFailureLine('en-US'), false), CLOSE_CYCLE]);
    actor.stop();
  });
});

describe('a reply actor that throws as it starts', () => {
  it('is an LLM error: the caller heard what streamed, then the apology, and the history keeps both', async () => {
    const llmReply = fromReplyStream(({ sendBack }) => {
      sendBack({ type: 'LLM.DELTA', text: 'Partial' } satisfies ReplyEvent);
      throw new Error('boom');
    });
    const actor = createActor(sessionMachine.provide({ actors: { llmReply, ...agentActors(new TestClock()) } }), { input: sessionInput() });
    const outbound: OutboundMessage[] = [];
    actor.on('outbound', ({ message }) => outbound.push(message));
    actor.start();
    actor.send({ type: 'PROMPT', text: 'Hello?', lang: 'en-US', last: true });
    expect(outbound).toEqual([text('Partial', false), text(` ${llmFailureLine('en-US')}`, false), CLOSE_CYCLE]);
    expect(actor.getSnapshot().context.history.at(-1)).toEqual({ role: 'assistant', content: `Partial ${llmFailureLine('en-US')}` });
    actor.stop();
  });
});

describe('an LLM error', () => {
  it('before any text: the caller hears the apology alone, which is kept as the reply', async () => {
    const s = start();
    s.say('Hello?');
    s.run().error();
    expect(s.outbound).toEqual([text(llmFailureLine('en-US'), false), CLOSE_CYCLE]);
    expect(history(s)).toEqual([
      { role: 'user', content: 'Hello?' },
      { role: 'assistant', content: llmFailureLine('en-US') },
    ]);
    expect(conversation(s)).toBe('idle');
  });

  it('apologises in the call language', async () => {
    const s = start({}, 'es-US');
    s.say('¿Hola?');
    s.run().delta('Buenos');
    s.run().error();
    expect(llmFailureLine('es-US')).not.toBe(llmFailureLine('en-US'));
    expect(s.outbound).toEqual([text('Buenos', false), text(` ${llmFailureLine('es-US')}`, false), CLOSE_CYCLE]);
    expect(history(s).at(-1)).toEqual({ role: 'assistant', content: `Buenos ${llmFailureLine('es-US')}` });
  });
});

describe('tool calls', () => {
  it('switch_language: answered, the language is switched and announced, and the model answers in it', async () => {
    const s = start();
    s.say('Can we speak Spanish?');
    const call = toolCall('switch_language', { language: 'es-US' });
    s.run().delta('Claro.');
    await s.run().done('Claro.', [call]);

    expect(ctx(s).language).toBe('es-US');
    expect(s.outbound).toEqual([text('Claro.', false), CLOSE_CYCLE, languageMessage('es-US')]);
    expect(conversation(s)).toBe('responding');
    expect(s.runs).toHaveLength(2);
    expect(s.run().input.call.language).toBe('es-US');
    expect(s.run().input.turns.slice(-2)).toEqual([
      { role: 'assistant', content: 'Claro.', toolCalls: [call] },
      { role: 'tool', toolCallId: call.id, content: 'language switched to es-US' },
    ]);
    // The spoken lines follow the new language, e.g. after a drop.
    await s.run().done('¿En qué puedo ayudarle?');
    s.closeSocket();
    const before = s.outbound.length;
    s.resume();
    expect(s.since(before)).toEqual([languageMessage('es-US'), text(resumeLine('es-US'), true)]);
  });

  it('an unknown tool or bad arguments: the model is told why and asked again, silently', async () => {
    const s = start();
    s.say('check the weather');
    const unknown = toolCall('weather');
    await s.run().done('', [unknown]);
    expect(s.runs).toHaveLength(2);
    expect(s.run().input.turns.at(-1)).toEqual({ role: 'tool', toolCallId: unknown.id, content: 'error: unknown tool weather' });
    const broken = toolCall('switch_language', '{"language":');
    await s.run().done('', [broken]);
    expect(s.run().input.turns.at(-1)).toEqual({ role: 'tool', toolCallId: broken.id, content: 'error: arguments are not valid JSON' });
    expect(ctx(s).language).toBe('en-US');
    // Neither closed a talk cycle nor said anything.
    expect(s.outbound).toEqual([]);
    await s.run().done('It is sunny.');
    expect(s.outbound).toEqual([CLOSE_CYCLE]);
  });

  it('several calls at once: the first runs, every other one is answered as skipped at once, the first when it is done', async () => {
    const s = start();
    s.say('Spanish please, and a person');
    const calls = [toolCall('switch_language', { language: 'es-US' }), toolCall('human_agent_handoff'), toolCall('weather')];
    await s.run().done('', calls);
    expect(ctx(s).language).toBe('es-US');
    expect(toolResults(s.run().input.turns)).toEqual([
      { role: 'tool', toolCallId: calls[1]!.id, content: 'skipped: one action at a time' },
      { role: 'tool', toolCallId: calls[2]!.id, content: 'skipped: one action at a time' },
      { role: 'tool', toolCallId: calls[0]!.id, content: 'language switched to es-US' },
    ]);
  });

  it('a model stuck calling tools gets four rounds, then refusals; the caller hears the apology and gets the floor', async () => {
    const s = start();
    s.say('do something');
    for (let round = 1; round <= 4; round++) {
      await s.run().done('', [toolCall('mystery_tool')]);
      expect(conversation(s), `round ${round} is answered`).toBe('responding');
      expect(ctx(s).toolRounds).toBe(round);
    }
    expect(s.runs).toHaveLength(5);
    const refused = [toolCall('mystery_tool'), toolCall('switch_language', { language: 'es-US' })];
    await s.run().done('', refused);

    expect(conversation(s)).toBe('idle');
    expect(s.runs).toHaveLength(5);
    expect(ctx(s).language).toBe('en-US');
    expect(history(s).slice(-3)).toEqual([
      { role: 'assistant', content: '', toolCalls: refused },
      ...refused.map((c) => ({ role: 'tool', toolCallId: c.id, content: 'refused: too many tool calls in a row, answer the caller now' })),
    ]);
    expect(s.outbound).toEqual([text(llmFailureLine('en-US'), false), CLOSE_CYCLE]);

    // The caller speaking starts the count over.
    s.say('hello?');
    expect(ctx(s).toolRounds).toBe(0);
    for (let round = 1; round <= 4; round++) await s.run().done('', [toolCall('mystery_tool')]);
    expect(conversation(s)).toBe('responding');
    await s.run().done('Hello!');
    expect(history(s).at(-1)).toEqual({ role: 'assistant', content: 'Hello!' });
  });

  it('after four tool rounds a plain answer is spoken as usual: only a fifth round of tools is refused', async () => {
    const s = start();
    s.say('go');
    for (let round = 1; round <= 4; round++) await s.run().done('', [toolCall('mystery_tool')]);
    s.run().delta('Done.');
    await s.run().done('Done.');
    expect(conversation(s)).toBe('idle');
    expect(s.outbound).toEqual([text('Done.', false), CLOSE_CYCLE]);
    expect(history(s).at(-1)).toEqual({ role: 'assistant', content: 'Done.' });
  });

  it('the fourth round is still allowed to be a real tool', async () => {
    const s = start();
    s.say('go');
    for (let round = 1; round <= 3; round++) await s.run().done('', [toolCall('mystery_tool')]);
    await s.run().done('', [toolCall('switch_language', { language: 'es-US' })]);
    expect(ctx(s).language).toBe('es-US');
    expect(ctx(s).toolRounds).toBe(4);
  });
});

describe('handoff', () => {
  it('says goodbye, answers the call, sends end with the reason, call and language, and a close then ends the session', async () => {
    const s = start({}, 'es-US');
    s.say('Quiero hablar con una persona');
    const call = toolCall('human_agent_handoff', { reason: 'billing dispute' });
    s.run().delta('Le comunico.');
    await s.run().done('Le comunico.', [call]);

    expect(conversation(s)).toBe('finished');
    expect(s.runs).toHaveLength(1);
    const handoffData = JSON.stringify({ reason: 'billing dispute', callSid: ctx(s).callSid, language: 'es-US' });
    expect(ctx(s).handoffData).toBe(handoffData);
    expect(s.outbound).toEqual([text('Le comunico.', false), CLOSE_CYCLE, { type: 'end', handoffData }]);
    expect(history(s).slice(-2)).toEqual([
      { role: 'assistant', content: 'Le comunico.', toolCalls: [call] },
      { role: 'tool', toolCallId: call.id, content: 'handing off to a human agent' },
    ]);

    // Nothing the caller says now starts a reply.
    s.say('¿Hola?');
    expect(s.runs).toHaveLength(1);
    s.closeSocket(1000);
    expect(s.actor.getSnapshot().value).toBe('ended');
    expect(ctx(s).endedReason).toBe('socket.closed');
  });

  it('without a reason the default one is handed on', async () => {
    const s = start();
    s.say('agent');
    await s.run().done('Connecting you.', [toolCall('human_agent_handoff')]);
    expect(JSON.parse(ctx(s).handoffData!)).toEqual({ reason: 'caller asked for a human', callSid: ctx(s).callSid, language: 'en-US' });
  });

  it('a handoff call with bad arguments is an invalid tool, not a handoff', async () => {
    const s = start();
    s.say('agent');
    await s.run().done('', [toolCall('human_agent_handoff', { reason: 42 })]);
    expect(conversation(s)).toBe('responding');
    expect(ctx(s).handoffData).toBeNull();
    expect(s.run().input.turns.at(-1)?.content).toMatch(/^error: /);
  });
});

describe('link region edges', () => {
  it('an action callback that overtakes the close moves a connected call to grace, counting the drop once', async () => {
    const s = start({ graceMs: 5000 });
    s.clock.advance(250);
    const at = s.clock.now();
    s.action(true, { resumeTokenHash: 'token-hash-1' });
    expect(link(s)).toBe('grace');
    expect(ctx(s)).toMatchObject({ disconnects: 1, lastCloseCode: null, graceDeadline: at + 5000, resumeTokenHashes: ['token-hash-1'] });

    // Posted again (Twilio retried it): the new token joins the old (both stay valid), the deadline stays.
    s.clock.advance(1000);
    s.action(true, { resumeTokenHash: 'token-hash-2' });
    expect(ctx(s)).toMatchObject({ disconnects: 1, graceDeadline: at + 5000, resumeTokenHashes: ['token-hash-1', 'token-hash-2'], resumes: 0 });

    // A resume spends the token and stops the grace timer.
    s.resume();
    expect(link(s)).toBe('connected');
    expect(ctx(s)).toMatchObject({ resumes: 1, resumeTokenHashes: [], graceDeadline: null });
    expect(s.clock.pending).toBe(0);
  });

  it('a callback after the close moves the call to grace with its token; the grace deadline counts from the close', async () => {
    const s = start({ graceMs: 4000 });
    const closedAt = s.clock.now();
    s.closeSocket();
    s.clock.advance(300);
    s.action(true, { resumeTokenHash: 'token-hash' });
    expect(link(s)).toBe('grace');
    expect(ctx(s)).toMatchObject({ resumeTokenHashes: ['token-hash'], disconnects: 1, graceDeadline: closedAt + 4000 });
  });

  it('in grace, a callback that is not resumable ends the call', async () => {
    const s = start();
    s.closeSocket();
    s.action(true);
    expect(link(s)).toBe('grace');
    s.action(false, { sessionStatus: 'completed', errorCode: '' });
    expect(s.actor.getSnapshot().value).toBe('ended');
    expect(ctx(s).endedReason).toBe('action:completed');
  });

  it('a callback without a token in disconnected keeps none', async () => {
    const s = start();
    s.closeSocket(1011);
    expect(ctx(s).lastCloseCode).toBe(1011);
    s.action(true);
    expect(link(s)).toBe('grace');
    expect(ctx(s).resumeTokenHashes).toEqual([]);
  });

  it('a second socket for a live call takes over: counted as a resume, greeted, with its own session key', async () => {
    const s = start();
    s.resume('VXsecond');
    expect(link(s)).toBe('connected');
    expect(ctx(s)).toMatchObject({ resumes: 1, disconnects: 0, sessionKeyHash: hashSecret('VXsecond') });
    expect(s.outbound).toEqual([languageMessage('en-US'), text(resumeLine('en-US'), true)]);
  });

  it('a second socket taking over mid-reply hears the line, then everything streamed so far, then the rest', async () => {
    const s = start();
    s.say('Tell me a story');
    s.run().delta('Once ');
    s.run().delta('upon ');
    const before = s.outbound.length;

    s.resume('VXsecond');
    s.run().delta('a time.');
    await s.run().done('Once upon a time.');

    // The text lives in the reply actor, not the context: the session asks it (REPLAY) and says its answer.
    expect(s.since(before)).toEqual([
      languageMessage('en-US'),
      text(resumeLine('en-US'), false),
      text(' Once upon ', false),
      text('a time.', false),
      CLOSE_CYCLE,
    ]);
    expect(history(s).at(-1)).toEqual({ role: 'assistant', content: 'Once upon a time.' });
  });

  it('the end reason names the callback status, or its error code when it has no status', async () => {
    const completed = start();
    completed.action(false);
    expect(completed.actor.getSnapshot().value).toBe('ended');
    expect(ctx(completed).endedReason).toBe('action:completed');

    const failed = start();
    failed.closeSocket();
    failed.action(false, { sessionStatus: '', errorCode: '64102' });
    expect(ctx(failed).endedReason).toBe('action:64102');
  });

  it('once the last resume is used a resumable callback ends the call; with none allowed a resume is refused', async () => {
    const s = start({ maxResumes: 1 });
    s.closeSocket();
    s.action(true);
    s.resume();
    s.closeSocket();
    s.action(true); // no resumes left: not resumable any more
    expect(s.actor.getSnapshot().value).toBe('ended');
    expect(ctx(s).endedReason).toBe('action:in-progress');

    const capped = start({ maxResumes: 0 });
    capped.closeSocket();
    expect(capped.actor.getSnapshot().can({ type: 'RESUME', sessionKeyHash: 'x', via: 'twilio', at: 0 })).toBe(false);
    capped.resume();
    expect(link(capped)).toBe('disconnected');
    capped.action(true);
    expect(capped.actor.getSnapshot().value).toBe('ended');
  });

  it('at the cap, a callback that overtakes the close ends the call instead of asking Twilio to reconnect', async () => {
    const s = start({ maxResumes: 1 });
    s.closeSocket();
    s.resume();
    s.action(true, { resumeTokenHash: 'unused' });
    expect(s.actor.getSnapshot().value).toBe('ended');
    expect(ctx(s).resumeTokenHashes).toEqual([]);
  });

  it('grace runs on the provided clock: expires exactly at the deadline and leaves no timer behind', async () => {
    const s = start({ graceMs: 2000 });
    s.closeSocket();
    s.clock.advance(500);
    s.action(true);
    s.clock.advance(1499);
    expect(link(s)).toBe('grace');
    s.clock.advance(1);
    expect(s.actor.getSnapshot().value).toBe('expired');
    expect(s.actor.getSnapshot().status).toBe('done');
    expect(s.clock.pending).toBe(0);
  });

  it('hasResumesLeft and lifecycleOf', async () => {
    const timeouts = { graceMs: 1, retentionMs: 1, dtmfIdleMs: 1, maxResumes: 2 };
    expect(hasResumesLeft({ resumes: 1, timeouts })).toBe(true);
    expect(hasResumesLeft({ resumes: 2, timeouts })).toBe(false);
    expect(lifecycleOf('expired')).toBe('expired');
    expect(lifecycleOf({ live: { link: 'grace', conversation: 'idle' } })).toBe('grace');
    expect(lifecycleOf({ live: { conversation: 'idle' } })).toBe('unknown');
    expect(lifecycleOf({ other: 'x' })).toBe('unknown');
    expect(lifecycleOf(null)).toBe('unknown');
    expect(lifecycleOf(undefined)).toBe('unknown');
    expect(lifecycleOf(42)).toBe('unknown');
  });
});

describe('keypad entries through the session', () => {
  async function collect(s: Session, args: object): Promise<ToolCall> {
    const call = toolCall('collect_digits', args);
    await s.run().done('', [call]);
    return call;
  }

  it('routes each kind to its collector and speaks its prompt as a closed talk cycle', async () => {
    const prompts: Record<'language' | 'phoneNumber' | 'dateOfBirth' | 'digits', RegExp> = {
      language: /^For English, press 1/,
      phoneNumber: /^Please enter your 10-digit phone number/,
      dateOfBirth: /^Please enter your date of birth/,
      digits: /^Please enter your number, then press pound\.$/,
    };
    for (const [kind, prompt] of Object.entries(prompts) as [keyof typeof prompts, RegExp][]) {
      const s = start();
      s.say('keypad');
      await collect(s, { kind });
      expect(s.actor.getSnapshot().matches({ live: { conversation: 'collecting' } }), kind).toBe(true);
      expect(ctx(s).dtmf?.kind).toBe(kind);
      const said = s.outbound.at(-1);
      expect(said).toMatchObject({ type: 'text', last: true });
      expect((said as { token: string }).token).toMatch(prompt);
    }
  });

  it('an entry starts when the model asked for it: its first idle period counts from the reply\'s own time', async () => {
    const s = start({ dtmfIdleMs: 1000 });
    s.say('keypad');
    s.clock.advance(300);
    const requestedAt = s.clock.now();
    await collect(s, { kind: 'digits', label: 'PIN', minLength: 4, maxLength: 4 });
    expect(ctx(s).dtmf).toMatchObject({ kind: 'digits', label: 'PIN', minLength: 4, maxLength: 4, requestedAt });
    const before = s.outbound.length;
    s.clock.advance(999);
    expect(s.since(before)).toEqual([]);
    s.clock.advance(1);
    expect(s.since(before)).toEqual([text("Sorry, I didn't get any input. Please enter your PIN, then press pound.", true)]);
  });

  it('the result is the tool answer, the entry is cleared, and only a language menu choice changes the language', async () => {
    const s = start();
    s.say('keypad');
    const call = await collect(s, { kind: 'phoneNumber' });
    const before = s.outbound.length;
    s.press('5550001234');
    expect(conversation(s)).toBe('responding');
    expect(ctx(s).dtmf).toBeNull();
    expect(s.run().input.turns.at(-1)).toEqual({
      role: 'tool',
      toolCallId: call.id,
      content: JSON.stringify({ status: 'ok', kind: 'phoneNumber', value: '5550001234' }),
    });
    expect(ctx(s).language).toBe('en-US');
    expect(s.since(before).some((m) => m.type === 'language')).toBe(false);
  });

  it('a language menu that fails keeps the language and announces it unchanged', async () => {
    const s = start({}, 'es-US');
    s.say('menu');
    await collect(s, { kind: 'language' });
    s.press('909'); // three wrong keys: the default attempt budget
    expect(ctx(s).language).toBe('es-US');
    expect(s.run().input.turns.at(-1)?.content).toBe(JSON.stringify({ status: 'failed', kind: 'language', reason: 'too-many-attempts' }));
    expect(s.outbound.at(-1)).toEqual(languageMessage('es-US'));
  });

  it('the reply asking for the entry is closed before the keypad prompt, and other tool calls are answered as skipped', async () => {
    const s = start();
    s.say('I want to give you my number, and switch to Spanish');
    const collectCall = toolCall('collect_digits', { kind: 'phoneNumber' });
    const other = toolCall('switch_language', { language: 'es-US' });
    s.run().delta('Sure.');
    await s.run().done('Sure.', [collectCall, other]);
    expect(s.outbound).toEqual([text('Sure.', false), CLOSE_CYCLE, text('Please enter your 10-digit phone number, starting with the area code.', true)]);
    expect(ctx(s).language).toBe('en-US');
    expect(history(s).slice(-2)).toEqual([
      { role: 'assistant', content: 'Sure.', toolCalls: [collectCall, other] },
      { role: 'tool', toolCallId: other.id, content: 'skipped: one action at a time' },
    ]);
    s.press('5550001234');
    expect(toolResults(s.run().input.turns).map((t) => t.toolCallId)).toEqual([other.id, collectCall.id]);
  });

  it('speaking cancels the entry with a tool result the model can pair with its call; a partial or blank prompt does not', async () => {
    const s = start();
    s.say('keypad');
    const call = await collect(s, { kind: 'phoneNumber' });
    s.press('555');
    s.say('never', false);
    s.say('  ');
    expect(s.actor.getSnapshot().matches({ live: { conversation: 'collecting' } })).toBe(true);
    expect(s.runs).toHaveLength(1);
    s.say('never mind');
    expect(conversation(s)).toBe('responding');
    expect(s.actor.getSnapshot().children.dtmf).toBeUndefined();
    expect(ctx(s).dtmf).toBeNull();
    expect(s.run().input.turns.slice(-2)).toEqual([
      { role: 'tool', toolCallId: call.id, content: JSON.stringify({ status: 'failed', kind: 'phoneNumber', reason: 'cancelled' }) },
      { role: 'user', content: 'never mind' },
    ]);
  });

  it('keys outside an entry go nowhere', async () => {
    const s = start();
    s.press('123#');
    expect(history(s)).toEqual([]);
    expect(s.actor.getSnapshot().children.dtmf).toBeUndefined();
  });

  it('a resume past the cap does not restart a paused entry', async () => {
    const s = start({ maxResumes: 0, dtmfIdleMs: 100 });
    s.say('keypad');
    await collect(s, { kind: 'phoneNumber' });
    s.closeSocket();
    s.resume();
    expect(link(s)).toBe('disconnected');
    const child = s.actor.getSnapshot().children.dtmf?.getSnapshot() as { value: string };
    expect(child.value).toBe('paused');
  });

  it('a keypad prompt said while away is kept and spoken after the resume line, once', async () => {
    const s = start({ dtmfIdleMs: 100 });
    s.say('keypad');
    s.closeSocket();
    await collect(s, { kind: 'phoneNumber' });
    const prompt = 'Please enter your 10-digit phone number, starting with the area code.';
    expect(ctx(s).undelivered).toBe(prompt);
    expect(s.outbound.some((m) => m.type === 'text' && m.token.includes(prompt))).toBe(false);
    const before = s.outbound.length;
    s.resume();
    expect(s.since(before)).toEqual([languageMessage('en-US'), text(resumeLine('en-US'), false), text(` ${prompt}`, true)]);
    expect(ctx(s).undelivered).toBeNull();
  });
});

describe('the persisted snapshot the store gets (persistedSnapshotOf)', () => {
  it('is exactly what xstate persists, in every kind of state: idle, replying, mid keypad entry, disconnected, ended', async () => {
    const s = start();
    const same = () => {
      const actor = s.actor as unknown as Parameters<typeof persistedSnapshotOf>[0];
      expect(JSON.stringify(persistedSnapshotOf(actor))).toBe(JSON.stringify(actor.getPersistedSnapshot()));
    };
    same();
    s.say('When are you open?');
    s.run().delta('We are ');
    same();
    await s.run().done('We are open.');
    same();
    s.say('Take my number');
    await s.run().done('', [toolCall('collect_digits', { kind: 'phoneNumber' })]);
    s.press('555');
    expect(Object.keys(s.actor.getSnapshot().children)).not.toHaveLength(0);
    same();
    s.closeSocket();
    expect(link(s)).toBe('disconnected');
    same();
    s.action(false);
    expect(s.actor.getSnapshot().status).toBe('done');
    same();
  });
});
