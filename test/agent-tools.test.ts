// The agent's own tools, run as the session's `tool` actor (src/agent/tool-runner.ts): what a tool
// sees (ctx), what the model is told (result, error, timeout, cancel), what aborts it (interrupt,
// a new utterance, hang-up, shutdown) and the rule after a restore (repeat with the same idempotency
// key, or "outcome unknown" for a tool not safe to repeat). Also the agent's keypad entries and
// languages, and built-in tools turned off. Machine level: a manual clock, no sockets, no sleeps.
import { afterEach, describe, expect, it } from 'vitest';
import { createActor, waitFor, type Actor, type Snapshot } from 'xstate';
import { z } from 'zod';
import { resolveAgent, type AgentDefinition } from '../src/agent/agent.js';
import { defineTool, parseToolCall, type ToolContext } from '../src/agent/tool.js';
import { createToolActor, MAX_TOOL_RESULT_BYTES, OUTCOME_UNKNOWN } from '../src/agent/tool-runner.js';
import { fromReplyStream, type ChatTurn, type ReplyEvent, type ReplyInput, type ToolCall } from '../src/machines/reply.js';
import { sessionMachine, timersOn, TOOL_INTERRUPTED } from '../src/machines/session.js';
import type { OutboundMessage } from '../src/protocol/messages.js';
import { sessionInput } from './support/session-input.js';
import { TestClock } from './support/test-clock.js';

interface Run {
  input: ReplyInput;
  done(text: string, toolCalls?: ToolCall[]): void;
}

/** What one tool call saw, and a handle to finish it. */
interface ToolRun {
  args: unknown;
  ctx: ToolContext;
  resolve(value: unknown): void;
  reject(err: Error): void;
}

function harness(definition: AgentDefinition, clock = new TestClock(1_700_000_000_000), failures: string[] = []) {
  const agent = resolveAgent(definition);
  const runs: Run[] = [];
  const llmReply = fromReplyStream(({ input, sendBack }) => {
    runs.push({
      input,
      done: (text, toolCalls = []) => {
        const [first] = toolCalls;
        sendBack({ type: 'LLM.DONE', text, toolCalls, toolCall: first ? parseToolCall(first, agent.tools) : undefined, at: clock.now() } satisfies ReplyEvent);
      },
    });
  });
  const machine = sessionMachine.provide({ actors: { llmReply, tool: createToolActor(agent.tools, clock, { failed: (tool, content) => failures.push(`${tool}: ${content}`) }), ...timersOn(clock, agent.keypad) } });
  return { agent, runs, machine, clock };
}

type Harness = ReturnType<typeof harness>;
const live: Actor<Harness['machine']>[] = [];
afterEach(() => {
  for (const a of live.splice(0)) a.stop();
});

function start(h: Harness, snapshot?: Snapshot<unknown>) {
  const outbound: OutboundMessage[] = [];
  const actor = createActor(h.machine, snapshot ? { snapshot, input: sessionInput() } : { input: { ...sessionInput(), now: h.clock.now() } });
  actor.on('outbound', ({ message }) => outbound.push(message));
  live.push(actor);
  actor.start();
  return {
    actor,
    outbound,
    run: () => h.runs.at(-1)!,
    say: (text: string) => actor.send({ type: 'PROMPT', text, lang: 'en-US', last: true }),
    ctx: () => actor.getSnapshot().context,
    conversation: () => (actor.getSnapshot().value as { live: { conversation: unknown } }).live.conversation,
  };
}

const call = (name: string, args: unknown, id = `call_${name}_${Math.random().toString(36).slice(2)}`): ToolCall => ({
  id,
  name,
  arguments: JSON.stringify(args),
});
const toolTurns = (turns: ChatTurn[]) => turns.filter((t): t is Extract<ChatTurn, { role: 'tool' }> => t.role === 'tool');
/** The tool actor settles on the microtask queue: wait for the session to leave `tool`. */
const toolDone = (actor: Actor<Harness['machine']>) => waitFor(actor, (s) => !s.matches({ live: { conversation: 'tool' } }));

/** A tool whose every run the test finishes by hand. */
function manualTool(runs: ToolRun[], extra: { safeToRepeat?: boolean; timeoutMs?: number } = {}) {
  return defineTool({
    name: 'lookup_order',
    description: 'Looks an order up by its number.',
    parameters: z.object({ orderId: z.string().regex(/^\d+$/) }),
    run: (args, ctx) =>
      new Promise((resolve, reject) => {
        runs.push({ args, ctx, resolve, reject });
      }),
    ...extra,
  });
}

