// One Twilio ConversationRelay WebSocket: waits for setup, then turns typed frames into session events.
import type { WebSocket } from 'ws';
import { InvalidOutboundMessageError, parseInbound, serializeOutbound } from '../protocol/parse.js';
import type { InboundMessage, OutboundMessage } from '../protocol/messages.js';
import { cutToBytes } from './prompt-limit.js';
import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';
import type { SessionManager } from './session-manager.js';
import type { Session, SessionSocket } from './sessions/live-session.js';
import type { SessionEvent } from '../machines/session.js';
import { serviceUnavailableEnd } from './service-unavailable.js';

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
  let log = deps.logger;
  let session: Session | null = null;
  let connecting = false;
  // Frames sent in one burst (e.g. the buffered deltas of a reply) leave in one write instead of one
  // syscall each; the bench measured ~13% less server CPU per reply.
  let corked = false;
  const corkUntilNextTick = () => {
    if (!transport || corked) return;
    corked = true;
    transport.cork();
    process.nextTick(() => {
      corked = false;
      transport.uncork();
    });
  };
  // Frames that arrive while the session is being created or restored (async store I/O).
  const queued: InboundMessage[] = [];
  // The session hears of this socket's end once: at a limit's close (at once) or at the TCP close.
  let closedWith: number | undefined;
  let reportedClosed = false;
  const reportClosed = (code: number) => {
    closedWith ??= code;
    if (!session || reportedClosed) return;
    reportedClosed = true;
    deps.manager.socketClosed(session, socket, closedWith);
  };

  /** The peer stopped reading: its unsent bytes would grow without bound. Only this call is affected. */
  const closeUnread = () => {
    deps.metrics.limitHit('send_buffer');
    log.warn({ bufferedBytes: ws.bufferedAmount, limit: deps.limits.maxSendBufferBytes }, 'caller is not reading: send buffer over the limit, closing the socket');
    ws.close(1008, 'send buffer full');
    const cut = setTimeout(() => ws.terminate(), UNREAD_CLOSE_MS);
    cut.unref();
    ws.once('close', () => clearTimeout(cut));
    // A dropped call from now on (resumable like any other), not only once TCP gives up.
    reportClosed(1008);
  };

  const socket: SessionSocket = {
    send(message: OutboundMessage) {
      // Also stops the reply at once after a limit closed the socket (CLOSING).
      if (ws.readyState !== ws.OPEN) return;
      try {
        const frame = serializeOutbound(message);
        corkUntilNextTick();
        ws.send(frame);
        if (ws.bufferedAmount > deps.limits.maxSendBufferBytes) closeUnread();
      } catch (err) {
        // Never put an invalid frame on the wire: Twilio would drop it and hang up after ten.
        if (err instanceof InvalidOutboundMessageError) log.error({ err: err.message, type: message.type }, 'refused to send invalid outbound message');
        else throw err;
      }
    },
    close(code, reason) {
      if (ws.readyState === ws.OPEN || ws.readyState === ws.CONNECTING) ws.close(code, reason);
    },
  };

  const setupTimer = setTimeout(() => {
    if (!session && !connecting) {
      log.warn('no setup frame received; closing socket');
      socket.close(1008, 'setup expected');
    }
  }, deps.setupTimeoutMs ?? 10_000);

  /** A prompt over the size limit is cut; only final prompts reach the LLM, so only those are counted. */
  const capPrompt = (message: InboundMessage): InboundMessage => {
    if (message.type !== 'prompt') return message;
    const cut = cutToBytes(message.voicePrompt, deps.limits.maxPromptBytes);
    if (cut === undefined) return message;
    if (message.last) {
      deps.metrics.limitHit('prompt_bytes');
      log.warn({ bytes: Buffer.byteLength(message.voicePrompt), limit: deps.limits.maxPromptBytes }, 'prompt over the size limit cut');
    }
    return { ...message, voicePrompt: cut };
  };

  const route = (message: InboundMessage) => {
    if (!session) return;
    if (message.type === 'setup') {
      log.warn('duplicate setup on an open socket ignored');
      return;
    }
    if (message.type === 'error') log.warn({ description: message.description }, 'twilio reported an error');
    if (message.type === 'info') log.debug({ name: message.name }, 'info');
    const event = toSessionEvent(message, deps.manager.clock.now());
    if (event) deps.manager.send(session, socket, event);
  };

  let ended = false;
  /**
   * The session cannot be had: `end` makes Twilio post the action callback, which speaks the apology
   * and hangs up (see service-unavailable.ts). Never silence, never a bare 1011.
   */
  const endUnavailable = () => {
    ended = true;
    connecting = false;
    queued.length = 0;
    socket.send(serviceUnavailableEnd);
    setTimeout(() => socket.close(1000, 'service unavailable'), END_CLOSE_MS).unref();
  };

  ws.on('message', (data: Buffer, isBinary: boolean) => {
    if (ended || ws.readyState !== ws.OPEN) return; // we are closing it (or sent `end`): nothing more is taken
    const parsed = parseInbound(isBinary ? data : data.toString('utf8'));
    if (!parsed.ok) {
      deps.metrics.malformedFrames.inc({ reason: parsed.reason });
      // JSON.parse errors quote the raw frame, which may hold a keypad digit: log only schema errors.
      const detail = parsed.reason === 'invalid' ? parsed.detail.slice(0, 300) : undefined;
      log.warn({ reason: parsed.reason, bytes: data.length, detail }, 'malformed frame ignored');
      return;
    }
    const message = capPrompt(parsed.message);
    if (session) return route(message);
    if (connecting) {
      if (queued.length >= deps.limits.maxQueuedFrames) {
        queued.length = 0;
        deps.metrics.limitHit('queued_frames');
        log.warn({ limit: deps.limits.maxQueuedFrames }, 'too many frames before the session was ready; closing the socket');
        closedWith = 1008;
        socket.close(1008, 'too many frames before the session was ready');
        return;
      }
      queued.push(message);
      return;
    }
    if (message.type !== 'setup') {
      log.warn({ type: message.type }, 'frame before setup ignored');
      return;
    }
    clearTimeout(setupTimer);
    log = deps.logger.child({ callSid: message.callSid });
    if (deps.storeReady && !deps.storeReady()) {
      log.warn('store unavailable: ending the call with an apology');
      endUnavailable();
      return;
    }
    connecting = true;
    // Bounded: every store call fails after STORE_TIMEOUT_MS, and at once while the store is known down.
    deps.manager
      .connect(message, socket, ticket)
      .then((result) => {
        connecting = false;
        if (!result.ok) {
          socket.close(result.code, result.reason);
          return;
        }
        session = result.session;
        if (ws.readyState !== ws.OPEN) {
          // The socket died (or a limit closed it) while we were restoring: tell the session right away.
          reportClosed(closedWith ?? 1006);
          return;
        }
        for (const m of queued.splice(0)) route(m);
      })
      .catch((err: unknown) => {
        log.error({ err }, 'could not start or resume the session: ending the call with an apology');
        endUnavailable();
      });
  });

  ws.on('close', (code: number) => {
    clearTimeout(setupTimer);
    reportClosed(code);
  });
  ws.on('error', (err) => log.warn({ err: err.message }, 'socket error'));
}
