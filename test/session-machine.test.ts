// Machine-level tests of the session machine: lifecycle transitions of the `link` region and the
// DTMF collection in `conversation.collecting`, including partial input across a persisted snapshot.
// The LLM is not the unit under test here, so a scripted callback actor stands in for it.
// Fake timers throughout: the edges' stamps (`at`) and the deadline timers read the fake clock, so
// every deadline is checked to the millisecond and no test waits on the real clock.
import { randomUUID } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createActor, fromCallback, waitFor, type Actor, type Snapshot } from 'xstate';
import type { ChatTurn, ReplyEvent, ReplyInput, ToolCall } from '../src/llm/types.js';
import { hashSecret } from '../src/server/resume-proof.js';
import { lifecycleOf, sessionMachine, type SessionTimeouts } from '../src/machines/session.js';
import { resumeLine } from '../src/machines/phrases.js';
import type { DtmfDigit } from '../src/machines/dtmf/types.js';
import type { OutboundMessage } from '../src/protocol/messages.js';
import { sessionInput } from './support/session-input.js';
import { agentActors, llmDone } from './support/session-actors.js';
import { fromReplyStream } from '../src/machines/reply.js';

interface Answer {
  text: string;
  toolCalls?: ToolCall[];
}

/** Keyword script: "keypad <json args>" asks for collect_digits, "agent" hands off, a tool result is thanked. */
function answerFor({ turns }: ReplyInput): Answer {
  const last = turns.at(-1);
  if (last?.role === 'tool') return { text: 'Thanks, noted.' };
  const said = last?.role === 'user' ? last.content : '';
  const keypad = /^keypad (.*)$/.exec(said);
  if (keypad) return { text: '', toolCalls: [{ id: `call_${randomUUID()}`, name: 'collect_digits', arguments: keypad[1]! }] };
  if (said.includes('agent')) {
    return {
      text: 'Connecting you now.',
      toolCalls: [{ id: `call_${randomUUID()}`, name: 'human_agent_handoff', arguments: '{"reason":"asked for a person"}' }],
    };
  }
  return { text: `You said: ${said}` };
}

/** The scripted model answers this long (fake time) after each call, like a (very fast) stream. */
const LLM_MS = 1;

/** A provided llmReply: records every input and answers asynchronously, stamping LLM.DONE like the real edge. */
function scriptedMachine(seen: ReplyInput[], script: (input: ReplyInput) => Answer = answerFor) {
  const llmReply = fromReplyStream(({ input, sendBack }) => {
    seen.push(input);
    const answer = script(input);
    const timer = setTimeout(() => {
      if (answer.text) sendBack({ type: 'LLM.DELTA', text: answer.text } satisfies ReplyEvent);
      sendBack(llmDone(answer.text, answer.toolCalls ?? [], Date.now()));
    }, LLM_MS);
    return () => clearTimeout(timer);
  });
  return sessionMachine.provide({ actors: { llmReply, ...agentActors() } });
}

type Machine = ReturnType<typeof scriptedMachine>;

const PHONE_PROMPT = 'Please enter your 10-digit phone number, starting with the area code.';
interface Running {
  actor: Actor<Machine>;
  machine: Machine;
  seen: ReplyInput[];
  outbound: OutboundMessage[];
}

const actors: Actor<Machine>[] = [];
beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  for (const a of actors.splice(0)) a.stop();
  vi.useRealTimers();
});

function track(actor: Actor<Machine>, outbound: OutboundMessage[]): Actor<Machine> {
  actors.push(actor);
  actor.on('outbound', ({ message }) => outbound.push(message));
  return actor.start();
}

function startSession(timeouts: Partial<SessionTimeouts> = {}, script?: (input: ReplyInput) => Answer): Running {
  const seen: ReplyInput[] = [];
  const machine = scriptedMachine(seen, script);
  const outbound: OutboundMessage[] = [];
  const actor = track(createActor(machine, { input: sessionInput(timeouts) }), outbound);
  return { actor, machine, seen, outbound };
}