describe('an agent tool runs as the session\'s tool actor', () => {
  it('gets its typed args and ctx; its result (as JSON) is the tool turn and the model answers again', async () => {
    const toolRuns: ToolRun[] = [];
    const h = harness({ tools: [manualTool(toolRuns)] });
    const s = start(h);
    s.say('Where is order 42?');
    const lookup = call('lookup_order', { orderId: '42' });
    s.run().done('Let me check.', [lookup]);
    expect(s.conversation()).toBe('tool');
    expect(toolRuns).toHaveLength(1);
    expect(toolRuns[0]!.args).toEqual({ orderId: '42' });
    expect(toolRuns[0]!.ctx).toMatchObject({ callSid: s.ctx().callSid, language: 'en-US', idempotencyKey: `${s.ctx().callSid}:${lookup.id}`, repeated: false });
    expect(toolRuns[0]!.ctx.signal.aborted).toBe(false);
    // Words said with the call are their own talk cycle, spoken while the tool runs.
    expect(s.outbound).toEqual([{ type: 'text', token: '', last: true }]);

    toolRuns[0]!.resolve({ status: 'shipped', eta: 'Friday' });
    await toolDone(s.actor);
    expect(s.conversation()).toBe('responding');
    expect(h.runs).toHaveLength(2);
    expect(toolTurns(s.run().input.turns)).toEqual([{ role: 'tool', toolCallId: lookup.id, content: '{"status":"shipped","eta":"Friday"}' }]);
    expect(s.ctx().toolCall).toBeNull();
  });

  it('a throw becomes an error result the model sees (and the server logs), never a failure of the session', async () => {
    const toolRuns: ToolRun[] = [];
    const failures: string[] = [];
    const s = start(harness({ tools: [manualTool(toolRuns)] }, undefined, failures));
    s.say('Order 7?');
    s.run().done('', [call('lookup_order', { orderId: '7' }, 'call_7')]);
    toolRuns[0]!.reject(new Error('orders service unavailable'));
    await toolDone(s.actor);
    expect(s.actor.getSnapshot().status).toBe('active');
    expect(toolTurns(s.run().input.turns)).toEqual([{ role: 'tool', toolCallId: 'call_7', content: 'error: orders service unavailable' }]);
    expect(failures).toEqual(['lookup_order: error: orders service unavailable']);
  });

  it('times out on the clock: aborted, and the model is told it timed out', async () => {
    const toolRuns: ToolRun[] = [];
    const h = harness({ tools: [manualTool(toolRuns, { timeoutMs: 3000 })] });
    const s = start(h);
    s.say('Order 8?');
    s.run().done('', [call('lookup_order', { orderId: '8' }, 'call_8')]);
    h.clock.advance(2999);
    expect(toolRuns[0]!.ctx.signal.aborted).toBe(false);
    h.clock.advance(1);
    expect(toolRuns[0]!.ctx.signal.aborted).toBe(true);
    await toolDone(s.actor);
    expect(toolTurns(s.run().input.turns)).toEqual([{ role: 'tool', toolCallId: 'call_8', content: 'error: lookup_order timed out after 3000 ms' }]);
    expect(h.clock.pending).toBe(0);
  });

  it('arguments that fail the schema are answered with the reason; the tool never runs', async () => {
    const toolRuns: ToolRun[] = [];
    const s = start(harness({ tools: [manualTool(toolRuns)] }));
    s.say('Order abc?');
    s.run().done('', [call('lookup_order', { orderId: 'abc' }, 'call_bad')]);
    await toolDone(s.actor);
    expect(toolRuns).toHaveLength(0);
    const [result] = toolTurns(s.run().input.turns);
    expect(result?.toolCallId).toBe('call_bad');
    expect(result?.content).toMatch(/^error: .*orderId/s);
  });

  it('an interrupt aborts it: the model learns it was cancelled and the caller has the floor', async () => {
    const toolRuns: ToolRun[] = [];
    const failures: string[] = [];
    const s = start(harness({ tools: [manualTool(toolRuns)] }, undefined, failures));
    s.say('Order 9?');
    s.run().done('', [call('lookup_order', { orderId: '9' }, 'call_9')]);
    s.actor.send({ type: 'INTERRUPT', utterance: '', durationMs: 100 });
    expect(toolRuns[0]!.ctx.signal.aborted).toBe(true);
    expect(s.conversation()).toBe('idle');
    expect(toolTurns(s.ctx().history)).toEqual([{ role: 'tool', toolCallId: 'call_9', content: TOOL_INTERRUPTED }]);
    // A result that still arrives is dropped: the actor is stopped.
    toolRuns[0]!.reject(new Error('aborted by the signal'));
    await new Promise((resolve) => setImmediate(resolve));
    expect(toolTurns(s.ctx().history)).toHaveLength(1);
    // Cut short on purpose: not a failure to log.
    expect(failures).toEqual([]);
  });

  it('a new utterance aborts it and is answered, after the cancelled result', async () => {
    const toolRuns: ToolRun[] = [];
    const h = harness({ tools: [manualTool(toolRuns)] });
    const s = start(h);
    s.say('Order 10?');
    s.run().done('', [call('lookup_order', { orderId: '10' }, 'call_10')]);
    s.say('Never mind, what are your hours?');
    expect(toolRuns[0]!.ctx.signal.aborted).toBe(true);
    expect(s.conversation()).toBe('responding');
    expect(s.run().input.turns.slice(-2)).toEqual([
      { role: 'tool', toolCallId: 'call_10', content: TOOL_INTERRUPTED },
      { role: 'user', content: 'Never mind, what are your hours?' },
    ]);
  });

  it('a hang-up ends the session and aborts the tool; so does stopping the actor (shutdown)', () => {
    const toolRuns: ToolRun[] = [];
    const h = harness({ tools: [manualTool(toolRuns)] });
    const s = start(h);
    s.say('Order 11?');
    s.run().done('', [call('lookup_order', { orderId: '11' })]);
    s.actor.send({ type: 'ACTION', resumable: false, sessionStatus: 'completed', errorCode: '', at: h.clock.now() });
    expect(s.actor.getSnapshot().status).toBe('done');
    expect(toolRuns[0]!.ctx.signal.aborted).toBe(true);

    const t = start(h);
    t.say('Order 12?');
    t.run().done('', [call('lookup_order', { orderId: '12' })]);
    t.actor.stop();
    expect(toolRuns[1]!.ctx.signal.aborted).toBe(true);
  });
});

