// TwiML for incoming calls and resumes, and the X-Twilio-Signature checks on webhooks and on the
// WebSocket upgrade, against the real server over loopback.
import { once } from 'node:events';
import { connect } from 'node:net';
import { Writable } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../src/server/logger.js';
import { loadConfig } from '../src/config.js';
import { startServer } from '../src/server/server.js';
import { SimulatedCall, twilioCallOptions, twilioReconnectOptions, UpgradeRejectedError, type SimulatedCallOptions } from '../src/testing/twilio-sim.js';
import { placeTwilioCall } from '../src/testing/twilio-call.js';
import { readRelayTwiml } from '../src/testing/twiml-reader.js';
import { postAction, postIncomingCall, postTwilioForm, signTwilioRequest, signWebSocketUrl, WebhookHttpError } from '../src/testing/twilio-webhooks.js';
import { startTestServer, type TestServer } from './support/harness.js';
import { connectCall, scrapeCounter } from './support/conditions.js';
import { expectedResumeLine } from './support/resume-scenario.js';
import { child, parseXml, type XmlElement } from './support/xml.js';
import { DEFAULT_ACTION_URL_OVERRIDES } from '../src/server/connection-overrides.js';
import { hashSecret, relayTicket } from '../src/server/resume-proof.js';

const TOKEN = 'test-auth-token-0123456789abcdef';
const HOST = 'relay.example.test';
const WSS_URL = `wss://${HOST}/relay`;

const calls: SimulatedCall[] = [];
afterEach(async () => {
  await Promise.all(calls.splice(0).map((c) => c.drop()));
});

/** Checks the `<Response><Connect action><ConversationRelay ...>` shape and returns the relay element. */
function expectConversationRelay(twiml: string, origin: { ws: string; http: string }): XmlElement {
  const response = parseXml(twiml);
  expect(response.name).toBe('Response');
  expect(response.children.map((c) => c.name)).toEqual(['Connect']);
  const connect = child(response, 'Connect');
  // With Twilio's connection overrides as the fragment (test/action-retry.test.ts covers them).
  expect(connect.attributes.action).toBe(`${origin.http}/action#${DEFAULT_ACTION_URL_OVERRIDES}`);
  expect(connect.children.map((c) => c.name)).toEqual(['ConversationRelay']);
  const relay = child(connect, 'ConversationRelay');
  // `/relay`, or `/relay/<ticket>` binding the socket to the TwiML's token (signatures on).
  expect(relay.attributes.url).toMatch(new RegExp(`^${origin.ws.replaceAll('.', '\\.')}/relay(/[A-Za-z0-9_-]{43})?$`));
  expect(relay.attributes).toMatchObject({
    language: 'en-US',
    dtmfDetection: 'true',
    interruptible: 'any',
  });
  // Removed from ConversationRelay; Twilio rejects it now.
  expect(relay.attributes).not.toHaveProperty('interruptByDtmf');
  // Twilio signs the socket URL as written: no query string (data goes in <Parameter>).
  expect(relay.attributes.url).not.toContain('?');
  const languages = relay.children.filter((c) => c.name === 'Language');
  expect(languages.map((l) => l.attributes.code).sort()).toEqual(['en-US', 'es-US']);
  const spanish = languages.find((l) => l.attributes.code === 'es-US')!;
  expect(spanish.attributes.ttsProvider).toBeTruthy();
  expect(spanish.attributes.voice).toMatch(/^es-US/);
  expect(spanish.attributes.transcriptionProvider).toBeTruthy();
  return relay;
}

describe('TwiML without signature checks', () => {
  let ts: TestServer;
  beforeAll(async () => {
    ts = await startTestServer({ config: { welcomeGreeting: 'Hello & welcome to "Relay" <test>!' } });
  });
  afterAll(() => ts.close());

  it('POST /twiml answers <Connect action><ConversationRelay> pointing back at this host', async () => {
    const twiml = await postIncomingCall(ts.server.httpUrl);
    const host = `127.0.0.1:${ts.server.port}`;
    const relay = expectConversationRelay(twiml, { ws: `ws://${host}`, http: `http://${host}` });
    expect(relay.attributes.welcomeGreeting).toBe('Hello & welcome to "Relay" <test>!');
    expect(relay.attributes.url).toBe(ts.server.relayUrl);
  });

  it('a proxy that terminates TLS (X-Forwarded-Proto: https) gets wss:// and https:// URLs', async () => {
    const twiml = await postIncomingCall(ts.server.httpUrl, {}, { headers: { 'x-forwarded-proto': 'https' } });
    const host = `127.0.0.1:${ts.server.port}`;
    expectConversationRelay(twiml, { ws: `wss://${host}`, http: `https://${host}` });
  });
});