/** Restores a JSON round-tripped persisted snapshot into a new actor of the same machine. */
function restore(from: Running): Running {
  const persisted = JSON.parse(JSON.stringify(from.actor.getPersistedSnapshot())) as Snapshot<unknown>;
  from.actor.stop();
  const outbound: OutboundMessage[] = [];
  // The input is required by the types and ignored on restore: everything comes from the snapshot.
  const actor = track(createActor(from.machine, { snapshot: persisted, input: sessionInput() }), outbound);
  return { actor, machine: from.machine, seen: from.seen, outbound };
}

const link = (actor: Actor<Machine>) => lifecycleOf(actor.getSnapshot().value);
const conversation = (actor: Actor<Machine>) => {
  const value = actor.getSnapshot().value;
  return typeof value === 'object' ? value.live.conversation : value;
};
const texts = (outbound: OutboundMessage[]) => outbound.flatMap((m) => (m.type === 'text' ? [m.token] : []));

function say(actor: Actor<Machine>, text: string): void {
  actor.send({ type: 'PROMPT', text, lang: 'en-US', last: true });
}

// The events the edges send, stamped with the current (fake) time as the session manager and socket stamp them.
function press(actor: Actor<Machine>, keys: string): void {
  for (const digit of keys) actor.send({ type: 'DIGIT', digit: digit as DtmfDigit, at: Date.now() });
}
function socketClosed(actor: Actor<Machine>, code = 1006): void {
  actor.send({ type: 'SOCKET.CLOSED', code, at: Date.now() });
}
function action(actor: Actor<Machine>, resumable: boolean): void {
  const status = resumable ? { sessionStatus: 'failed', errorCode: '64105' } : { sessionStatus: 'completed', errorCode: '' };
  actor.send({ type: 'ACTION', resumable, ...status, at: Date.now() });
}
const resumeEvent = (sessionId: string, via: 'twilio' | 'reconnection' = 'reconnection') =>
  ({ type: 'RESUME', sessionKeyHash: hashSecret(sessionId), via, at: Date.now() }) as const;

/**
 * Lets the scripted model answer: fake time moves in LLM_MS steps until `condition` holds (vi.waitFor
 * advances fake timers by its interval before each check).
 */
async function modelUntil(condition: () => boolean): Promise<void> {
  await vi.waitFor(() => expect(condition()).toBe(true), { interval: LLM_MS, timeout: 5000 });
}

/** Waits for the model call that follows a tool result and returns that result, parsed. */
async function toolResult(seen: ReplyInput[], from: number): Promise<unknown> {
  const withResult = () => seen.slice(from).find((i) => i.turns.at(-1)?.role === 'tool');
  await modelUntil(() => withResult() !== undefined);
  const turn = withResult()!.turns.at(-1) as Extract<ChatTurn, { role: 'tool' }>;
  return JSON.parse(turn.content);
}

/** Starts a keypad collection through the model and waits for the child's spoken prompt. */
async function startCollection(s: Running, args: object, prompt: RegExp): Promise<void> {
  say(s.actor, `keypad ${JSON.stringify(args)}`);
  await modelUntil(() => conversation(s.actor) !== 'idle' && texts(s.outbound).some((t) => prompt.test(t)));
  expect(s.actor.getSnapshot().matches({ live: { conversation: 'collecting' } })).toBe(true);
}

const NO_INPUT = "Sorry, I didn't get any input.";
const reprompts = (outbound: OutboundMessage[]) => texts(outbound).filter((t) => t.startsWith(NO_INPUT));

function childBuffer(actor: Actor<Machine>): string | undefined {
  const child = actor.getSnapshot().children.dtmf?.getSnapshot() as { context?: { buffer?: string } } | undefined;
  return child?.context?.buffer;
}

