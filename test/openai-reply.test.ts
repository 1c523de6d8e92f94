// The LLM edge reads the streamed body itself (eventsource-parser) behind the real openai SDK, which
// still makes the request. These tests serve exact SSE bytes from a loopback HTTP server, split
// wherever the network might split them, and check what the reply actor sends its session.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import zlib from 'node:zlib';
import OpenAI from 'openai';
import { afterEach, describe, expect, it } from 'vitest';
import { createActor, setup, type AnyEventObject } from 'xstate';
import { resolveAgent } from '../src/agent/agent.js';
import { createOpenAIReplyActor } from '../src/llm/openai-reply.js';
import type { ReplyEvent, ReplyInput } from '../src/llm/types.js';

const agent = resolveAgent();
const input: ReplyInput = {
  turns: [{ role: 'user', content: 'hello' }],
  call: { callSid: 'CA1', language: 'en-US', from: '+15550001111', to: '+15550002222', customParameters: {} },
};

const servers: http.Server[] = [];
afterEach(async () => {
  await Promise.all(
    servers.splice(0).map((s) => {
      const closed = new Promise((resolve) => s.close(resolve));
      s.closeAllConnections(); // the SDK's pooled keep-alive connections
      return closed;
    }),
  );
});

/**
 * Answers every request with `status` and writes `pieces` one by one, each in its own TCP write; a
 * function among them is waited for before the next piece (to hold the stream at a chosen point).
 */
async function sseServer(pieces: Array<string | Buffer | (() => Promise<unknown>)>, status = 200, headers: Record<string, string> = {}): Promise<string> {
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', async () => {
      res.writeHead(status, { 'content-type': status === 200 ? 'text/event-stream' : 'application/json', ...headers });
      for (const piece of pieces) {
        if (typeof piece === 'function') {
          await piece();
          continue;
        }
        res.write(piece);
        await new Promise((resolve) => setImmediate(resolve));
      }
      res.end();
    });
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
}

const chunk = (delta: object) => `data: ${JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', created: 0, model: 'm', choices: [{ index: 0, delta }] })}\n\n`;

/** Runs the reply actor under a parent that records what it is sent, until the reply ends. */
async function reply(baseURL: string, events: ReplyEvent[] = []): Promise<ReplyEvent[]> {
  const client = new OpenAI({ apiKey: 'test-key', baseURL, maxRetries: 0 });
  const parent = setup({ actors: { llm: createOpenAIReplyActor({ client, agent }) } }).createMachine({
    invoke: { id: 'llm', src: 'llm', input },
    on: { '*': { actions: ({ event }: { event: AnyEventObject }) => events.push(event as ReplyEvent) } },
  });
  const actor = createActor(parent).start();
  await expect.poll(() => events.some((e) => e.type === 'LLM.DONE' || e.type === 'LLM.ERROR')).toBe(true);
  actor.stop();
  return events;
}

/** The tokens streamed, in order, whether they came one per event or several (LLM.DELTAS). */
function deltaTexts(events: ReplyEvent[]): string[] {
  return events.flatMap((e) => (e.type === 'LLM.DELTA' ? [e.text] : e.type === 'LLM.DELTAS' ? [...e.texts] : []));
}

