// End-to-end: real server, real WebSockets (SimulatedCall), the real openai SDK against the fake
// OpenAI server. Every test gets its own server and fake LLM so scripts and request logs never mix.
import { afterEach, describe, expect, it } from 'vitest';
import { SimulatedCall } from '../src/testing/twilio-sim.js';
import { hashSecret } from '../src/server/resume-proof.js';
import { contentToText, type ChatMessageIn, type ScriptReply, type ScriptFn } from '../src/testing/fake-openai-server.js';
import { offlineAnswer } from '../src/llm/offline-reply.js';
import { llmFailureLine } from '../src/machines/phrases.js';
import type { OutboundMessage, TextMessage } from '../src/protocol/messages.js';
import { startTestServer, type TestServer, type TestServerOptions } from './support/harness.js';
import { scrapeCounter, useServersPerTest } from './support/conditions.js';
import { MemoryStore, delegatingStore, type SnapshotStore } from '../src/stores/index.js';

const { start, dial, track } = useServersPerTest();

const isText = (m: OutboundMessage): m is TextMessage => m.type === 'text';
const lastOf = (messages: ChatMessageIn[]) => messages.at(-1);

/** Answers by the last message: the user's exact words, or a tool result. */
function byLastMessage(replies: Record<string, ScriptReply>, onTool?: (content: string) => ScriptReply): ScriptFn {
  return ({ messages }) => {
    const last = lastOf(messages);
    if (last?.role === 'tool' && onTool) return onTool(contentToText(last.content));
    const said = contentToText(last?.content);
    const reply = replies[said];
    if (!reply) return { status: 400, errorMessage: `test script has no reply for ${JSON.stringify(said)}` };
    return reply;
  };
}

/** Role/content pairs of a recorded request, without the system prompt. */
function dialogue(messages: ChatMessageIn[]) {
  return messages.filter((m) => m.role !== 'system').map((m) => ({ role: m.role, content: contentToText(m.content) }));
}

/** Every text frame of a reply but the last is a non-empty last:false token; the last is {token:'', last:true}. */
function expectStreamedReply(tokens: TextMessage[], expected: string) {
  const body = tokens.slice(0, -1);
  expect(body.length).toBeGreaterThanOrEqual(2);
  for (const t of body) expect(t.last).toBe(false);
  expect(body.map((t) => t.token).join('')).toBe(expected);
  expect(tokens.at(-1)).toEqual({ type: 'text', token: '', last: true });
}

const SLOW_STORY =
  ' Once upon a time a small robot answered phones all day long, and it never once forgot a caller who rang back later. ';

describe('setup and streaming', () => {
  it('setup creates the session and /healthz counts it', async () => {
    const ts = await start();
    const before = (await (await fetch(`${ts.server.httpUrl}/healthz`)).json()) as { ok: boolean; sessions: number };
    expect(before).toMatchObject({ ok: true, sessions: 0 });

    const call = await dial(ts);
    const session = ts.server.manager.get(call.callSid);
    expect(session?.actor.getSnapshot().context).toMatchObject({ callSid: call.callSid, sessionKeyHash: hashSecret(call.sessionId) });
    const health = (await (await fetch(`${ts.server.httpUrl}/healthz`)).json()) as { ok: boolean; sessions: number };
    expect(health).toMatchObject({ ok: true, sessions: 1 });
    // Setup alone triggers no LLM request (Twilio speaks the welcome greeting itself).
    expect(ts.llm.requests).toHaveLength(0);
  });

  it('streams the reply token by token, untrimmed, and closes it with one empty last:true', async () => {
    const scripted = '  Hello there,  caller!  How can I help you today?  ';
    const ts = await start({ llm: { script: byLastMessage({ 'Hi there': { text: scripted } }) } });
    const call = await dial(ts);

    call.prompt('Hi there');
    const reply = await call.nextReply(10_000);
    expectStreamedReply(reply.tokens, scripted);
    expect(reply.text).toBe(scripted);
    expect(call.messages.filter((m) => isText(m) && m.last)).toHaveLength(1);
    expect(call.invalidFrames).toBe(0);

    expect(ts.llm.requests).toHaveLength(1);
    const request = ts.llm.requests[0]!;
    expect(request.stream).toBe(true);
    expect(request.messages[0]?.role).toBe('system');
    expect(dialogue(request.messages)).toEqual([{ role: 'user', content: 'Hi there' }]);
  });

  it('a prompt sent right behind setup (before the session exists) is queued, not lost', async () => {
    const ts = await start({ llm: { script: byLastMessage({ 'Quick question': { text: ' Go ahead. ' } }) } });
    const call = await SimulatedCall.connect({ url: ts.server.relayUrl });
    track(call);
    call.prompt('Quick question');
    const reply = await call.nextReply(10_000);
    expectStreamedReply(reply.tokens, ' Go ahead. ');
    expect(dialogue(ts.llm.requests[0]!.messages)).toEqual([{ role: 'user', content: 'Quick question' }]);
  });
});

