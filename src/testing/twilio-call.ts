// A whole incoming call as Twilio places it: the signed incoming-call webhook, then the socket its
// TwiML names (signed over that URL), with the TwiML's <Parameter>s (the callToken) in setup.
import { randomBytes } from 'node:crypto';
import { SimulatedCall, TEST_ACCOUNT_SID, twilioCallOptions, type SimulatedCallOptions } from './twilio-sim.js';
import { postIncomingCall } from './twilio-webhooks.js';

export interface PlaceCallOptions {
  /** Where the server's HTTP routes are, e.g. `http://127.0.0.1:8080`. */
  baseUrl: string;
  /** Sign the webhook and the upgrade as Twilio does. */
  authToken?: string;
  /** The public host Twilio knows the server by (PUBLIC_HOST): the webhook is signed over `https://<it>/twiml`. */
  publicHost?: string;
  /** The call's identity and any other socket option (defaults: random callSid, the test account). */
  call?: Partial<SimulatedCallOptions>;
}

export interface PlacedCall {
  call: SimulatedCall;
  /** The TwiML /twiml answered. */
  twiml: string;
}

export async function placeTwilioCall(opts: PlaceCallOptions): Promise<PlacedCall> {
  const { baseUrl, authToken, publicHost } = opts;
  const callSid = opts.call?.callSid ?? `CA${randomBytes(16).toString('hex')}`;
  // The same identity on the webhook and in setup, as on a real call.
  const identity = { accountSid: TEST_ACCOUNT_SID, from: '+15550100001', to: '+15550100002', ...opts.call, callSid };
  const twiml = await postIncomingCall(
    baseUrl,
    { CallSid: callSid, AccountSid: identity.accountSid, From: identity.from, To: identity.to },
    { authToken, ...(publicHost ? { signatureUrl: `https://${publicHost}/twiml` } : {}) },
  );
  const connectVia = baseUrl.replace(/^http/, 'ws');
  const call = await SimulatedCall.connect(twilioCallOptions(twiml, identity, { connectVia, authToken, ...opts.call }));
  return { call, twiml };
}
