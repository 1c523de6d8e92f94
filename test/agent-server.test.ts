// A custom agent on the real server: the TwiML names its languages and greeting, its tool runs with
// the call's identity while the model waits, and a drop while the tool runs loses nothing (the
// answer is spoken after the resume). Real sockets, real SQLite file, the real openai SDK against
// the scripted fake LLM of the testing kit.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import { defineAgent, type AgentDefinition } from '../src/agent/agent.js';
import { defineTool, type ToolContext } from '../src/agent/tool.js';
import { lastUserText, placeTwilioCall, postAction, SimulatedCall, startFakeOpenAI, twilioReconnectOptions, type Script } from '../src/testing/index.js';
import { startTestServer, tempSqlitePath, type TestServer } from './support/harness.js';
import { TestClock } from './support/test-clock.js';

const servers: TestServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
});

interface Lookup {
  args: { orderId: string };
  ctx: ToolContext;
  finish(status: string): void;
}

function ordersAgent(lookups: Lookup[]): AgentDefinition {
  return defineAgent({
    instructions: (call) => `You are the order desk of Acme. Caller: ${call.from}.`,
    languages: [
      { code: 'en-US', ttsProvider: 'ElevenLabs', voice: 'UgBBYS2sOqTuMpoF3BR0', transcriptionProvider: 'Deepgram', speechModel: 'nova-3-general' },
      { code: 'fr-FR', ttsProvider: 'Google', voice: 'fr-FR-Journey-F', transcriptionProvider: 'Google', menuLine: 'Pour le français, appuyez sur {digit}.' },
    ],
    welcomeGreeting: { 'en-US': 'Acme orders, how can I help?', 'fr-FR': 'Acme, bonjour.' },
    builtInTools: { handoff: false },
    tools: [
      defineTool({
        name: 'lookup_order',
        description: 'Looks an order up by its number.',
        parameters: z.object({ orderId: z.string() }),
        run: (args, ctx) => new Promise<string>((resolve) => lookups.push({ args, ctx, finish: resolve })),
      }),
    ],
  });
}

async function start(script: Script, lookups: Lookup[]) {
  const ts = await startTestServer({ config: { store: 'sqlite' }, llm: { script }, agent: ordersAgent(lookups) });
  servers.push(ts);
  return ts;
}

