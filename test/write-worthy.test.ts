// Which session changes the manager writes to the store: every change except a streamed token, which
// leaves the session's snapshot as it was (its reply actor keeps the text; a restored session
// regenerates a reply that was in flight). Driven through the real session
// machine with an LLM stand-in whose deltas the test releases one at a time.
import { agentActors, llmDone } from './support/session-actors.js';
import { fromReplyStream } from '../src/machines/reply.js';
import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { createActor, waitFor, type Actor, type SnapshotFrom } from 'xstate';
import type { ReplyEvent, ReplyInput } from '../src/llm/types.js';
import { sessionMachine } from '../src/machines/session.js';
import { observe, unchanged } from '../src/server/write-worthy.js';
import { sessionInput } from './support/session-input.js';

type Controlled = { delta(text: string): void; done(text: string, toolCalls?: string): void };

function controlledMachine(runs: Controlled[]) {
  const llmReply = fromReplyStream(({ sendBack }) => {
    const id = `call_${randomUUID()}`;
    runs.push({
      delta: (text) => sendBack({ type: 'LLM.DELTA', text } satisfies ReplyEvent),
      done: (text, toolCalls) => sendBack(llmDone(text, toolCalls ? [{ id, name: 'collect_digits', arguments: toolCalls }] : [], Date.now())),
    });
  });
  return sessionMachine.provide({ actors: { llmReply, ...agentActors() } });
}

type Machine = ReturnType<typeof controlledMachine>;
const actors: Actor<Machine>[] = [];
afterEach(() => {
  for (const a of actors.splice(0)) a.stop();
});

/** Starts a session and records, per snapshot notification, whether the manager would skip the write. */
function start() {
  const runs: Controlled[] = [];
  const actor = createActor(controlledMachine(runs), { input: sessionInput() });
  actors.push(actor);
  let seen = observe(actor.getSnapshot());
  let skipped: boolean[] = [];
  actor.subscribe((snapshot: SnapshotFrom<Machine>) => {
    const skip = unchanged(seen, snapshot);
    skipped.push(skip);
    if (!skip) seen = observe(snapshot);
  });
  actor.start();
  /** What each notification caused by `act` would do: true = no write. */
  const step = (act: () => void): boolean[] => {
    skipped = [];
    act();
    return skipped;
  };
  return { actor, runs, step };
}

describe('unchanged (the store-write filter)', () => {
  it('skips the streamed deltas of a reply and writes the user turn and the finished reply', () => {
    const { actor, runs, step } = start();
    expect(step(() => actor.send({ type: 'PROMPT', text: 'Hello', lang: 'en-US', last: true }))).toEqual([false]);
    const run = runs[0]!;
    expect(step(() => run.delta('Hi '))).toEqual([true]);
    expect(step(() => run.delta('there'))).toEqual([true]);
    expect(step(() => run.done('Hi there'))).toEqual([false]);
    expect(actor.getSnapshot().context.history.at(-1)).toEqual({ role: 'assistant', content: 'Hi there' });
  });

  it('writes a drop, an interrupt and a new prompt in the middle of a stream', () => {
    const { actor, runs, step } = start();
    actor.send({ type: 'PROMPT', text: 'Tell me a story', lang: 'en-US', last: true });
    runs[0]!.delta('Once ');
    expect(step(() => actor.send({ type: 'SOCKET.CLOSED', code: 1006, at: Date.now() }))).toEqual([false]);
    // The resume is written; the text streamed so far, said again after it (LLM.CUT_OFF), is not.
    expect(step(() => actor.send({ type: 'RESUME', sessionKeyHash: 'ab'.repeat(32), via: 'twilio', at: Date.now() }))).toEqual([false, true]);
    expect(step(() => runs[0]!.delta('upon '))).toEqual([true]);
    expect(step(() => actor.send({ type: 'INTERRUPT', utterance: 'Once upon', durationMs: 500 }))).toEqual([false]);
    expect(step(() => actor.send({ type: 'PROMPT', text: 'Something else', lang: 'en-US', last: true }))).toEqual([false]);
    expect(step(() => runs[1]!.delta('Sure.'))).toEqual([true]);
  });

  it('writes every keypad press (digits typed so far must survive a restart)', async () => {
    const { actor, runs, step } = start();
    actor.send({ type: 'PROMPT', text: 'my account number', lang: 'en-US', last: true });
    runs[0]!.done('', '{"kind":"digits","label":"account number","minLength":4,"maxLength":4}');
    // The collect_digits tool actor answers on the microtask queue.
    await waitFor(actor, (s) => s.matches({ live: { conversation: 'collecting' } }));
    const presses = step(() => actor.send({ type: 'DIGIT', digit: '1', at: Date.now() }));
    expect(presses.length).toBeGreaterThan(0);
    expect(presses.every((skip) => skip === false)).toBe(true);
  });
});
