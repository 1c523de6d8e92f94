// The machine and protocol modules build their machines and schemas when they load. These tests
// import them inside a test, so a module that throws while loading fails a test here. (A test file
// whose static imports throw fails before it has any tests: vitest reports the file, but StrykerJS's
// vitest runner sees no failed test and would count a mutant that breaks a module at load as survived.)
import { describe, expect, it } from 'vitest';

describe('modules load and build what they export', () => {
  it('the session machine, with its states and keypad collectors', async () => {
    const { sessionMachine } = await import('../src/machines/session.js');
    expect(sessionMachine.id).toBe('session');
    expect(Object.keys(sessionMachine.states)).toEqual(['live', 'expired', 'ended']);
    const live = sessionMachine.states.live!;
    expect(Object.keys(live.states)).toEqual(['link', 'conversation']);
    expect(Object.keys(live.states.conversation!.states)).toEqual(['idle', 'responding', 'tool', 'collecting', 'finished']);
    // Every invoke is named, so the inspector and `children` show llm, tool, dtmf and graceTimer.
    const invokes = (node: { invoke: { id: string }[]; states: Record<string, unknown> }): string[] => [
      ...node.invoke.map((i) => i.id),
      ...Object.values(node.states).flatMap((child) => invokes(child as typeof node)),
    ];
    expect(new Set(invokes(sessionMachine.root as never))).toEqual(new Set(['llm', 'tool', 'dtmf', 'graceTimer']));
  });

  it('every keypad machine, named after its src (the name the inspector draws)', async () => {
    const { dtmfMachines, keypadMachine } = await import('../src/machines/dtmf/index.js');
    for (const [src, machine] of Object.entries({ ...dtmfMachines, keypad: keypadMachine })) {
      expect(machine.id).toBe(src);
      expect(Object.keys(machine.states), src).toEqual(['collecting', 'paused', 'checking', 'rejected', 'accepted', 'failed']);
    }
  });

  it('the wire schemas, which tell every inbound frame type apart', async () => {
    const { inboundMessage } = await import('../src/protocol/messages.js');
    const frames = [
      { type: 'setup', sessionId: 'VX1', callSid: 'CA1' },
      { type: 'prompt', voicePrompt: 'hi' },
      { type: 'dtmf', digit: '1' },
      { type: 'interrupt' },
      { type: 'info', name: 'n', value: 1 },
      { type: 'error' },
    ];
    for (const frame of frames) expect(inboundMessage.parse(frame)).toMatchObject(frame);
  });
});
