// One Twilio ConversationRelay WebSocket: waits for setup, then turns typed frames into session events.
import type { WebSocket } from 'ws';
import { InvalidOutboundMessageError, parseInbound, serializeOutbound, type ParseResult } from '../protocol/parse.js';
import { MAX_INBOUND_FRAME_BYTES, type InboundMessage, type OutboundMessage } from '../protocol/messages.js';
import { cutToBytes } from './prompt-limit.js';
import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';
import type { SessionManager } from './session-manager.js';
import type { Session, SessionSocket } from './sessions/live-session.js';
import type { SessionEvent } from '../machines/session.js';
import { serviceUnavailableEnd } from './service-unavailable.js';
import type { HeldSetup, SetupBacklog } from './setup-backlog.js';

/** Twilio closes the socket once it takes `end`; a peer that does not is closed after this. */
const END_CLOSE_MS = 2000;

/** Per-socket abuse limits (README, Limits). */
export interface RelaySocketLimits {
  /** Longer prompts are cut to this many bytes. */
  maxPromptBytes: number;
  /** Unsent bytes (a peer that stops reading) beyond which the socket is closed with 1008. */
  maxSendBufferBytes: number;
  /** Frames held while the session is created or restored, beyond which the socket is closed with 1008. */
  maxQueuedFrames: number;
}

/** How long a peer that stopped reading gets to take our close frame (queued behind its unread bytes). */
const UNREAD_CLOSE_MS = 2000;

export interface RelaySocketDeps {
  manager: SessionManager;
  logger: Logger;
  metrics: Metrics;
  limits: RelaySocketLimits;
  /** A socket that sends no setup in this time is closed. */
  setupTimeoutMs?: number;
  /** False while the store cannot be written: a new setup is then ended with an apology at once. */
  storeReady?: () => boolean;
  /** Where a setup claiming a resume waits for its turn (handled as read when absent). */
  setupBacklog?: SetupBacklog;
}

/**
 * Whether a frame's raw text claims a resume (our clients' `reconnection`, Twilio's `resumeToken`
 * parameter), looked for before parsing. Only a hint for when to handle it: a frame that says so in
 * another spelling is handled at once, one that merely contains the words a little later, and either
 * is judged by its parsed content.
 */
export function mayClaimResume(data: Buffer): boolean {
  return data.includes('"reconnection":true') || data.includes('"resumeToken"');
}

/**
 * Maps an inbound frame to a session event, stamped with `at` where the session times something
 * from it (a key press restarts the keypad idle period); frames with nothing for the session map to undefined.
 */
export function toSessionEvent(message: InboundMessage, at: number): SessionEvent | undefined {
  switch (message.type) {
    case 'prompt':
      return { type: 'PROMPT', text: message.voicePrompt, lang: message.lang, last: message.last };
    case 'dtmf':
      return { type: 'DIGIT', digit: message.digit, at };
    case 'interrupt':
      return { type: 'INTERRUPT', utterance: message.utteranceUntilInterrupt, durationMs: message.durationUntilInterruptMs };
    default:
      return undefined;
  }
}

/** The TCP socket under the WebSocket, corked to batch writes. */
export interface CorkableTransport {
  cork(): void;
  uncork(): void;
}

/**
 * `ticket`: the path segment the socket was opened at (`/relay/<ticket>`), which binds it to the
 * TwiML that issued its token; the session manager checks it against the token its setup brings.
 */
export function handleRelaySocket(ws: WebSocket, deps: RelaySocketDeps, transport?: CorkableTransport, ticket?: string): void {
  const relay = new RelaySocket(ws, deps, transport, ticket);
  (ws as RelayTagged)[RELAY] = relay;
  ws.on('message', onMessage);
  ws.on('close', onClose);
  ws.on('error', onError);
}

// One socket lives as long as its call, idle most of that time: its state is one object, and its
// listeners and timers are shared functions that find it on the socket, not closures per call.
const RELAY = Symbol('relay socket');
type RelayTagged = WebSocket & { [RELAY]: RelaySocket };

function onMessage(this: WebSocket, data: Buffer, isBinary: boolean): void {
  (this as RelayTagged)[RELAY].message(data, isBinary);
}
function onClose(this: WebSocket, code: number): void {
  (this as RelayTagged)[RELAY].closed(code);
}
function onError(this: WebSocket, err: Error): void {
  (this as RelayTagged)[RELAY].log.warn({ err: err.message }, 'socket error');
}
function onSetupTimeout(relay: RelaySocket): void {
  relay.setupTimedOut();
}
function uncork(relay: RelaySocket): void {
  relay.uncork();
}