describe('interrupts and barge-in', () => {
  it('a streamed reply costs a few store writes, not one per token, and the finished turn is stored', async () => {
    const inner = new MemoryStore();
    const saved: Array<{ state: string; snapshot: unknown }> = [];
    const store = delegatingStore(inner, {
      save: (lease, input) => {
        saved.push({ state: input.state, snapshot: input.snapshot });
        return inner.save(lease, input);
      },
    });
    const ts = await start({ store, llm: { script: byLastMessage({ 'Tell me a story': { text: SLOW_STORY, delayMs: 10 } }) } });
    const call = await dial(ts);
    await ts.server.manager.flush();
    const before = saved.length;

    call.prompt('Tell me a story');
    const reply = await call.nextReply(10_000);
    await ts.server.manager.flush();
    expect(reply.tokens.length).toBeGreaterThan(20); // each token arrived on its own event-loop turn
    // Entering `responding` (the user turn) and leaving it (the assistant turn); no write per token.
    const writes = saved.slice(before);
    expect(writes.length).toBeGreaterThanOrEqual(2);
    expect(writes.length).toBeLessThanOrEqual(3);
    const stored = (await inner.load(call.callSid))!.snapshot as { context: { history: unknown[] }; value: unknown };
    expect(stored.context.history).toEqual([
      { role: 'user', content: 'Tell me a story' },
      { role: 'assistant', content: SLOW_STORY },
    ]);
    expect(stored.value).toMatchObject({ live: { conversation: 'idle' } });
  });

  it('an interrupt mid-stream aborts the LLM request, closes the talk cycle and keeps only what was heard', async () => {
    const ts = await start({
      llm: {
        script: byLastMessage({
          'Tell me a story': { text: SLOW_STORY, delayMs: 100 },
          'Stop, that is enough': { text: ' Okay, I will stop. ' },
        }),
      },
    });
    const call = await dial(ts);

    call.prompt('Tell me a story');
    await call.waitFor((m) => isText(m) && !m.last && m.token.includes('upon'), 10_000);
    const heard = call.messages.filter(isText).map((t) => t.token).join('');
    expect(heard.length).toBeGreaterThan(0);
    expect(SLOW_STORY.startsWith(heard)).toBe(true);

    // Twilio sometimes sends the duration as a numeric string.
    call.interrupt(heard, '850');
    const closing = await call.waitFor((m) => isText(m) && m.last, 5000);
    expect(closing).toEqual({ type: 'text', token: '', last: true });
    await expect.poll(() => ts.llm.requests[0]?.aborted, { timeout: 10_000, message: 'the first LLM request to be aborted' }).toBe(true);
    expect(ts.llm.requests[0]!.completed).toBe(false);

    call.prompt('Stop, that is enough');
    // Everything after the closing last:true belongs to the new reply: nothing of the story leaks in.
    const next = await call.nextReply(10_000);
    expectStreamedReply(next.tokens, ' Okay, I will stop. ');

    expect(ts.llm.requests).toHaveLength(2);
    expect(dialogue(ts.llm.requests[1]!.messages)).toEqual([
      { role: 'user', content: 'Tell me a story' },
      { role: 'assistant', content: heard },
      { role: 'user', content: 'Stop, that is enough' },
    ]);
    expect(heard).not.toBe(SLOW_STORY);
    expect(call.invalidFrames).toBe(0);
  });

  it('an interrupt after generation finished (still being spoken) truncates the stored reply', async () => {
    const full = ' Our opening hours are nine to five on weekdays and ten to two on Saturdays. ';
    const ts = await start({
      llm: {
        script: byLastMessage({
          'When are you open?': { text: full },
          'And Sunday?': { text: ' Closed on Sundays. ' },
        }),
      },
    });
    const call = await dial(ts);

    call.prompt('When are you open?');
    const reply = await call.nextReply(10_000);
    expect(reply.text).toBe(full);
    await expect.poll(() => ts.llm.requests[0]?.completed, { timeout: 10_000, message: 'the first LLM request to complete' }).toBe(true);

    const heard = ' Our opening hours are nine to';
    call.interrupt(heard, 1200);
    call.prompt('And Sunday?');
    const next = await call.nextReply(10_000);
    expectStreamedReply(next.tokens, ' Closed on Sundays. ');

    expect(dialogue(ts.llm.requests[1]!.messages)).toEqual([
      { role: 'user', content: 'When are you open?' },
      { role: 'assistant', content: heard },
      { role: 'user', content: 'And Sunday?' },
    ]);
  });

  it('a new prompt during a stream cancels the old one and answers the new one', async () => {
    const ts = await start({
      llm: {
        script: byLastMessage({
          'Tell me a story': { text: SLOW_STORY, delayMs: 100 },
          'Actually, what time is it?': { text: ' It is half past nine. ' },
        }),
      },
    });
    const call = await dial(ts);

    call.prompt('Tell me a story');
    await call.waitFor((m) => isText(m) && !m.last, 10_000);
    call.prompt('Actually, what time is it?');

    // The cancelled reply's talk cycle is closed first, then the new reply streams.
    const closing = await call.waitFor((m) => isText(m) && m.last, 5000);
    const cancelled = call.messages.slice(0, call.messages.indexOf(closing) + 1).filter(isText);
    expect(cancelled.at(-1)).toEqual({ type: 'text', token: '', last: true });
    const cancelledText = cancelled.map((t) => t.token).join('');
    expect(SLOW_STORY.startsWith(cancelledText)).toBe(true);
    expect(cancelledText).not.toBe(SLOW_STORY);
    await expect.poll(() => ts.llm.requests[0]?.aborted, { timeout: 10_000, message: 'the first LLM request to be aborted' }).toBe(true);

    const next = await call.nextReply(10_000);
    expectStreamedReply(next.tokens, ' It is half past nine. ');
    expect(ts.llm.requests).toHaveLength(2);
    const users = dialogue(ts.llm.requests[1]!.messages).filter((m) => m.role === 'user');
    expect(users).toEqual([
      { role: 'user', content: 'Tell me a story' },
      { role: 'user', content: 'Actually, what time is it?' },
    ]);
    expect(lastOf(ts.llm.requests[1]!.messages)?.role).toBe('user');
  });
});