describe('a tool in flight when its process stopped, after the restore', () => {
  /** The persisted snapshot mid-tool, the way the store holds it, restored into a fresh actor (a new process). */
  function restoreMidTool(safeToRepeat: boolean | undefined) {
    const toolRuns: ToolRun[] = [];
    const h = harness({ tools: [manualTool(toolRuns, safeToRepeat === undefined ? {} : { safeToRepeat })] });
    const s = start(h);
    s.say('Cancel order 13');
    s.run().done('', [call('lookup_order', { orderId: '13' }, 'call_13')]);
    const persisted = JSON.parse(JSON.stringify(s.actor.getPersistedSnapshot())) as Snapshot<unknown>;
    s.actor.stop();
    const restored = start(h, persisted);
    return { toolRuns, h, restored };
  }

  it('a tool safe to repeat (the default) runs again with the same idempotency key, marked repeated', async () => {
    const { toolRuns, restored } = restoreMidTool(undefined);
    expect(toolRuns).toHaveLength(2);
    expect(toolRuns[0]!.ctx.signal.aborted).toBe(true);
    expect(toolRuns[1]!.ctx).toMatchObject({ idempotencyKey: `${restored.ctx().callSid}:call_13`, repeated: true });
    expect(toolRuns[1]!.args).toEqual({ orderId: '13' });
    toolRuns[1]!.resolve('cancelled order 13');
    await toolDone(restored.actor);
    expect(toolTurns(restored.run().input.turns)).toEqual([{ role: 'tool', toolCallId: 'call_13', content: 'cancelled order 13' }]);
  });

  it('a tool not safe to repeat is not run again: the model is told the outcome is unknown', async () => {
    const { toolRuns, restored } = restoreMidTool(false);
    expect(toolRuns).toHaveLength(1);
    await toolDone(restored.actor);
    expect(toolTurns(restored.run().input.turns)).toEqual([{ role: 'tool', toolCallId: 'call_13', content: OUTCOME_UNKNOWN }]);
  });

  it('the persisted snapshot holds the call once, small; the LLM child holds no history', () => {
    const toolRuns: ToolRun[] = [];
    const h = harness({ tools: [manualTool(toolRuns)] });
    const s = start(h);
    for (let i = 0; i < 3; i++) {
      s.say(`Question number ${i} with a few words in it`);
      s.run().done(`Answer number ${i}, also with a few words in it.`);
    }
    s.say('And order 14?');
    const persisted = s.actor.getPersistedSnapshot() as unknown as { children: Record<string, { snapshot: { input?: unknown } }> };
    expect(Object.keys(persisted.children)).toEqual(['llm']);
    expect(persisted.children.llm!.snapshot.input).toBeUndefined();
    const text = JSON.stringify(persisted);
    expect(text.split('Question number 1').length - 1).toBe(1);
  });
});

