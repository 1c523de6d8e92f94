// ConversationRelayClient: talks to a relay server the way Twilio's ConversationRelay does (setup,
// prompt, dtmf, interrupt), from a browser (the global WebSocket) or from Node (pass `ws`'s WebSocket).
// When the socket drops without the call having ended, it reconnects by itself with full-jitter
// exponential backoff and resumes the same call (`reconnection: true`, its own sessionId and its
// resumeKey), up to a number of attempts, then gives up with an event that says why.
// Browser-safe: no Node modules, only types from the protocol.
import type { DtmfDigit, OutboundMessage } from '../protocol/messages.js';
import { backoffDelay, DEFAULT_BACKOFF, type BackoffOptions } from './backoff.js';

/** What the client needs of a WebSocket: the browser's and `ws`'s both have it. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: 'open', listener: () => void): void;
  addEventListener(type: 'message', listener: (event: { data: unknown }) => void): void;
  addEventListener(type: 'close', listener: (event: { code: number; reason: string }) => void): void;
  addEventListener(type: 'error', listener: (event: unknown) => void): void;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;

export type ClientState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'ended' | 'closed' | 'gaveUp';

export interface ClientEvents {
  /** One streamed piece of the agent's reply; `last` closes the talk cycle. */
  token: { token: string; last: boolean; lang?: string };
  /** The talk cycle's whole text, once its `last` token arrived. */
  replyDone: { text: string };
  language: { ttsLanguage?: string; transcriptionLanguage?: string };
  /** The server ended the call (`end`), with its hand-off data if any. */
  end: { handoffData?: string };
  state: { state: ClientState; previous: ClientState };
  /** The socket dropped (or a reconnect failed); the next attempt starts after `delayMs`. */
  reconnecting: { attempt: number; delayMs: number; code: number; reason: string };
  /** The server answered on a reconnected socket: the same call goes on. */
  resumed: { attempts: number };
  /**
   * The server answered on a reconnected socket but no longer had the call (it expired, or went with
   * the process that held it): it took the socket as a new call, and the conversation starts over.
   */
  restarted: { attempts: number };
  /** No more attempts: `refused` when the server would not take the call back. */
  gaveUp: { attempts: number; reason: 'refused' | 'attempts' | 'superseded'; code: number; detail: string };
  /** Every frame the server sent, as parsed. */
  message: OutboundMessage;
}

export interface ClientOptions {
  /** The relay's WebSocket URL (ws:// or wss://, the server's /relay path). */
  url: string;
  /** Default: `globalThis.WebSocket` (browsers, Node 22+). In Node 20 pass `ws`'s WebSocket. */
  WebSocket?: WebSocketConstructor;
  /** Generated when omitted. */
  callSid?: string;
  accountSid?: string;
  from?: string;
  to?: string;
  /** Sent in every setup; `resumeKey` is added (generated unless given). */
  customParameters?: Record<string, string>;
  backoff?: BackoffOptions;
  /** [0, 1): the jitter's source (tests make it fixed). */
  random?: () => number;
  /** Prompts and digits kept while reconnecting, sent once the call is back. Default 50. */
  maxQueued?: number;
  /** Where an error thrown by an event listener goes. Default: `reportError` (browsers), else `console.error`. */
  onListenerError?: (error: unknown, type: keyof ClientEvents) => void;
}

/**
 * Close codes after which coming back cannot help: the server refused this resume (1008), or another
 * connection has the call now (4000, 4001). 1000 is the server ending the call.
 */
const REFUSED = 1008;
const SUPERSEDED = new Set([4000, 4001]);
/**
 * Close codes with which the server refuses a setup before taking anything from its socket (1013 try
 * again, 1011 store unavailable): frames sent on that socket were never taken, so they are sent again.
 */
const REFUSED_FOR_NOW = new Set([1011, 1013]);
/** WebSocket.OPEN, the same in browsers and `ws` (not read from the constructor: a `WebSocketLike` need not have it). */
const OPEN = 1;
const DEFAULT_MAX_QUEUED = 50;
/** The close code `drop()` uses (browsers only let clients send 1000 or 3000-4999). */
export const CLIENT_DROP_CODE = 3001;

