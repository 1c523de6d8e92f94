// `npm run call`: plays a short scripted phone call (speech, keypad, barge-in) against a running server, the way Twilio would,
// and prints the transcript. RELAY_URL (ws://127.0.0.1:8080/relay) and BASE_URL (http://127.0.0.1:8080).
// With TWILIO_AUTH_TOKEN set, the webhook and the socket upgrade are signed.
import { randomBytes } from 'node:crypto';
import { SimulatedCall, twilioCallOptions, UpgradeRejectedError } from '../testing/twilio-sim.js';
import type { TextMessage } from '../protocol/messages.js';
import { postAction, postIncomingCall } from '../testing/twilio-webhooks.js';
import { readRelayTwiml, type RelayTwiml } from '../testing/twiml-reader.js';

const RELAY_URL = process.env.RELAY_URL ?? 'ws://127.0.0.1:8080/relay';
const BASE_URL = process.env.BASE_URL ?? 'http://127.0.0.1:8080';
const AUTH_TOKEN = process.env.TWILIO_AUTH_TOKEN || undefined;
const REPLY_TIMEOUT_MS = Number(process.env.REPLY_TIMEOUT_MS ?? 20_000);

const log = (line: string) => process.stderr.write(`[call] ${line}\n`);

function isConnRefused(err: unknown): boolean {
  const e = err as { code?: string; message?: string; errors?: unknown[]; cause?: unknown } | undefined;
  if (!e || typeof e !== 'object') return false;
  if (e.code === 'ECONNREFUSED' || /ECONNREFUSED/.test(e.message ?? '')) return true;
  // fetch wraps the socket error in `cause`; dual-stack connects wrap several in `errors`.
  return isConnRefused(e.cause) || (Array.isArray(e.errors) && e.errors.some(isConnRefused));
}

/** Waits for a complete agent reply if one starts within `firstTokenMs`. */
async function awaitReply(call: SimulatedCall, firstTokenMs: number): Promise<boolean> {
  let first: TextMessage;
  try {
    first = await call.waitFor((m): m is TextMessage => m.type === 'text', firstTokenMs);
  } catch {
    return false;
  }
  if (!first.last) {
    try {
      await call.nextReply(REPLY_TIMEOUT_MS);
    } catch (err) {
      log(`reply did not finish: ${(err as Error).message.split('\n')[0]}`);
    }
  }
  return true;
}