describe('the agent decides the tools, keypad entries and languages', () => {
  it('built-in tools turned off are unknown to the model and to the session', async () => {
    const h = harness({ builtInTools: { collectDigits: false, handoff: false, switchLanguage: false } });
    expect(h.agent.toolSchemas).toEqual([]);
    const s = start(h);
    s.say('my phone number');
    s.run().done('', [call('collect_digits', { kind: 'phoneNumber' }, 'call_cd')]);
    await toolDone(s.actor);
    expect(s.conversation()).toBe('responding');
    expect(toolTurns(s.run().input.turns)).toEqual([{ role: 'tool', toolCallId: 'call_cd', content: 'error: unknown tool collect_digits' }]);
  });

  it('a custom keypad entry: fixed length, the agent\'s check, its prompts in the call language', async () => {
    const h = harness({
      languages: [{ code: 'en-US' }, { code: 'fr-FR', menuLine: 'Pour le français, appuyez sur {digit}.' }],
      keypadEntries: [
        {
          name: 'pin',
          description: '4-digit PIN, the last digit a checksum',
          length: 4,
          validate: (d) => Number(d[3]) === (Number(d[0]) + Number(d[1]) + Number(d[2])) % 10,
          prompts: { en: { ask: 'Please type your PIN.', invalid: 'That PIN is not valid.' }, fr: { ask: 'Tapez votre code.', invalid: 'Code invalide.' } },
        },
      ],
    });
    const s = start(h);
    // The collect_digits tool offers the agent's entry to the model.
    const collect = h.agent.toolSchemas.find((t) => t.function.name === 'collect_digits')!;
    expect(JSON.stringify(collect.function.parameters)).toContain('"pin"');
    s.say('Je voudrais parler français');
    s.run().done('', [call('switch_language', { language: 'fr-FR' })]);
    await toolDone(s.actor);
    expect(s.ctx().language).toBe('fr-FR');
    s.run().done('', [call('collect_digits', { kind: 'pin' }, 'call_pin')]);
    await waitFor(s.actor, (snap) => snap.matches({ live: { conversation: 'collecting' } }));
    expect(s.outbound.at(-1)).toEqual({ type: 'text', token: 'Tapez votre code.', last: true });
    for (const digit of '1235') s.actor.send({ type: 'DIGIT', digit: digit as '1', at: h.clock.now() });
    expect(s.outbound.at(-1)).toEqual({ type: 'text', token: 'Code invalide. Tapez votre code.', last: true });
    for (const digit of '1236') s.actor.send({ type: 'DIGIT', digit: digit as '1', at: h.clock.now() });
    expect(s.conversation()).toBe('responding');
    expect(toolTurns(s.run().input.turns).at(-1)).toEqual({ role: 'tool', toolCallId: 'call_pin', content: '{"status":"ok","kind":"pin","value":"1236"}' });
  });

  it('the language menu offers the agent\'s languages, one key each', async () => {
    const h = harness({ languages: [{ code: 'en-US' }, { code: 'es-US' }, { code: 'fr-FR', menuLine: 'Pour le français, appuyez sur {digit}.' }] });
    const s = start(h);
    s.say('language menu');
    s.run().done('', [call('collect_digits', { kind: 'language' })]);
    await waitFor(s.actor, (snap) => snap.matches({ live: { conversation: 'collecting' } }));
    expect(s.outbound.at(-1)).toEqual({
      type: 'text',
      token: 'For English, press 1. Para español, oprima 2. Pour le français, appuyez sur 3.',
      last: true,
    });
    s.actor.send({ type: 'DIGIT', digit: '3', at: h.clock.now() });
    expect(s.ctx().language).toBe('fr-FR');
    expect(s.outbound.at(-1)).toEqual({ type: 'language', ttsLanguage: 'fr-FR', transcriptionLanguage: 'fr-FR' });
  });

  it('instructions may be a function of the call; the current language is always added', () => {
    const agent = resolveAgent({ instructions: (c) => `You book appointments for ${c.customParameters.clinic ?? 'the clinic'}.` });
    const text = agent.instructions({ callSid: 'CA1', language: 'es-US', from: '', to: '', customParameters: { clinic: 'Dr. Ruiz' } });
    expect(text).toBe("You book appointments for Dr. Ruiz. Reply in the caller's current language: es-US.");
  });

  it('refuses an agent with two tools of one name, or a keypad entry named like a built-in one', () => {
    const tool = manualTool([]);
    expect(() => resolveAgent({ tools: [tool, tool] })).toThrow(/two tools are named "lookup_order"/);
    expect(() => resolveAgent({ keypadEntries: [{ name: 'digits', description: 'x', prompts: { en: { ask: 'x' } } }] })).toThrow(/already defined/);
    expect(() => defineTool({ name: 'has space', description: '', parameters: z.object({}), run: () => '' })).toThrow(/tool name/);
  });
});