describe('session lifecycle (link region)', () => {
  it('connected -> disconnected -> grace -> connected, counting the resume and greeting the caller', () => {
    const { actor, outbound } = startSession({ graceMs: 30_000 });
    expect(link(actor)).toBe('connected');

    const closedAt = Date.now();
    socketClosed(actor);
    expect(link(actor)).toBe('disconnected');
    const dropped = actor.getSnapshot().context;
    expect(dropped).toMatchObject({ disconnects: 1, lastCloseCode: 1006, resumes: 0 });
    // The grace period counts from the close's own time, not from when the machine handles it.
    expect(dropped.graceDeadline).toBe(closedAt + 30_000);

    vi.advanceTimersByTime(1000);
    action(actor, true);
    expect(link(actor)).toBe('grace');
    expect(actor.getSnapshot().context.graceDeadline).toBe(closedAt + 30_000);

    const newSessionId = 'VXresumed';
    actor.send(resumeEvent(newSessionId, 'twilio'));
    expect(link(actor)).toBe('connected');
    expect(actor.getSnapshot().context).toMatchObject({ resumes: 1, sessionKeyHash: hashSecret(newSessionId), graceDeadline: null });
    // The new Twilio session is put back in the call's language, then the caller hears we are back.
    expect(outbound).toEqual([
      { type: 'language', ttsLanguage: 'en-US', transcriptionLanguage: 'en-US' },
      { type: 'text', token: resumeLine('en-US'), last: true },
    ]);
  });

  it('grace -> expired exactly when the deadline passes', () => {
    const { actor } = startSession({ graceMs: 150 });
    socketClosed(actor);
    action(actor, true);
    expect(link(actor)).toBe('grace');
    vi.advanceTimersByTime(149);
    expect(link(actor)).toBe('grace');
    vi.advanceTimersByTime(1);
    expect(actor.getSnapshot().status).toBe('done');
    expect(actor.getSnapshot().value).toBe('expired');
  });

  it('disconnected -> expired when no action callback and no reconnect come', () => {
    const { actor } = startSession({ graceMs: 150 });
    socketClosed(actor);
    vi.advanceTimersByTime(149);
    expect(link(actor)).toBe('disconnected');
    vi.advanceTimersByTime(1);
    expect(actor.getSnapshot().value).toBe('expired');
  });

  it('a session restored in grace expires at its original deadline, not a full grace period after the restore', () => {
    const s = startSession({ graceMs: 6000 });
    socketClosed(s.actor);
    action(s.actor, true);
    const deadline = s.actor.getSnapshot().context.graceDeadline!;
    vi.advanceTimersByTime(2000); // part of the grace elapses, then the process dies
    const persisted = JSON.parse(JSON.stringify(s.actor.getPersistedSnapshot())) as Snapshot<unknown>;
    s.actor.stop();
    vi.advanceTimersByTime(1500); // downtime

    const restored = track(createActor(s.machine, { snapshot: persisted, input: sessionInput() }), []);
    expect(restored.getSnapshot().context.graceDeadline).toBe(deadline);
    vi.advanceTimersByTime(deadline - Date.now() - 1);
    expect(link(restored)).toBe('grace');
    vi.advanceTimersByTime(1);
    expect(Date.now()).toBe(deadline);
    expect(restored.getSnapshot().value).toBe('expired');
  });

  it('a resume cancels the grace timer', () => {
    const { actor } = startSession({ graceMs: 150 });
    socketClosed(actor);
    actor.send(resumeEvent('VXback'));
    vi.advanceTimersByTime(10_000);
    expect(link(actor)).toBe('connected');
    expect(actor.getSnapshot().context.graceDeadline).toBeNull();
  });

  it('a non-resumable action callback ends the session', () => {
    const { actor } = startSession();
    action(actor, false);
    expect(actor.getSnapshot().status).toBe('done');
    expect(actor.getSnapshot().value).toBe('ended');
    expect(actor.getSnapshot().context.endedReason).toBe('action:completed');
  });

  it('caps resumes: past maxResumes a reconnect is refused and the next action callback ends the call', () => {
    const { actor } = startSession({ maxResumes: 1 });
    socketClosed(actor);
    actor.send(resumeEvent('VXone'));
    expect(link(actor)).toBe('connected');
    expect(actor.getSnapshot().context.resumes).toBe(1);

    socketClosed(actor);
    const resume = resumeEvent('VXtwo');
    expect(actor.getSnapshot().can(resume)).toBe(false);
    actor.send(resume);
    expect(link(actor)).toBe('disconnected');
    expect(actor.getSnapshot().context).toMatchObject({ resumes: 1, sessionKeyHash: hashSecret('VXone') });

    action(actor, true);
    expect(actor.getSnapshot().value).toBe('ended');
  });

  it('after a handoff (end sent) the socket closing ends the session', async () => {
    const { actor, outbound } = startSession();
    say(actor, 'a person please, an agent');
    await modelUntil(() => outbound.some((m) => m.type === 'end'));
    expect(actor.getSnapshot().matches({ live: { conversation: 'finished' } })).toBe(true);
    // The goodbye is spoken and its talk cycle closed before `end`.
    const end = outbound.findIndex((m) => m.type === 'end');
    expect(texts(outbound.slice(0, end)).join('')).toBe('Connecting you now.');
    expect(outbound[end - 1]).toEqual({ type: 'text', token: '', last: true });
    const endMessage = outbound[end] as Extract<OutboundMessage, { type: 'end' }>;
    expect(JSON.parse(endMessage.handoffData!)).toMatchObject({ reason: 'asked for a person', language: 'en-US' });

    socketClosed(actor, 1000);
    expect(actor.getSnapshot().value).toBe('ended');
    expect(actor.getSnapshot().context.endedReason).toBe('socket.closed');
  });
});

