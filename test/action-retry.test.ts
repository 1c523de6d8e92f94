// Twilio's retry of the <Connect action> callback: the connection-overrides fragment we write on the
// action URL (ACTION_URL_OVERRIDES), signature checks for a URL that carries it, and an /action that
// answers a repeated 64105 the same way, so a retried callback (also on a restarted process) resumes
// the call once. Real server in-process, real sockets; waits poll the session's state.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { SimulatedCall, twilioReconnectOptions, type SimulatedCallOptions } from '../src/testing/twilio-sim.js';
import { placeTwilioCall } from '../src/testing/twilio-call.js';
import { readRelayTwiml, type RelayTwiml } from '../src/testing/twiml-reader.js';
import { postAction, postIncomingCall, type ActionParams } from '../src/testing/twilio-webhooks.js';
import { loadConfig } from '../src/config.js';
import { DEFAULT_ACTION_URL_OVERRIDES } from '../src/server/connection-overrides.js';
import { lifecycleOf } from '../src/machines/session.js';
import { hashSecret, relayTicket } from '../src/server/resume-proof.js';
import { startFakeOpenAI } from '../src/testing/fake-openai-server.js';
import { startTestServer, tempSqlitePath, type TestServer } from './support/harness.js';
import { connectCall, waitUntil } from './support/conditions.js';

const TOKEN = 'test-auth-token-0123456789abcdef';
const HOST = 'relay.example.test';

const calls: SimulatedCall[] = [];
afterEach(async () => {
  await Promise.all(calls.splice(0).map((c) => c.drop()));
});

const lifecycle = (ts: TestServer, callSid: string) => {
  const snapshot = ts.server.manager.get(callSid)?.actor.getSnapshot();
  return snapshot ? lifecycleOf(snapshot.value) : undefined;
};
const resumesOf = (ts: TestServer, callSid: string) => ts.server.manager.get(callSid)?.actor.getSnapshot().context.resumes;

/** What Twilio posts after a dropped socket: 64105 with the call still in progress. */
const dropped = (call: Pick<SimulatedCall, 'callSid' | 'sessionId'>): ActionParams => ({
  CallSid: call.callSid,
  CallStatus: 'in-progress',
  SessionId: call.sessionId,
  SessionStatus: 'failed',
  ErrorCode: '64105',
  ErrorMessage: 'WebSocket ended',
});

/** The setup Twilio sends for reconnect TwiML (read already): same call, the TwiML's parameters. */
const reconnectWith = (call: SimulatedCall, twiml: RelayTwiml): SimulatedCallOptions => ({
  url: twiml.relayUrl!,
  callSid: call.callSid,
  accountSid: call.accountSid,
  callStatus: 'in-progress',
  customParameters: twiml.parameters,
});

/** Connects a call (as Twilio places it, signed, when `authToken` is given), drops its socket and waits until the session has noticed. */
async function droppedCall(ts: TestServer, authToken?: string): Promise<SimulatedCall> {
  const call = authToken
    ? (await placeTwilioCall({ baseUrl: ts.server.httpUrl, authToken, publicHost: HOST })).call
    : await connectCall(ts);
  calls.push(call);
  await call.drop();
  await waitUntil(() => lifecycle(ts, call.callSid) === 'disconnected', 'the session to notice the drop');
  return call;
}

describe('the action URL in TwiML carries the connection overrides', () => {
  const servers: TestServer[] = [];
  afterAll(() => Promise.all(servers.map((s) => s.close())));
  const start = async (actionUrlOverrides?: string) => {
    const ts = await startTestServer({ config: actionUrlOverrides === undefined ? {} : { actionUrlOverrides } });
    servers.push(ts);
    return ts;
  };

  it('by default: for new calls and in the reconnect TwiML', async () => {
    const ts = await start();
    const base = `http://127.0.0.1:${ts.server.port}/action`;
    const first = readRelayTwiml(await postIncomingCall(ts.server.httpUrl));
    expect(first.actionUrl).toBe(`${base}#${DEFAULT_ACTION_URL_OVERRIDES}`);
    expect(DEFAULT_ACTION_URL_OVERRIDES).toBe('rc=5&rp=ct,rt,5xx');

    // Posted to the URL exactly as written: the request drops the fragment and still reaches /action.
    const call = await droppedCall(ts);
    const res = await postAction(ts.server.httpUrl, dropped(call), { actionUrl: first.actionUrl });
    expect(res.status).toBe(200);
    const reconnect = readRelayTwiml(res.body);
    expect(reconnect.relayUrl).toBe(`${ts.server.relayUrl}/${relayTicket(reconnect.parameters.resumeToken!)}`);
    expect(reconnect.actionUrl).toBe(`${base}#${DEFAULT_ACTION_URL_OVERRIDES}`);
  });

  it('a custom value replaces the default; an empty one leaves the URL bare', async () => {
    const custom = await start('ct=1000&tt=8000&rc=2&rp=ct,5xx&e=ashburn');
    expect(readRelayTwiml(await postIncomingCall(custom.server.httpUrl)).actionUrl).toBe(
      `http://127.0.0.1:${custom.server.port}/action#ct=1000&tt=8000&rc=2&rp=ct,5xx&e=ashburn`,
    );
    const off = await start('');
    const bare = readRelayTwiml(await postIncomingCall(off.server.httpUrl)).actionUrl;
    expect(bare).toBe(`http://127.0.0.1:${off.server.port}/action`);
    const call = await droppedCall(off);
    expect(readRelayTwiml((await postAction(off.server.httpUrl, dropped(call), { actionUrl: bare })).body).actionUrl).toBe(bare);
  });
});

