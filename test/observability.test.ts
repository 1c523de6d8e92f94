// Metrics, admin session views and the Stately inspector relay, against the real server.
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import WebSocket from 'ws';
import { SimulatedCall } from '../src/testing/twilio-sim.js';
import { startTestServer, type TestServer } from './support/harness.js';

const ADMIN = 'admin-secret';

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

async function metricValue(baseUrl: string, name: string, labels: string): Promise<number> {
  const text = await (await fetch(`${baseUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`));
  return line ? Number(line.split(' ').at(-1)) : 0;
}


describe('metrics and admin views', () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer({
      config: { adminToken: ADMIN },
      llm: {
        script: ({ messages }) =>
          messages.some((m) => m.role === 'tool')
            ? { text: 'Thanks.' }
            : { toolCalls: [{ name: 'collect_digits', arguments: '{"kind":"phoneNumber"}' }] },
      },
    });
  });
  afterAll(async () => t?.close());

  it('exposes sessions by state, disconnects by code, first-token time and resumes in Prometheus format', async () => {
    const base = t.server.httpUrl;
    const call = await SimulatedCall.connect({ url: t.server.relayUrl, from: '+15551234567' });
    await expect.poll(() => metricValue(base, 'relay_sessions', 'state="connected"')).toBe(1);
    call.prompt('I want to give my phone number');
    await call.waitFor((m) => m.type === 'text' && m.last && /phone/i.test(m.token));
    const dropsBefore = await metricValue(base, 'relay_disconnects_total', 'code="1006"');
    await call.drop();
    await expect.poll(() => metricValue(base, 'relay_sessions', 'state="disconnected"')).toBe(1);
    expect(await metricValue(base, 'relay_disconnects_total', 'code="1006"')).toBe(dropsBefore + 1);

    // The same call resumes: same numbers (a resume naming other numbers is refused).
    const resumed = await SimulatedCall.connect({ url: t.server.relayUrl, callSid: call.callSid, sessionId: call.sessionId, from: call.setup.from, reconnection: true });
    await resumed.waitFor((m) => m.type === 'text' && /cut off/i.test(m.token));
    expect(await metricValue(base, 'relay_resumes_total', 'outcome="succeeded"')).toBe(1);
    expect(await metricValue(base, 'relay_resume_attempts_total', 'via="reconnection"')).toBe(1);
    const text = await (await fetch(`${base}/metrics`)).text();
    expect(text).toMatch(/relay_llm_first_token_seconds_count \d+/);
    expect(text).toMatch(/relay_restore_seconds_bucket/);
    await resumed.close();
  });

  it('protects /sessions with the admin token and redacts numbers and digits', async () => {
    const base = t.server.httpUrl;
    expect((await fetch(`${base}/sessions`)).status).toBe(401);
    expect((await fetch(`${base}/sessions`, { headers: { authorization: 'Bearer wrong' } })).status).toBe(401);

    const call = await SimulatedCall.connect({ url: t.server.relayUrl, from: '+15559876543' });
    call.prompt('phone number please');
    await call.waitFor((m) => m.type === 'text' && m.last && /phone/i.test(m.token));
    call.digits('5550001');
    const auth = { authorization: `Bearer ${ADMIN}` };
    const body = await vi.waitFor(async () => {
      const res = await fetch(`${base}/sessions/${call.callSid}`, { headers: auth });
      const text = await res.text();
      expect(res.status).toBe(200);
      expect(text).toContain('"digitsEntered":7');
      return text;
    }, 10_000);
    const view = JSON.parse(body) as { state: string; from: string; dtmf: { kind: string } };
    expect(view.state).toBe('connected');
    expect(view.from).toBe('********6543');
    expect(view.dtmf.kind).toBe('phoneNumber');
    expect(body).not.toContain('5550001');

    const list = (await (await fetch(`${base}/sessions`, { headers: auth })).json()) as Array<{ callSid: string }>;
    expect(list.map((s) => s.callSid)).toContain(call.callSid);
    expect((await fetch(`${base}/sessions/CAnope`, { headers: auth })).status).toBe(404);
    await call.close();
  });
});

describe('admin views without a token', () => {
  it('are disabled', async () => {
    const t = await startTestServer();
    try {
      expect((await fetch(`${t.server.httpUrl}/sessions`)).status).toBe(404);
    } finally {
      await t.close();
    }
  });
});

describe('Stately inspector relay (INSPECT=1)', () => {
  it('streams session actor events to inspector clients, without keypad digits', async () => {
    const inspectPort = await freePort();
    const t = await startTestServer({ config: { inspect: '1', inspectPort } });
    try {
      const received: string[] = [];
      // A browser-side inspector is just another client of the relay.
      const viewer = new WebSocket(`ws://localhost:${inspectPort}`);
      viewer.on('message', (data) => received.push(data.toString()));
      await new Promise<void>((resolve, reject) => {
        viewer.once('open', () => resolve());
        viewer.once('error', reject);
      });
      const call = await SimulatedCall.connect({ url: t.server.relayUrl });
      call.prompt('hello there');
      await call.nextReply();
      call.dtmf('7');
      await expect.poll(() => received.some((m) => m.includes('"DIGIT"'))).toBe(true);
      const all = received.join('\n');
      expect(all).toContain('@xstate.snapshot');
      expect(all).toContain(call.callSid);
      expect(all).toContain('hello there');
      expect(all).not.toMatch(/"digit":"7"/);
      viewer.close();
      await call.close();
    } finally {
      await t.close();
    }
  });
});
