import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import OpenAI from 'openai';
import { startFakeOpenAI, type FakeOpenAI, echoScript } from '../src/testing/fake-openai-server.js';

describe('fake OpenAI server with the real openai SDK', () => {
  let fake: FakeOpenAI;
  let client: OpenAI;

  beforeAll(async () => {
    fake = await startFakeOpenAI();
    client = new OpenAI({ apiKey: 'test', baseURL: fake.baseURL, maxRetries: 0 });
  });
  afterEach(() => {
    fake.setScript(echoScript);
    fake.requests.length = 0;
  });
  afterAll(async () => {
    await fake.close();
  });

  it('streams text deltas that assemble to the scripted text', async () => {
    fake.setScript(() => ({ text: 'Hello there, how can I help you today?' }));
    const stream = await client.chat.completions.create({
      model: 'gpt-test',
      stream: true,
      messages: [{ role: 'user', content: 'hi' }],
    });
    const deltas: string[] = [];
    let finish: string | null = null;
    let role: string | undefined;
    for await (const chunk of stream) {
      expect(chunk.object).toBe('chat.completion.chunk');
      const choice = chunk.choices[0];
      if (!choice) continue;
      role ??= choice.delta.role;
      if (choice.delta.content) deltas.push(choice.delta.content);
      if (choice.finish_reason) finish = choice.finish_reason;
    }
    expect(deltas.length).toBeGreaterThan(3);
    expect(deltas.join('')).toBe('Hello there, how can I help you today?');
    expect(role).toBe('assistant');
    expect(finish).toBe('stop');
    expect(fake.requests).toHaveLength(1);
    expect(fake.requests[0]!.completed).toBe(true);
    expect(fake.requests[0]!.aborted).toBe(false);
  });

  it('default script echoes the last user message and records the history sent', async () => {
    const messages: OpenAI.Chat.ChatCompletionMessageParam[] = [
      { role: 'system', content: 'be brief' },
      { role: 'user', content: 'first' },
      { role: 'assistant', content: 'You said: first' },
      { role: 'user', content: 'second thing' },
    ];
    const stream = await client.chat.completions.create({ model: 'm', stream: true, messages });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
    expect(text).toBe('You said: second thing');
    expect(fake.requests[0]!.messages).toEqual(messages);
    expect(fake.requests[0]!.model).toBe('m');
    expect(fake.requests[0]!.stream).toBe(true);
  });

  it('uses exact chunks when given, and reports usage when asked', async () => {
    fake.setScript(() => ({ chunks: ['Hel', 'lo', ' ', 'world'] }));
    const stream = await client.chat.completions.create({
      model: 'm',
      stream: true,
      stream_options: { include_usage: true },
      messages: [{ role: 'user', content: 'x' }],
    });
    const deltas: string[] = [];
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const chunk of stream) {
      const c = chunk.choices[0]?.delta.content;
      if (c) deltas.push(c);
      if (chunk.usage) usage = chunk.usage;
    }
    expect(deltas).toEqual(['Hel', 'lo', ' ', 'world']);
    expect(usage?.total_tokens).toBeGreaterThan(0);
  });

  it('streams tool calls split across chunks; they assemble by index', async () => {
    const args0 = JSON.stringify({ city: 'San Francisco', unit: 'celsius', days: [1, 2, 3] });
    const args1 = JSON.stringify({ reason: 'caller asked for a human' });
    fake.setScript(() => ({
      toolCalls: [
        { name: 'get_weather', arguments: args0 },
        { name: 'transfer_call', arguments: args1 },
      ],
    }));
    const stream = await client.chat.completions.create({
      model: 'm',
      stream: true,
      messages: [{ role: 'user', content: 'weather?' }],
      tools: [
        { type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: {} } } },
        { type: 'function', function: { name: 'transfer_call', parameters: { type: 'object', properties: {} } } },
      ],
    });
    const calls: Array<{ id: string; name: string; args: string }> = [];
    let argChunks = 0;
    let finish: string | null = null;
    for await (const chunk of stream) {
      const choice = chunk.choices[0];
      if (!choice) continue;
      if (choice.finish_reason) finish = choice.finish_reason;
      for (const tc of choice.delta.tool_calls ?? []) {
        const slot = (calls[tc.index] ??= { id: '', name: '', args: '' });
        if (tc.id) slot.id = tc.id;
        if (tc.function?.name) slot.name += tc.function.name;
        if (tc.function?.arguments) {
          slot.args += tc.function.arguments;
          argChunks++;
        }
      }
    }
    expect(finish).toBe('tool_calls');
    expect(argChunks).toBeGreaterThan(4);
    expect(calls.map((c) => c.name)).toEqual(['get_weather', 'transfer_call']);
    expect(calls.every((c) => c.id.startsWith('call_'))).toBe(true);
    expect(JSON.parse(calls[0]!.args)).toEqual(JSON.parse(args0));
    expect(JSON.parse(calls[1]!.args)).toEqual(JSON.parse(args1));
    expect(fake.requests[0]!.tools).toHaveLength(2);
  });

  it("assembles tool calls with the SDK's own stream helper", async () => {
    fake.setScript(() => ({ toolCalls: [{ name: 'lookup', arguments: '{"orderId":"A-1234567890"}' }] }));
    const runner = client.chat.completions.stream({
      model: 'm',
      messages: [{ role: 'user', content: 'where is my order' }],
      tools: [{ type: 'function', function: { name: 'lookup', parameters: { type: 'object', properties: {} } } }],
    });
    const final = await runner.finalChatCompletion();
    const tc = final.choices[0]!.message.tool_calls![0]!;
    expect(tc.type).toBe('function');
    if (tc.type !== 'function') throw new Error('unreachable');
    expect(tc.function.name).toBe('lookup');
    expect(JSON.parse(tc.function.arguments)).toEqual({ orderId: 'A-1234567890' });
  });

  it('answers non-streaming requests with a chat.completion', async () => {
    fake.setScript(() => ({ text: 'plain answer' }));
    const res = await client.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'q' }] });
    expect(res.object).toBe('chat.completion');
    expect(res.choices[0]!.message.content).toBe('plain answer');
    expect(res.choices[0]!.finish_reason).toBe('stop');

    fake.setScript(() => ({ toolCalls: [{ name: 'f', arguments: '{"a":1}' }] }));
    const res2 = await client.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'q' }] });
    expect(res2.choices[0]!.message.content).toBeNull();
    expect(res2.choices[0]!.finish_reason).toBe('tool_calls');
    const tc = res2.choices[0]!.message.tool_calls![0]!;
    expect(tc.type === 'function' && tc.function.arguments).toBe('{"a":1}');
  });

  it('marks the request aborted when the client aborts mid-stream', async () => {
    fake.setScript(() => ({ text: 'one two three four five six seven eight nine ten', delayMs: 40 }));
    const controller = new AbortController();
    const stream = await client.chat.completions.create(
      { model: 'm', stream: true, messages: [{ role: 'user', content: 'count' }] },
      { signal: controller.signal },
    );
    let received = '';
    // The SDK's stream iterator ends quietly (no throw) when its signal aborts.
    for await (const chunk of stream) {
      received += chunk.choices[0]?.delta.content ?? '';
      if (received.includes('two')) controller.abort();
    }
    expect(controller.signal.aborted).toBe(true);
    const record = fake.requests[0]!;
    await expect.poll(() => record.aborted, { timeout: 2000 }).toBe(true);
    expect(record.completed).toBe(false);
    const sentAtAbort = record.chunksSent;
    await fake.idle(); // the handler noticed the client is gone and returned
    expect(record.chunksSent).toBe(sentAtAbort); // stopped writing
    expect(received).not.toContain('ten');
  });

  it('surfaces error statuses as SDK APIErrors', async () => {
    fake.setScript(() => ({ status: 500 }));
    const err = await client.chat.completions
      .create({ model: 'm', stream: true, messages: [{ role: 'user', content: 'x' }] })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(err).toBeInstanceOf(OpenAI.APIError);
    expect(err).toBeInstanceOf(OpenAI.InternalServerError);
    expect((err as InstanceType<typeof OpenAI.APIError>).status).toBe(500);

    fake.setScript(() => ({ status: 429, errorMessage: 'slow down' }));
    const err2 = await client.chat.completions
      .create({ model: 'm', messages: [{ role: 'user', content: 'x' }] })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(err2).toBeInstanceOf(OpenAI.RateLimitError);
    expect((err2 as InstanceType<typeof OpenAI.APIError>).message).toContain('slow down');
    expect((err2 as InstanceType<typeof OpenAI.APIError>).code).toBe('rate_limit_exceeded');
    expect(fake.requests.map((r) => r.status)).toEqual([500, 429]);
  });

  it('holds a stream after the given number of chunks until the test releases it', async () => {
    let release!: () => void;
    const until = new Promise<void>((resolve) => (release = resolve));
    fake.setScript(() => ({ chunks: ['a', 'b', 'c', 'd'], holdAfter: { chunks: 2, until } }));
    const stream = await client.chat.completions.create({ model: 'm', stream: true, messages: [{ role: 'user', content: 'x' }] });
    const received: string[] = [];
    const reading = (async () => {
      for await (const chunk of stream) if (chunk.choices[0]?.delta.content) received.push(chunk.choices[0].delta.content);
    })();
    await expect.poll(() => received).toEqual(['a', 'b']);
    // Held: the role delta and two content chunks went out, nothing else, and the request is still open.
    expect(fake.requests[0]).toMatchObject({ chunksSent: 3, completed: false });
    release();
    await reading;
    expect(received).toEqual(['a', 'b', 'c', 'd']);
    await fake.idle();
    expect(fake.requests[0]?.completed).toBe(true);
  });

  it('delays the first chunk when asked', async () => {
    fake.setScript(() => ({ text: 'late', firstChunkDelayMs: 200 }));
    const t0 = Date.now();
    const stream = await client.chat.completions.create({
      model: 'm',
      stream: true,
      messages: [{ role: 'user', content: 'x' }],
    });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
    expect(text).toBe('late');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(190);
  });
});
