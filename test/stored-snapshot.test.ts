// Calls in flight across a deploy from the previous version: snapshots that version stored (test/fixtures,
// made by its own machine: a call mid keypad entry, a call mid reply) restore on today's machine and go on.
import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { createActor, type Actor, type Snapshot } from 'xstate';
import { fromReplyStream, type ReplyInput } from '../src/machines/reply.js';
import { sessionMachine } from '../src/machines/session.js';
import { upgradeStoredSnapshot } from '../src/server/sessions/stored-snapshot.js';
import { agentActors, llmDone } from './support/session-actors.js';
import { sessionInput } from './support/session-input.js';
import { TestClock } from './support/test-clock.js';

const fixtures = JSON.parse(readFileSync(new URL('./fixtures/v0-snapshots.json', import.meta.url), 'utf8')) as Record<'keypad' | 'replying', Snapshot<unknown>>;

const runs: ReplyInput[] = [];
const clock = new TestClock(1_700_000_002_000);
const machine = sessionMachine.provide({
  actors: {
    llmReply: fromReplyStream(({ input, sendBack }) => {
      runs.push(input);
      if (input.turns.at(-1)?.role === 'tool') sendBack(llmDone('Thanks, got it.', [], clock.now()));
    }),
    ...agentActors(clock),
  },
});
const live: Actor<typeof machine>[] = [];
afterEach(() => {
  for (const a of live.splice(0)) a.stop();
  runs.length = 0;
});

function restore(stored: Snapshot<unknown>) {
  const actor = createActor(machine, { snapshot: upgradeStoredSnapshot(structuredClone(stored)) as Snapshot<unknown>, input: sessionInput() });
  live.push(actor);
  actor.start();
  return actor;
}

describe('a snapshot stored by the previous version', () => {
  it('mid keypad entry: the digits typed so far are kept and the entry completes on the one keypad actor', () => {
    const actor = restore(fixtures.keypad);
    expect(actor.getSnapshot().matches({ live: { conversation: 'collecting' } })).toBe(true);
    expect(Object.keys(actor.getSnapshot().children)).toEqual(['dtmf']);
    for (const digit of '23456') actor.send({ type: 'DIGIT', digit: digit as '2', at: clock.now() });
    const result = { role: 'tool', toolCallId: 'call_phone', content: '{"status":"ok","kind":"phoneNumber","value":"5550123456"}' };
    expect(runs.at(-1)!.turns.at(-1)).toEqual(result);
    expect(actor.getSnapshot().context.history.slice(-2)).toEqual([result, { role: 'assistant', content: 'Thanks, got it.' }]);
  });

  it('mid reply: the reply starts over with the history, as the one child named llm (no orphan child)', () => {
    const actor = restore(fixtures.replying);
    expect(runs).toHaveLength(1);
    expect(runs[0]!.turns).toEqual([{ role: 'user', content: 'tell me' }]);
    // The text it had streamed was in the old context; today its reply actor keeps it.
    expect('reply' in actor.getSnapshot().context).toBe(false);
    expect(Object.keys(actor.getSnapshot().children)).toEqual(['llm']);
  });

  it('a snapshot already in today\'s shape is left as it is', () => {
    const actor = restore(fixtures.replying);
    const today = actor.getPersistedSnapshot();
    expect(upgradeStoredSnapshot(today)).toBe(today);
  });
});