describe('signature checks on an action URL with a fragment', () => {
  let ts: TestServer;
  let actionUrl: string;
  beforeAll(async () => {
    ts = await startTestServer({ config: { twilioAuthToken: TOKEN, publicHost: HOST } });
    actionUrl = readRelayTwiml(
      await postIncomingCall(ts.server.httpUrl, {}, { authToken: TOKEN, signatureUrl: `https://${HOST}/twiml` }),
    ).actionUrl!;
  });
  afterAll(() => ts.close());


  it('accepts the callback signed over the URL as written in TwiML, and over it without the fragment', async () => {
    expect(actionUrl).toBe(`https://${HOST}/action#${DEFAULT_ACTION_URL_OVERRIDES}`);
    const call = await droppedCall(ts, TOKEN);
    const withFragment = await postAction(ts.server.httpUrl, dropped(call), { actionUrl, authToken: TOKEN });
    expect(withFragment.status).toBe(200);
    expect(readRelayTwiml(withFragment.body).relayUrl).toMatch(new RegExp(`^wss://${HOST}/relay/[\\w-]{43}$`));
    // The other reading of Twilio's docs: the fragment stripped before signing.
    const stripped = await postAction(ts.server.httpUrl, dropped(call), { actionUrl, authToken: TOKEN, signatureUrl: `https://${HOST}/action` });
    expect(stripped.status).toBe(200);
    expect(readRelayTwiml(stripped.body).relayUrl).toMatch(new RegExp(`^wss://${HOST}/relay/[\\w-]{43}$`));
  });

  it('refuses 403 an unsigned callback, another token, or a fragment other than ours', async () => {
    const call = await droppedCall(ts, TOKEN);
    const attempts = [
      await postAction(ts.server.httpUrl, dropped(call), { actionUrl }),
      await postAction(ts.server.httpUrl, dropped(call), { actionUrl, authToken: 'some-other-token' }),
      await postAction(ts.server.httpUrl, dropped(call), { actionUrl: `https://${HOST}/action#rc=1`, authToken: TOKEN }),
      await postAction(ts.server.httpUrl, dropped(call), { actionUrl, headers: { 'x-twilio-signature': 'AAAAAAAAAAAAAAAAAAAAAAAAAAA=' } }),
    ];
    expect(attempts.map((r) => r.status)).toEqual([403, 403, 403, 403]);
    // None of them touched the session.
    expect(lifecycle(ts, call.callSid)).toBe('disconnected');
  });

  it('with the overrides off, a signature over a fragment is refused', async () => {
    const off = await startTestServer({ config: { twilioAuthToken: TOKEN, publicHost: HOST, actionUrlOverrides: '' } });
    try {
      const params: ActionParams = { CallSid: 'CA00000000000000000000000000unknown', CallStatus: 'completed', SessionStatus: 'completed' };
      const bare = await postAction(off.server.httpUrl, params, { actionUrl: `https://${HOST}/action`, authToken: TOKEN });
      expect(bare.status).toBe(200);
      const fragment = await postAction(off.server.httpUrl, params, { actionUrl: `https://${HOST}/action#${DEFAULT_ACTION_URL_OVERRIDES}`, authToken: TOKEN });
      expect(fragment.status).toBe(403);
    } finally {
      await off.close();
    }
  });

  it('a retried 64105 gets reconnect TwiML both times, each with its own token, and the call resumes once', async () => {
    const call = await droppedCall(ts, TOKEN);
    const answers: string[] = [];
    for (let attempt = 0; attempt < 2; attempt++) {
      const res = await postAction(ts.server.httpUrl, dropped(call), { actionUrl, authToken: TOKEN });
      expect(res.status).toBe(200);
      answers.push(res.body);
      expect(lifecycle(ts, call.callSid)).toBe('grace');
    }
    const [first, second] = answers.map(readRelayTwiml) as [RelayTwiml, RelayTwiml];
    // Each answer has its own single-use token, on its own relay path; the rest is the same.
    expect({ ...second, parameters: {}, relayUrl: '' }).toEqual({ ...first, parameters: {}, relayUrl: '' });
    expect(second.parameters.resumeToken).toMatch(/^[\w-]{43}$/);
    expect(second.parameters.resumeToken).not.toBe(first.parameters.resumeToken);
    expect(first.relayUrl).toBe(`wss://${HOST}/relay/${relayTicket(first.parameters.resumeToken!)}`);
    // A retry counts no resume: only the socket Twilio opens does.
    expect(resumesOf(ts, call.callSid)).toBe(0);

    const via = ts.server.httpUrl.replace('http', 'ws');
    // Twilio acts on whichever answer reached it: the earlier one stays good, and the resume spends both.
    const resumed = await SimulatedCall.connect(twilioReconnectOptions(answers[0]!, call, { connectVia: via, authToken: TOKEN }));
    calls.push(resumed);
    await waitUntil(() => lifecycle(ts, call.callSid) === 'connected', 'the session to resume');
    expect(resumesOf(ts, call.callSid)).toBe(1);
    expect(ts.server.manager.get(call.callSid)?.actor.getSnapshot().context.sessionKeyHash).toBe(hashSecret(resumed.sessionId));
    const spent = await SimulatedCall.connect(twilioReconnectOptions(answers[1]!, call, { connectVia: via, authToken: TOKEN }));
    calls.push(spent);
    expect((await spent.closed).code).toBe(1008);
    expect(resumesOf(ts, call.callSid)).toBe(1);
    resumed.prompt('still there?');
    const replies = [];
    for (;;) {
      const reply = await resumed.nextReply(10_000);
      replies.push(reply.text);
      if (reply.text.includes('You said: still there?')) break;
    }
    expect(replies.join(' ')).toContain('You said: still there?');
  });
});