async function main(): Promise<number> {
  const callSid = `CA${randomBytes(16).toString('hex')}`;
  const accountSid = `AC${randomBytes(16).toString('hex')}`;
  let info: RelayTwiml = { parameters: {} };
  let twiml = '';

  // 1. The incoming-call webhook, as Twilio would post it (best effort: the socket is what matters).
  try {
    twiml = await postIncomingCall(BASE_URL, { CallSid: callSid, AccountSid: accountSid }, AUTH_TOKEN ? { authToken: AUTH_TOKEN } : {});
    info = readRelayTwiml(twiml);
    log(`TwiML ok${info.relayUrl ? ` (relay url ${info.relayUrl})` : ''}`);
  } catch (err) {
    if (isConnRefused(err)) {
      log(`cannot reach ${BASE_URL} (connection refused); trying the socket anyway`);
    } else {
      log(`incoming-call webhook failed: ${(err as Error).message}`);
    }
  }

  // 2. The socket at the TwiML's path (on RELAY_URL's host), with its parameters (a callToken when the
  // server checks signatures). Twilio signs the wss:// URL exactly as written in TwiML.
  const socket = info.relayUrl
    ? twilioCallOptions(twiml, { callSid, accountSid }, { connectVia: RELAY_URL, authToken: AUTH_TOKEN })
    : { url: RELAY_URL, callSid, accountSid, authToken: AUTH_TOKEN };
  let call: SimulatedCall;
  try {
    call = await SimulatedCall.connect(socket);
  } catch (err) {
    if (isConnRefused(err)) {
      console.error(`Cannot connect to ${RELAY_URL}: connection refused. Is the server running (npm start)?`);
    } else if (err instanceof UpgradeRejectedError) {
      console.error(`${err.message}${err.statusCode === 403 ? ' (signature check failed? set TWILIO_AUTH_TOKEN)' : ''}`);
    } else {
      console.error(`Cannot connect to ${RELAY_URL}: ${(err as Error).message}`);
    }
    return 1;
  }
  const started = Date.now();

  // 3. A welcome reply, if the server sends one (it may send nothing on setup: Twilio speaks the greeting).
  await awaitReply(call, 1500);

  // 4. A first question.
  call.prompt('Hi, what can you do?');
  if (!(await awaitReply(call, REPLY_TIMEOUT_MS))) log('no reply to the first question');

  // 5. Keypad: offer a phone number; when the agent asks for it on the keypad, type it (one dtmf frame per key).
  call.prompt('I would like to give you my phone number.');
  const keypadPrompt = await call
    .waitFor((m): m is TextMessage => m.type === 'text' && /enter|digit|marque/i.test(m.token), REPLY_TIMEOUT_MS)
    .catch(() => undefined);
  if (keypadPrompt) {
    call.digits('5550001234');
    log('typed a 10-digit phone number on the keypad');
    if (!(await awaitReply(call, REPLY_TIMEOUT_MS))) log('no reply after the keypad entry');
  } else {
    log('the agent did not ask for keypad input');
  }

  // 6. One more question; the caller barges in on the answer if it is still streaming.
  call.prompt('And are you open on weekends?');
  let interrupted = false;
  try {
    const token = await call.waitFor((m): m is TextMessage => m.type === 'text', REPLY_TIMEOUT_MS);
    const speakingSince = Date.now();
    if (!token.last) {
      // Let a little of the reply stream, then interrupt unless it already finished.
      await new Promise((r) => setTimeout(r, 150));
      const done = call.messages.slice(call.readCursor).some((m) => m.type === 'text' && m.last);
      if (!done) {
        const heard = [token, ...call.messages.slice(call.readCursor)]
          .map((m) => (m.type === 'text' ? m.token : ''))
          .join('');
        call.interrupt(heard, Date.now() - speakingSince);
        interrupted = true;
        // The server closes the talk cycle with last:true.
        await call.nextReply(3000).catch(() => log('no closing last:true after the interrupt'));
      } else {
        await call.nextReply(REPLY_TIMEOUT_MS);
      }
    }
  } catch (err) {
    log(`second reply: ${(err as Error).message.split('\n')[0]}`);
  }
  if (!interrupted) log('reply finished before the interrupt could land');

  // 7. Hang up.
  const sessionMs = Date.now() - started;
  const closeInfo = call.isOpen
    ? await Promise.race([call.close(1000), new Promise<undefined>((r) => setTimeout(r, 3000, undefined))])
    : call.closeInfo;
  if (!closeInfo) call.drop();
  log(`socket closed${closeInfo ? ` (${closeInfo.code})` : ' (forced)'}; ${call.invalidFrames} invalid frame(s)`);

  // 8. Twilio posts the <Connect action> callback when the session ends.
  if (info.actionUrl) {
    await postAction(
      BASE_URL,
      {
        CallSid: callSid,
        AccountSid: accountSid,
        CallStatus: 'completed',
        SessionId: call.sessionId,
        SessionStatus: 'completed',
        SessionDuration: String(Math.round(sessionMs / 1000)),
      },
      // As written in the TwiML (with Twilio's connection-overrides fragment): sent to its path on
      // BASE_URL without the fragment, signed the way Twilio signs it.
      { actionUrl: new URL(info.actionUrl, BASE_URL).toString(), ...(AUTH_TOKEN ? { authToken: AUTH_TOKEN } : {}) },
    ).catch((err: unknown) => log(`action callback failed: ${(err as Error).message}`));
  }

  for (const entry of call.transcript) {
    console.log(`${entry.role}: ${entry.text}${entry.interrupted ? ' [interrupted]' : ''}`);
  }
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  },
);