type Listener<K extends keyof ClientEvents> = (event: ClientEvents[K]) => void;

function randomHex(bytes: number): string {
  const data = new Uint8Array(bytes);
  globalThis.crypto.getRandomValues(data);
  return Array.from(data, (b) => b.toString(16).padStart(2, '0')).join('');
}

export class ConversationRelayClient {
  readonly callSid: string;
  /** This client's sessionId: the same on every socket, the proof of its resumes with resumeKey. */
  readonly sessionId: string;
  /** Sent in every setup (customParameters.resumeKey): a resume must repeat it. Given or generated. */
  readonly resumeKey: string;
  private readonly maxQueued: number;
  private readonly WS: WebSocketConstructor;
  private readonly listeners = new Map<keyof ClientEvents, Set<Listener<keyof ClientEvents>>>();
  private socket: WebSocketLike | undefined;
  private current: ClientState = 'idle';
  /** Failed attempts since the call was last up. */
  private attempts = 0;
  /** The socket in use is the first one, or the server has greeted it (a resume). */
  private answered = false;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private queued: string[] = [];
  /** Frames sent on the socket in use before the server said anything on it (undefined once it has). */
  private unheard: string[] | undefined;
  /** The pending `connect()`, while the first socket is opening. */
  private pendingConnect: { resolve: () => void; reject: (err: Error) => void } | undefined;
  private reply = '';

