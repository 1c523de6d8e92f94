// Drives the REAL server for the call model: one method per model event (over real sockets and
// HTTP, like Twilio would), and `check`, which compares a model state's expectations with the
// live actor and the stored record. One driver per path: its own fake LLM, server, store and
// TestClock. The clock stands still, so grace only runs out when GRACE_EXPIRE moves it: the
// server cannot expire a session the model still expects to be waiting, however slow the machine.
import { rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { expect, vi } from 'vitest';
import type { TestParam } from '@xstate/graph';
import { SimulatedCall, twilioReconnectOptions } from '../../src/client/twilio-sim.js';
import { startFakeOpenAI, type FakeOpenAI } from '../../src/llm/fake-openai-server.js';
import { resumeLine } from '../../src/machines/phrases.js';
import type { OutboundMessage } from '../../src/protocol/messages.js';
import { startTestServer, tempSqlitePath, type TestServer } from '../support/harness.js';
import { REDIS_URL } from '../support/redis.js';
import { TestClock } from '../support/test-clock.js';
import {
  SPANISH_OK,
  STORY_CHUNKS,
  clearRedisPrefix,
  nextSpokenReply,
  postDroppedAction,
  relayUrlOf,
  scenarioScript,
  transcriptOf,
  waitForDeltas,
  waitForRequest,
} from '../support/resume-scenario.js';
import type { CallModelEvent, StoreKind } from './call-model.js';
import type { ModelSnapshot } from './call-paths.js';
import { observe, type Observation, type SessionView } from './server-probe.js';

export interface DriverOptions {
  store: StoreKind;
  /** Key prefix for this path's Redis keys. */
  redisPrefix: string;
  graceMs: number;
  dtmfIdleMs: number;
  /** Delay between the chunks of the slow reply that INTERRUPT cuts. */
  storyDelayMs: number;
}

/** Whether this server instance should hold a live actor for the call. */
type Residency = 'yes' | 'no' | 'either';

const REPLY_MS = 10_000;
/** How long a check waits for the server to reach the expected state (writes, restores are asynchronous). */
const SETTLE_MS = 10_000;
/** Past every grace deadline, including the slack an instance gives a dead owner's deadline. */
const PAST_GRACE_MS = 5_000;
const DIGIT_BATCHES = ['555', '012'] as const;

export class CallDriver {
  private call: SimulatedCall | undefined;
  private twiml: string | undefined;
  private residency: Residency = 'no';
  /** The model state last checked: the state an event's exec starts from. */
  private previous: ModelSnapshot | undefined;
  /** Makes every caller utterance unique, so a replayed turn shows up as a duplicate. */
  private utterances = 0;
  /** Digit batches typed into the current keypad entry. */
  private digitBatches = 0;

  private constructor(
    private readonly opts: DriverOptions,
    private readonly llm: FakeOpenAI,
    private readonly sqlitePath: string,
    private readonly clock: TestClock,
    private ts: TestServer,
  ) {}

  static async start(opts: DriverOptions): Promise<CallDriver> {
    const llm = await startFakeOpenAI({ script: scenarioScript({ storyDelayMs: opts.storyDelayMs }) });
    const sqlitePath = tempSqlitePath();
    const clock = new TestClock();
    const ts = await CallDriver.server(opts, llm, sqlitePath, clock);
    return new CallDriver(opts, llm, sqlitePath, clock, ts);
  }

  /** A server on this path's store: the same SQLite file / Redis prefix (and host clock) across restarts. */
  private static server(opts: DriverOptions, llm: FakeOpenAI, sqlitePath: string, clock: TestClock): Promise<TestServer> {
    return startTestServer({
      sharedLlm: llm,
      redisPrefix: opts.redisPrefix,
      config: { store: opts.store, sqlitePath, graceMs: opts.graceMs, dtmfIdleMs: opts.dtmfIdleMs },
      clock,
    });
  }

  /** The exec of every model event, for TestPath.test(). */
  get events(): NonNullable<TestParam<ModelSnapshot, CallModelEvent>['events']> {
    return {
      CONNECT: () => this.connect(),
      PROMPT: ({ state }) => this.prompt(state),
      INTERRUPT: () => this.interrupt(),
      SWITCH_LANGUAGE: ({ state }) => this.switchLanguage(state),
      START_DTMF: ({ state }) => this.startDtmf(state),
      DIGITS: () => this.digits(),
      DROP: () => this.drop(),
      ACTION: () => this.action(),
      RESUME_TWILIO: ({ state }) => this.resumeTwilio(state),
      RESUME_RECONNECT: ({ state }) => this.resumeReconnect(state),
      GRACE_EXPIRE: () => this.graceExpire(),
      SERVER_RESTART: () => this.restart(),
    };
  }

  // ------------------------------------------------------------------ events

  private async connect(): Promise<void> {
    this.call = await SimulatedCall.connect({ url: this.ts.server.relayUrl });
    this.residency = 'yes';
  }

  private openCall(): SimulatedCall {
    if (!this.call?.isOpen) throw new Error('the model expects an open call here');
    return this.call;
  }

  /** The caller speaks; the reply must echo it, and the model must have seen each earlier turn once. */
  private async prompt(state: ModelSnapshot): Promise<void> {
    const call = this.openCall();
    const text = `hello number ${++this.utterances}`;
    const before = this.llm.requests.length;
    call.prompt(text);
    expect((await nextSpokenReply(call, REPLY_MS)).text).toBe(`You said: ${text}`);
    const request = await waitForRequest(this.llm, (m) => m.at(-1)?.role === 'user' && m.at(-1)?.content === text, REPLY_MS, before);
    // Everything but the answer being generated: the whole history, once.
    const turns = transcriptOf(request.messages);
    expect(turns).toHaveLength(state.context.history - 1);
    expect(new Set(turns.filter((t) => t.startsWith('user:'))).size).toBe(turns.filter((t) => t.startsWith('user:')).length);
  }

  /** A slow reply is cut after two chunks: only what the caller heard becomes the assistant turn. */
  private async interrupt(): Promise<void> {
    const call = this.openCall();
    const start = call.messages.length;
    call.prompt(`tell me a story number ${++this.utterances}`);
    await waitForDeltas(call, 2, REPLY_MS);
    const heard = textSince(call, start);
    expect(heard.startsWith(STORY_CHUNKS[0]!)).toBe(true);
    call.interrupt(heard, 400);
    await call.nextReply(REPLY_MS); // the server closes the talk cycle
    const last = this.ts.server.manager.get(call.callSid)?.actor.getSnapshot().context.history.at(-1);
    expect(last).toEqual({ role: 'assistant', content: heard, interrupted: true });
  }

  private async switchLanguage(state: ModelSnapshot): Promise<void> {
    const call = this.openCall();
    const start = call.messages.length;
    call.prompt(`can we speak spanish, number ${++this.utterances}`);
    expect((await nextSpokenReply(call, REPLY_MS)).text).toBe(SPANISH_OK);
    const switched = call.messages.slice(start).filter((m) => m.type === 'language');
    expect(switched).toEqual([{ type: 'language', ttsLanguage: state.context.language, transcriptionLanguage: state.context.language }]);
  }

  /** The model asks for a phone number on the keypad; the collector's prompt is spoken. */
  private async startDtmf(state: ModelSnapshot): Promise<void> {
    const call = this.openCall();
    call.prompt(`let me type my phone number, number ${++this.utterances}`);
    const prompt = (await nextSpokenReply(call, REPLY_MS)).text;
    expect(prompt).toMatch(state.context.language === 'es-US' ? /10 dígitos/ : /10-digit phone number/);
    this.digitBatches = 0;
  }

  /** The next batch of the phone number; how many digits the server holds is left to the state check. */
  private async digits(): Promise<void> {
    const digits = DIGIT_BATCHES[this.digitBatches++];
    if (!digits) throw new Error(`the model typed more than ${DIGIT_BATCHES.length} batches`);
    this.openCall().digits(digits);
  }

  private async drop(): Promise<void> {
    const call = this.openCall();
    expect((await call.drop()).code).toBe(1006);
  }

  /** Twilio's callback for the dropped socket: the server must ask it to reconnect. */
  private async action(): Promise<void> {
    const res = await postDroppedAction(this.ts.server.httpUrl, this.currentCall());
    expect(res.status).toBe(200);
    expect(res.body).toContain('<ConversationRelay');
    this.twiml = res.body;
    this.residency = 'yes';
  }

  /** Twilio opens the socket named in the TwiML: NEW sessionId, SAME callSid. */
  private async resumeTwilio(state: ModelSnapshot): Promise<void> {
    if (!this.twiml) throw new Error('RESUME_TWILIO needs the TwiML of an ACTION');
    // The TwiML names the public host; after a restart the instance behind it listens on a new port.
    const url = new URL(relayUrlOf(this.twiml));
    // The relay path of the TwiML's own token (what Twilio signs): /relay/<ticket>.
    expect(url.pathname).toMatch(/^\/relay\/[\w-]{43}$/);
    url.host = new URL(this.ts.server.relayUrl).host;
    const dropped = this.currentCall();
    this.call = await SimulatedCall.connect(twilioReconnectOptions(this.twiml, dropped, { url: url.toString() }));
    expect(this.call.sessionId).not.toBe(dropped.sessionId);
    await this.expectResumeGreeting(state);
  }

  /** A non-Twilio client resumes with its own sessionId and `reconnection: true`. */
  private async resumeReconnect(state: ModelSnapshot): Promise<void> {
    const dropped = this.currentCall();
    this.call = await SimulatedCall.connect({
      url: this.ts.server.relayUrl,
      callSid: dropped.callSid,
      sessionId: dropped.sessionId,
      reconnection: true,
    });
    this.residency = 'yes';
    // After expiry the reconnect starts a fresh session: nothing to say sorry for.
    if (this.previous?.context.lifecycle !== 'expired') await this.expectResumeGreeting(state);
  }

  /** The call's language is restored first, then the caller hears the resume line. */
  private async expectResumeGreeting(state: ModelSnapshot): Promise<void> {
    const call = this.openCall();
    const { language } = state.context;
    expect(await call.waitForType('language', REPLY_MS)).toEqual({ type: 'language', ttsLanguage: language, transcriptionLanguage: language });
    expect((await call.nextReply(REPLY_MS)).text).toBe(resumeLine(language));
    this.residency = 'yes';
  }

  /**
   * Nobody reconnects: time moves past the grace deadline, and the session's grace timer (or, after a
   * restart, the deadline the new instance adopted from the store) expires it.
   */
  private async graceExpire(): Promise<void> {
    const { callSid } = this.currentCall();
    this.clock.advance(this.opts.graceMs + PAST_GRACE_MS);
    await vi.waitFor(
      async () => expect((await observe(this.ts.server, callSid)).stored?.lifecycle, `session ${callSid} expired`).toBe('expired'),
      { timeout: SETTLE_MS, interval: 25 },
    );
    this.residency = 'no';
  }

  /** Closes the server (persisting and stopping every actor) and starts a new one on the same store. */
  private async restart(): Promise<void> {
    const call = this.currentCall();
    const wasOpen = call.isOpen;
    await this.ts.close();
    if (wasOpen) expect((await call.closed).code).toBe(1001);
    this.ts = await CallDriver.server(this.opts, this.llm, this.sqlitePath, this.clock);
    // Restoring on demand (or eagerly) are both fine; the stored record is checked either way.
    this.residency = 'either';
  }

  private currentCall(): SimulatedCall {
    if (!this.call) throw new Error('no call yet');
    return this.call;
  }

  // ------------------------------------------------------------------ state checks

  /** Compares the model state's expectations with the real server (waiting while it settles). */
  async check(state: ModelSnapshot): Promise<void> {
    this.previous = state;
    const want = state.context;
    if (want.lifecycle === null) {
      expect(this.call).toBeUndefined();
      return;
    }
    const call = this.currentCall();
    const linked = state.value === 'connected';
    const expected: SessionView = {
      lifecycle: want.lifecycle,
      history: want.history,
      language: want.language,
      dtmf: want.dtmf,
      resumes: want.resumes,
      historyProblems: [],
    };
    const expectedOf = (seen: Observation): Observation => ({
      live:
        this.residency === 'yes' || (this.residency === 'either' && seen.live)
          ? { ...expected, socketAttached: linked }
          : undefined,
      stored: expected,
    });

    await vi.waitFor(
      async () => {
        const seen = await observe(this.ts.server, call.callSid);
        expect(seen, `server state for model state ${JSON.stringify(state.value)}`).toEqual(expectedOf(seen));
      },
      { timeout: SETTLE_MS, interval: 20 },
    );

    // The caller's side: a live socket with nothing unexpected said, or a closed one.
    expect(call.invalidFrames).toBe(0);
    if (linked) {
      expect(call.isOpen).toBe(true);
      expect(unread(call), 'messages the caller did not expect').toEqual([]);
    } else {
      expect(call.isOpen).toBe(false);
    }
  }

  async dispose(): Promise<void> {
    await this.call?.drop();
    await this.ts.close();
    await this.llm.close();
    if (this.opts.store === 'redis') await clearRedisPrefix(REDIS_URL, this.opts.redisPrefix);
    await rm(dirname(this.sqlitePath), { recursive: true, force: true });
  }
}

function textSince(call: SimulatedCall, start: number): string {
  return call.messages
    .slice(start)
    .map((m) => (m.type === 'text' ? m.token : ''))
    .join('');
}

function unread(call: SimulatedCall): OutboundMessage[] {
  return call.messages.slice(call.readCursor);
}
