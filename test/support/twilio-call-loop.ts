// One phone call driven the way Twilio drives it, for tests that restart or balance the server under
// live calls. Twilio never reconnects a socket by itself: when the socket closes without an `end`
// frame it POSTs the `<Connect action>` URL (ErrorCode 64105, call in progress) and follows the
// TwiML it gets back to a new socket (new sessionId, same callSid). A `<Hangup/>` answer, an HTTP
// error or a refused upgrade ends the call: it is lost.
//
// The caller takes turns: it speaks, then waits for the whole reply. A prompt whose socket closed
// before its reply came is said again on the next socket: a drain finishes every reply it received
// before closing, so the server never had that prompt (as a caller who heard nothing repeats
// themselves). Key presses have no acknowledgement in the protocol, so keys sent just as a socket is
// handed on may be lost; tests press keys while no reload is under way, or wait for the stored entry.
import { randomBytes } from 'node:crypto';
import { SimulatedCall, twilioReconnectOptions } from '../../src/testing/twilio-sim.js';
import { postAction, postIncomingCall } from '../../src/testing/twilio-webhooks.js';
import { readRelayTwiml } from '../../src/testing/twiml-reader.js';
import { resumeLine } from '../../src/machines/phrases.js';

export interface CallReport {
  callSid: string;
  /** What the caller said, in order, each prompt once (also when it had to be said again). */
  said: string[];
  /** Keys pressed, in order. */
  keyed: string;
  /** Every reply heard, in order, the resume lines included. */
  heard: string[];
  /** Sockets the call used: one plus the resumes. */
  sockets: number;
  /** Prompts said a second time because their socket closed before the reply. */
  repeated: string[];
  /** Why the call ended against the caller's will, if it did. */
  lost?: string;
}

export class CallLostError extends Error {
  override name = 'CallLostError';
}

export interface CallLoopOptions {
  callSid?: string;
  /** Upper bound for one reply (a drain lets the reply in progress finish first). */
  replyTimeoutMs?: number;
}

/** One socket of the call; `next` is the socket Twilio opens after this one closes. */
interface Leg {
  sim: SimulatedCall;
  next: Promise<Leg>;
}

/** Splits a resume greeting into the resume line and whatever answer came with it. */
function splitGreeting(greeting: string): { line: string; carried?: string } {
  const line = [resumeLine('en-US'), resumeLine('es-US')].find((l) => greeting.startsWith(l));
  if (!line) return { line: greeting };
  const rest = greeting.slice(line.length).trim();
  return rest ? { line, carried: rest } : { line };
}

const spoken = async (sim: SimulatedCall, timeoutMs: number): Promise<string> => {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    // Empty talk-cycle closes (e.g. after a tool call) are not speech.
    const { text } = await sim.nextReply(Math.max(1, deadline - Date.now()));
    if (text !== '') return text;
  }
};

export class TwilioCallLoop {
  private readonly report_: CallReport;
  private leg!: Leg;
  private actionUrl: string;
  /**
   * What the server said after a resume line: the answer to a prompt (or the key press) it took just
   * before the socket was handed on, maybe several sockets ago. A caller who heard it does not say that again.
   */
  private carried: string | undefined;
  /** Set when the caller hangs up or the server sends `end`: a close is then no drop. */
  private over = false;

  private constructor(
    callSid: string,
    twiml: string,
    private readonly replyTimeoutMs: number,
  ) {
    this.report_ = { callSid, said: [], keyed: '', heard: [], sockets: 0, repeated: [] };
    this.actionUrl = TwilioCallLoop.read(twiml).actionUrl;
  }

  /** Twilio's incoming-call webhook on `baseUrl`, then the socket its TwiML names. */
  static async start(baseUrl: string, opts: CallLoopOptions = {}): Promise<TwilioCallLoop> {
    const callSid = opts.callSid ?? `CA${randomBytes(16).toString('hex')}`;
    const twiml = await postIncomingCall(baseUrl, { CallSid: callSid });
    const loop = new TwilioCallLoop(callSid, twiml, opts.replyTimeoutMs ?? 30_000);
    const sim = await SimulatedCall.connect({ url: TwilioCallLoop.read(twiml).relayUrl, callSid, connectTimeoutMs: loop.replyTimeoutMs });
    loop.leg = loop.follow(sim);
    return loop;
  }

  get callSid(): string {
    return this.report_.callSid;
  }

  report(): CallReport {
    return { ...this.report_, said: [...this.report_.said], heard: [...this.report_.heard], repeated: [...this.report_.repeated] };
  }

  /** The caller speaks and hears the whole reply, across as many sockets as it takes. */
  async say(text: string): Promise<string> {
    this.report_.said.push(text);
    let sent = false;
    for (;;) {
      const sim = await this.open();
      // The server took the prompt before the hand-on and answered it after the resume line.
      const carried = sent ? this.takeCarried() : undefined;
      if (carried !== undefined) return this.heard(carried);
      if (!sim.prompt(text)) continue; // closing already: the next socket hears it
      if (sent) this.report_.repeated.push(text);
      sent = true;
      try {
        return this.heard(await spoken(sim, this.replyTimeoutMs));
      } catch (err) {
        if (!sim.closeInfo) throw err; // no reply on a live socket: a real failure
      }
    }
  }