  constructor(private readonly opts: ClientOptions) {
    const WS = opts.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WS) throw new Error('no WebSocket implementation: pass `WebSocket` (e.g. from the ws package)');
    this.WS = WS;
    this.callSid = opts.callSid ?? `CA${randomHex(16)}`;
    this.sessionId = `VX${randomHex(16)}`;
    this.resumeKey = opts.customParameters?.resumeKey ?? randomHex(24);
    this.maxQueued = opts.maxQueued ?? DEFAULT_MAX_QUEUED;
  }

  get state(): ClientState {
    return this.current;
  }

  on<K extends keyof ClientEvents>(type: K, listener: Listener<K>): () => void {
    let set = this.listeners.get(type);
    if (!set) this.listeners.set(type, (set = new Set()));
    set.add(listener as Listener<keyof ClientEvents>);
    return () => set.delete(listener as Listener<keyof ClientEvents>);
  }

  /** Opens the call: resolves once the setup is sent, rejects if the first socket cannot open. */
  connect(): Promise<void> {
    if (this.current !== 'idle') return Promise.reject(new Error(`connect() in state ${this.current}`));
    return new Promise((resolve, reject) => {
      this.pendingConnect = { resolve, reject };
      this.setState('connecting');
      // A `state` listener may have hung up already.
      if (this.current === 'connecting') this.open(false);
    });
  }

  /** The first socket did not come up: `connect()` rejects and the client is closed. */
  private connectFailed(detail: string): void {
    const pending = this.pendingConnect;
    this.pendingConnect = undefined;
    this.setState('closed');
    pending?.reject(new Error(`could not connect to ${this.opts.url}: ${detail}`));
  }

  /** What the caller said (a final transcript). */
  prompt(text: string, lang = 'en-US'): void {
    this.sendOrQueue({ type: 'prompt', voicePrompt: text, lang, last: true });
  }

  dtmf(digit: DtmfDigit): void {
    this.sendOrQueue({ type: 'dtmf', digit });
  }

  /** The caller spoke over the reply: `heard` is what was spoken of it until then. */
  interrupt(heard: string, durationMs = 0): void {
    this.sendOrQueue({ type: 'interrupt', utteranceUntilInterrupt: heard, durationUntilInterruptMs: durationMs });
  }

  /** Drops the connection as a network failure would (to try resuming): the client reconnects by itself. */
  drop(): void {
    this.socket?.close(CLIENT_DROP_CODE, 'dropped by the client');
  }

  /** Hangs up: the socket closes and nothing reconnects (a `connect()` still pending rejects). */
  close(): void {
    clearTimeout(this.retryTimer);
    const socket = this.socket;
    this.socket = undefined;
    if (this.pendingConnect) this.connectFailed('closed before the call was up');
    if (this.current !== 'ended' && this.current !== 'gaveUp') this.setState('closed');
    socket?.close(1000, 'caller hung up');
  }

  /** Opens a socket and sends the setup on it; the first one (`connect()` pending) or a reconnect. */
  private open(reconnection: boolean): void {
    let socket: WebSocketLike;
    try {
      socket = new this.WS(this.opts.url);
    } catch (err) {
      // A URL the WebSocket rejects: no attempt can succeed.
      const detail = err instanceof Error ? err.message : String(err);
      if (this.pendingConnect) return this.connectFailed(detail);
      return this.giveUp('attempts', 0, detail);
    }
    this.socket = socket;
    this.answered = !reconnection;
    this.unheard = [];
    let opened = false;
    socket.addEventListener('open', () => {
      if (this.socket !== socket) return;
      opened = true;
      socket.send(JSON.stringify(this.setupFrame(reconnection)));
      // Frames sent right after the setup wait on the server until the session is ready, as Twilio's
      // do. A refused resume arrives as a close; a session the server no longer had starts afresh
      // (and is not greeted, so no `resumed`).
      // What waited goes out before the state changes: a `state` listener that sends on 'open' is next in line.
      this.flushQueued();
      this.setState('open');
      const pending = this.pendingConnect;
      this.pendingConnect = undefined;
      pending?.resolve();
    });
    socket.addEventListener('message', (event) => {
      if (this.socket !== socket) return;
      this.unheard = undefined;
      this.received(event.data);
    });
    // `error` is always followed by `close`, which decides what happens next.
    socket.addEventListener('error', () => undefined);
    socket.addEventListener('close', (event) => {
      if (this.socket !== socket) return;
      this.socket = undefined;
      const unheard = this.unheard;
      this.unheard = undefined;
      // Refused before anything was taken: what went out on this socket goes out again, first.
      if (unheard && REFUSED_FOR_NOW.has(event.code)) this.queued.unshift(...unheard);
      if (!opened && this.pendingConnect) return this.connectFailed(`closed (${event.code}) before opening`);
      this.lost(event.code, event.reason);
    });
  }

  private setupFrame(reconnection: boolean) {
    const { accountSid = '', from = '', to = '', customParameters = {} } = this.opts;
    return {
      type: 'setup',
      sessionId: this.sessionId,
      callSid: this.callSid,
      accountSid,
      from,
      to,
      direction: 'inbound',
      callType: 'WEB',
      callStatus: 'IN-PROGRESS',
      customParameters: { ...customParameters, resumeKey: this.resumeKey },
      ...(reconnection ? { reconnection: true } : {}),
    };
  }

  private received(data: unknown): void {
    let message: OutboundMessage;
    try {
      message = JSON.parse(String(data)) as OutboundMessage;
    } catch {
      return; // not a frame of the protocol: nothing to act on
    }
    // `null` or `7` parse too: reading `.type` of those would throw inside the socket's callback.
    if (typeof message !== 'object' || message === null || typeof message.type !== 'string') return;
    if (!this.answered) {
      // A resumed call is greeted first (its language, then the resume line): the server took it back.
      // A call the server no longer had starts afresh on this setup, and its first word is a reply to
      // a queued frame instead: that is not the same call going on.
      this.answered = true;
      const attempts = this.attempts;
      this.attempts = 0;
      this.emit(message.type === 'language' ? 'resumed' : 'restarted', { attempts });
    }
    this.emit('message', message);
    switch (message.type) {
      case 'text':
        this.reply += message.token;
        this.emit('token', { token: message.token, last: message.last, ...(message.lang ? { lang: message.lang } : {}) });
        if (message.last) {
          const text = this.reply;
          this.reply = '';
          this.emit('replyDone', { text });
        }
        break;
      case 'language':
        this.emit('language', { ttsLanguage: message.ttsLanguage, transcriptionLanguage: message.transcriptionLanguage });
        break;
      case 'end':
        this.setState('ended');
        this.emit('end', message.handoffData === undefined ? {} : { handoffData: message.handoffData });
        break;
      default:
        break;
    }
  }

  /** The socket closed: reconnect unless the call is over or cannot come back. */
  private lost(code: number, reason: string): void {
    if (this.current === 'ended' || this.current === 'closed' || this.current === 'gaveUp') return;
    if (code === REFUSED) return this.giveUp('refused', code, reason || 'the server refused to resume the call');
    if (SUPERSEDED.has(code)) return this.giveUp('superseded', code, reason || 'another connection has the call');
    if (code === 1000) {
      // The server closed the call normally without `end` (e.g. it ended): nothing to resume.
      this.setState('ended');
      this.emit('end', {});
      return;
    }
    // Any reply being spoken was cut: the server says what streamed again after the resume line.
    this.reply = '';
    const maxAttempts = this.opts.backoff?.maxAttempts ?? DEFAULT_BACKOFF.maxAttempts;
    if (this.attempts >= maxAttempts) return this.giveUp('attempts', code, reason || `no answer after ${this.attempts} attempts`);
    this.attempts++;
    const delayMs = backoffDelay(this.attempts, this.opts.backoff, this.opts.random);
    this.setState('reconnecting');
    this.emit('reconnecting', { attempt: this.attempts, delayMs, code, reason });
    // A listener may have hung up meanwhile: close() found no timer to clear, so none is set now
    // (it would keep a Node process alive for up to capMs, for nothing).
    if (this.current !== 'reconnecting') return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (this.current === 'reconnecting') this.open(true);
    }, delayMs);
  }

  private giveUp(reason: ClientEvents['gaveUp']['reason'], code: number, detail: string): void {
    this.setState('gaveUp');
    this.emit('gaveUp', { attempts: this.attempts, reason, code, detail });
  }

  private sendOrQueue(frame: object): void {
    const text = JSON.stringify(frame);
    // Only into a socket that is still OPEN: one that is closing (drop(), or the server's close frame
    // already in) drops what it is given without a word, so the frame waits for the next socket.
    if (this.current === 'open' && this.socket?.readyState === OPEN) return this.sendNow(this.socket, text);
    if (this.current !== 'reconnecting' && this.current !== 'connecting' && this.current !== 'open') {
      throw new Error(`the call is ${this.current}: nothing can be sent`);
    }
    if (this.queued.length >= this.maxQueued) throw new Error(`more than ${this.maxQueued} frames waiting for the connection`);
    this.queued.push(text);
  }

  private flushQueued(): void {
    const socket = this.socket;
    if (!socket) return;
    for (const text of this.queued.splice(0)) this.sendNow(socket, text);
  }

  private sendNow(socket: WebSocketLike, text: string): void {
    socket.send(text);
    // Kept only until the server first speaks on this socket, and within the queue's bound: a socket
    // that took that many frames without being refused has been taken, so nothing needs resending.
    if (this.unheard && this.unheard.push(text) > this.maxQueued) this.unheard = undefined;
  }

  private setState(state: ClientState): void {
    const previous = this.current;
    if (previous === state) return;
    this.current = state;
    this.emit('state', { state, previous });
  }

  private emit<K extends keyof ClientEvents>(type: K, event: ClientEvents[K]): void {
    for (const listener of this.listeners.get(type) ?? []) {
      // Listeners run inside socket callbacks and halfway through the client's own steps (a retry not
      // yet scheduled, a reply not yet reset): one that throws must stop neither, nor the other listeners.
      try {
        (listener as Listener<K>)(event);
      } catch (err) {
        this.reportListenerError(err, type);
      }
    }
  }

  private reportListenerError(err: unknown, type: keyof ClientEvents): void {
    try {
      if (this.opts.onListenerError) return this.opts.onListenerError(err, type);
      const report = (globalThis as { reportError?: (error: unknown) => void }).reportError;
      if (typeof report === 'function') report(err);
      else console.error(`ConversationRelayClient: a '${type}' listener threw`, err);
    } catch {
      // The reporter itself failed: nothing better to do than go on.
    }
  }
}