/** One Twilio ConversationRelay socket, as the session sees it (SessionSocket) and as it reads frames. */
class RelaySocket implements SessionSocket, HeldSetup {
  private session: Session | null = null;
  /** Frames held (in order) while the setup that claims a resume waits in the backlog. */
  private held: Array<{ data: Buffer; isBinary: boolean }> | undefined;
  private connecting = false;
  /**
   * Frames sent in one burst (e.g. the buffered deltas of a reply) leave in one write instead of one
   * syscall each; the bench measured ~13% less server CPU per reply.
   */
  private corked = false;
  /** Frames that arrive while the session is being created or restored (async store I/O). */
  private queued: InboundMessage[] | undefined;
  /** The session hears of this socket's end once: at a limit's close (at once) or at the TCP close. */
  private closedWith: number | undefined;
  private reportedClosed = false;
  /** `end` was sent because the session could not be had: nothing more is taken. */
  private ended = false;
  private setupTimer: NodeJS.Timeout | undefined;
  private callSid: string | undefined;
  /** Created when first needed: most calls never log from here after their setup. */
  private logger: Logger | undefined;

  constructor(
    private readonly ws: WebSocket,
    private readonly deps: RelaySocketDeps,
    private readonly transport: CorkableTransport | undefined,
    private readonly ticket: string | undefined,
  ) {
    this.setupTimer = setTimeout(onSetupTimeout, deps.setupTimeoutMs ?? 10_000, this);
  }

  /** Lines about this socket carry its call's callSid once its setup named it. */
  get log(): Logger {
    return (this.logger ??= this.callSid === undefined ? this.deps.logger : this.deps.logger.child({ callSid: this.callSid }));
  }

  send(message: OutboundMessage): void {
    const { ws } = this;
    // Also stops the reply at once after a limit closed the socket (CLOSING).
    if (ws.readyState !== ws.OPEN) return;
    try {
      const frame = serializeOutbound(message);
      this.corkUntilNextTick();
      ws.send(frame);
      if (ws.bufferedAmount > this.deps.limits.maxSendBufferBytes) this.closeUnread();
    } catch (err) {
      // Never put an invalid frame on the wire: Twilio would drop it and hang up after ten.
      if (err instanceof InvalidOutboundMessageError) this.log.error({ err: err.message, type: message.type }, 'refused to send invalid outbound message');
      else throw err;
    }
  }

  close(code: number, reason: string): void {
    const { ws } = this;
    if (ws.readyState === ws.OPEN || ws.readyState === ws.CONNECTING) ws.close(code, reason);
  }

  setupTimedOut(): void {
    this.setupTimer = undefined;
    if (!this.session && !this.connecting) {
      this.log.warn('no setup frame received; closing socket');
      this.close(1008, 'setup expected');
    }
  }

  uncork(): void {
    this.corked = false;
    this.transport?.uncork();
  }

  message(data: Buffer, isBinary: boolean): void {
    if (!this.open) return;
    if (this.held) return this.hold(data, isBinary);
    const { setupBacklog } = this.deps;
    if (!this.session && !this.connecting && !isBinary && setupBacklog && data.length <= MAX_INBOUND_FRAME_BYTES && mayClaimResume(data)) {
      // A reconnect storm's setup: handled in its turn, after the frames read with it (see setup-backlog.ts).
      // The setup timer runs on: only a valid setup stops it, and this one is not parsed yet.
      this.held = [{ data, isBinary }];
      setupBacklog.add(this);
      return;
    }
    this.take(data, isBinary);
  }

  /** Frames are taken while the socket is open and no `end` was sent (we are not closing it). */
  private get open(): boolean {
    return !this.ended && this.ws.readyState === this.ws.OPEN;
  }

  /** A frame handled now: parsed, then routed to the session, queued until it is ready, or taken as its setup. */
  private take(data: Buffer, isBinary: boolean): void {
    const { ws, deps } = this;
    const parsed = parseInbound(isBinary ? data : data.toString('utf8'));
    if (!parsed.ok) return this.malformed(parsed, data.length);
    const message = this.capPrompt(parsed.message);
    if (this.session) return this.route(message);
    if (this.connecting) {
      const queued = (this.queued ??= []);
      if (queued.length >= deps.limits.maxQueuedFrames) return this.tooManyQueued();
      queued.push(message);
      return;
    }
    if (message.type !== 'setup') {
      this.log.warn({ type: message.type }, 'frame before setup ignored');
      return;
    }
    this.clearSetupTimer();
    this.callSid = message.callSid;
    this.logger = undefined;
    if (deps.storeReady && !deps.storeReady()) {
      this.log.warn('store unavailable: ending the call with an apology');
      this.endUnavailable();
      return;
    }
    this.connecting = true;
    // Bounded: every store call fails after STORE_TIMEOUT_MS, and at once while the store is known down.
    deps.manager
      .connect(message, this, this.ticket)
      .then((result) => {
        this.connecting = false;
        if (!result.ok) {
          this.close(result.code, result.reason);
          return;
        }
        this.session = result.session;
        if (ws.readyState !== ws.OPEN) {
          // The socket died (or a limit closed it) while we were restoring: tell the session right away.
          this.reportClosed(this.closedWith ?? 1006);
          return;
        }
        const queued = this.queued ?? [];
        this.queued = undefined;
        for (const m of queued) this.route(m);
      })
      .catch((err: unknown) => {
        this.log.error({ err }, 'could not start or resume the session: ending the call with an apology');
        this.endUnavailable();
      });
  }

