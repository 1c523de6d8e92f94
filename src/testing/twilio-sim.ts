// A simulated Twilio ConversationRelay peer: it opens the WebSocket the way Twilio does, sends the
// same frames (setup, prompt, dtmf, interrupt, info, error) and validates everything the server sends.
// It is the stand-in for Twilio in tests, `npm run call` and the benchmark: no test-framework imports.
import { randomBytes } from 'node:crypto';
import WebSocket from 'ws';
import { outboundMessage, type OutboundMessage, type TextMessage } from '../protocol/messages.js';
import { readRelayTwiml } from './twiml-reader.js';
import { signWebSocketUrl } from './twilio-webhooks.js';

export interface SimulatedCallOptions {
  url: string;
  callSid?: string;
  sessionId?: string;
  /** A Twilio account's sid is the same for all its calls: TEST_ACCOUNT_SID unless given. */
  accountSid?: string;
  from?: string;
  to?: string;
  customParameters?: Record<string, string>;
  /** Extra upgrade headers, e.g. `X-Twilio-Signature`. */
  headers?: Record<string, string>;
  /** Sign the upgrade as Twilio does (`X-Twilio-Signature` over `signedUrl`) with this auth token. */
  authToken?: string;
  /** The wss URL Twilio signs: as written in TwiML, which may name a public host `url` reaches locally. Default: `url`. */
  signedUrl?: string;
  /** Resume an existing session (non-Twilio clients): sends `reconnection: true` in setup. */
  reconnection?: boolean;
  /** Defaults to 'RINGING', or 'IN-PROGRESS' for a reconnection. */
  callStatus?: string;
  /** Send the setup frame right after the socket opens (default true). */
  sendSetup?: boolean;
  /** Timeout for the socket to open (default 5000 ms). */
  connectTimeoutMs?: number;
}

export interface SetupFrame {
  type: 'setup';
  sessionId: string;
  callSid: string;
  accountSid: string;
  parentCallSid: string;
  from: string;
  to: string;
  forwardedFrom: string;
  callType: string;
  callerName: string;
  direction: string;
  callStatus: string;
  customParameters: Record<string, string>;
  reconnection?: true;
}

export interface TranscriptEntry {
  role: 'caller' | 'agent';
  text: string;
  /** Agent turn cut short by an interrupt: `text` is what had been received when the caller barged in. */
  interrupted?: boolean;
}

export interface WaitOptions {
  timeoutMs?: number;
  /** Search every message received so far instead of starting at the read cursor. */
  fromStart?: boolean;
}

/** One agent reply as the caller heard it: its `text` frames up to the closing `last: true`, and their tokens joined. */
export interface AgentReply {
  text: string;
  tokens: TextMessage[];
}

export interface CloseInfo {
  code: number;
  reason: string;
}

/** Thrown by `connect` when the upgrade is refused (e.g. 403 on a bad signature). */
export class UpgradeRejectedError extends Error {
  override name = 'UpgradeRejectedError';
  constructor(
    readonly statusCode: number,
    url: string,
  ) {
    super(`WebSocket upgrade to ${url} rejected with HTTP ${statusCode}`);
  }
}

export const DEFAULT_WAIT_MS = 5000;

const sid = (prefix: string) => prefix + randomBytes(16).toString('hex');

/** The simulated Twilio account every call belongs to unless told otherwise. */
export const TEST_ACCOUNT_SID = 'AC00000000000000000000000000007e57';

export interface TwimlSocketOptions extends Partial<SimulatedCallOptions> {
  /**
   * Where the server really listens (e.g. `ws://127.0.0.1:8080`) when the TwiML names its public host:
   * the socket goes there, to the TwiML URL's path, and is signed over the URL as written.
   */
  connectVia?: string;
}

/**
 * What Twilio does with `<Connect><ConversationRelay>` TwiML: opens the socket it names (signed over
 * that URL when `authToken` is given) for the call, with a new sessionId, handing every `<Parameter>`
 * over in customParameters.
 */
export function twilioCallOptions(
  twiml: string,
  call: Pick<SimulatedCallOptions, 'callSid' | 'accountSid' | 'from' | 'to'>,
  extra: TwimlSocketOptions = {},
): SimulatedCallOptions {
  const { relayUrl, parameters } = readRelayTwiml(twiml);
  if (!relayUrl) throw new Error(`TwiML without <ConversationRelay url>: ${twiml}`);
  const { connectVia, ...rest } = extra;
  const url = connectVia ? new URL(new URL(relayUrl).pathname, connectVia).toString() : relayUrl;
  return { ...call, url, signedUrl: relayUrl, customParameters: parameters, ...rest };
}

