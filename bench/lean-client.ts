// A lean ConversationRelay peer for load: it sends the same setup and prompt frames as
// SimulatedCall but only JSON-parses what arrives (no schema validation, no transcript), so the
// client's own cost stays small and identical for the floor and the server.
// bench/frame-check.ts validates the frames of both with the full SimulatedCall once per run.
import { randomBytes } from 'node:crypto';
import WebSocket from 'ws';
import type { SetupFrame } from '../src/testing/twilio-sim.js';

export const sid = (prefix: string) => prefix + randomBytes(16).toString('hex');

/** How a setup may differ: a resume's status, and the `<Parameter>`s of the TwiML (the resume token). */
export interface SetupOptions {
  reconnection?: boolean;
  callStatus?: string;
  customParameters?: Record<string, string>;
}

export function setupFrame(callSid: string, sessionId: string, opts: SetupOptions = {}): SetupFrame {
  return {
    type: 'setup',
    sessionId,
    callSid,
    accountSid: 'AC00000000000000000000000000bench',
    parentCallSid: '',
    from: '+15550100001',
    to: '+15550100002',
    forwardedFrom: '',
    callType: 'PSTN',
    callerName: '',
    direction: 'inbound',
    callStatus: opts.callStatus ?? (opts.reconnection ? 'IN-PROGRESS' : 'RINGING'),
    customParameters: { ...opts.customParameters },
    ...(opts.reconnection ? { reconnection: true as const } : {}),
  };
}

export type TextListener = (token: string, last: boolean) => void;

export class LeanCall {
  /** Called for every `text` frame; other frame types are counted only. */
  onText: TextListener | null = null;
  otherFrames = 0;
  invalidFrames = 0;
  readonly closed: Promise<number>;
  private isClosed = false;

  private constructor(
    private readonly ws: WebSocket,
    readonly callSid: string,
  ) {
    this.closed = new Promise((resolve) =>
      ws.on('close', (code) => {
        this.isClosed = true;
        resolve(code);
      }),
    );
    ws.on('error', () => {}); // followed by 'close'
    ws.on('message', (data: Buffer, isBinary) => {
      let frame: { type?: unknown; token?: unknown; last?: unknown };
      try {
        frame = isBinary ? {} : (JSON.parse(data.toString('utf8')) as typeof frame);
      } catch {
        this.invalidFrames++;
        return;
      }
      if (frame.type === 'text' && typeof frame.token === 'string') this.onText?.(frame.token, frame.last === true);
      else this.otherFrames++;
    });
  }

  /** Opens the socket (no setup yet): the caller decides when the setup frame goes out. */
  static open(url: string, callSid = sid('CA'), timeoutMs = 15_000): Promise<LeanCall> {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    const call = new LeanCall(ws, callSid);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        ws.terminate();
        reject(new Error(`LeanCall: timed out opening ${url}`));
      }, timeoutMs);
      ws.once('open', () => {
        clearTimeout(timer);
        resolve(call);
      });
      ws.once('close', (code) => {
        clearTimeout(timer);
        reject(new Error(`LeanCall: socket closed (${code}) before it opened`));
      });
    });
  }

  get open(): boolean {
    return !this.isClosed && this.ws.readyState === WebSocket.OPEN;
  }

  sendSetup(sessionId = sid('VX'), opts: SetupOptions = {}): void {
    this.send(setupFrame(this.callSid, sessionId, opts));
  }

  prompt(text: string): void {
    this.send({ type: 'prompt', voicePrompt: text, lang: 'en-US', last: true });
  }

  /** Network drop: no close frame, the server sees 1006. */
  drop(): Promise<number> {
    this.ws.terminate();
    return this.closed;
  }

  close(): Promise<number> {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) this.ws.close(1000);
    return this.closed;
  }

  private send(frame: object): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
  }
}
