// The testing kit as a user sees it: only `relay-actors/testing` (src/testing/index.ts), the real
// `openai` SDK, and for the end-to-end test the real server, started the way the README shows.
import { afterEach, describe, expect, it } from 'vitest';
import OpenAI from 'openai';
import {
  lastUserText,
  placeTwilioCall,
  splitIntoChunks,
  startFakeOpenAI,
  type FakeOpenAI,
  type FakeOpenAIOptions,
} from '../src/testing/index.js';
import { loadConfig } from '../src/config.js';
import { startServer, type RunningServer } from '../src/server/server.js';

const started: Array<{ close(): Promise<unknown> }> = [];
afterEach(async () => {
  for (const c of started.splice(0).reverse()) await c.close();
});

async function fake(opts: FakeOpenAIOptions): Promise<{ llm: FakeOpenAI; client: OpenAI }> {
  const llm = await startFakeOpenAI(opts);
  started.push(llm);
  // maxRetries 0 unless a test is about retries: one request, one scripted turn.
  return { llm, client: new OpenAI({ apiKey: 'test', baseURL: llm.baseURL, maxRetries: 0 }) };
}

const user = (content: string): OpenAI.Chat.ChatCompletionMessageParam => ({ role: 'user', content });

/** Streams one completion and collects what the SDK hands over, delta by delta. */
async function streamed(client: OpenAI, body: Omit<OpenAI.Chat.ChatCompletionCreateParamsStreaming, 'model' | 'stream'>) {
  const stream = await client.chat.completions.create({ model: 'gpt-test', stream: true, ...body });
  const deltas: string[] = [];
  let finish: string | null = null;
  for await (const chunk of stream) {
    const choice = chunk.choices[0];
    if (choice?.delta.content) deltas.push(choice.delta.content);
    if (choice?.finish_reason) finish = choice.finish_reason;
  }
  return { deltas, text: deltas.join(''), finish };
}

const lookupOrder: OpenAI.Chat.ChatCompletionTool = {
  type: 'function',
  function: { name: 'lookup_order', parameters: { type: 'object', properties: {} } },
};

/** The assistant message the SDK's stream helper assembles from the streamed deltas. */
async function assembled(client: OpenAI, messages: OpenAI.Chat.ChatCompletionMessageParam[], tools?: OpenAI.Chat.ChatCompletionTool[]) {
  const final = await client.chat.completions.stream({ model: 'gpt-test', messages, ...(tools ? { tools } : {}) }).finalChatCompletion();
  return final.choices[0]!;
}

const failure = (p: Promise<unknown>) =>
  p.then(
    () => {
      throw new Error('expected the request to fail');
    },
    (err: unknown) => err as InstanceType<typeof OpenAI.APIError>,
  );