describe('what a tool or keypad check cannot do to a call', () => {
  it('a huge result is cut to 8 KiB (at a character boundary) before it reaches the model, the history and the store', async () => {
    const big = defineTool({ name: 'big', description: 'x', parameters: z.object({}), run: () => 'é'.repeat(5 * 1024 * 1024) });
    const s = start(harness({ tools: [big] }));
    s.say('go');
    s.run().done('', [call('big', {}, 'call_big')]);
    await toolDone(s.actor);
    const [result] = toolTurns(s.run().input.turns);
    expect(Buffer.byteLength(result!.content)).toBeLessThan(MAX_TOOL_RESULT_BYTES + 64);
    expect(result!.content).toMatch(/^é+…\[truncated \d+ bytes\]$/);
    expect(JSON.stringify(s.actor.getPersistedSnapshot()).length).toBeLessThan(64 * 1024);
  });

  it('a timeout too large for a timer is a long wait, not an instant timeout', async () => {
    const toolRuns: ToolRun[] = [];
    const h = harness({ tools: [manualTool(toolRuns, { timeoutMs: 30 * 24 * 3600_000 })] });
    const s = start(h);
    s.say('Order 1?');
    s.run().done('', [call('lookup_order', { orderId: '1' })]);
    h.clock.advance(24 * 3600_000);
    expect(toolRuns[0]!.ctx.signal.aborted).toBe(false);
    expect(s.conversation()).toBe('tool');
  });

  it('a keypad check that returns something else than true/false/{ value } (undefined, a Promise) rejects the entry; the call goes on', async () => {
    const h = harness({
      keypadEntries: [
        {
          name: 'member',
          description: 'member number',
          length: 4,
          validate: ((d: string) => (d.startsWith('9') ? Promise.resolve(true) : undefined)) as never,
          prompts: { en: { ask: 'Type your member number.', invalid: 'Not valid.' } },
        },
      ],
    });
    const s = start(h);
    s.say('member');
    s.run().done('', [call('collect_digits', { kind: 'member' }, 'call_m')]);
    await waitFor(s.actor, (snap) => snap.matches({ live: { conversation: 'collecting' } }));
    for (const digit of '12349876') s.actor.send({ type: 'DIGIT', digit: digit as '1', at: h.clock.now() });
    expect(s.actor.getSnapshot().status).toBe('active');
    expect(s.outbound.filter((m) => m.type === 'text' && m.token.startsWith('Not valid.'))).toHaveLength(2);
  });

  it('the model is sent what it must send: a field with a default is optional; a schema that cannot be JSON Schema names its tool', () => {
    const withDefault = defineTool({ name: 'greet', description: 'x', parameters: z.object({ name: z.string(), polite: z.boolean().default(true) }), run: () => 'hi' });
    const schema = resolveAgent({ tools: [withDefault] }).toolSchemas.find((t) => t.function.name === 'greet');
    expect(schema!.function.parameters).toMatchObject({ required: ['name'] });
    const bad = defineTool({ name: 'when', description: 'x', parameters: z.object({ at: z.string().transform((v) => new Date(v)).pipe(z.date()) }), run: () => 'ok' });
    expect(() => resolveAgent({ tools: [bad] })).not.toThrow(); // the input side is a string: fine
    const custom = defineTool({ name: 'odd', description: 'x', parameters: z.custom<string>(() => true), run: () => 'ok' });
    expect(() => resolveAgent({ tools: [custom] })).toThrow(/tool "odd"/);
  });

  it('arguments whose check throws or is async are answered with the reason; nothing runs', async () => {
    const toolRuns: ToolRun[] = [];
    const asyncCheck = defineTool({
      name: 'check',
      description: 'x',
      parameters: z.object({ id: z.string() }).refine(async () => true),
      run: (args, ctx) => new Promise((resolve, reject) => toolRuns.push({ args, ctx, resolve, reject })),
    });
    const s = start(harness({ tools: [asyncCheck] }));
    s.say('check 1');
    s.run().done('', [call('check', { id: '1' }, 'call_check')]);
    await toolDone(s.actor);
    expect(toolRuns).toHaveLength(0);
    expect(toolTurns(s.run().input.turns)[0]!.content).toMatch(/^error: arguments could not be checked/);
  });
});