  /** Presses keys (one dtmf frame each); keys not sent because the socket was closing go on the next one. */
  async press(digits: string): Promise<void> {
    this.report_.keyed += digits;
    let rest = digits;
    while (rest !== '') {
      const sim = await this.open();
      while (rest !== '' && sim.dtmf(rest[0]!)) rest = rest.slice(1);
    }
  }

  /** The next spoken reply, e.g. after the key that completes an entry. */
  async hear(): Promise<string> {
    for (;;) {
      const sim = await this.open();
      const carried = this.takeCarried();
      if (carried !== undefined) return this.heard(carried);
      try {
        return this.heard(await spoken(sim, this.replyTimeoutMs));
      } catch (err) {
        if (!sim.closeInfo) throw err;
      }
    }
  }

  /** The answer that came with a resume line since it was last taken, once. */
  private takeCarried(): string | undefined {
    const carried = this.carried;
    this.carried = undefined;
    return carried;
  }

  /** The caller hangs up: Twilio closes the socket and posts the final callback. */
  async hangup(): Promise<void> {
    const sim = await this.open();
    this.over = true;
    await sim.close(1000);
    const res = await this.postAction({ CallStatus: 'completed', SessionId: sim.sessionId, SessionStatus: 'completed' });
    if (res.status !== 200) throw new Error(`final /action answered HTTP ${res.status}: ${res.body}`);
  }

  /** The current socket, once it is open and (after a resume) its resume line was heard. */
  private async open(): Promise<SimulatedCall> {
    while (!this.leg.sim.isOpen) this.leg = await this.leg.next;
    return this.leg.sim;
  }

  private heard(text: string): string {
    this.report_.heard.push(text);
    return text;
  }

  private follow(sim: SimulatedCall): Leg {
    this.report_.sockets++;
    const leg: Leg = { sim, next: sim.closed.then(() => this.reconnect(sim)) };
    // Rejections are read through `open()`; an unread one (the call is idle) must not be unhandled.
    leg.next.catch(() => undefined);
    if (sim.messages.some((m) => m.type === 'end')) this.over = true;
    sim.onMessage((m) => {
      if (m.type === 'end') this.over = true;
    });
    return leg;
  }

  /** What Twilio does when a socket closes without `end`: the action callback, then the TwiML's socket. */
  private async reconnect(closed: SimulatedCall): Promise<Leg> {
    if (this.over) throw new CallLostError(`call ${this.callSid} is over`);
    let failure: string;
    try {
      const res = await this.postAction({
        CallStatus: 'in-progress',
        SessionId: closed.sessionId,
        SessionStatus: 'failed',
        ErrorCode: '64105',
        ErrorMessage: 'WebSocket ended',
      });
      if (res.status === 200 && res.body.includes('<ConversationRelay')) {
        const twiml = TwilioCallLoop.read(res.body);
        this.actionUrl = twiml.actionUrl;
        // With the token the TwiML carries, as Twilio hands it over.
        const sim = await SimulatedCall.connect({ ...twilioReconnectOptions(res.body, closed), connectTimeoutMs: this.replyTimeoutMs });
        const leg = this.follow(sim);
        try {
          const { line, carried } = splitGreeting(await spoken(sim, this.replyTimeoutMs));
          this.heard(line);
          if (carried !== undefined) this.carried = carried;
        } catch (err) {
          if (!sim.closeInfo) throw err; // handed on again before it spoke: `open()` moves on to leg.next
        }
        return leg;
      }
      failure = `/action answered HTTP ${res.status}: ${res.body.slice(0, 200)}`;
    } catch (err) {
      failure = `reconnect failed: ${(err as Error).message.split('\n')[0]}`;
    }
    this.report_.lost ??= failure;
    throw new CallLostError(`call ${this.callSid} lost: ${failure}`);
  }

  private postAction(params: Record<string, string>) {
    const url = new URL(this.actionUrl);
    return postAction(url.origin, { CallSid: this.callSid, ...params }, { actionUrl: this.actionUrl });
  }

  private static read(twiml: string): { relayUrl: string; actionUrl: string } {
    const { relayUrl, actionUrl } = readRelayTwiml(twiml);
    if (!relayUrl || !actionUrl) throw new Error(`TwiML without <Connect action><ConversationRelay url>: ${twiml}`);
    return { relayUrl, actionUrl };
  }
}

/** Plays `n` turns: `prompt(k)` is said for k = 0..n-1, each reply heard before the next turn. */
export async function talk(call: TwilioCallLoop, n: number, prompt: (k: number) => string): Promise<void> {
  for (let k = 0; k < n; k++) await call.say(prompt(k));
}