describe('the OpenAI reply actor reads the SSE body', () => {
  it('whatever way the bytes are split: lines cut mid-way, CRLF endings, comments, an event name', async () => {
    const body = [chunk({ role: 'assistant', content: '' }), chunk({ content: 'Hello' }), chunk({ content: ' there,' }), ': keep-alive\n\n', chunk({ content: ' caller.' })].join('');
    const crlf = body.replaceAll('\n', '\r\n').replace('data: {"id":"c1"', 'event: message\r\ndata: {"id":"c1"');
    const pieces = [crlf.slice(0, 7), crlf.slice(7, 101), crlf.slice(101, 102), crlf.slice(102), 'data: [DONE]\r\n\r\n'];
    const events = await reply(await sseServer(pieces));
    expect(deltaTexts(events)).toEqual(['Hello', ' there,', ' caller.']);
    expect(events.at(-1)).toMatchObject({ type: 'LLM.DONE', text: 'Hello there, caller.', toolCalls: [] });
  });

  it('the deltas of one read reach the session as one event, in order; a lone delta as LLM.DELTA', async () => {
    const together = [chunk({ content: 'One' }), chunk({ content: ' two' }), chunk({ content: ' three.' })].join('');
    const events: ReplyEvent[] = [];
    // The last delta is written only once the first three have arrived, so it comes in a read of its own.
    const firstRead = () => expect.poll(() => deltaTexts(events).length).toBe(3);
    await reply(await sseServer([together, firstRead, chunk({ content: ' Four.' }), 'data: [DONE]\n\n']), events);
    expect(events.filter((e) => e.type === 'LLM.DELTA' || e.type === 'LLM.DELTAS')).toEqual([
      { type: 'LLM.DELTAS', texts: ['One', ' two', ' three.'] },
      { type: 'LLM.DELTA', text: ' Four.' },
    ]);
    expect(events.at(-1)).toMatchObject({ type: 'LLM.DONE', text: 'One two three. Four.' });
  });

  it('assembles tool calls split across chunks, by index, and parses the first against the tools', async () => {
    const pieces = [
      chunk({ tool_calls: [{ index: 0, id: 'call_a', type: 'function', function: { name: 'collect_', arguments: '' } }] }),
      chunk({ tool_calls: [{ index: 0, function: { name: 'digits', arguments: '{"kind":' } }] }),
      chunk({ tool_calls: [{ index: 0, function: { arguments: '"phoneNumber"}' } }] }),
      'data: [DONE]\n\n',
    ];
    const events = await reply(await sseServer(pieces));
    const done = events.at(-1) as Extract<ReplyEvent, { type: 'LLM.DONE' }>;
    expect(done.toolCalls).toEqual([{ id: 'call_a', name: 'collect_digits', arguments: '{"kind":"phoneNumber"}' }]);
    expect(done.toolCall).toMatchObject({ id: 'call_a', name: 'collect_digits' });
  });

  it('an error object in the stream ends the reply as the SDK would word it, with what streamed before it', async () => {
    const pieces = [chunk({ content: 'Let me ' }), `data: ${JSON.stringify({ error: { message: 'The model is overloaded', type: 'server_error' } })}\n\n`, chunk({ content: 'never' })];
    const events = await reply(await sseServer(pieces));
    expect(deltaTexts(events)).toEqual(['Let me ']);
    expect(events.at(-1)).toEqual({ type: 'LLM.ERROR', message: 'The model is overloaded', text: 'Let me ' });
    // In the same read as the error, deltas before it still reach the session, and count as said.
    const sameRead = await reply(await sseServer([pieces.slice(0, 2).join('')]));
    expect(deltaTexts(sameRead)).toEqual(['Let me ']);
    expect(sameRead.at(-1)).toEqual({ type: 'LLM.ERROR', message: 'The model is overloaded', text: 'Let me ' });
  });

  it('an OpenAI-compatible server failing mid-stream another way (an error event, a body-level error object) is an error too', async () => {
    const asEvent = await reply(await sseServer([chunk({ content: 'Let me ' }), `event: error\ndata: ${JSON.stringify({ message: 'overloaded' })}\n\n`]));
    expect(asEvent.at(-1)).toMatchObject({ type: 'LLM.ERROR', message: 'overloaded', text: 'Let me ' });
    const asObject = await reply(await sseServer([`data: ${JSON.stringify({ object: 'error', message: 'model not loaded', type: 'BadRequestError', code: 400 })}\n\n`]));
    expect(asObject).toEqual([{ type: 'LLM.ERROR', message: 'model not loaded', text: '' }]);
    // A usage chunk (no choices) is still a chunk.
    const usage = await reply(await sseServer([chunk({ content: 'Hi.' }), `data: ${JSON.stringify({ id: 'c1', choices: [], usage: { total_tokens: 3 } })}\n\n`, 'data: [DONE]\n\n']));
    expect(usage.at(-1)).toMatchObject({ type: 'LLM.DONE', text: 'Hi.' });
  });

  it('nothing after [DONE] counts', async () => {
    const events = await reply(await sseServer([chunk({ content: 'Done.' }), 'data: [DONE]\n\n', chunk({ content: ' Extra.' })]));
    expect(events.at(-1)).toMatchObject({ type: 'LLM.DONE', text: 'Done.' });
  });

  it('data that is not JSON is an error, not a crash', async () => {
    const events = await reply(await sseServer([chunk({ content: 'Hi' }), 'data: {not json\n\n']));
    expect(events.at(-1)).toMatchObject({ type: 'LLM.ERROR', text: 'Hi' });
  });

  it('a body the server compressed though not asked to is read as fetch read it; a coding it cannot read is an error, not a silent reply', async () => {
    const packed = zlib.gzipSync(chunk({ content: 'Hello' }) + chunk({ content: ' there.' }) + 'data: [DONE]\n\n');
    const gzipped = await reply(await sseServer([packed.subarray(0, 25), packed.subarray(25)], 200, { 'content-encoding': 'gzip' }));
    expect(gzipped.at(-1)).toMatchObject({ type: 'LLM.DONE', text: 'Hello there.' });
    const unknown = await reply(await sseServer([chunk({ content: 'Hi' })], 200, { 'content-encoding': 'x-custom' }));
    expect(unknown).toEqual([{ type: 'LLM.ERROR', message: 'the LLM answered in a content coding that cannot be read: x-custom', text: '' }]);
    const error = await reply(await sseServer([zlib.gzipSync(JSON.stringify({ error: { message: 'Incorrect API key provided.' } }))], 401, { 'content-encoding': 'gzip' }));
    expect(error).toEqual([{ type: 'LLM.ERROR', message: '401 Incorrect API key provided.', text: '' }]);
  });

  it('an error status is the SDK\'s status error', async () => {
    const events = await reply(await sseServer([JSON.stringify({ error: { message: 'Incorrect API key provided.', type: 'invalid_request_error' } })], 401));
    expect(events).toEqual([{ type: 'LLM.ERROR', message: '401 Incorrect API key provided.', text: '' }]);
  });
});
