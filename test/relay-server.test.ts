// createRelayServer (the package entry): options map onto the env app's config schema, so defaults
// and validation are the same; the server it starts answers a call with the agent it was given.
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { createRelayServer, defineAgent, defineTool } from '../src/index.js';
import { relayServerConfig } from '../src/server/relay-server.js';
import { placeTwilioCall, startFakeOpenAI } from '../src/testing/index.js';
import { z } from 'zod';

describe('relay server options', () => {
  it('no options: the same settings as an empty environment', () => {
    expect(relayServerConfig({})).toEqual(loadConfig({}));
  });

  it('the named options land on their settings; `advanced` reaches the rest', () => {
    const config = relayServerConfig({
      port: 0,
      host: '127.0.0.1',
      publicHost: 'relay.example.com',
      twilioAuthToken: 'token',
      openai: { apiKey: 'key', baseURL: 'http://127.0.0.1:9/v1', model: 'm', timeoutMs: 5 },
      store: 'redis',
      sqlitePath: '/tmp/x.db',
      redisUrl: 'redis://127.0.0.1:6390',
      timeouts: { graceMs: 1, retentionMs: 2, dtmfIdleMs: 3 },
      logLevel: 'silent',
      advanced: { maxSessions: 7, adminToken: 'admin', redisPrefix: 'p:' },
    });
    expect(config).toMatchObject({
      port: 0,
      host: '127.0.0.1',
      publicHost: 'relay.example.com',
      twilioAuthToken: 'token',
      openaiApiKey: 'key',
      openaiBaseUrl: 'http://127.0.0.1:9/v1',
      openaiModel: 'm',
      openaiTimeoutMs: 5,
      store: 'redis',
      sqlitePath: '/tmp/x.db',
      redisUrl: 'redis://127.0.0.1:6390',
      graceMs: 1,
      retentionMs: 2,
      dtmfIdleMs: 3,
      logLevel: 'silent',
      maxSessions: 7,
      adminToken: 'admin',
      redisPrefix: 'p:',
      workers: 1,
    });
  });

  it('validated as the environment is: a bad value, a misspelt option or a named setting under `advanced` throws', () => {
    expect(() => relayServerConfig({ port: 70_000 })).toThrow(/invalid configuration[\s\S]*port/);
    expect(() => relayServerConfig({ advanced: { adminToken: 'not ok!' } })).toThrow(/ADMIN_TOKEN may only use/);
    expect(() => relayServerConfig({ stor: 'memory' } as never)).toThrow('unknown relay server option(s): stor');
    expect(() => relayServerConfig({ advanced: { graceMs: 5, nope: 1 } as never })).toThrow('not an advanced setting (see RelayServerOptions): graceMs, nope');
  });
});

it('createRelayServer serves the agent it was given, and only port, URLs and close are public', async () => {
  const llm = await startFakeOpenAI({ script: [{ toolCall: { name: 'opening_hours', arguments: {} } }, { reply: (req) => `We are open ${String(req.messages.at(-1)!.content)}.` }] });
  const hours = defineTool({ name: 'opening_hours', description: 'Opening hours', parameters: z.object({}), run: () => 'nine to five' });
  const server = await createRelayServer({
    agent: defineAgent({ instructions: 'You answer questions about the shop.', tools: [hours] }),
    port: 0,
    host: '127.0.0.1',
    store: 'memory',
    openai: { baseURL: llm.baseURL, apiKey: 'test' },
    logLevel: 'silent',
  });
  try {
    expect(Object.keys(server).sort()).toEqual(['close', 'httpUrl', 'port', 'relayUrl']);
    expect(server.httpUrl).toBe(`http://127.0.0.1:${server.port}`);
    expect(server.relayUrl).toBe(`ws://127.0.0.1:${server.port}/relay`);
    const { call } = await placeTwilioCall({ baseUrl: server.httpUrl });
    call.prompt('When are you open?');
    expect((await call.nextReply()).text).toBe('We are open nine to five.');
    expect(llm.requests[0]!.messages[0]!.content).toMatch(/^You answer questions about the shop\./);
    await call.close();
  } finally {
    await server.close();
    await llm.close();
  }
});
