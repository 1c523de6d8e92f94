// What Twilio POSTs to us: the incoming-call webhook and the <Connect action> callback,
// form-encoded and (when an auth token is given) signed with X-Twilio-Signature.
import { randomBytes } from 'node:crypto';
import twilio from 'twilio';

export type FormParams = Record<string, string>;

export interface WebhookOptions {
  /** When set, the request carries `X-Twilio-Signature` computed with this token. */
  authToken?: string;
  /** Path on `baseUrl` (defaults: /twiml and /action). */
  path?: string;
  /**
   * The URL Twilio would have signed (the public https:// URL configured in Twilio, e.g. behind
   * a proxy), as written, fragment included. Defaults to the URL actually requested.
   */
  signatureUrl?: string;
  /** Extra headers. */
  headers?: Record<string, string>;
}

export interface WebhookResponse {
  status: number;
  body: string;
  headers: Headers;
}

export class WebhookHttpError extends Error {
  override name = 'WebhookHttpError';
  constructor(
    readonly status: number,
    readonly body: string,
    url: string,
  ) {
    super(`POST ${url} answered HTTP ${status}: ${body.slice(0, 300)}`);
  }
}

const sid = (prefix: string) => prefix + randomBytes(16).toString('hex');

/**
 * X-Twilio-Signature for a request Twilio would make to `url` with `params`. Twilio signs "the exact
 * URL your application supplied" (twilio.com/docs/usage/webhooks/webhooks-security); its docs do not
 * say whether a connection-overrides fragment (`#rc=5&...`) is stripped first, so like twilio-node we
 * sign the URL as given, fragment and all. Our server accepts either reading.
 */
export function signTwilioRequest(authToken: string, url: string, params: FormParams = {}): string {
  return twilio.getExpectedTwilioSignature(authToken, url, params);
}

/**
 * The X-Twilio-Signature header for a WebSocket upgrade: Twilio signs the wss:// URL exactly as
 * written in TwiML, with no params.
 */
export function signWebSocketUrl(authToken: string, wssUrl: string): string {
  return twilio.getExpectedTwilioSignature(authToken, wssUrl, {});
}

function joinUrl(baseUrl: string, path: string): string {
  return baseUrl.replace(/\/+$/, '') + (path.startsWith('/') ? path : `/${path}`);
}

/** The URL the HTTP request goes to: a fragment (connection overrides) is never sent. */
function withoutFragment(url: string): string {
  const target = new URL(url);
  target.hash = '';
  return target.toString();
}

/** POSTs form params the way Twilio does; never throws on HTTP status. */
export async function postTwilioForm(
  url: string,
  params: FormParams,
  opts: Omit<WebhookOptions, 'path'> = {},
): Promise<WebhookResponse> {
  const headers: Record<string, string> = {
    'content-type': 'application/x-www-form-urlencoded; charset=utf-8',
    'user-agent': 'TwilioProxy/1.1',
    accept: '*/*',
    ...(opts.headers ?? {}),
  };
  if (opts.authToken !== undefined) {
    headers['x-twilio-signature'] = signTwilioRequest(opts.authToken, opts.signatureUrl ?? url, params);
  }
  const res = await fetch(withoutFragment(url), { method: 'POST', headers, body: new URLSearchParams(params).toString() });
  return { status: res.status, body: await res.text(), headers: res.headers };
}

export interface IncomingCallParams {
  CallSid?: string;
  AccountSid?: string;
  From?: string;
  To?: string;
  [extra: string]: string | undefined;
}

function compact(params: Record<string, string | undefined>): FormParams {
  const out: FormParams = {};
  for (const [k, v] of Object.entries(params)) if (v !== undefined) out[k] = v;
  return out;
}

/** The incoming-call webhook (POST /twiml by default). Resolves with the TwiML text; throws on non-2xx. */
export async function postIncomingCall(
  baseUrl: string,
  params: IncomingCallParams = {},
  opts: WebhookOptions = {},
): Promise<string> {
  const url = joinUrl(baseUrl, opts.path ?? '/twiml');
  const form = compact({
    CallSid: sid('CA'),
    AccountSid: sid('AC'),
    From: '+15550100001',
    To: '+15550100002',
    CallStatus: 'ringing',
    Direction: 'inbound',
    ApiVersion: '2010-04-01',
    ...params,
  });
  const res = await postTwilioForm(url, form, opts);
  if (res.status < 200 || res.status >= 300) throw new WebhookHttpError(res.status, res.body, url);
  return res.body;
}

export interface ActionParams {
  CallSid: string;
  /** e.g. 'in-progress' after a dropped socket, 'completed' when the caller hung up. */
  CallStatus?: string;
  AccountSid?: string;
  From?: string;
  To?: string;
  SessionId?: string;
  /** completed (caller hung up), ended (we sent `end`), failed (error). */
  SessionStatus?: string;
  SessionDuration?: string;
  HandoffData?: string;
  ErrorCode?: string;
  ErrorMessage?: string;
  [extra: string]: string | undefined;
}

export interface ActionOptions extends WebhookOptions {
  /**
   * The `<Connect action>` URL exactly as written in the TwiML, connection-overrides fragment
   * included. The request goes to its path (and query) on `baseUrl`, without the fragment, and is
   * signed over this URL as Twilio signs it (unless `signatureUrl` says otherwise).
   */
  actionUrl?: string;
}

/**
 * The `<Connect action>` callback (POST /action by default). Resolves with status and body
 * (TwiML when the server resumes the call); never throws on HTTP status.
 */
export async function postAction(
  baseUrl: string,
  params: ActionParams,
  opts: ActionOptions = {},
): Promise<WebhookResponse> {
  const { actionUrl, ...rest } = opts;
  const written = actionUrl === undefined ? undefined : new URL(actionUrl);
  const url = joinUrl(baseUrl, opts.path ?? (written ? written.pathname + written.search : '/action'));
  const signatureUrl = rest.signatureUrl ?? actionUrl;
  const signing: WebhookOptions = { ...rest, ...(signatureUrl !== undefined ? { signatureUrl } : {}) };
  const form = compact({
    AccountSid: sid('AC'),
    From: '+15550100001',
    To: '+15550100002',
    Direction: 'inbound',
    ApiVersion: '2010-04-01',
    CallStatus: 'completed',
    ...params,
  });
  return postTwilioForm(url, form, signing);
}