describe('tool calls', () => {
  it('switch_language: assembles tool calls by index, sends a language frame and answers again', async () => {
    const collectArgs = '{"kind":"digits","label":"account number","minLength":6,"maxLength":12}';
    const spanishReply = ' ¡Claro! Ahora hablamos en español. ';
    const ts = await start({
      llm: {
        script: byLastMessage(
          {
            'Spanish please': {
              toolCalls: [
                { name: 'switch_language', arguments: '{"language":"es-US"}', id: 'call_lang' },
                // Long arguments arrive in many pieces that must be joined by index.
                { name: 'collect_digits', arguments: collectArgs, id: 'call_digits' },
              ],
            },
          },
          () => ({ text: spanishReply }),
        ),
      },
    });
    const call = await dial(ts);

    call.prompt('Spanish please');
    const language = await call.waitForType('language', 10_000);
    expect(language).toEqual({ type: 'language', ttsLanguage: 'es-US', transcriptionLanguage: 'es-US' });
    const reply = await call.nextReply(10_000);
    expectStreamedReply(reply.tokens, spanishReply);

    expect(ts.llm.requests).toHaveLength(2);
    const second = ts.llm.requests[1]!.messages;
    const assistant = second.find((m) => m.role === 'assistant');
    expect(assistant?.tool_calls).toEqual([
      { id: 'call_lang', type: 'function', function: { name: 'switch_language', arguments: '{"language":"es-US"}' } },
      { id: 'call_digits', type: 'function', function: { name: 'collect_digits', arguments: collectArgs } },
    ]);
    // The skipped call is answered at once, the one that ran when it finished: both before the next request.
    const toolResults = second.filter((m) => m.role === 'tool');
    expect(toolResults.map((m) => m.tool_call_id)).toEqual(['call_digits', 'call_lang']);
    expect(contentToText(toolResults[1]!.content)).toContain('es-US');
    // The follow-up is generated in the new language.
    expect(contentToText(second[0]!.content)).toContain('es-US');
    expect(ts.server.manager.get(call.callSid)?.actor.getSnapshot().context.language).toBe('es-US');
    expect(call.invalidFrames).toBe(0);
  });

  it('human_agent_handoff: the final text is closed with last:true strictly before `end`', async () => {
    const goodbye = ' Of course, connecting you to an agent now. ';
    const ts = await start({
      llm: {
        script: byLastMessage({
          'Let me talk to a person': {
            text: goodbye,
            toolCalls: [{ name: 'human_agent_handoff', arguments: '{"reason":"caller asked for a person"}' }],
          },
        }),
      },
    });
    const call = await dial(ts);

    call.prompt('Let me talk to a person');
    const end = await call.waitForType('end', 10_000);
    const endIndex = call.messages.indexOf(end);
    const texts = call.messages.slice(0, endIndex).filter(isText);
    expectStreamedReply(texts, goodbye);
    expect(call.messages.slice(endIndex + 1).filter(isText)).toEqual([]);
    expect(typeof end.handoffData).toBe('string');
    const handoff = JSON.parse(end.handoffData!) as { reason: string; callSid: string };
    expect(handoff).toMatchObject({ reason: 'caller asked for a person', callSid: call.callSid });

    // Twilio closes the socket after `end`: the session is over and leaves memory.
    await call.close(1000);
    await expect.poll(() => ts.server.manager.get(call.callSid), { timeout: 10_000, message: 'the ended session to be released' }).toBeUndefined();
  });

  it('a tool call with invalid arguments is answered with an error result and the model answers again', async () => {
    const ts = await start({
      llm: {
        script: byLastMessage(
          {
            'Switch to Klingon': { toolCalls: [{ name: 'switch_language', arguments: '{"language":"tlh"}' }] },
            'Then French': { toolCalls: [{ name: 'switch_language', arguments: '{"language":' }] },
          },
          () => ({ text: ' Sorry, I only speak English and Spanish. ' }),
        ),
      },
    });
    const call = await dial(ts);

    call.prompt('Switch to Klingon');
    const first = await call.nextReply(10_000);
    expect(first.text).toBe(' Sorry, I only speak English and Spanish. ');
    call.prompt('Then French');
    const second = await call.nextReply(10_000);
    expect(second.text).toBe(' Sorry, I only speak English and Spanish. ');

    expect(call.messages.some((m) => m.type === 'language')).toBe(false);
    expect(ts.llm.requests).toHaveLength(4);
    const results = ts.llm.requests[3]!.messages.filter((m) => m.role === 'tool').map((m) => contentToText(m.content));
    expect(results).toHaveLength(2);
    expect(results[0]).toMatch(/^error: /);
    expect(results[1]).toMatch(/^error: .*not valid JSON/);
    expect(ts.server.manager.get(call.callSid)?.actor.getSnapshot().context.language).toBe('en-US');
  });

  it('a model that keeps calling tools is cut off: bounded requests, the talk cycle closed, the call goes on', async () => {
    let stuck = true;
    const ts = await start({
      llm: {
        script: () =>
          stuck ? { toolCalls: [{ name: 'switch_language', arguments: '{"language":"xx-XX"}' }] } : { text: ' Sorry about that. ' },
      },
    });
    const call = await dial(ts);

    call.prompt('Hello');
    const silence = await call.nextReply(15_000);
    expect(silence.tokens.at(-1)).toEqual({ type: 'text', token: '', last: true });
    const rounds = ts.llm.requests.length;
    expect(rounds).toBeGreaterThan(1);
    expect(rounds).toBeLessThanOrEqual(6);

    stuck = false;
    call.prompt('Hello again');
    expect((await call.nextReply(10_000)).text).toBe(' Sorry about that. ');
    expect(ts.llm.requests).toHaveLength(rounds + 1);
    const last = ts.llm.requests.at(-1)!.messages;
    // Every tool call, the refused last round included, has its result: the history stays valid for the API.
    const allIds = last.flatMap((m) => (Array.isArray(m.tool_calls) ? (m.tool_calls as Array<{ id: string }>).map((c) => c.id) : []));
    expect(last.filter((m) => m.role === 'tool').map((m) => m.tool_call_id)).toEqual(allIds);
  });

  it('partial prompts (last:false) do not reach the LLM; only the final one does', async () => {
    const ts = await start({ llm: { script: byLastMessage({ 'I would like to book a table': { text: ' For how many people? ' } }) } });
    const call = await dial(ts);

    call.prompt('I would', { last: false });
    call.prompt('I would like to', { last: false });
    call.prompt('I would like to book a table');
    const reply = await call.nextReply(10_000);
    expect(reply.text).toBe(' For how many people? ');
    expect(ts.llm.requests).toHaveLength(1);
    expect(dialogue(ts.llm.requests[0]!.messages)).toEqual([{ role: 'user', content: 'I would like to book a table' }]);
  });
});