/**
 * What Twilio does with reconnect TwiML: opens the socket it names for the same call (callSid,
 * account, numbers) with a new sessionId, handing every `<Parameter>` over in customParameters.
 */
export function twilioReconnectOptions(
  twiml: string,
  dropped: { setup: Pick<SetupFrame, 'callSid' | 'accountSid' | 'from' | 'to'> },
  extra: TwimlSocketOptions = {},
): SimulatedCallOptions {
  const { callSid, accountSid, from, to } = dropped.setup;
  return twilioCallOptions(twiml, { callSid, accountSid, from, to }, { callStatus: 'in-progress', ...extra });
}

interface Waiter {
  predicate: (m: OutboundMessage) => boolean;
  resolve: (index: number) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
  from: number;
}

export class SimulatedCall {
  readonly sessionId: string;
  readonly callSid: string;
  readonly accountSid: string;
  /** The setup frame this call sent (or would send, with `sendSetup: false`). */
  readonly setup: SetupFrame;
  /** Valid frames the server sent, in order. */
  readonly messages: OutboundMessage[] = [];
  /** Frames that were not valid ConversationRelay outbound messages (Twilio would drop them: 64107). */
  invalidFrames = 0;
  /** The raw text of the invalid frames, for diagnostics. */
  readonly invalidRaw: string[] = [];
  readonly transcript: TranscriptEntry[] = [];
  /** Resolves (never rejects) when the socket is closed, with the close code seen by this side. */
  readonly closed: Promise<CloseInfo>;
  /** Set once the socket has closed. */
  closeInfo: CloseInfo | undefined;

  private readonly ws: WebSocket;
  private cursor = 0;
  private waiters = new Set<Waiter>();
  private listeners = new Set<(m: OutboundMessage, index: number) => void>();
  private agentPending = '';
  private discardUntilLast = false;