describe('with TWILIO_AUTH_TOKEN and PUBLIC_HOST', () => {
  let ts: TestServer;
  beforeAll(async () => {
    ts = await startTestServer({ config: { twilioAuthToken: TOKEN, publicHost: HOST } });
  });
  afterAll(() => ts.close());

  const signed = (path: string) => ({ authToken: TOKEN, signatureUrl: `https://${HOST}${path}` });

  it('a correctly signed incoming-call webhook gets TwiML for the public host, with a callToken on its own relay path', async () => {
    const twiml = await postIncomingCall(ts.server.httpUrl, {}, signed('/twiml'));
    const relay = expectConversationRelay(twiml, { ws: `wss://${HOST}`, http: `https://${HOST}` });
    const { parameters } = readRelayTwiml(twiml);
    expect(parameters.callToken).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(relay.attributes.url).toBe(`${WSS_URL}/${relayTicket(parameters.callToken!)}`);
  });

  it('unsigned or wrongly signed webhooks get 403', async () => {
    const url = `${ts.server.httpUrl}/twiml`;
    const form = { CallSid: 'CA0001', AccountSid: 'AC0001', From: '+15550100001', To: '+15550100002' };
    const attempts = [
      await postTwilioForm(url, form),
      await postTwilioForm(url, form, { authToken: 'some-other-token', signatureUrl: `https://${HOST}/twiml` }),
      // Signed for the loopback URL instead of the public https URL Twilio uses.
      await postTwilioForm(url, form, { authToken: TOKEN }),
      // A valid signature for different parameters (tampered body).
      await postTwilioForm(url, form, {
        headers: { 'x-twilio-signature': signTwilioRequest(TOKEN, `https://${HOST}/twiml`, { ...form, From: '+15550199999' }) },
      }),
    ];
    expect(attempts.map((r) => r.status)).toEqual([403, 403, 403, 403]);
    await expect(postIncomingCall(ts.server.httpUrl)).rejects.toBeInstanceOf(WebhookHttpError);

    const ok = await postTwilioForm(url, form, { authToken: TOKEN, signatureUrl: `https://${HOST}/twiml` });
    expect(ok.status).toBe(200);
  });

  it('a webhook URL with a query string is validated with that query string', async () => {
    // Twilio signs the full configured URL, query included.
    const path = '/twiml?tenant=acme&line=2';
    const ok = await postTwilioForm(`${ts.server.httpUrl}${path}`, { CallSid: 'CA0002' }, signed(path));
    expect(ok.status).toBe(200);
    const stripped = await postTwilioForm(`${ts.server.httpUrl}${path}`, { CallSid: 'CA0002' }, signed('/twiml'));
    expect(stripped.status).toBe(403);
  });

  it('a WebSocket upgrade without a valid signature is refused with HTTP 403 before the upgrade; a socket off a ticket path gets 404', async () => {
    const ticketPath = `/relay/${relayTicket('some-token')}`;
    const wssUrl = `${WSS_URL.replace('/relay', '')}${ticketPath}`;
    const attempts: Array<Record<string, string>> = [
      {},
      { 'X-Twilio-Signature': signWebSocketUrl('some-other-token', wssUrl) },
      // https:// instead of the wss:// URL written in TwiML.
      { 'X-Twilio-Signature': signWebSocketUrl(TOKEN, `https://${HOST}${ticketPath}`) },
      { 'X-Twilio-Signature': signWebSocketUrl(TOKEN, `${ts.server.relayUrl}/${relayTicket('some-token')}`) },
      // Signed for another ticket's path.
      { 'X-Twilio-Signature': signWebSocketUrl(TOKEN, `${WSS_URL}/${relayTicket('another-token')}`) },
    ];
    const rejection = (url: string, headers: Record<string, string>) =>
      SimulatedCall.connect({ url, headers }).then(
        (call) => {
          calls.push(call);
          return new Error('upgrade unexpectedly accepted');
        },
        (e: unknown) => e,
      );
    for (const headers of attempts) {
      const err = await rejection(`${ts.server.relayUrl}/${relayTicket('some-token')}`, headers);
      expect(err).toBeInstanceOf(UpgradeRejectedError);
      expect((err as UpgradeRejectedError).statusCode).toBe(403);
    }
    // With signatures on, every socket comes at the path its TwiML named: the bare path (whose signature
    // was the same for every socket, for ever) and malformed paths are not there.
    for (const path of ['/relay', '/relay/short', `/relay/${relayTicket('x')}/more`]) {
      const err = await rejection(`${ts.server.httpUrl.replace('http', 'ws')}${path}`, { 'X-Twilio-Signature': signWebSocketUrl(TOKEN, `wss://${HOST}${path}`) });
      expect((err as UpgradeRejectedError).statusCode).toBe(404);
    }
    expect(ts.server.manager.size).toBe(0);
  });

  it('a request target that is not a path (absolute-form, malformed) is refused and the server stays up', async () => {
    for (const target of ['http://[', 'http://a:b/relay', '//relay']) {
      const socket = connect(ts.server.port, '127.0.0.1');
      socket.write(`GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`);
      const [answer] = (await once(socket, 'data')) as [Buffer];
      expect(answer.toString()).toMatch(/^HTTP\/1\.1 40\d/);
      socket.destroy();
    }
    expect((await fetch(`${ts.server.httpUrl}/healthz`)).status).toBe(200);
  });

  const place = (call: Partial<SimulatedCallOptions> = {}) =>
    placeTwilioCall({ baseUrl: ts.server.httpUrl, authToken: TOKEN, publicHost: HOST, call }).then((placed) => {
      calls.push(placed.call);
      return placed;
    });
  const via = () => ts.server.httpUrl.replace('http', 'ws');

  it('a WebSocket upgrade signed for the wss:// URL in TwiML, with its callToken, is accepted and the call works', async () => {
    const { call } = await place();
    call.prompt('Hello');
    const reply = await call.nextReply(10_000);
    expect(reply.text).toBe('You said: Hello');
  });

  it('a replayed upgrade signature opens nothing: no call without a callToken issued for its callSid, each token once', async () => {
    const refusedBefore = await scrapeCounter(ts.server.httpUrl, 'relay_calls_refused_total');
    const requestsBefore = ts.llm.requests.length;
    const { call: genuine, twiml } = await place();
    const { parameters, relayUrl } = readRelayTwiml(twiml);
    const spent = twilioCallOptions(twiml, { callSid: genuine.callSid }, { connectVia: via(), authToken: TOKEN });
    const attempts: SimulatedCallOptions[] = [
      // The genuine call's upgrade and token replayed, for its own callSid (spent) and for another one,
      // without its token or with a made-up one.
      spent,
      { ...spent, callSid: 'CA00000000000000000000000000000fake' },
      { ...spent, callSid: 'CA00000000000000000000000000000fak2', customParameters: {} },
      { ...spent, callSid: 'CA00000000000000000000000000000fak4', customParameters: { callToken: 'made-up' } },
      // Its captured upgrade, as one of our own clients' resumes (the sessionId every callback names): no proof here.
      { ...spent, sessionId: genuine.sessionId, reconnection: true, customParameters: {} },
    ];
    for (const attempt of attempts) {
      const attacker = await SimulatedCall.connect(attempt);
      calls.push(attacker);
      expect(await attacker.closed).toMatchObject({ code: 1008 });
      expect(attacker.messages).toEqual([]);
    }
    // The plain relay URL's signature (what every socket carried before tickets) no longer opens anything.
    await expect(SimulatedCall.connect({ url: ts.server.relayUrl, authToken: TOKEN, signedUrl: WSS_URL, customParameters: parameters })).rejects.toMatchObject({ statusCode: 404 });
    // A token from a replayed webhook is of no use either: its relay path needs a signature only Twilio can make.
    const replayed = await postIncomingCall(ts.server.httpUrl, { CallSid: 'CA00000000000000000000000000000fak3' }, signed('/twiml'));
    const stolen = twilioCallOptions(replayed, { callSid: 'CA00000000000000000000000000000fak3' }, { connectVia: via(), headers: { 'X-Twilio-Signature': signWebSocketUrl(TOKEN, relayUrl!) } });
    await expect(SimulatedCall.connect(stolen)).rejects.toMatchObject({ statusCode: 403 });

    // The replays naming the genuine call are refused resumes (its session exists); the other three are refused calls.
    expect(await scrapeCounter(ts.server.httpUrl, 'relay_calls_refused_total')).toBe(refusedBefore + 3);
    expect(ts.server.manager.get('CA00000000000000000000000000000fake')).toBeUndefined();
    expect(ts.llm.requests.length).toBe(requestsBefore);
    // The genuine call never noticed.
    genuine.prompt('Still here');
    expect((await genuine.nextReply(10_000)).text).toBe('You said: Still here');
  });

  it('the incoming-call webhook of a call that already connected is refused (409); before that, a retry gets a fresh token', async () => {
    const callSid = 'CA0000000000000000000000000000retry';
    const first = await postIncomingCall(ts.server.httpUrl, { CallSid: callSid }, signed('/twiml'));
    const retried = await postIncomingCall(ts.server.httpUrl, { CallSid: callSid }, signed('/twiml'));
    expect(readRelayTwiml(retried).parameters.callToken).not.toBe(readRelayTwiml(first).parameters.callToken);
    // The retry's TwiML is the one Twilio acts on; the first one's token was replaced.
    const stale = await SimulatedCall.connect(twilioCallOptions(first, { callSid }, { connectVia: via(), authToken: TOKEN }));
    calls.push(stale);
    expect(await stale.closed).toMatchObject({ code: 1008 });
    const call = await SimulatedCall.connect(twilioCallOptions(retried, { callSid }, { connectVia: via(), authToken: TOKEN }));
    calls.push(call);
    call.prompt('Hi');
    expect((await call.nextReply(10_000)).text).toBe('You said: Hi');
    const replay = await postTwilioForm(`${ts.server.httpUrl}/twiml`, { CallSid: callSid }, signed('/twiml'));
    expect(replay.status).toBe(409);
  });

  it('/action after a dropped socket (64105, in-progress) answers fresh ConversationRelay TwiML', async () => {
    const { call } = await place();
    await call.drop();
    const linkState = () => ts.server.manager.get(call.callSid)?.actor.getSnapshot().value;
    await expect.poll(() => JSON.stringify(linkState()).includes('"disconnected"'), { timeout: 10_000, message: 'the session to notice the drop' }).toBe(true);

    const params = { CallSid: call.callSid, CallStatus: 'in-progress', ErrorCode: '64105', SessionId: call.sessionId, SessionStatus: 'failed' };
    const unsigned = await postAction(ts.server.httpUrl, params);
    expect(unsigned.status).toBe(403);

    const res = await postAction(ts.server.httpUrl, params, signed('/action'));
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('xml');
    const relay = expectConversationRelay(res.body, { ws: `wss://${HOST}`, http: `https://${HOST}` });
    // A resumed call is not greeted again.
    expect(relay.attributes).not.toHaveProperty('welcomeGreeting');
    expect(JSON.stringify(linkState())).toContain('"grace"');

    // Twilio opens the new socket: new sessionId, same callSid; the session continues.
    // Twilio hands the TwiML's <Parameter>s (the single-use resume token) over in setup.customParameters.
    // Only on the relay path of its own token, which Twilio signs.
    await expect(SimulatedCall.connect(twilioReconnectOptions(res.body, call, { url: ts.server.relayUrl, authToken: TOKEN, signedUrl: WSS_URL }))).rejects.toMatchObject({ statusCode: 404 });
    expect(relay.attributes.url).toBe(`${WSS_URL}/${relayTicket(readRelayTwiml(res.body).parameters.resumeToken!)}`);
    const resumed = await SimulatedCall.connect(twilioReconnectOptions(res.body, call, { connectVia: via(), authToken: TOKEN }));
    calls.push(resumed);
    await expect.poll(() => JSON.stringify(linkState()).includes('"connected"'), { timeout: 10_000, message: 'the session to resume' }).toBe(true);
    expect(ts.server.manager.get(call.callSid)?.actor.getSnapshot().context.sessionKeyHash).toBe(hashSecret(resumed.sessionId));
  });

  it("a signed callback naming the call's own socket while our side still holds it (half-open TCP) moves the call on at once", async () => {
    const { call } = await place();
    call.prompt('Hello');
    expect((await call.nextReply(10_000)).text).toBe('You said: Hello');
    // Twilio has closed the socket (it posts the callback after), but no close reached us.
    const params = { CallSid: call.callSid, CallStatus: 'in-progress', ErrorCode: '64105', SessionId: call.sessionId, SessionStatus: 'failed' };
    const res = await postAction(ts.server.httpUrl, params, signed('/action'));
    expect(res.body).toContain('<ConversationRelay');
    expect((await call.closed).code).toBe(1001);
    const resumed = await SimulatedCall.connect(twilioReconnectOptions(res.body, call, { connectVia: via(), authToken: TOKEN }));
    calls.push(resumed);
    expect((await resumed.nextReply(10_000)).text).toBe(expectedResumeLine('en-US'));
  });

  it('/action after a handoff dials the agent line when HANDOFF_NUMBER is set, else hangs up', async () => {
    const withLine = await startTestServer({ config: { handoffNumber: '+15550009999' } });
    try {
      const params = { CallSid: 'CA00000000000000000000000000handoff', CallStatus: 'in-progress', SessionStatus: 'ended', HandoffData: '{"reason":"caller asked"}' };
      const dial = parseXml((await postAction(withLine.server.httpUrl, params)).body);
      expect(dial.children.map((c) => c.name)).toEqual(['Dial']);
      expect(JSON.stringify(dial.children[0])).toContain('+15550009999');
      const noHandoff = parseXml((await postAction(withLine.server.httpUrl, { ...params, HandoffData: '' })).body);
      expect(noHandoff.children.map((c) => c.name)).toEqual(['Hangup']);
    } finally {
      await withLine.close();
    }
    const res = await postAction(
      ts.server.httpUrl,
      { CallSid: 'CA00000000000000000000000000handoff', CallStatus: 'in-progress', SessionStatus: 'ended', HandoffData: '{}' },
      signed('/action'),
    );
    expect(parseXml(res.body).children.map((c) => c.name)).toEqual(['Hangup']);
  });

  it('/action for an unknown call answers Hangup', async () => {
    const res = await postAction(
      ts.server.httpUrl,
      { CallSid: 'CA00000000000000000000000000unknown', CallStatus: 'in-progress', ErrorCode: '64105' },
      signed('/action'),
    );
    expect(res.status).toBe(200);
    const response = parseXml(res.body);
    expect(response.name).toBe('Response');
    expect(response.children.map((c) => c.name)).toContain('Hangup');
    expect(response.children.map((c) => c.name)).not.toContain('Connect');
    expect(response.children.at(-1)?.name).toBe('Hangup');
  });
});

