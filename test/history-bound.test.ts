// The history bound: the pure trimming function (examples and a seeded property check over
// machine-shaped histories), then the session machine using it in its assign actions.
import { agentActors, llmDone } from './support/session-actors.js';
import { fromReplyStream } from '../src/machines/reply.js';
import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { createActor, fromCallback, waitFor, type Actor, type Snapshot } from 'xstate';
import { boundHistory, turnBytes, type HistoryLimits } from '../src/machines/history-bound.js';
import { sessionMachine } from '../src/machines/session.js';
import type { ChatTurn, ReplyEvent, ReplyInput, ToolCall } from '../src/llm/types.js';
import type { DtmfDigit } from '../src/protocol/messages.js';
import { sessionInput } from './support/session-input.js';

const user = (content: string): ChatTurn => ({ role: 'user', content });
const assistant = (content: string, toolCalls?: ToolCall[]): ChatTurn => (toolCalls ? { role: 'assistant', content, toolCalls } : { role: 'assistant', content });
const call = (id: string, name = 'collect_digits', args = '{}'): ToolCall => ({ id, name, arguments: args });
const result = (toolCallId: string, content = 'ok'): ChatTurn => ({ role: 'tool', toolCallId, content });
const bytesOf = (turns: ChatTurn[]) => turns.reduce((n, t) => n + turnBytes(t), 0);

/** Every tool result kept has its call kept before it, and every call kept has all its results kept. */
function expectPairsIntact(kept: ChatTurn[], original: ChatTurn[]): void {
  const callsSoFar = new Set<string>();
  for (const turn of kept) {
    if (turn.role === 'assistant') for (const c of turn.toolCalls ?? []) callsSoFar.add(c.id);
    if (turn.role === 'tool') expect(callsSoFar.has(turn.toolCallId), `result ${turn.toolCallId} kept without its call`).toBe(true);
  }
  const keptResults = new Set(kept.flatMap((t) => (t.role === 'tool' ? [t.toolCallId] : [])));
  for (const turn of original) {
    if (turn.role === 'tool' && callsSoFar.has(turn.toolCallId)) {
      expect(keptResults.has(turn.toolCallId), `call ${turn.toolCallId} kept without its result`).toBe(true);
    }
  }
}

