// /playground over HTTP: off unless PLAYGROUND is set, refused with PUBLIC_HOST unless forced, served
// with nothing from elsewhere, and its state view answers only with the call's own resumeKey and
// counts typed keys without showing them.
import { WebSocket } from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConversationRelayClient, type ClientOptions } from '../src/client/index.js';
import { loadConfig } from '../src/config.js';
import { startFakeOpenAI, type FakeOpenAI } from '../src/testing/fake-openai-server.js';
import type { PlaygroundView } from '../src/playground/view.js';
import { startTestServer, type TestServer } from './support/harness.js';
import { scenarioScript } from './support/resume-scenario.js';

let llm: FakeOpenAI;
let on: TestServer;
beforeAll(async () => {
  llm = await startFakeOpenAI({ script: scenarioScript() });
  on = await startTestServer({ sharedLlm: llm, config: { playground: '1' } });
});
afterAll(async () => {
  await on.close();
  await llm.close();
});

describe('/playground', () => {
  it('is off by default', async () => {
    const off = await startTestServer({ sharedLlm: llm });
    try {
      expect((await fetch(`${off.server.httpUrl}/playground`)).status).toBe(404);
      expect((await fetch(`${off.server.httpUrl}/playground/app.js`)).status).toBe(404);
    } finally {
      await off.close();
    }
  });

  it('PLAYGROUND=1 with PUBLIC_HOST is a configuration error; PLAYGROUND=force serves it anyway', () => {
    expect(() => loadConfig({ PLAYGROUND: '1', PUBLIC_HOST: 'relay.example.com' })).toThrow(/PLAYGROUND=1 is refused with PUBLIC_HOST/);
    expect(loadConfig({ PLAYGROUND: 'force', PUBLIC_HOST: 'relay.example.com' }).playground).toBe('force');
  });

  it('serves the page and its bundled script with nothing from elsewhere', async () => {
    const page = await fetch(`${on.server.httpUrl}/playground`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-security-policy')).toMatch(/default-src 'none'; script-src 'self'/);
    // The socket may only go to this server (CSP 3: 'self' covers its ws: and wss:).
    expect(page.headers.get('content-security-policy')).toContain("connect-src 'self';");
    const html = await page.text();
    const script = await fetch(`${on.server.httpUrl}/playground/app.js`);
    expect(script.headers.get('content-type')).toMatch(/javascript/);
    const js = await script.text();
    expect(js).toMatch(/ConversationRelayClient|relay/);
    // No CDN, font or other origin anywhere: the page works offline.
    for (const text of [html, js]) expect(text.match(/(https?:)?\/\/[a-z0-9.-]+\.[a-z]{2,}/gi) ?? []).toEqual([]);
    expect(html).toContain('<script type="module" src="/playground/app.js">');
  });

  it("its call view answers only with the call's resumeKey, and counts keys without showing them", async () => {
    const resumeKey = 'k'.repeat(32);
    const client = new ConversationRelayClient({
      url: on.server.relayUrl,
      WebSocket: WebSocket as unknown as ClientOptions['WebSocket'],
      customParameters: { resumeKey },
    });
    const replies: string[] = [];
    client.on('replyDone', ({ text }) => replies.push(text));
    await client.connect();
    try {
      const view = (key?: string) => fetch(`${on.server.httpUrl}/playground/calls/${client.callSid}`, key ? { headers: { 'x-resume-key': key } } : {});
      expect((await view()).status).toBe(404);
      expect((await view('wrong')).status).toBe(404);
      expect((await fetch(`${on.server.httpUrl}/playground/calls/CAnobody`, { headers: { 'x-resume-key': resumeKey } })).status).toBe(404);

      client.prompt('my phone number');
      await expect.poll(() => replies.length).toBe(1);
      for (const d of '5551') client.dtmf(d as '5');
      await expect.poll(async () => ((await (await view(resumeKey)).json()) as PlaygroundView).keypad?.entered).toBe(4);
      const text = await (await view(resumeKey)).text();
      const shown = JSON.parse(text) as PlaygroundView;
      expect(shown).toMatchObject({ link: 'connected', resumes: 0, keypad: { kind: 'phoneNumber', entered: 4 } });
      expect(text).not.toContain('5551');
    } finally {
      client.close();
    }
  });
});
