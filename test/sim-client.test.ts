import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import { SimulatedCall, TEST_ACCOUNT_SID, UpgradeRejectedError } from '../src/testing/twilio-sim.js';
import { signWebSocketUrl } from '../src/testing/twilio-webhooks.js';

interface PeerConn {
  frames: Array<Record<string, unknown>>;
  headers: Record<string, string | string[] | undefined>;
  closed: Promise<{ code: number; reason: string }>;
}

/** A tiny ConversationRelay-ish peer: answers prompts with streamed text and a closing last:true. */
async function startPeer() {
  const conns: PeerConn[] = [];
  const wss = new WebSocketServer({
    port: 0,
    host: '127.0.0.1',
    verifyClient: (info, cb) => {
      if (info.req.url === '/forbidden') cb(false, 403, 'Forbidden');
      else cb(true);
    },
  });
  await new Promise<void>((r) => wss.once('listening', () => r()));
  wss.on('connection', (ws: WebSocket, req) => {
    const conn: PeerConn = {
      frames: [],
      headers: req.headers,
      closed: new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() }))),
    };
    conns.push(conn);
    const send = (o: unknown) => ws.send(JSON.stringify(o));
    ws.on('message', (data) => {
      const frame = JSON.parse(data.toString()) as Record<string, unknown>;
      conn.frames.push(frame);
      if (frame.type === 'setup') {
        send({ type: 'text', token: 'Welcome', last: false });
        send({ type: 'text', token: '!', last: true });
      } else if (frame.type === 'prompt' && frame.last === true) {
        const text = String(frame.voicePrompt);
        if (text === 'garbage') {
          send({ type: 'error', description: 'not a Twilio type' });
          ws.send('not json at all');
          send({ type: 'text', token: 'missing last' });
          send({ type: 'sendDigits', digits: 'abc' });
        }
        if (text === 'slow') {
          send({ type: 'text', token: 'This ', last: false });
          send({ type: 'text', token: 'will be ', last: false });
          setTimeout(() => send({ type: 'text', token: 'cut', last: false }), 100);
          return;
        }
        send({ type: 'text', token: 'You ', last: false });
        send({ type: 'text', token: 'said ', last: false });
        send({ type: 'text', token: text, last: false });
        send({ type: 'text', token: '', last: true });
        if (text === 'bye') send({ type: 'end', handoffData: '{"reason":"done"}' });
      } else if (frame.type === 'interrupt') {
        send({ type: 'text', token: '', last: true });
      }
    });
  });
  const port = (wss.address() as AddressInfo).port;
  return {
    url: `ws://127.0.0.1:${port}/relay`,
    port,
    conns,
    close: () =>
      new Promise<void>((r) => {
        for (const c of wss.clients) c.terminate();
        wss.close(() => r());
      }),
  };
}