describe('DTMF collection in the session machine', () => {
  it('keeps partial keypad input in the persisted snapshot and completes it after a restore', async () => {
    const first = startSession();
    await startCollection(first, { kind: 'phoneNumber' }, /10-digit phone number/);
    press(first.actor, '5550');
    expect(childBuffer(first.actor)).toBe('5550');

    const persisted = JSON.parse(JSON.stringify(first.actor.getPersistedSnapshot())) as {
      context: { dtmf: { kind: string } | null };
      children: Record<string, { snapshot: { context: { buffer: string } } }>;
    };
    expect(persisted.context.dtmf?.kind).toBe('phoneNumber');
    expect(persisted.children.dtmf?.snapshot.context.buffer).toBe('5550');

    const restored = restore(first);
    expect(restored.actor.getSnapshot().matches({ live: { conversation: 'collecting' } })).toBe(true);
    expect(childBuffer(restored.actor)).toBe('5550');
    const calls = restored.seen.length;
    press(restored.actor, '001234');
    expect(await toolResult(restored.seen, calls)).toEqual({ status: 'ok', kind: 'phoneNumber', value: '5550001234' });
    await modelUntil(() => texts(restored.outbound).join('').includes('Thanks, noted.'));
    expect(conversation(restored.actor)).toBe('idle');
    expect(restored.actor.getSnapshot().context.dtmf).toBeNull();
  });

  it('records the tool result once, in order, and continues the conversation', async () => {
    const s = startSession();
    await startCollection(s, { kind: 'digits', label: 'PIN', minLength: 4, maxLength: 6 }, /enter your PIN/);
    const calls = s.seen.length;
    press(s.actor, '4321#');
    expect(await toolResult(s.seen, calls)).toEqual({ status: 'ok', kind: 'digits', value: '4321' });
    const turns = s.seen.at(-1)!.turns;
    const assistant = turns.at(-2) as Extract<ChatTurn, { role: 'assistant' }>;
    const tool = turns.at(-1) as Extract<ChatTurn, { role: 'tool' }>;
    expect(assistant.toolCalls?.[0]?.name).toBe('collect_digits');
    expect(tool.toolCallId).toBe(assistant.toolCalls?.[0]?.id);
    expect(turns.filter((t) => t.role === 'tool')).toHaveLength(1);
  });

  it('a language menu choice changes the call language and the next model call', async () => {
    const s = startSession();
    await startCollection(s, { kind: 'language' }, /Para español, oprima 2/);
    const calls = s.seen.length;
    press(s.actor, '2');
    expect(await toolResult(s.seen, calls)).toEqual({ status: 'ok', kind: 'language', value: 'es-US' });
    expect(s.seen.at(-1)!.call.language).toBe('es-US');
    expect(s.actor.getSnapshot().context.language).toBe('es-US');
    expect(s.outbound).toContainEqual({ type: 'language', ttsLanguage: 'es-US', transcriptionLanguage: 'es-US' });
  });

  it('speaking instead of typing cancels the entry and is answered', async () => {
    const s = startSession();
    await startCollection(s, { kind: 'phoneNumber' }, /10-digit phone number/);
    press(s.actor, '555');
    const calls = s.seen.length;
    say(s.actor, 'never mind');
    await modelUntil(() => s.seen.length > calls);
    const turns = s.seen.at(-1)!.turns;
    expect(turns.at(-1)).toEqual({ role: 'user', content: 'never mind' });
    const tool = turns.at(-2) as Extract<ChatTurn, { role: 'tool' }>;
    expect(JSON.parse(tool.content)).toEqual({ status: 'failed', kind: 'phoneNumber', reason: 'cancelled' });
    expect(s.actor.getSnapshot().children.dtmf).toBeUndefined();
  });

  it('pauses the idle timer while the caller is disconnected and keeps the digits typed so far', async () => {
    const idleMs = 250;
    const s = startSession({ dtmfIdleMs: idleMs });
    await startCollection(s, { kind: 'phoneNumber' }, /10-digit phone number/);
    press(s.actor, '5550');
    socketClosed(s.actor);
    const said = s.outbound.length;
    // Longer than every idle re-prompt together: none may fire while nobody can type.
    vi.advanceTimersByTime(idleMs * 4);
    expect(s.outbound.length).toBe(said);
    expect(conversation(s.actor)).toEqual('collecting');
    expect(s.actor.getSnapshot().context.dtmf?.kind).toBe('phoneNumber');
    expect(childBuffer(s.actor)).toBe('5550');

    // Still paused after a restore (e.g. another instance takes the session over while it waits).
    const restored = restore(s);
    vi.advanceTimersByTime(idleMs * 2);
    expect(restored.outbound).toEqual([]);
    expect(childBuffer(restored.actor)).toBe('5550');

    restored.actor.send(resumeEvent('VXback'));
    expect(link(restored.actor)).toBe('connected');
    const calls = restored.seen.length;
    press(restored.actor, '001234');
    expect(await toolResult(restored.seen, calls)).toEqual({ status: 'ok', kind: 'phoneNumber', value: '5550001234' });
  });

  it('a collection the model starts while the caller is away waits for them, then prompts', async () => {
    const idleMs = 100;
    const s = startSession({ dtmfIdleMs: idleMs });
    say(s.actor, 'keypad {"kind":"phoneNumber"}');
    socketClosed(s.actor); // before the model's answer arrives
    await modelUntil(() => s.actor.getSnapshot().children.dtmf !== undefined);
    vi.advanceTimersByTime(idleMs * 5);
    // Nothing was said into the void (the socket edge drops anything emitted now), and no idle attempt was used up.
    expect(texts(s.outbound).filter((t) => t !== '')).toEqual([]);
    const before = s.outbound.length;
    const child = s.actor.getSnapshot().children.dtmf?.getSnapshot() as { value: string; context: { attempts: number } };
    expect(child.value).toBe('paused');
    expect(child.context.attempts).toBe(0);

    s.actor.send(resumeEvent('VXback'));
    // The prompt the caller missed follows the resume line.
    expect(texts(s.outbound.slice(before)).join('')).toBe(`${resumeLine('en-US')} ${PHONE_PROMPT}`);
    expect(s.outbound.at(-1)).toMatchObject({ type: 'text', last: true });
    vi.advanceTimersByTime(idleMs);
    expect(reprompts(s.outbound)).toHaveLength(1);
  });

  it('keypad input counts as the caller taking part: entries in a row are not a tool loop', async () => {
    const kinds = ['phoneNumber', 'digits', 'digits', 'digits', 'digits', 'digits'];
    // The model asks for the next entry after every result until all are done.
    const chain = ({ turns }: ReplyInput): Answer => {
      const results = turns.filter((t) => t.role === 'tool').length;
      const kind = kinds[results];
      if (!kind) return { text: 'All done.' };
      const args = kind === 'digits' ? { kind, label: 'PIN', minLength: 4, maxLength: 4 } : { kind };
      return { text: '', toolCalls: [{ id: `call_${randomUUID()}`, name: 'collect_digits', arguments: JSON.stringify(args) }] };
    };
    const s = startSession({}, chain);
    say(s.actor, 'start the form');
    for (const kind of kinds) {
      await modelUntil(() => s.actor.getSnapshot().children.dtmf !== undefined);
      press(s.actor, kind === 'phoneNumber' ? '5550001234' : '1234');
      expect(s.actor.getSnapshot().children.dtmf, `the ${kind} entry is finished`).toBeUndefined();
    }
    await modelUntil(() => texts(s.outbound).join('').includes('All done.'));
    const results = s.seen.at(-1)!.turns.filter((t): t is Extract<ChatTurn, { role: 'tool' }> => t.role === 'tool');
    expect(results.map((t) => (JSON.parse(t.content) as { status: string }).status)).toEqual(kinds.map(() => 'ok'));
  });

  it('the idle timer runs again after a resume, a full idle period from the resume', async () => {
    const idleMs = 300;
    const s = startSession({ dtmfIdleMs: idleMs });
    await startCollection(s, { kind: 'phoneNumber' }, /10-digit phone number/);
    socketClosed(s.actor);
    vi.advanceTimersByTime(idleMs * 2 + 100);
    expect(reprompts(s.outbound)).toEqual([]);
    s.actor.send(resumeEvent('VXback'));
    vi.advanceTimersByTime(idleMs - 1);
    expect(reprompts(s.outbound)).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(reprompts(s.outbound)).toHaveLength(1);
  });
});