describe('a retried callback that meets a restarted process', () => {
  it('is answered by the new process from the stored session, and the call resumes there once', async () => {
    const sqlitePath = tempSqlitePath();
    const llm = await startFakeOpenAI();
    const first = await startTestServer({ config: { store: 'sqlite', sqlitePath }, sharedLlm: llm });
    let second: TestServer | undefined;
    let firstClosed = false;
    try {
      const actionUrl = readRelayTwiml(await postIncomingCall(first.server.httpUrl)).actionUrl!;
      const call = await droppedCall(first);
      // The first attempt is processed (session in grace, stored), but its answer never reaches Twilio.
      expect((await postAction(first.server.httpUrl, dropped(call), { actionUrl })).status).toBe(200);
      expect(lifecycle(first, call.callSid)).toBe('grace');
      await first.close();
      firstClosed = true;
      // While the process is down the callback meets a refused connection: what `rp=ct` retries.
      await expect(postAction(first.server.httpUrl, dropped(call), { actionUrl })).rejects.toThrow();

      second = await startTestServer({ config: { store: 'sqlite', sqlitePath }, sharedLlm: llm });
      const retried = await postAction(second.server.httpUrl, dropped(call), { actionUrl });
      expect(retried.status).toBe(200);
      const twiml = readRelayTwiml(retried.body);
      expect(twiml.relayUrl).toBe(`${second.server.relayUrl}/${relayTicket(twiml.parameters.resumeToken!)}`);
      expect(lifecycle(second, call.callSid)).toBe('grace');

      const resumed = await SimulatedCall.connect(reconnectWith(call, twiml));
      calls.push(resumed);
      await waitUntil(() => lifecycle(second!, call.callSid) === 'connected', 'the session to resume on the new process');
      expect(resumesOf(second, call.callSid)).toBe(1);
    } finally {
      await Promise.all(calls.splice(0).map((c) => c.drop()));
      if (!firstClosed) await first.close();
      await second?.close();
      await llm.close();
    }
  });
});

describe('ACTION_URL_OVERRIDES at start-up', () => {
  const load = (value: string | undefined) => loadConfig({ ACTION_URL_OVERRIDES: value }).actionUrlOverrides;

  it('defaults, takes a value with or without #, and turns off with an empty string', () => {
    expect(load(undefined)).toBe(DEFAULT_ACTION_URL_OVERRIDES);
    expect(load('#rc=3&rp=ct,5xx')).toBe('rc=3&rp=ct,5xx');
    expect(load('ct=100&rt=15000&tt=15000&rc=0&rp=all&e=sao-paulo')).toBe('ct=100&rt=15000&tt=15000&rc=0&rp=all&e=sao-paulo');
    expect(load('')).toBe('');
  });

  it.each([
    ['rc=6', /ACTION_URL_OVERRIDES="rc=6": rc \(retry count\) must be from 0 to 5/],
    ['rc=-1', /rc \(retry count\) must be a whole number from 0 to 5 \(got "-1"\)/],
    ['rp=ct,timeout', /rp \(retry policy\) must be a comma list of distinct 4xx, 5xx, ct, rt, all \(got "ct,timeout"\)/],
    ['rp=ct,ct', /rp \(retry policy\) must be a comma list of distinct/],
    ['ct=0', /ct \(connect timeout, ms\) must be from 100 to 10000/],
    ['rt=1.5', /rt \(read timeout, ms\) must be a whole number/],
    ['tt=20000', /tt \(total time, ms\) must be from 100 to 15000/],
    ['e=Ashburn!', /e \(edge\) must be an edge name/],
    ['rc=1&retries=3', /unknown key retries \(supported: ct, rt, tt, rc, rp, e\)/],
    ['rc=1&rc=2', /rc is given twice/],
    ['rc', /"rc" is not key=value/],
    ['rc=2&', /"" is not key=value/],
  ])('rejects %s with a clear message', (value, message) => {
    expect(() => load(value)).toThrow(message);
  });
});