describe('SimulatedCall against a real ws peer', () => {
  let peer: Awaited<ReturnType<typeof startPeer>>;
  beforeAll(async () => {
    peer = await startPeer();
  });
  afterAll(async () => {
    await peer.close();
  });

  it('sends a Twilio-shaped setup frame and the upgrade headers', async () => {
    const call = await SimulatedCall.connect({
      url: peer.url,
      from: '+15551230000',
      to: '+15559870000',
      customParameters: { tenant: 'acme' },
      headers: { 'X-Twilio-Signature': signWebSocketUrl('tok', 'wss://example.test/relay') },
    });
    await call.nextReply();
    const conn = peer.conns.at(-1)!;
    const setup = conn.frames[0]!;
    expect(setup).toMatchObject({
      type: 'setup',
      parentCallSid: '',
      from: '+15551230000',
      to: '+15559870000',
      forwardedFrom: '',
      callType: 'PSTN',
      callerName: '',
      direction: 'inbound',
      callStatus: 'RINGING',
      customParameters: { tenant: 'acme' },
    });
    expect(setup.sessionId).toMatch(/^VX[0-9a-f]{32}$/);
    expect(setup.callSid).toMatch(/^CA[0-9a-f]{32}$/);
    // One simulated account for every call, as a real Twilio account's sid is constant.
    expect(setup.accountSid).toBe(TEST_ACCOUNT_SID);
    expect(setup.accountSid).toMatch(/^AC[0-9a-f]{32}$/);
    expect(setup).not.toHaveProperty('reconnection');
    expect(setup.sessionId).toBe(call.sessionId);
    expect(setup.callSid).toBe(call.callSid);
    expect(conn.headers['x-twilio-signature']).toBe(signWebSocketUrl('tok', 'wss://example.test/relay'));
    await call.close();
  });

  it('sends reconnection: true with the given ids only when asked', async () => {
    const call = await SimulatedCall.connect({ url: peer.url, callSid: 'CA1', sessionId: 'VX1', reconnection: true });
    await call.nextReply();
    expect(peer.conns.at(-1)!.frames[0]).toMatchObject({
      type: 'setup',
      callSid: 'CA1',
      sessionId: 'VX1',
      reconnection: true,
      callStatus: 'IN-PROGRESS',
    });
    await call.close();
  });

  it('assembles replies with nextReply and keeps a transcript', async () => {
    const call = await SimulatedCall.connect({ url: peer.url });
    const welcome = await call.nextReply();
    expect(welcome.text).toBe('Welcome!');

    call.prompt('hello there');
    const reply = await call.nextReply();
    expect(reply.text).toBe('You said hello there');
    expect(reply.tokens.map((t) => t.token)).toEqual(['You ', 'said ', 'hello there', '']);
    expect(reply.tokens.at(-1)!.last).toBe(true);

    call.prompt('partial', { last: false }); // a partial prompt: no reply, not in the transcript
    call.prompt('bye', { lang: 'es-US' });
    expect((await call.nextReply()).text).toBe('You said bye');
    const end = await call.waitForType('end');
    expect(end.handoffData).toBe('{"reason":"done"}');
    expect(peer.conns.at(-1)!.frames.at(-1)).toEqual({ type: 'prompt', voicePrompt: 'bye', lang: 'es-US', last: true });

    // the same message is not matched twice from the cursor, but can be found again from the start
    await expect(call.waitForType('end', 100)).rejects.toThrow(/timed out after 100 ms[\s\S]*Received 0 message/);
    await expect(call.waitForType('end', { fromStart: true })).resolves.toMatchObject({ type: 'end' });

    expect(call.transcript).toEqual([
      { role: 'agent', text: 'Welcome!' },
      { role: 'caller', text: 'hello there' },
      { role: 'agent', text: 'You said hello there' },
      { role: 'caller', text: 'bye' },
      { role: 'agent', text: 'You said bye' },
    ]);
    expect(call.invalidFrames).toBe(0);
    await call.close();
  });

  it('sends dtmf, digits, interrupt and info frames in the protocol shape', async () => {
    const call = await SimulatedCall.connect({ url: peer.url });
    await call.nextReply();
    call.prompt('slow');
    await call.waitFor((m) => m.type === 'text' && m.token === 'will be ');
    call.interrupt('This will', '1234');
    expect((await call.nextReply()).tokens.at(-1)!.last).toBe(true);
    call.dtmf('5');
    call.digits('12#');
    call.info('agentSpeaking', 'off');
    // The late 'cut' token arrives after the interrupt closed the turn: it is not part of the transcript.
    await call.waitFor((m) => m.type === 'text' && m.token === 'cut');
    const frames = peer.conns.at(-1)!.frames;
    await expect.poll(() => frames.slice(2)).toEqual([
      { type: 'interrupt', utteranceUntilInterrupt: 'This will', durationUntilInterruptMs: '1234' },
      { type: 'dtmf', digit: '5' },
      { type: 'dtmf', digit: '1' },
      { type: 'dtmf', digit: '2' },
      { type: 'dtmf', digit: '#' },
      { type: 'info', name: 'agentSpeaking', value: 'off' },
    ]);
    expect(call.transcript.slice(1)).toEqual([
      { role: 'caller', text: 'slow' },
      { role: 'agent', text: 'This will be ', interrupted: true },
    ]);
    await call.close();
  });

  it('counts invalid outbound frames instead of throwing', async () => {
    const call = await SimulatedCall.connect({ url: peer.url });
    await call.nextReply();
    call.prompt('garbage');
    expect((await call.nextReply()).text).toBe('You said garbage');
    expect(call.invalidFrames).toBe(4);
    expect(call.invalidRaw).toContain('not json at all');
    expect(call.messages.every((m) => m.type === 'text')).toBe(true);
    await call.close();
  });

  it('sendRaw delivers bytes as-is', async () => {
    const call = await SimulatedCall.connect({ url: peer.url, sendSetup: false });
    expect(call.sendRaw('{"type":"prompt","voicePrompt":"raw","lang":"en-US","last":true}')).toBe(true);
    expect((await call.nextReply()).text).toBe('You said raw');
    expect(peer.conns.at(-1)!.frames).toHaveLength(1);
    await call.close();
  });

  it('close() is a clean 1000 on the server; drop() is an abnormal 1006', async () => {
    const a = await SimulatedCall.connect({ url: peer.url });
    await a.nextReply();
    const connA = peer.conns.at(-1)!;
    expect(await a.close()).toMatchObject({ code: 1000 });
    expect((await connA.closed).code).toBe(1000);
    expect(a.prompt('after close')).toBe(false);

    const b = await SimulatedCall.connect({ url: peer.url });
    await b.nextReply();
    const connB = peer.conns.at(-1)!;
    const pending = b.waitForType('end', 5000).then(
      () => 'resolved',
      (e: Error) => e.message,
    );
    expect((await b.drop()).code).toBe(1006);
    expect((await connB.closed).code).toBe(1006);
    expect(await pending).toMatch(/socket closed \(1006\)/);
  });

  it('rejects clearly when the upgrade is refused or nothing listens', async () => {
    await expect(SimulatedCall.connect({ url: `ws://127.0.0.1:${peer.port}/forbidden` })).rejects.toSatisfy(
      (e: unknown) => e instanceof UpgradeRejectedError && e.statusCode === 403,
    );
    const free = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    await new Promise<void>((r) => free.once('listening', () => r()));
    const port = (free.address() as AddressInfo).port;
    await new Promise<void>((r) => free.close(() => r()));
    await expect(SimulatedCall.connect({ url: `ws://127.0.0.1:${port}/relay` })).rejects.toMatchObject({
      code: 'ECONNREFUSED',
    });
  });
});
