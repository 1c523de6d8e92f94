// The short form a hibernated session's snapshot is held in: lossless for any JSON text, and short
// for the snapshot of a session at rest.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createActor } from 'xstate';
import { packSnapshot, unpackSnapshot } from '../src/server/sessions/dormant.js';
import { sessionMachine } from '../src/machines/session.js';
import { agentActors } from './support/session-actors.js';

describe('packSnapshot / unpackSnapshot', () => {
  it('gives back any JSON text exactly, the short form\'s own runs inside strings included', () => {
    const runLike = fc.constantFrom('","from":"', '{"role":"user","content":"', '\u0001', '\\', '"', '],"historyDropped":');
    const text = fc.oneof(fc.string(), fc.array(runLike).map((parts) => parts.join('')));
    fc.assert(
      fc.property(fc.oneof(fc.jsonValue(), fc.dictionary(text, fc.oneof(text, fc.jsonValue()))), (value) => {
        const json = JSON.stringify(value);
        expect(unpackSnapshot(packSnapshot(json))).toBe(json);
      }),
      { numRuns: 500 },
    );
  });

  it('holds a resting session\'s snapshot in under a third of its JSON', () => {
    const actor = createActor(sessionMachine.provide({ actors: agentActors() }), {
      input: {
        callSid: `CA${'5c87bf6884fcdf626d0b2efc5ef54b3b'}`,
        sessionKeyHash: '2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881',
        resumeKeyHash: null,
        accountSid: 'AC00000000000000000000000000test',
        from: '+15550100001',
        to: '+15550100002',
        customParameters: {},
        language: 'en-US',
        timeouts: { graceMs: 300_000, retentionMs: 1_800_000, dtmfIdleMs: 10_000, maxResumes: 5 },
        now: 1_796_196_973_857,
      },
    }).start();
    const json = JSON.stringify(actor.getPersistedSnapshot());
    actor.stop();
    const packed = packSnapshot(json);
    expect(unpackSnapshot(packed)).toBe(json);
    expect(packed.length).toBeLessThan(json.length / 3);
  });
});