describe('an LLM failure in the middle of a reply', () => {
  it('keeps what the caller heard plus the apology, and closes the talk cycle', async () => {
    const seen: ReplyInput[] = [];
    const llmReply = fromReplyStream(({ input, sendBack }) => {
      seen.push(input);
      const timer = setTimeout(() => {
        sendBack({ type: 'LLM.DELTA', text: 'Our hours are' } satisfies ReplyEvent);
        sendBack({ type: 'LLM.ERROR', message: 'stream reset' } satisfies ReplyEvent);
      }, LLM_MS);
      return () => clearTimeout(timer);
    });
    const machine = sessionMachine.provide({ actors: { llmReply } });
    const outbound: OutboundMessage[] = [];
    const actor = track(createActor(machine, { input: sessionInput() }) as unknown as Actor<Machine>, outbound);
    actor.send({ type: 'PROMPT', text: 'when are you open?', lang: 'en-US', last: true });
    const idle = waitFor(actor, (s) => s.matches({ live: { conversation: 'idle' } }) && s.context.history.length === 2);
    vi.advanceTimersByTime(LLM_MS);
    await idle;
    const apology = 'Sorry, I am having trouble right now. Could you say that again?';
    expect(actor.getSnapshot().context.history.at(-1)).toEqual({ role: 'assistant', content: `Our hours are ${apology}` });
    expect(outbound).toEqual([
      { type: 'text', token: 'Our hours are', last: false },
      { type: 'text', token: ` ${apology}`, last: false },
      { type: 'text', token: '', last: true },
    ]);
    expect(seen).toHaveLength(1);
  });
});