describe('bad frames', () => {
  it('garbage neither closes the call nor gets an answer, is counted, and the call goes on', async () => {
    const ts = await start({ llm: { script: byLastMessage({ 'Are you still there?': { text: ' Yes, still here. ' } }) } });
    const malformedBefore = await scrapeCounter(ts.server.httpUrl, 'relay_malformed_frames_total');

    const call = await SimulatedCall.connect({ url: ts.server.relayUrl, sendSetup: false });
    track(call);
    // Before setup: garbage and a well-formed prompt, both ignored.
    call.sendRaw('{"type":');
    call.sendJson({ type: 'prompt', voicePrompt: 'too early', lang: 'en-US', last: true });
    call.dtmf('5');
    call.interrupt('nothing was said yet', 10);
    call.sendJson(call.setup);
    await expect.poll(() => ts.server.manager.get(call.callSid), { timeout: 10_000, message: 'the session to be created' }).toBeDefined();
    // Valid frames with nothing to answer: Twilio errors, debug info, a repeated setup.
    call.error('Invalid message received');
    call.info('roundTripDelayMs', 120);
    call.sendJson(call.setup);

    const garbage: Array<string | Buffer> = [
      'this is not json',
      JSON.stringify({ type: 'bogus', foo: 1 }),
      JSON.stringify({ type: 'prompt', voicePrompt: 42, last: 'yes' }),
      JSON.stringify({ type: 'dtmf', digit: 'X' }),
      JSON.stringify({ type: 'interrupt', utteranceUntilInterrupt: 7, durationUntilInterruptMs: 'soon' }),
      JSON.stringify({ type: 'prompt', voicePrompt: 'x'.repeat(100 * 1024), lang: 'en-US', last: true }),
      Buffer.from([0xff, 0x00, 0xfe, 0x13, 0x37, 0x80, 0x81]),
    ];
    for (const frame of garbage) expect(call.sendRaw(frame)).toBe(true);

    // The call still works; every frame received is part of the reply to this prompt.
    call.prompt('Are you still there?');
    const reply = await call.nextReply(10_000);
    expectStreamedReply(reply.tokens, ' Yes, still here. ');
    expect(call.messages).toEqual(reply.tokens);
    expect(call.isOpen).toBe(true);
    expect(call.invalidFrames).toBe(0);
    expect(ts.llm.requests).toHaveLength(1);
    expect(dialogue(ts.llm.requests[0]!.messages)).toEqual([{ role: 'user', content: 'Are you still there?' }]);

    const malformedAfter = await scrapeCounter(ts.server.httpUrl, 'relay_malformed_frames_total');
    expect(malformedAfter - malformedBefore).toBe(garbage.length + 1);
  });

  it('garbage on one call does not disturb another call streaming at the same time', async () => {
    const ts = await start({
      llm: {
        script: byLastMessage({
          'Tell me a story': { text: SLOW_STORY, delayMs: 40 },
          'Hello?': { text: ' Hello, caller A. ' },
        }),
      },
    });
    const a = await dial(ts);
    const b = await dial(ts);

    b.prompt('Tell me a story');
    await b.waitFor((m) => isText(m) && !m.last, 10_000);
    a.sendRaw('}{ garbage');
    a.sendRaw(Buffer.from([0xde, 0xad, 0xbe, 0xef]));
    a.sendJson({ type: 'dtmf', digit: '12' });

    const story = await b.nextReply(15_000);
    expect(b.messages.filter(isText).map((t) => t.token).join('')).toBe(SLOW_STORY);
    expect(story.tokens.at(-1)).toEqual({ type: 'text', token: '', last: true });
    a.prompt('Hello?');
    expect((await a.nextReply(10_000)).text).toBe(' Hello, caller A. ');
    expect(a.isOpen && b.isOpen).toBe(true);
    expect(ts.llm.requests.every((r) => !r.aborted)).toBe(true);
  });
});