describe('a custom agent on the real server', () => {
  it('TwiML: the agent\'s languages with their voices and recognition, and its greeting in the first language', async () => {
    const ts = await start([], []);
    const { twiml, call } = await placeTwilioCall({ baseUrl: ts.server.httpUrl });
    expect(twiml).toContain('language="en-US"');
    expect(twiml).toContain('welcomeGreeting="Acme orders, how can I help?"');
    expect(twiml).toMatch(/<Language code="en-US" ttsProvider="ElevenLabs" voice="UgBBYS2sOqTuMpoF3BR0" transcriptionProvider="Deepgram" speechModel="nova-3-general"\/>/);
    expect(twiml).toMatch(/<Language code="fr-FR" ttsProvider="Google" voice="fr-FR-Journey-F" transcriptionProvider="Google"\/>/);
    expect(twiml).not.toContain('es-US');
    await call.close();
  });

  it('the model calls the agent\'s tool: it runs with the call\'s identity, and its answer reaches the caller', async () => {
    const lookups: Lookup[] = [];
    const ts = await start(
      [{ toolCall: { id: 'call_lookup', name: 'lookup_order', arguments: { orderId: '42' } } }, { reply: (req) => `Order 42: ${req.messages.at(-1)?.content}.` }],
      lookups,
    );
    const { call } = await placeTwilioCall({ baseUrl: ts.server.httpUrl });
    call.prompt('Where is my order 42?');
    await vi.waitFor(() => expect(lookups).toHaveLength(1));
    expect(lookups[0]!.args).toEqual({ orderId: '42' });
    expect(lookups[0]!.ctx).toMatchObject({
      callSid: call.setup.callSid,
      language: 'en-US',
      call: { from: '+15550100001', to: '+15550100002' },
      idempotencyKey: `${call.setup.callSid}:call_lookup`,
      repeated: false,
    });
    lookups[0]!.finish('shipped on Monday');
    expect((await call.nextReply()).text).toBe('Order 42: shipped on Monday.');

    const [first, second] = ts.llm.requests;
    expect(first!.messages[0]!.content).toBe("You are the order desk of Acme. Caller: +15550100001. Reply in the caller's current language: en-US.");
    expect(first!.tools?.map((t) => (t as { function: { name: string } }).function.name).sort()).toEqual(['collect_digits', 'lookup_order', 'switch_language']);
    expect(second!.messages.at(-1)).toEqual({ role: 'tool', tool_call_id: 'call_lookup', content: 'shipped on Monday' });
    await call.close();
  });

  it('a drop while the tool runs loses nothing: the tool finishes and its answer is spoken after the resume', async () => {
    const lookups: Lookup[] = [];
    const ts = await start(
      [{ toolCall: { id: 'call_drop', name: 'lookup_order', arguments: { orderId: '7' } } }, { reply: 'Order 7 is on its way.' }],
      lookups,
    );
    const { call } = await placeTwilioCall({ baseUrl: ts.server.httpUrl });
    call.prompt('And order 7?');
    await vi.waitFor(() => expect(lookups).toHaveLength(1));
    await call.drop();
    const session = () => ts.server.manager.get(call.setup.callSid)?.actor.getSnapshot();
    await vi.waitFor(() => expect(session()?.matches({ live: { link: 'disconnected' } })).toBe(true));
    // The tool is not aborted by a drop: the call is still on, and the answer is kept for after the resume.
    expect(lookups[0]!.ctx.signal.aborted).toBe(false);
    lookups[0]!.finish('in transit');
    await vi.waitFor(() => expect(session()?.context.undelivered).toBe('Order 7 is on its way.'));

    const reconnect = await postAction(ts.server.httpUrl, { CallSid: call.setup.callSid, CallStatus: 'in-progress', ErrorCode: '64105', SessionId: call.sessionId });
    const connectVia = ts.server.httpUrl.replace(/^http/, 'ws');
    const resumed = await SimulatedCall.connect(twilioReconnectOptions(reconnect.body, call, { connectVia }));
    const heard = await resumed.nextReply();
    expect(heard.text).toContain('Order 7 is on its way.');
    expect(lastUserText(ts.llm.requests[1]!)).toBe('And order 7?');
    await resumed.close();
  });

  it('a tool still running when a drain gives up (deploy) runs again where the call resumes, with the same idempotency key', async () => {
    const lookups: Lookup[] = [];
    const sqlitePath = tempSqlitePath();
    const llm = await startFakeOpenAI({
      script: [{ toolCall: { id: 'call_again', name: 'lookup_order', arguments: { orderId: '5' } } }, { reply: 'Order 5 is ready for pickup.' }],
    });
    const on = (ts: TestServer) => ts.server.httpUrl;
    // A drain waits for a tool in flight like for a reply, up to its timeout: this one never finishes.
    const a = await startTestServer({ config: { store: 'sqlite', sqlitePath, drainTimeoutMs: 300 }, sharedLlm: llm, agent: ordersAgent(lookups) });
    const b = await startTestServer({ config: { store: 'sqlite', sqlitePath }, sharedLlm: llm, agent: ordersAgent(lookups) });
    servers.push(b);
    try {
      const { call } = await placeTwilioCall({ baseUrl: on(a) });
      call.prompt('Is order 5 ready?');
      await vi.waitFor(() => expect(lookups).toHaveLength(1));
      // The drain hands the call on (stored mid-tool) at its timeout; stopping its actor aborts the tool here.
      await a.close();
      expect(lookups[0]!.ctx.signal.aborted).toBe(true);

      const reconnect = await postAction(on(b), { CallSid: call.setup.callSid, CallStatus: 'in-progress', ErrorCode: '64105', SessionId: call.sessionId });
      const resumed = await SimulatedCall.connect(twilioReconnectOptions(reconnect.body, call, { connectVia: on(b).replace(/^http/, 'ws') }));
      await vi.waitFor(() => expect(lookups).toHaveLength(2));
      expect(lookups[1]!.args).toEqual({ orderId: '5' });
      expect(lookups[1]!.ctx).toMatchObject({ callSid: call.setup.callSid, idempotencyKey: `${call.setup.callSid}:call_again`, repeated: true });
      lookups[1]!.finish('ready');
      await vi.waitFor(() => expect(resumed.transcript.map((t) => t.text).join(' ')).toContain('Order 5 is ready for pickup.'));
      expect(llm.requests.at(-1)!.messages.at(-1)).toEqual({ role: 'tool', tool_call_id: 'call_again', content: 'ready' });
      await resumed.close();
    } finally {
      await llm.close();
    }
  });

  it('a drain lets a tool in flight finish and speak its answer before it hands the call on', async () => {
    const lookups: Lookup[] = [];
    const ts = await start([{ toolCall: { id: 'call_quick', name: 'lookup_order', arguments: { orderId: '6' } } }, { reply: 'Order 6 shipped.' }], lookups);
    servers.splice(servers.indexOf(ts), 1);
    const { call } = await placeTwilioCall({ baseUrl: ts.server.httpUrl });
    call.prompt('Order 6?');
    await vi.waitFor(() => expect(lookups).toHaveLength(1));
    const closing = ts.close();
    // Still draining: the tool is not aborted; it finishes and the reply after it is spoken on this instance.
    expect(lookups[0]!.ctx.signal.aborted).toBe(false);
    lookups[0]!.finish('shipped');
    expect((await call.nextReply()).text).toBe('Order 6 shipped.');
    await closing;
    expect(lookups).toHaveLength(1);
  });

  it('a call handed on mid-tool whose caller never came back expires without running the tool again', async () => {
    const lookups: Lookup[] = [];
    const sqlitePath = tempSqlitePath();
    const llm = await startFakeOpenAI({ script: [{ toolCall: { id: 'call_gone', name: 'lookup_order', arguments: { orderId: '3' } } }] });
    try {
      const a = await startTestServer({ config: { store: 'sqlite', sqlitePath, drainTimeoutMs: 300 }, sharedLlm: llm, agent: ordersAgent(lookups) });
      const { call } = await placeTwilioCall({ baseUrl: a.server.httpUrl });
      call.prompt('Order 3?');
      await vi.waitFor(() => expect(lookups).toHaveLength(1));
      await a.close();
      // The next instance adopts the orphaned deadline on its own clock, which the test moves past it.
      const clock = new TestClock();
      const b = await startTestServer({ config: { store: 'sqlite', sqlitePath }, sharedLlm: llm, agent: ordersAgent(lookups), clock });
      servers.push(b);
      clock.advance(6 * 60_000);
      await vi.waitFor(async () => expect((await b.server.store.load(call.setup.callSid))?.state).toBe('expired'));
      expect(lookups).toHaveLength(1);
    } finally {
      await llm.close();
    }
  });
});