describe('scripted turns through the real openai SDK', () => {
  it('streams a text reply token by token', async () => {
    const { client } = await fake({ script: [{ reply: 'Hello there, how can I help you today?' }] });
    const { deltas, text, finish } = await streamed(client, { messages: [user('hi')] });
    expect(deltas).toEqual(['Hello', ' there,', ' how', ' can', ' I', ' help', ' you', ' today?']);
    expect(text).toBe('Hello there, how can I help you today?');
    expect(finish).toBe('stop');
  });

  it('streams a tool call that the SDK assembles: id, name and JSON arguments', async () => {
    const { client } = await fake({
      script: [{ toolCall: { id: 'call_order42', name: 'lookup_order', arguments: { id: '42', include: ['items', 'status'] } } }],
    });
    const choice = await assembled(client, [user('where is order 42?')], [lookupOrder]);
    expect(choice.finish_reason).toBe('tool_calls');
    expect(choice.message.content).toBeNull();
    const [call, ...more] = choice.message.tool_calls ?? [];
    expect(more).toEqual([]);
    expect(call).toMatchObject({ id: 'call_order42', type: 'function', function: { name: 'lookup_order' } });
    if (call?.type !== 'function') throw new Error('not a function call');
    expect(JSON.parse(call.function.arguments)).toEqual({ id: '42', include: ['items', 'status'] });
  });

  it('streams several tool calls after a text, each by its index, with random ids unless given', async () => {
    const { client } = await fake({
      script: [{ reply: 'One moment.', toolCalls: [{ name: 'a', arguments: { n: 1 } }, { name: 'b', arguments: '{"n":2}' }] }],
    });
    const { message } = await assembled(client, [user('x')]);
    expect(message.content).toBe('One moment.');
    const calls = (message.tool_calls ?? []).map((c) => (c.type === 'function' ? { id: c.id, ...c.function } : c));
    expect(calls).toEqual([
      { id: expect.stringMatching(/^call_/), name: 'a', arguments: '{"n":1}' },
      { id: expect.stringMatching(/^call_/), name: 'b', arguments: '{"n":2}' },
    ]);
  });

  it('answers requests with the turns in order, a function turn seeing the request', async () => {
    const { llm, client } = await fake({
      script: [
        { reply: 'first' },
        { reply: (req) => `You said ${lastUserText(req)}` },
        (req) => (req.tools?.length ? { toolCall: { name: 'lookup_order' } } : { reply: 'no tools' }),
      ],
    });
    expect((await streamed(client, { messages: [user('one')] })).text).toBe('first');
    expect((await streamed(client, { messages: [user('one'), { role: 'assistant', content: 'first' }, user('two')] })).text).toBe(
      'You said two',
    );
    const call = (await assembled(client, [user('three')], [lookupOrder])).message.tool_calls?.[0];
    expect(call?.type === 'function' && call.function).toEqual({ name: 'lookup_order', arguments: '{}' });
    expect(llm.requests.map(lastUserText)).toEqual(['one', 'two', 'three']);
  });

  it('records every request body: model, messages and tools as sent', async () => {
    const { llm, client } = await fake({ script: [{ reply: 'ok' }] });
    const tools: OpenAI.Chat.ChatCompletionTool[] = [
      { type: 'function', function: { name: 'lookup_order', description: 'Finds an order', parameters: { type: 'object', properties: { id: { type: 'string' } } } } },
    ];
    const messages: OpenAI.Chat.ChatCompletionMessageParam[] = [{ role: 'system', content: 'Be brief.' }, user('where is my order?')];
    await streamed(client, { messages, tools });
    expect(llm.requests).toHaveLength(1);
    expect(llm.requests[0]).toMatchObject({ model: 'gpt-test', stream: true, messages, tools, status: 200, completed: true });
  });

  it('fails a request past the end of the script at once: HTTP 500 naming the exhaustion, not retried', async () => {
    const { llm } = await fake({ script: [{ reply: 'only one' }] });
    // The SDK's default retries: the exhausted answer tells it not to.
    const client = new OpenAI({ apiKey: 'test', baseURL: llm.baseURL });
    expect((await streamed(client, { messages: [user('a')] })).text).toBe('only one');
    const err = await failure(streamed(client, { messages: [user('b')] }));
    expect(err).toBeInstanceOf(OpenAI.InternalServerError);
    expect(err.status).toBe(500);
    expect(err.code).toBe('script_exhausted');
    expect(err.message).toContain('the script ran out: request 2 has no turn (1 scripted)');
    expect(llm.requests.map((r) => r.status)).toEqual([200, 500]);
  });

  it('answers past the end of the script with the fallback turn when one is given', async () => {
    const { client } = await fake({ script: [{ reply: 'scripted' }], fallback: (req) => ({ reply: `fallback: ${lastUserText(req)}` }) });
    expect((await streamed(client, { messages: [user('a')] })).text).toBe('scripted');
    expect((await streamed(client, { messages: [user('b')] })).text).toBe('fallback: b');
    expect((await streamed(client, { messages: [user('c')] })).text).toBe('fallback: c');
  });

  it('answers an error turn with its status, which the SDK throws as an APIError', async () => {
    const { llm, client } = await fake({
      script: [{ error: 429 }, { error: { status: 503, message: 'overloaded' } }, { reply: 'fine now' }],
    });
    const limited = await failure(streamed(client, { messages: [user('a')] }));
    expect(limited).toBeInstanceOf(OpenAI.RateLimitError);
    expect(limited).toMatchObject({ status: 429, code: 'rate_limit_exceeded' });
    const down = await failure(streamed(client, { messages: [user('b')] }));
    expect(down).toBeInstanceOf(OpenAI.APIError);
    expect(down).toMatchObject({ status: 503 });
    expect(down.message).toContain('overloaded');
    expect((await streamed(client, { messages: [user('c')] })).text).toBe('fine now');
    expect(llm.requests.map((r) => r.status)).toEqual([429, 503, 200]);
  });

  it("lets the SDK's own retry take the next turn after a retryable error", async () => {
    const { llm } = await fake({ script: [{ error: { status: 500, headers: { 'retry-after-ms': '10' } } }, { reply: 'recovered' }] });
    const client = new OpenAI({ apiKey: 'test', baseURL: llm.baseURL, maxRetries: 1 });
    expect((await streamed(client, { messages: [user('a')] })).text).toBe('recovered');
    expect(llm.requests.map((r) => r.status)).toEqual([500, 200]);
  });

  it('refuses a malformed turn where the script is written', async () => {
    await expect(startFakeOpenAI({ script: [{ reply: 'ok' }, {}] })).rejects.toThrow('script turn 2: a turn needs reply, toolCall, toolCalls or error');
    await expect(startFakeOpenAI({ script: [{ error: 200 }] })).rejects.toThrow('script turn 1: error status must be 400-599');
    await expect(startFakeOpenAI({ script: [{ error: 500, reply: 'x' }] })).rejects.toThrow('an error turn cannot also reply');
  });
});