  /** Its turn in the setup backlog: the frames held are handled now, in the order they came. */
  takeHeld(): void {
    const frames = this.held ?? [];
    this.held = undefined;
    for (const { data, isBinary } of frames) if (this.open) this.take(data, isBinary);
  }

  private hold(data: Buffer, isBinary: boolean): void {
    // Dropped now rather than held (its bytes with it): it would be dropped in its turn all the same.
    if (data.length > MAX_INBOUND_FRAME_BYTES) return this.malformed(parseInbound(data), data.length);
    const held = this.held!;
    if (held.length > this.deps.limits.maxQueuedFrames) return this.tooManyQueued();
    held.push({ data, isBinary });
  }

  closed(code: number): void {
    this.clearSetupTimer();
    this.reportClosed(code);
  }

  private clearSetupTimer(): void {
    clearTimeout(this.setupTimer);
    this.setupTimer = undefined;
  }

  private corkUntilNextTick(): void {
    if (!this.transport || this.corked) return;
    this.corked = true;
    this.transport.cork();
    process.nextTick(uncork, this);
  }

  private reportClosed(code: number): void {
    this.closedWith ??= code;
    if (!this.session || this.reportedClosed) return;
    this.reportedClosed = true;
    this.deps.manager.socketClosed(this.session, this, this.closedWith);
  }

  private malformed(parsed: ParseResult, bytes: number): void {
    if (parsed.ok) return;
    this.deps.metrics.malformedFrames.inc({ reason: parsed.reason });
    // JSON.parse errors quote the raw frame, which may hold a keypad digit: log only schema errors.
    const detail = parsed.reason === 'invalid' ? parsed.detail.slice(0, 300) : undefined;
    this.log.warn({ reason: parsed.reason, bytes, detail }, 'malformed frame ignored');
  }

  /** Frames beyond the cap before the session was ready (held or queued): the socket is closed. */
  private tooManyQueued(): void {
    this.queued = undefined;
    this.held = undefined;
    this.deps.metrics.limitHit('queued_frames');
    this.log.warn({ limit: this.deps.limits.maxQueuedFrames }, 'too many frames before the session was ready; closing the socket');
    this.closedWith = 1008;
    this.close(1008, 'too many frames before the session was ready');
  }

  /** The peer stopped reading: its unsent bytes would grow without bound. Only this call is affected. */
  private closeUnread(): void {
    const { ws } = this;
    this.deps.metrics.limitHit('send_buffer');
    this.log.warn({ bufferedBytes: ws.bufferedAmount, limit: this.deps.limits.maxSendBufferBytes }, 'caller is not reading: send buffer over the limit, closing the socket');
    ws.close(1008, 'send buffer full');
    const cut = setTimeout(() => ws.terminate(), UNREAD_CLOSE_MS);
    cut.unref();
    ws.once('close', () => clearTimeout(cut));
    // A dropped call from now on (resumable like any other), not only once TCP gives up.
    this.reportClosed(1008);
  }

  /** A prompt over the size limit is cut; only final prompts reach the LLM, so only those are counted. */
  private capPrompt(message: InboundMessage): InboundMessage {
    if (message.type !== 'prompt') return message;
    const cut = cutToBytes(message.voicePrompt, this.deps.limits.maxPromptBytes);
    if (cut === undefined) return message;
    if (message.last) {
      this.deps.metrics.limitHit('prompt_bytes');
      this.log.warn({ bytes: Buffer.byteLength(message.voicePrompt), limit: this.deps.limits.maxPromptBytes }, 'prompt over the size limit cut');
    }
    return { ...message, voicePrompt: cut };
  }

  private route(message: InboundMessage): void {
    const { session, deps } = this;
    if (!session) return;
    if (message.type === 'setup') {
      this.log.warn('duplicate setup on an open socket ignored');
      return;
    }
    if (message.type === 'error') this.log.warn({ description: message.description }, 'twilio reported an error');
    if (message.type === 'info') this.log.debug({ name: message.name }, 'info');
    const event = toSessionEvent(message, deps.manager.clock.now());
    if (event) deps.manager.send(session, this, event);
  }

  /**
   * The session cannot be had: `end` makes Twilio post the action callback, which speaks the apology
   * and hangs up (see service-unavailable.ts). Never silence, never a bare 1011.
   */
  private endUnavailable(): void {
    this.ended = true;
    this.connecting = false;
    this.queued = undefined;
    this.send(serviceUnavailableEnd);
    setTimeout(() => this.close(1000, 'service unavailable'), END_CLOSE_MS).unref();
  }
}
