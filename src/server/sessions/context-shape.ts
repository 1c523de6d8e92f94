// Keeps fresh sessions' contexts fast objects. xstate's `assign` builds every new context with
// Object.assign({}, context, update); V8 adds the context's ~26 properties to that empty object one
// by one and, while no object of that shape exists yet, gives up after about a dozen and makes the
// copy a dictionary: about 880 bytes instead of 250 per session, slower lookups in every guard and
// action, and every later copy of a dictionary is a dictionary again. (Restored sessions escape it:
// their context comes from JSON.parse.) One fresh context copied by a spread, and kept, lays down
// that shape, which every session's copies then follow. The sample's values have the kinds a real
// call's have (a timestamp is a double, not a small integer), or V8 would not reuse the shape.
import { createActor } from 'xstate';
import type { SessionInput, SessionMachine } from '../../machines/session.js';

let kept: object | undefined;

export function keepContextShape(machine: SessionMachine, input: Pick<SessionInput, 'language' | 'timeouts' | 'historyLimits' | 'now'>): void {
  if (kept) return;
  const sample = createActor(machine, {
    input: { callSid: 'CA', sessionKeyHash: '', resumeKeyHash: null, accountSid: 'AC', from: '', to: '', customParameters: {}, ...input },
  });
  kept = { ...sample.getSnapshot().context };
}