describe('boundHistory', () => {
  it('returns the same array when the history fits', () => {
    const history = [user('hi'), assistant('hello')];
    const bounded = boundHistory(history, { maxTurns: 2, maxBytes: 7 });
    expect(bounded.history).toBe(history);
    expect(bounded.dropped).toBe(0);
  });

  it('drops the oldest turns first, to the turn limit', () => {
    const history = [user('1'), assistant('2'), user('3'), assistant('4'), user('5')];
    expect(boundHistory(history, { maxTurns: 3, maxBytes: 1000 })).toEqual({ history: history.slice(2), dropped: 2 });
  });

  it('counts UTF-8 bytes, not characters, against the byte limit', () => {
    const history = [user('ñññ'), assistant('ok'), user('€€')]; // 6 + 2 + 6 bytes
    expect(bytesOf(history)).toBe(14);
    expect(boundHistory(history, { maxTurns: 10, maxBytes: 13 }).history).toEqual(history.slice(1));
    expect(boundHistory(history, { maxTurns: 10, maxBytes: 7 }).history).toEqual(history.slice(2));
  });

  it('counts tool-call names, arguments and ids as bytes', () => {
    const turn = assistant('', [call('id1', 'tool', '{"a":1}')]);
    expect(turnBytes(turn)).toBe(3 + 4 + 7);
    expect(turnBytes(result('id1', 'done'))).toBe(3 + 4);
  });

  it('drops an assistant turn with tool calls together with all its results', () => {
    const history = [
      user('phone please'),
      assistant('', [call('a'), call('b')]),
      result('a', '{"status":"ok"}'),
      result('b', 'skipped'),
      assistant('thanks'),
      user('bye'),
    ];
    // Four turns allowed: dropping the user turn leaves five, so the whole tool group goes with it.
    const bounded = boundHistory(history, { maxTurns: 4, maxBytes: 10_000 });
    expect(bounded.history).toEqual([assistant('thanks'), user('bye')]);
    expect(bounded.dropped).toBe(4);
  });

  it('always keeps the newest group whole, even over the limits', () => {
    const history = [user('old'), assistant('', [call('x'), call('y')]), result('x'), result('y')];
    expect(boundHistory(history, { maxTurns: 1, maxBytes: 1 }).history).toEqual(history.slice(1));
    // A pending call (keypad entry still open) is the newest group on its own.
    const pending = [user('a'), assistant('b'), user('keypad'), assistant('', [call('z')])];
    expect(boundHistory(pending, { maxTurns: 1, maxBytes: 1 }).history).toEqual(pending.slice(3));
    const huge = [user('x'.repeat(100))];
    expect(boundHistory(huge, { maxTurns: 1, maxBytes: 10 }).history).toBe(huge);
  });

  it('stops dropping as soon as both limits hold: a history exactly at the byte limit is kept', () => {
    const history = [user('aaaa'), assistant('bbbb'), user('cccc'), assistant('dddd')]; // 4 bytes each
    // Over the turn limit by one; after dropping the oldest turn, 12 bytes are left: exactly the limit.
    expect(boundHistory(history, { maxTurns: 3, maxBytes: 12 })).toEqual({ history: history.slice(1), dropped: 1 });
    // Over the byte limit by one byte: one turn more goes.
    expect(boundHistory(history, { maxTurns: 3, maxBytes: 11 })).toEqual({ history: history.slice(2), dropped: 2 });
    // Exactly at both limits: nothing to drop.
    expect(boundHistory(history, { maxTurns: 4, maxBytes: 16 }).history).toBe(history);
  });

  it('a history of tool results alone (no call left to group them with) is kept whole', () => {
    const history = [result('a', 'x'.repeat(50)), result('b', 'y'.repeat(50))];
    expect(boundHistory(history, { maxTurns: 1, maxBytes: 10 })).toEqual({ history, dropped: 0 });
  });

  it('keeps tool calls with their results on random machine-shaped histories (seeded)', () => {
    const random = mulberry32(20250611);
    const int = (lo: number, hi: number) => lo + Math.floor(random() * (hi - lo + 1));
    const text = () => (random() < 0.2 ? 'é€😀' : 'word ').repeat(int(0, 40));
    let checked = 0;
    for (let run = 0; run < 400; run++) {
      const history = machineShapedHistory(int, text);
      const limits: HistoryLimits = { maxTurns: int(1, 25), maxBytes: int(1, 3000) };
      const { history: kept, dropped } = boundHistory(history, limits);
      // A suffix of the original, the same turn objects.
      expect(kept).toEqual(history.slice(dropped));
      kept.forEach((t, i) => expect(t).toBe(history[dropped + i]));
      expect(kept[0]?.role).not.toBe('tool');
      expectPairsIntact(kept, history);
      // Within the limits, unless only the newest group is left.
      const newestGroup = kept.length > 0 && kept.slice(1).every((t) => t.role === 'tool');
      if (!newestGroup) {
        expect(kept.length).toBeLessThanOrEqual(limits.maxTurns);
        expect(bytesOf(kept)).toBeLessThanOrEqual(limits.maxBytes);
      }
      // Nothing dropped needlessly: the group just before the kept part would not have fitted.
      if (dropped > 0) {
        let previous = dropped - 1;
        while (previous > 0 && history[previous]!.role === 'tool') previous--;
        const withPrevious = history.slice(previous);
        expect(withPrevious.length > limits.maxTurns || bytesOf(withPrevious) > limits.maxBytes).toBe(true);
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(100); // the runs did exercise trimming
  });
});

/** A history as the session machine builds it: user turns, tool rounds (calls then their results), replies. */
function machineShapedHistory(int: (lo: number, hi: number) => number, text: () => string): ChatTurn[] {
  const history: ChatTurn[] = [];
  const exchanges = int(0, 12);
  for (let e = 0; e < exchanges; e++) {
    history.push(user(text()));
    for (let round = int(0, 2); round > 0; round--) {
      const calls = Array.from({ length: int(1, 3) }, () => call(`call_${randomUUID()}`, 'collect_digits', `{"kind":"digits","label":"${text()}"}`));
      history.push(assistant(text(), calls));
      for (const c of calls) history.push(result(c.id, text()));
    }
    if (int(0, 3) > 0) history.push({ role: 'assistant', content: text(), ...(int(0, 4) === 0 ? { interrupted: true } : {}) });
  }
  // Sometimes a keypad entry is still open: the last call has no result yet.
  if (int(0, 3) === 0) history.push(user(text()), assistant('', [call(`call_${randomUUID()}`)]));
  return history;
}

function mulberry32(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---- the session machine keeps its history within the limits it was started with ----

/** "keypad": a keypad entry (4 digits); "two tools": two unknown tools at once; a tool result is thanked. */
function answerFor({ turns }: ReplyInput): { text: string; toolCalls?: ToolCall[] } {
  const last = turns.at(-1);
  if (last?.role === 'tool') return { text: 'Thanks.' };
  const said = last?.role === 'user' ? last.content : '';
  if (said === 'keypad') return { text: '', toolCalls: [call(`call_${randomUUID()}`, 'collect_digits', '{"kind":"digits","minLength":4,"maxLength":4}')] };
  if (said === 'two tools') return { text: '', toolCalls: [call(`call_${randomUUID()}`, 'nope'), call(`call_${randomUUID()}`, 'nope')] };
  return { text: `You said: ${said}` };
}

function machineSeeing(seen: ReplyInput[]) {
  const llmReply = fromReplyStream(({ input, sendBack }) => {
    seen.push(input);
    const answer = answerFor(input);
    const timer = setTimeout(() => sendBack(llmDone(answer.text, answer.toolCalls ?? [], Date.now())), 1);
    return () => clearTimeout(timer);
  });
  return sessionMachine.provide({ actors: { llmReply, ...agentActors() } });
}

type Machine = ReturnType<typeof machineSeeing>;
const actors: Actor<Machine>[] = [];
afterEach(() => {
  for (const a of actors.splice(0)) a.stop();
});

const idle = (actor: Actor<Machine>) => waitFor(actor, (s) => s.matches({ live: { conversation: 'idle' } }));
const say = (actor: Actor<Machine>, text: string) => actor.send({ type: 'PROMPT', text, lang: 'en-US', last: true });

describe('session machine history bound', () => {
  it('sends the LLM and stores only the newest turns, tool calls with their results, and counts the dropped ones', async () => {
    const seen: ReplyInput[] = [];
    const machine = machineSeeing(seen);
    const limits: HistoryLimits = { maxTurns: 5, maxBytes: 10_000 };
    let actor = createActor(machine, { input: { ...sessionInput(), historyLimits: limits } });
    actors.push(actor.start());

    for (const words of ['one', 'two', 'three']) {
      say(actor, words);
      await idle(actor);
    }
    say(actor, 'keypad');
    await waitFor(actor, (s) => s.matches({ live: { conversation: 'collecting' } }));
    for (const digit of '1234') actor.send({ type: 'DIGIT', digit: digit as DtmfDigit, at: Date.now() });
    await idle(actor);

    // A JSON round trip of the persisted snapshot (as every store does) keeps the limits.
    const persisted = JSON.parse(JSON.stringify(actor.getPersistedSnapshot())) as Snapshot<unknown> & { context: { historyLimits: unknown } };
    expect(persisted.context.historyLimits).toEqual(limits);
    actor.stop();
    actor = createActor(machine, { snapshot: persisted, input: sessionInput() });
    actors.push(actor.start());

    say(actor, 'two tools');
    await idle(actor);
    say(actor, 'last words');
    await idle(actor);

    for (const input of seen) {
      expect(input.turns.length).toBeLessThanOrEqual(limits.maxTurns);
      expect(input.turns[0]?.role).not.toBe('tool');
      expectPairsIntact(input.turns, input.turns);
    }
    const context = actor.getSnapshot().context;
    expect(context.history.length).toBeLessThanOrEqual(limits.maxTurns);
    expect(context.history.at(-2)).toEqual({ role: 'user', content: 'last words' });
    expect(context.history.at(-1)).toEqual({ role: 'assistant', content: 'You said: last words' });
    // 3 x 2 + 4 (keypad: call, result, thanks) + 5 (two tools: two results) + 2 turns were written; what is not kept was counted as dropped.
    expect(context.historyDropped).toBe(3 * 2 + 4 + 5 + 2 - context.history.length);
    // The keypad exchange reached the model whole: the call, then its result.
    const afterDigits = seen.find((i) => i.turns.at(-1)?.role === 'tool' && i.turns.at(-1)!.content.includes('"ok"'));
    expect(afterDigits?.turns.slice(-2).map((t) => t.role)).toEqual(['assistant', 'tool']);
  });

  it('bounds by bytes too: a long utterance pushes the older turns out', async () => {
    const seen: ReplyInput[] = [];
    const actor = createActor(machineSeeing(seen), { input: { ...sessionInput(), historyLimits: { maxTurns: 100, maxBytes: 300 } } });
    actors.push(actor.start());
    say(actor, 'short');
    await idle(actor);
    say(actor, 'x'.repeat(290));
    await idle(actor);
    const last = seen.at(-1)!;
    expect(last.turns).toEqual([{ role: 'user', content: 'x'.repeat(290) }]);
    expect(bytesOf(actor.getSnapshot().context.history)).toBeLessThanOrEqual(300);
  });

  it('restores a snapshot written before the limits existed with the default limits', async () => {
    const seen: ReplyInput[] = [];
    const machine = machineSeeing(seen);
    const first = createActor(machine, { input: sessionInput() });
    actors.push(first.start());
    say(first, 'hello');
    await idle(first);
    const persisted = JSON.parse(JSON.stringify(first.getPersistedSnapshot())) as { context: Record<string, unknown> };
    delete persisted.context.historyLimits;
    delete persisted.context.historyDropped;
    first.stop();
    const actor = createActor(machine, { snapshot: persisted as unknown as Snapshot<unknown>, input: sessionInput() });
    actors.push(actor.start());
    say(actor, 'again');
    await idle(actor);
    expect(actor.getSnapshot().context.history.map((t) => t.content)).toEqual(['hello', 'You said: hello', 'again', 'You said: again']);
    expect(actor.getSnapshot().context.historyDropped).toBe(0);
  });
});