describe('LLM failures and offline mode', () => {
  it('a persistently failing LLM makes the caller hear an apology; the call goes on once it recovers', async () => {
    let healthy = false;
    const ts = await start({
      llm: {
        script: () =>
          healthy
            ? { text: ' Back to normal. ' }
            : // retry-after-ms keeps the SDK's two retries quick.
              { status: 500, headers: { 'retry-after-ms': '20' } },
      },
    });
    const call = await dial(ts);

    call.prompt('Is anybody there?');
    const apology = await call.nextReply(15_000);
    expect(apology.text).toBe(llmFailureLine('en-US'));
    expect(apology.tokens.at(-1)?.last).toBe(true);
    expect(apology.tokens.filter((t) => t.last)).toHaveLength(1);
    // One request plus the SDK's two retries, all failed.
    expect(ts.llm.requests.map((r) => r.status)).toEqual([500, 500, 500]);
    expect(call.isOpen).toBe(true);

    healthy = true;
    call.prompt('Hello again');
    const reply = await call.nextReply(10_000);
    expectStreamedReply(reply.tokens, ' Back to normal. ');
    expect(dialogue(ts.llm.requests.at(-1)!.messages).filter((m) => m.role === 'user')).toEqual([
      { role: 'user', content: 'Is anybody there?' },
      { role: 'user', content: 'Hello again' },
    ]);
  });

  it('without OPENAI_API_KEY / OPENAI_BASE_URL the server answers in offline mode', async () => {
    const ts = await start({ config: { openaiApiKey: undefined, openaiBaseUrl: undefined } });
    expect(ts.server.llmMode).toBe('offline');
    const call = await dial(ts);

    const said = 'What can you do?';
    call.prompt(said);
    const reply = await call.nextReply(10_000);
    const expected = offlineAnswer([{ role: 'user', content: said }], 'en-US').text;
    expect(expected).toContain(said);
    expect(reply.text).toBe(expected);
    expect(reply.tokens.length).toBeGreaterThan(2);
    expect(reply.tokens.at(-1)).toEqual({ type: 'text', token: '', last: true });
    expect(ts.llm.requests).toHaveLength(0);
  });
});