describe('secure by default', () => {
  it('refuses to start on a public host without TWILIO_AUTH_TOKEN, naming the fix', async () => {
    // Refused before anything is opened (no store, no port).
    const config = loadConfig({}, { port: 0, host: '127.0.0.1', store: 'memory', publicHost: HOST });
    await expect(startServer(config, { logger: createLogger('silent') })).rejects.toThrow(/PUBLIC_HOST is set but TWILIO_AUTH_TOKEN is not[\s\S]*VALIDATE_SIGNATURES=false/);
  });

  it('starts with VALIDATE_SIGNATURES=false said explicitly, and logs a warning naming the risk', async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(chunk.toString('utf8'));
        done();
      },
    });
    const ts = await startTestServer({ config: { publicHost: HOST, validateSignatures: 'false' }, logger: createLogger('info', sink) });
    try {
      const warning = lines.map((l) => JSON.parse(l) as { level: number; msg: string }).find((l) => l.msg.startsWith('VALIDATE_SIGNATURES=false'));
      expect(warning?.level).toBe(40);
      expect(warning?.msg).toMatch(/take it over/);
      // Unprotected as asked: an unsigned incoming call is served.
      expect(await postIncomingCall(ts.server.httpUrl)).toContain('<ConversationRelay');
    } finally {
      await ts.close();
    }
  });
});