describe('a simulated Twilio call against the real server and a scripted LLM', () => {
  let server: RunningServer;

  async function startAgent(llm: FakeOpenAI): Promise<RunningServer> {
    // As the README shows: the server's OpenAI endpoint is the fake.
    const env = { PORT: '0', HOST: '127.0.0.1', STORE: 'memory', OPENAI_BASE_URL: llm.baseURL, OPENAI_API_KEY: 'test', LOG_LEVEL: 'silent' };
    server = await startServer(loadConfig(env));
    started.push(server);
    return server;
  }

  it('the caller hears the scripted reply streamed token by token, closed by last:true', async () => {
    const reply = 'Hello there, we are open from nine to five.';
    const { llm } = await fake({ script: [{ reply }] });
    await startAgent(llm);

    const { call } = await placeTwilioCall({ baseUrl: server.httpUrl });
    call.prompt('When are you open?');
    const heard = await call.nextReply();

    expect(heard.text).toBe(reply);
    expect(heard.tokens).toEqual([
      ...splitIntoChunks(reply).map((token) => ({ type: 'text', token, last: false })),
      { type: 'text', token: '', last: true },
    ]);
    expect(heard.tokens.length).toBeGreaterThan(3);
    // What the model was sent: the server's system prompt, the caller's words and the agent's tools.
    expect(llm.requests).toHaveLength(1);
    expect(llm.requests[0]!.messages[0]!.role).toBe('system');
    expect(lastUserText(llm.requests[0]!)).toBe('When are you open?');
    expect(llm.requests[0]!.tools?.length).toBeGreaterThan(0);
    expect(call.invalidFrames).toBe(0);
    await call.close();
  });

  it('a script that ran out fails the agent\'s LLM request once, not retried, and the caller hears about it', async () => {
    const { llm } = await fake({ script: [] });
    await startAgent(llm);
    const { call } = await placeTwilioCall({ baseUrl: server.httpUrl });
    call.prompt('Anyone there?');
    expect((await call.nextReply()).text).not.toBe('');
    expect(llm.requests.map((r) => r.status)).toEqual([500]);
    await call.close();
  });

  it('a scripted tool call drives the agent: keypad entry, then the tool result goes back to the model', async () => {
    const { llm } = await fake({
      script: [
        { toolCall: { name: 'collect_digits', arguments: { kind: 'phoneNumber' } } },
        {
          reply: (req) => {
            const result = req.messages.at(-1)!;
            return result.role === 'tool' ? `Thanks, I have ${JSON.parse(String(result.content)).value}.` : 'no tool result';
          },
        },
      ],
    });
    await startAgent(llm);

    const { call } = await placeTwilioCall({ baseUrl: server.httpUrl });
    call.prompt('I would like to give you my phone number.');
    // The agent asks for the number on the keypad (its own words, not the model's).
    await call.waitFor((m) => m.type === 'text' && m.last && /phone number/.test(m.token));
    call.digits('5550001234');
    expect((await call.nextReply()).text).toBe('Thanks, I have 5550001234.');
    expect(llm.requests).toHaveLength(2);
    expect(llm.requests[1]!.messages.at(-2)).toMatchObject({ role: 'assistant', tool_calls: [{ function: { name: 'collect_digits' } }] });
    await call.close();
  });
});