  private constructor(ws: WebSocket, setup: SetupFrame) {
    this.ws = ws;
    this.setup = setup;
    this.sessionId = setup.sessionId;
    this.callSid = setup.callSid;
    this.accountSid = setup.accountSid;
    this.closed = new Promise<CloseInfo>((resolve) => {
      ws.on('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString('utf8') };
        const headline = `SimulatedCall: socket closed (${code}${this.closeInfo.reason ? ` ${this.closeInfo.reason}` : ''}) while waiting`;
        for (const w of this.waiters) {
          clearTimeout(w.timer);
          w.reject(this.describe(headline, w.from));
        }
        this.waiters.clear();
        resolve(this.closeInfo);
      });
    });
    ws.on('message', (data, isBinary) => this.onFrame(data, isBinary));
    // Errors after open are followed by 'close'; keep them from crashing the process.
    ws.on('error', () => {});
  }

  static async connect(opts: SimulatedCallOptions): Promise<SimulatedCall> {
    const setup: SetupFrame = {
      type: 'setup',
      sessionId: opts.sessionId ?? sid('VX'),
      callSid: opts.callSid ?? sid('CA'),
      accountSid: opts.accountSid ?? TEST_ACCOUNT_SID,
      parentCallSid: '',
      from: opts.from ?? '+15550100001',
      to: opts.to ?? '+15550100002',
      forwardedFrom: '',
      callType: 'PSTN',
      callerName: '',
      direction: 'inbound',
      callStatus: opts.callStatus ?? (opts.reconnection ? 'IN-PROGRESS' : 'RINGING'),
      customParameters: { ...(opts.customParameters ?? {}) },
      ...(opts.reconnection ? { reconnection: true as const } : {}),
    };

    const headers = { ...(opts.headers ?? {}) };
    if (opts.authToken !== undefined) headers['X-Twilio-Signature'] = signWebSocketUrl(opts.authToken, opts.signedUrl ?? opts.url);
    const ws = new WebSocket(opts.url, { headers, perMessageDeflate: false });
    // Attach frame handlers before the socket opens: the server may speak right after setup.
    const call = new SimulatedCall(ws, setup);

    await new Promise<void>((resolve, reject) => {
      let settled = false;
      const finish = (err?: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err) {
          if (ws.readyState !== WebSocket.CLOSED) ws.terminate();
          reject(err);
        } else resolve();
      };
      const timer = setTimeout(
        () => finish(new Error(`SimulatedCall: timed out connecting to ${opts.url}`)),
        opts.connectTimeoutMs ?? DEFAULT_WAIT_MS,
      );
      ws.once('open', () => finish());
      ws.once('unexpected-response', (_req, res) => {
        res.resume();
        finish(new UpgradeRejectedError(res.statusCode ?? 0, opts.url));
      });
      ws.once('error', (err) => finish(err));
      ws.once('close', (code) => finish(new Error(`SimulatedCall: socket closed (${code}) before it opened`)));
    });

    if (opts.sendSetup !== false) call.sendJson(setup);
    return call;
  }

  // ---------------------------------------------------------------- sending

  get isOpen(): boolean {
    return this.ws.readyState === WebSocket.OPEN;
  }

  /** Sends any JSON frame. Returns false (and sends nothing) when the socket is not open. */
  sendJson(frame: object): boolean {
    return this.sendRaw(JSON.stringify(frame));
  }

  /**
   * Sends `send`'s frames in one TCP write, as a client that buffers does: the server reads them
   * together (e.g. a setup with the frames right behind it). Returns false when the socket is not open.
   */
  sendTogether(send: () => void): boolean {
    if (this.ws.readyState !== WebSocket.OPEN) return false;
    // ws keeps its TCP socket as _socket; corked, every frame goes out in the one write of uncork().
    // (Without permessage-deflate, which our server does not offer: compressed sends finish later.)
    const tcp = (this.ws as unknown as { _socket: { cork(): void; uncork(): void } })._socket;
    tcp.cork();
    try {
      send();
    } finally {
      tcp.uncork();
    }
    return true;
  }

  /** Sends raw bytes as-is (garbage tests). Strings go as text frames, Buffers as binary frames. */
  sendRaw(data: string | Buffer): boolean {
    if (this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(data);
    return true;
  }

  /** The caller speaks. `last: false` sends a partial prompt (not added to the transcript). */
  prompt(text: string, opts: { lang?: string; last?: boolean } = {}): boolean {
    const last = opts.last ?? true;
    if (last) this.transcript.push({ role: 'caller', text });
    return this.sendJson({ type: 'prompt', voicePrompt: text, lang: opts.lang ?? 'en-US', last });
  }

  /** One key press. */
  dtmf(digit: string): boolean {
    return this.sendJson({ type: 'dtmf', digit });
  }

  /** One dtmf frame per character. */
  digits(str: string): boolean {
    let ok = true;
    for (const ch of str) ok = this.dtmf(ch) && ok;
    return ok;
  }

  /** The caller barges in; `utteranceUntilInterrupt` is what they heard of the agent. */
  interrupt(utteranceUntilInterrupt: string, durationMs: number | string = 0): boolean {
    if (this.agentPending !== '') {
      this.transcript.push({ role: 'agent', text: this.agentPending, interrupted: true });
      this.agentPending = '';
      // The rest of the cut-short reply (until its closing last:true) is not part of the transcript.
      this.discardUntilLast = true;
    }
    return this.sendJson({ type: 'interrupt', utteranceUntilInterrupt, durationUntilInterruptMs: durationMs });
  }

  info(name: string, value: unknown): boolean {
    return this.sendJson({ type: 'info', name, value });
  }

  /** Twilio-side error frame. */
  error(description: string): boolean {
    return this.sendJson({ type: 'error', description });
  }

  /** Clean close (default 1000). Resolves with the close info. */
  close(code = 1000, reason = ''): Promise<CloseInfo> {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) {
      this.ws.close(code, reason);
    }
    return this.closed;
  }

  /**
   * Stops reading from the TCP socket (a peer that stalls or never reads): the server's frames pile
   * up in the kernel buffers and then in the server's send buffer. Sending still works.
   */
  pauseReading(): void {
    this.ws.pause();
  }

  resumeReading(): void {
    this.ws.resume();
  }

  /** Destroys the TCP socket without a close frame, like a network drop: the server sees 1006. */
  drop(): Promise<CloseInfo> {
    if (this.ws.readyState !== WebSocket.CLOSED) this.ws.terminate();
    return this.closed;
  }

  // ---------------------------------------------------------------- receiving

  /** Subscribes to valid inbound frames; returns an unsubscribe function. */
  onMessage(listener: (m: OutboundMessage, index: number) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Index of the next message `waitFor`/`nextReply` will look at. */
  get readCursor(): number {
    return this.cursor;
  }

  /** Moves the read cursor to the end: everything received so far counts as read. */
  skipReceived(): void {
    this.cursor = this.messages.length;
  }

  /**
   * Resolves with the first message at or after the read cursor (or from the start) matching
   * `predicate`, and moves the cursor past it. Rejects on timeout or socket close, listing what arrived.
   */
  waitFor<T extends OutboundMessage>(
    predicate: (m: OutboundMessage) => m is T,
    opts?: number | WaitOptions,
  ): Promise<T>;
  waitFor(predicate: (m: OutboundMessage) => boolean, opts?: number | WaitOptions): Promise<OutboundMessage>;
  async waitFor(predicate: (m: OutboundMessage) => boolean, opts?: number | WaitOptions): Promise<OutboundMessage> {
    const index = await this.waitForIndex(predicate, opts, 'waitFor');
    return this.messages[index]!;
  }

  waitForType<K extends OutboundMessage['type']>(
    type: K,
    opts?: number | WaitOptions,
  ): Promise<Extract<OutboundMessage, { type: K }>> {
    return this.waitForIndex((m) => m.type === type, opts, `waitForType(${type})`).then(
      (i) => this.messages[i] as Extract<OutboundMessage, { type: K }>,
    );
  }

  /**
   * The text tokens from the read cursor up to and including the next `last: true` text frame,
   * concatenated. Non-text frames in between are passed over (use `fromStart` waits to find them).
   */
  async nextReply(timeoutMs?: number): Promise<AgentReply> {
    const start = this.cursor;
    const end = await this.waitForIndex((m) => m.type === 'text' && m.last, timeoutMs, 'nextReply');
    const tokens = this.messages.slice(start, end + 1).filter((m): m is TextMessage => m.type === 'text');
    return { text: tokens.map((t) => t.token).join(''), tokens };
  }

  private waitForIndex(
    predicate: (m: OutboundMessage) => boolean,
    opts: number | WaitOptions | undefined,
    label: string,
  ): Promise<number> {
    const o: WaitOptions = typeof opts === 'number' ? { timeoutMs: opts } : (opts ?? {});
    const from = o.fromStart ? 0 : this.cursor;
    for (let i = from; i < this.messages.length; i++) {
      if (predicate(this.messages[i]!)) {
        this.cursor = Math.max(this.cursor, i + 1);
        return Promise.resolve(i);
      }
    }
    if (this.closeInfo) {
      return Promise.reject(this.describe(`${label}: socket already closed (${this.closeInfo.code})`, from));
    }
    const timeoutMs = o.timeoutMs ?? DEFAULT_WAIT_MS;
    return new Promise<number>((resolve, reject) => {
      const waiter: Waiter = {
        predicate,
        resolve,
        reject,
        from,
        timer: setTimeout(() => {
          this.waiters.delete(waiter);
          reject(this.describe(`${label} timed out after ${timeoutMs} ms`, from));
        }, timeoutMs),
      };
      this.waiters.add(waiter);
    });
  }

  private describe(headline: string, from: number): Error {
    const seen = this.messages.slice(from);
    const shown = seen.slice(-20).map((m) => `  ${JSON.stringify(m)}`);
    const lines = [
      `${headline}.`,
      `Received ${seen.length} message(s) since index ${from} (${this.messages.length} total)${seen.length > 20 ? ', last 20' : ''}:`,
      ...(shown.length ? shown : ['  (none)']),
      `invalidFrames: ${this.invalidFrames}${this.invalidRaw.length ? ` (last: ${this.invalidRaw.at(-1)!.slice(0, 200)})` : ''}`,
      `socket: ${this.closeInfo ? `closed ${this.closeInfo.code}` : this.isOpen ? 'open' : 'closing'}`,
    ];
    return new Error(lines.join('\n'));
  }

  private onFrame(data: WebSocket.RawData, isBinary: boolean): void {
    const text = Array.isArray(data)
      ? Buffer.concat(data).toString('utf8')
      : Buffer.isBuffer(data)
        ? data.toString('utf8')
        : Buffer.from(data).toString('utf8');
    let json: unknown;
    try {
      json = isBinary ? undefined : JSON.parse(text);
    } catch {
      json = undefined;
    }
    const parsed = json === undefined ? undefined : outboundMessage.safeParse(json);
    if (!parsed?.success) {
      this.invalidFrames++;
      this.invalidRaw.push(text);
      return;
    }
    const message = parsed.data;
    const index = this.messages.push(message) - 1;

    if (message.type === 'text') this.trackAgentText(message);

    for (const listener of this.listeners) listener(message, index);
    for (const w of this.waiters) {
      if (index >= this.cursor && w.predicate(message)) {
        clearTimeout(w.timer);
        this.waiters.delete(w);
        this.cursor = index + 1;
        w.resolve(index);
      }
    }
  }

  private trackAgentText(m: TextMessage): void {
    if (this.discardUntilLast) {
      if (m.last) this.discardUntilLast = false;
      return;
    }
    this.agentPending += m.token;
    if (m.last) {
      if (this.agentPending !== '') this.transcript.push({ role: 'agent', text: this.agentPending });
      this.agentPending = '';
    }
  }
}
