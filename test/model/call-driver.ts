// Drives the REAL server for the call model: one method per model event (over real sockets and
// HTTP, like Twilio would), and `check`, which compares a model state's expectations with the
// live actor and the stored record. One driver per path: its own fake LLM, server (and, on a store
// instances can share, a second server started when the call first moves), store and TestClock.
// The clock stands still, so grace and keypad idle time only pass when GRACE_EXPIRE and
// KEYPAD_IDLE move it: the server cannot expire a session or re-prompt a caller the model still
// expects to be waiting, however slow the machine. Nothing here sleeps: every step waits for the
// frame, answer, LLM request or stored record it expects.
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { expect, vi } from 'vitest';
import type { TestParam } from '@xstate/graph';
import { SimulatedCall, twilioReconnectOptions } from '../../src/testing/twilio-sim.js';
import { readRelayTwiml } from '../../src/testing/twiml-reader.js';
import { postAction } from '../../src/testing/twilio-webhooks.js';
import { contentToText, splitIntoChunks, startFakeOpenAI, type FakeOpenAI, type ScriptFn } from '../../src/testing/fake-openai-server.js';
import { llmFailureLine, resumeLine } from '../../src/machines/phrases.js';
import type { OutboundMessage } from '../../src/protocol/messages.js';
import { hashSecret } from '../../src/server/resume-proof.js';
import { startTestServer, tempSqlitePath, type TestServer } from '../support/harness.js';
import { REDIS_URL } from '../support/redis.js';
import { TestClock } from '../support/test-clock.js';
import {
  DIGITS_OK,
  SPANISH_OK,
  STORY_CHUNKS,
  clearRedisPrefix,
  gate,
  nextSpokenReply,
  postDroppedAction,
  relayUrlOf,
  resumeViaReconnection,
  scenarioScript,
  transcriptOf,
  waitForDeltas,
  waitForRequest,
} from '../support/resume-scenario.js';
import { LIMITS, MAX_RESUMES, type CallModelEvent, type Instance, type ModelSnapshot, type StoreKind } from './call-model.js';
import { observe, type Observation, type SessionView } from './server-probe.js';

export interface DriverOptions {
  store: StoreKind;
  /** Key prefix for this path's Redis keys. */
  redisPrefix: string;
  graceMs: number;
  dtmfIdleMs: number;
  /** Delay between the chunks of the slow replies (the story INTERRUPT cuts, the tale a drop cuts). */
  storyDelayMs: number;
}

/** Whether this server instance should hold a live actor for the call. */
type Residency = 'yes' | 'no' | 'either';

const REPLY_MS = 10_000;
/** How long a check waits for the server to reach the expected state (writes, restores are asynchronous). */
const SETTLE_MS = 10_000;
/** Past every grace deadline, including the slack an instance gives a dead owner's deadline. */
const PAST_GRACE_MS = 5_000;
/** The number the caller types on the keypad, in batches of LIMITS.digitsPerBatch. */
const PHONE = '5550123456';
/** The reply a drop cuts off (short: after the resume it streams to its end at the slow pace). */
const TALE = 'Once upon a time a small robot answered every call, and it never lost a word.';
const TALE_CHUNKS = splitIntoChunks(TALE);
/** Chunks of the tale that stream before the fake LLM holds it: DROP_MID_REPLY drops the socket there. */
const HELD_CHUNKS = 3;
/** Chunks of the reply that LLM_ERROR breaks off: the caller has heard them when the LLM connection fails. */
const CHUNKS_BEFORE_ERROR = 2;
const HANDOFF_WORDS = ' Of course, I am connecting you to an agent now.';
const HANDOFF_REASON = 'caller asked for a person';
/** HANDOFF_NUMBER: the action callback after a handoff dials it. */
const AGENT_LINE = '+15550100099';

const PHONE_PROMPT: Record<string, string> = {
  'en-US': 'Please enter your 10-digit phone number, starting with the area code.',
  'es-US': 'Por favor, marque su número de teléfono de 10 dígitos, empezando con el código de área.',
};
const NO_INPUT: Record<string, string> = {
  'en-US': "Sorry, I didn't get any input.",
  'es-US': 'Lo siento, no recibí ninguna respuesta.',
};
const NOT_ALLOWED = { code: 1008, reason: 'not allowed to resume this session' };
const LIMIT_REACHED = { code: 1008, reason: 'resume limit reached' };

export class CallDriver {
  private call: SimulatedCall | undefined;
  /** The TwiML of the last reconnect answer, and the resume token it carried. */
  private twiml: string | undefined;
  private resumeToken: string | undefined;
  /** Tokens a resume has used: replaying one must be refused. */
  private readonly spentTokens: string[] = [];
  private residency: Residency = 'no';
  /** The instance the call is on (the model's `instance`); B is started when the call first moves. */
  private instance: Instance = 'A';
  private readonly servers: Partial<Record<Instance, TestServer>> = {};
  /** The model state last checked: the state an event's exec starts from. */
  private previous: ModelSnapshot | undefined;
  /** Makes every caller utterance unique, so a replayed turn shows up as a duplicate. */
  private utterances = 0;
  /** Holds the tale (the reply a drop cuts off) after HELD_CHUNKS chunks until the resume. */
  private tale = gate();
  /** Breaks the reply LLM_ERROR asks for after CHUNKS_BEFORE_ERROR chunks. */
  private glitch: Promise<never> = new Promise(() => {});

  private constructor(
    private readonly opts: DriverOptions,
    private readonly llm: FakeOpenAI,
    private readonly sqlitePath: string,
    private readonly clock: TestClock,
  ) {}

  static async start(opts: DriverOptions): Promise<CallDriver> {
    const llm = await startFakeOpenAI();
    const driver = new CallDriver(opts, llm, tempSqlitePath(), new TestClock());
    llm.setScript(driver.script(scenarioScript({ storyDelayMs: opts.storyDelayMs })));
    driver.servers.A = await driver.server();
    return driver;
  }

  /**
   * The scenario's replies ("spanish", "phone", "story", tool results, echoes), plus: "tale" -> TALE,
   * streamed slowly and held after HELD_CHUNKS chunks until the driver lets it go on; "glitch" -> the story, whose
   * connection breaks after CHUNKS_BEFORE_ERROR chunks when the driver says; "agent" -> last words
   * and a human_agent_handoff tool call.
   */
  private script(scenario: ScriptFn): ScriptFn {
    return (req) => {
      const last = req.messages.at(-1);
      const said = last?.role === 'user' ? contentToText(last.content) : '';
      if (said.includes('tale')) {
        return { chunks: TALE_CHUNKS, delayMs: this.opts.storyDelayMs, holdAfter: { chunks: HELD_CHUNKS, until: this.tale.opened } };
      }
      if (said.includes('glitch')) return { chunks: STORY_CHUNKS, holdAfter: { chunks: CHUNKS_BEFORE_ERROR, until: this.glitch } };
      if (said.includes('agent')) {
        return { text: HANDOFF_WORDS, toolCalls: [{ name: 'human_agent_handoff', arguments: JSON.stringify({ reason: HANDOFF_REASON }) }] };
      }
      return scenario(req);
    };
  }

  /** A server on this path's store: the same SQLite file / Redis prefix and host clock for every instance and restart. */
  private server(): Promise<TestServer> {
    const { store, redisPrefix, graceMs, dtmfIdleMs } = this.opts;
    return startTestServer({
      sharedLlm: this.llm,
      redisPrefix,
      config: { store, sqlitePath: this.sqlitePath, graceMs, dtmfIdleMs, maxResumes: MAX_RESUMES, handoffNumber: AGENT_LINE },
      clock: this.clock,
    });
  }

  /** The instance holding the call. */
  private get ts(): TestServer {
    const ts = this.servers[this.instance];
    if (!ts) throw new Error(`instance ${this.instance} is not running`);
    return ts;
  }

  private get otherInstance(): Instance {
    return this.instance === 'A' ? 'B' : 'A';
  }

  /** The other instance (started the first time the call moves there). */
  private async other(): Promise<TestServer> {
    const name = this.otherInstance;
    this.servers[name] ??= await this.server();
    return this.servers[name];
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
      COMPLETE_DTMF: () => this.completeDtmf(),
      KEYPAD_IDLE: () => this.keypadIdle(),
      LLM_ERROR: () => this.llmError(),
      HANDOFF: () => this.handoff(),
      END_CALL: () => this.endCall(),
      DROP: () => this.drop(),
      DROP_MID_REPLY: () => this.dropMidReply(),
      ACTION: () => this.action(),
      ACTION_COMPLETED: () => this.actionCompleted(),
      ACTION_ELSEWHERE: () => this.actionElsewhere(),
      RESUME_TWILIO: () => this.resumeTwilio(),
      RESUME_RECONNECT: () => this.resumeReconnect(),
      RESUME_ELSEWHERE: () => this.resumeElsewhere(),
      RESUME_FORGED: () => this.resumeForged(),
      GRACE_EXPIRE: () => this.graceExpire(),
      SERVER_RESTART: () => this.restart(),
    };
  }

  /** The model state this event starts from. */
  private get before(): ModelSnapshot['context'] {
    if (!this.previous) throw new Error('no state checked yet');
    return this.previous.context;
  }

  // ------------------------------------------------------------------ conversation

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

  /**
   * A slow reply is cut after two chunks arrived, when the caller has heard only the first (speech
   * lags the stream): only what the caller heard becomes the assistant turn.
   */
  private async interrupt(): Promise<void> {
    const call = this.openCall();
    call.prompt(`tell me a story number ${++this.utterances}`);
    await waitForDeltas(call, 2, REPLY_MS);
    const heard = STORY_CHUNKS[0]!;
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
    expect((await nextSpokenReply(call, REPLY_MS)).text).toBe(PHONE_PROMPT[state.context.language]);
  }

  /** The next batch of the phone number; how many digits the server holds is left to the state check. */
  private async digits(): Promise<void> {
    const typed = this.before.dtmf ?? 0;
    this.openCall().digits(PHONE.slice(typed, typed + LIMITS.digitsPerBatch));
  }

  /**
   * The rest of the number: the entry completes at its 10th digit, and the model gets the whole
   * number, including digits typed before drops, restarts and moves.
   */
  private async completeDtmf(): Promise<void> {
    const call = this.openCall();
    const before = this.llm.requests.length;
    call.digits(PHONE.slice(this.before.dtmf ?? 0));
    expect((await nextSpokenReply(call, REPLY_MS)).text).toBe(DIGITS_OK);
    expect(await this.toolResultSince(before)).toEqual({ status: 'ok', kind: 'phoneNumber', value: PHONE });
  }

  /**
   * Nobody types: keypad idle time passes on the server's clock. The caller is re-prompted (and the
   * digits so far are dropped), or after the last attempt the entry fails and the model answers it.
   */
  private async keypadIdle(): Promise<void> {
    const call = this.openCall();
    const { language, keypadTimeouts } = this.before;
    const before = this.llm.requests.length;
    this.clock.advance(this.opts.dtmfIdleMs);
    if (keypadTimeouts + 1 < LIMITS.keypadAttempts) {
      expect((await call.nextReply(REPLY_MS)).text).toBe(`${NO_INPUT[language]} ${PHONE_PROMPT[language]}`);
      return;
    }
    expect((await nextSpokenReply(call, REPLY_MS)).text).toBe(DIGITS_OK);
    expect(await this.toolResultSince(before)).toEqual({ status: 'failed', kind: 'phoneNumber', reason: 'timeout' });
  }

  /** The keypad entry's result, as the model received it in the first request since `from`. */
  private async toolResultSince(from: number): Promise<unknown> {
    const request = await waitForRequest(this.llm, (m) => m.at(-1)?.role === 'tool', REPLY_MS, from);
    return JSON.parse(contentToText(request.messages.at(-1)!.content));
  }

  /**
   * The LLM connection breaks in the middle of a streamed reply: the caller keeps what it heard,
   * followed by the apology, and exactly that becomes the assistant turn (the SDK does not retry a
   * stream that already started).
   */
  private async llmError(): Promise<void> {
    const call = this.openCall();
    const start = call.messages.length;
    let fail!: (err: Error) => void;
    this.glitch = new Promise<never>((_, reject) => (fail = reject));
    this.glitch.catch(() => {}); // the fake LLM awaits it; a rejection nobody awaits yet is not an error
    const before = this.llm.requests.length;
    call.prompt(`this line will glitch, number ${++this.utterances}`);
    await waitForDeltas(call, CHUNKS_BEFORE_ERROR, REPLY_MS);
    fail(new Error('the LLM connection broke mid-stream'));
    await call.nextReply(REPLY_MS);
    const heard = textSince(call, start);
    expect(heard).toBe(`${STORY_CHUNKS.slice(0, CHUNKS_BEFORE_ERROR).join('')} ${llmFailureLine(this.before.language)}`);
    expect(this.llm.requests.length - before, 'LLM requests for the broken reply').toBe(1);
    const last = this.ts.server.manager.get(call.callSid)?.actor.getSnapshot().context.history.at(-1);
    expect(last).toEqual({ role: 'assistant', content: heard });
  }

  /** The caller asks for a person: the agent's last words, closed, then `end` with the handoff data. */
  private async handoff(): Promise<void> {
    const call = this.openCall();
    const start = call.messages.length;
    call.prompt(`let me talk to an agent, number ${++this.utterances}`);
    const end = await call.waitForType('end', REPLY_MS);
    const said = call.messages.slice(start, call.messages.indexOf(end));
    expect(said.at(-1)).toEqual({ type: 'text', token: '', last: true });
    expect(textOf(said)).toBe(HANDOFF_WORDS);
    expect(JSON.parse(end.handoffData ?? 'null')).toEqual({ reason: HANDOFF_REASON, callSid: call.callSid, language: this.before.language });
  }

  /** Twilio closes the socket after `end` and posts the callback (SessionStatus=ended): it dials the agent line. */
  private async endCall(): Promise<void> {
    const call = this.openCall();
    const end = [...call.messages].reverse().find((m) => m.type === 'end');
    await call.close(1000);
    const res = await postAction(this.ts.server.httpUrl, {
      CallSid: call.callSid,
      CallStatus: 'in-progress',
      SessionId: call.sessionId,
      SessionStatus: 'ended',
      HandoffData: end?.type === 'end' ? end.handoffData : undefined,
    });
    expect(res.status).toBe(200);
    expect(res.body).toContain(`<Dial>${AGENT_LINE}</Dial>`);
    this.residency = 'no';
  }

  // ------------------------------------------------------------------ link

  private async drop(): Promise<void> {
    const call = this.openCall();
    expect((await call.drop()).code).toBe(1006);
  }

  /**
   * The caller asks for a tale, which streams slowly; the socket drops after HELD_CHUNKS chunks,
   * before the reply's `last: true` (the fake LLM holds the rest until the resume).
   */
  private async dropMidReply(): Promise<void> {
    const call = this.openCall();
    this.tale = gate();
    const start = call.messages.length;
    call.prompt(`tell me a long tale, number ${++this.utterances}`);
    await waitForDeltas(call, HELD_CHUNKS, REPLY_MS);
    expect(call.messages.slice(start).some((m) => m.type === 'text' && m.last)).toBe(false);
    expect((await call.drop()).code).toBe(1006);
  }

  /**
   * Twilio's callback for the dropped socket: the server asks it to reconnect, with a fresh resume
   * token in the TwiML; once the call's resumes are used up it hangs up instead and the call ends.
   */
  private async action(): Promise<void> {
    await this.expectReconnectAnswer(await postDroppedAction(this.ts.server.httpUrl, this.currentCall()), this.ts);
  }

  /**
   * The callback lands on the other instance (behind a balancer): it takes the session over from the
   * store, fencing the first instance, and asks Twilio to reconnect to itself.
   */
  private async actionElsewhere(): Promise<void> {
    const other = await this.other();
    const res = await postDroppedAction(other.server.httpUrl, this.currentCall());
    this.instance = this.otherInstance;
    await this.expectReconnectAnswer(res, other);
  }

  private async expectReconnectAnswer(res: { status: number; body: string }, answering: TestServer): Promise<void> {
    expect(res.status).toBe(200);
    if (this.before.resumes >= MAX_RESUMES) {
      expect(res.body).toContain('<Hangup/>');
      expect(res.body).not.toContain('<ConversationRelay');
      this.residency = 'no';
      return;
    }
    expect(res.body).toContain('<ConversationRelay');
    const { relayUrl, parameters } = readRelayTwiml(res.body);
    // The TwiML sends Twilio to the instance that answered (its Host).
    expect(new URL(relayUrl ?? '').host).toBe(new URL(answering.server.relayUrl).host);
    expect(parameters.resumeToken).toMatch(/^[\w-]{43}$/);
    this.twiml = res.body;
    this.resumeToken = parameters.resumeToken;
    this.residency = 'yes';
  }

  /** The caller hung up while the socket was gone (CallStatus=completed): nothing to resume, the call ends. */
  private async actionCompleted(): Promise<void> {
    const call = this.currentCall();
    const res = await postAction(this.ts.server.httpUrl, {
      CallSid: call.callSid,
      CallStatus: 'completed',
      SessionId: call.sessionId,
      SessionStatus: 'completed',
    });
    expect(res.status).toBe(200);
    expect(res.body).toContain('<Hangup/>');
    expect(res.body).not.toContain('<ConversationRelay');
    this.residency = 'no';
  }

  /**
   * Twilio opens the socket named in the TwiML: NEW sessionId, SAME callSid, and the TwiML's resume
   * token in customParameters (the proof that it is the call the server asked back).
   */
  private async resumeTwilio(): Promise<void> {
    if (!this.twiml || !this.resumeToken) throw new Error('RESUME_TWILIO needs the TwiML of an ACTION');
    // The TwiML names the public host; after a restart the instance behind it listens on a new port.
    const url = new URL(relayUrlOf(this.twiml));
    // The relay path of the TwiML's own token (what Twilio signs): /relay/<ticket>.
    expect(url.pathname).toMatch(/^\/relay\/[\w-]{43}$/);
    url.host = new URL(this.ts.server.relayUrl).host;
    const dropped = this.currentCall();
    this.call = await SimulatedCall.connect(twilioReconnectOptions(this.twiml, dropped, { url: url.toString() }));
    expect(this.call.sessionId).not.toBe(dropped.sessionId);
    expect(this.call.setup.customParameters.resumeToken).toBe(this.resumeToken);
    this.spentTokens.push(this.resumeToken);
    await this.expectResumeGreeting();
  }

  /**
   * A non-Twilio client resumes with its sessionId and `reconnection: true`; once the call's resumes
   * are used up it is refused and the session is left as it was. After the session expired or ended,
   * the same call starts a fresh session.
   */
  private async resumeReconnect(): Promise<void> {
    const { lifecycle, resumes } = this.before;
    const fresh = lifecycle === 'expired' || lifecycle === 'ended';
    if (!fresh && resumes >= MAX_RESUMES) {
      await this.expectRefused(this.ts, [() => resumeViaReconnection(this.ts.server.relayUrl, this.currentCall())], LIMIT_REACHED);
      return;
    }
    this.call = await resumeViaReconnection(this.ts.server.relayUrl, this.currentCall());
    this.residency = 'yes';
    // A fresh session has nothing to say sorry for.
    if (!fresh) await this.expectResumeGreeting();
  }

  /** The client reconnects to the other instance: it restores the session from the store and resumes it. */
  private async resumeElsewhere(): Promise<void> {
    const other = await this.other();
    this.call = await resumeViaReconnection(other.server.relayUrl, this.currentCall());
    this.instance = this.otherInstance;
    await this.expectResumeGreeting();
  }

  /**
   * Twilio-style setups (a new sessionId, the call's callSid, account and numbers) without the
   * token of the reconnect TwiML: none, a made-up one, one a resume already spent. Each is refused
   * without a word and the session, live and stored, is left exactly as it was.
   */
  private async resumeForged(): Promise<void> {
    const dropped = this.currentCall();
    const forged = (resumeToken?: string) => () =>
      SimulatedCall.connect({
        url: this.ts.server.relayUrl,
        callSid: dropped.callSid,
        accountSid: dropped.setup.accountSid,
        from: dropped.setup.from,
        to: dropped.setup.to,
        callStatus: 'in-progress',
        customParameters: resumeToken === undefined ? {} : { resumeToken },
      });
    const attempts = [forged(), forged(randomBytes(32).toString('base64url'))];
    const spent = this.spentTokens.at(-1);
    if (spent) attempts.push(forged(spent));
    await this.expectRefused(this.ts, attempts, NOT_ALLOWED);
  }

  /** Each attempt's socket is closed with `refusal` before anything is said; the stored record does not change. */
  private async expectRefused(ts: TestServer, attempts: Array<() => Promise<SimulatedCall>>, refusal: { code: number; reason: string }) {
    const { callSid } = this.currentCall();
    await ts.server.manager.flush();
    const before = await ts.server.store.load(callSid);
    for (const attempt of attempts) {
      const refused = await attempt();
      expect(await refused.closed).toEqual(refusal);
      expect(refused.messages).toEqual([]);
    }
    await ts.server.manager.flush();
    expect(await ts.server.store.load(callSid)).toEqual(before);
  }

  /**
   * The call's language is restored first, then the caller hears the resume line; a reply the drop
   * cut off follows it in full (the text the caller heard before the drop, then the rest).
   */
  private async expectResumeGreeting(): Promise<void> {
    const call = this.openCall();
    const { language, replying } = this.before;
    expect(await call.waitForType('language', REPLY_MS)).toEqual({ type: 'language', ttsLanguage: language, transcriptionLanguage: language });
    if (replying) {
      this.tale.open();
      expect((await call.nextReply(REPLY_MS)).text).toBe(`${resumeLine(language)} ${TALE}`);
    } else {
      expect((await call.nextReply(REPLY_MS)).text).toBe(resumeLine(language));
    }
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
      async () => expect((await observe(this.ts.server, callSid, true)).stored?.lifecycle, `session ${callSid} expired`).toBe('expired'),
      { timeout: SETTLE_MS, interval: 25 },
    );
    this.residency = 'no';
  }

  /** Closes the instance holding the call (persisting and stopping every actor) and starts a new one on the same store. */
  private async restart(): Promise<void> {
    const call = this.currentCall();
    const wasOpen = call.isOpen;
    await this.ts.close();
    if (wasOpen) expect((await call.closed).code).toBe(1001);
    this.servers[this.instance] = await this.server();
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
    expect(want.instance, 'the instance the call is on').toBe(this.instance);
    const call = this.currentCall();
    const linked = state.value === 'connected' || state.value === 'handedOff';
    const over = want.lifecycle === 'expired' || want.lifecycle === 'ended';
    // A cut-off reply waits for its answer; a call that ended in the middle of one never gets it.
    const lastMayBeUnanswered = want.replying || over;
    const expectedOf = (seen: Observation): Observation => {
      const view = (actual: SessionView | undefined): SessionView => ({
        lifecycle: want.lifecycle!,
        history: want.history,
        language: want.language,
        dtmf: want.dtmf,
        resumes: want.resumes,
        // A finished session keeps whatever it held when it stopped: nothing more to expect of these.
        replying: over ? (actual?.replying ?? false) : want.replying,
        resumeTokenHash: over
          ? (actual?.resumeTokenHash ?? null)
          : state.value === 'reconnecting'
            ? hashSecret(this.resumeToken ?? '')
            : null,
        historyProblems: [],
      });
      return {
        live:
          this.residency === 'yes' || (this.residency === 'either' && seen.live)
            ? { ...view(seen.live), socketAttached: linked }
            : undefined,
        stored: view(seen.stored),
      };
    };

    await vi.waitFor(
      async () => {
        const seen = await observe(this.ts.server, call.callSid, lastMayBeUnanswered);
        expect(seen, `server state for model state ${JSON.stringify(state.value)}`).toEqual(expectedOf(seen));
      },
      { timeout: SETTLE_MS, interval: 20 },
    );
    await this.checkOtherInstance(call.callSid);

    // The caller's side: a live socket with nothing unexpected said, or a closed one.
    expect(call.invalidFrames).toBe(0);
    if (linked) {
      expect(call.isOpen).toBe(true);
      expect(unread(call), 'messages the caller did not expect').toEqual([]);
    } else {
      expect(call.isOpen).toBe(false);
    }
  }

  /**
   * The instance the call left holds no socket for it. On Redis it lets go of its copy as soon as the
   * lease moves (lease notifications); a SQLite instance only learns at its copy's next write, so an
   * idle stale copy may stay until then, but never with a socket.
   */
  private async checkOtherInstance(callSid: string): Promise<void> {
    const other = this.servers[this.otherInstance];
    if (!other) return;
    await vi.waitFor(
      () => {
        const copy = other.server.manager.get(callSid);
        if (this.opts.store === 'redis') expect(copy, `instance ${this.otherInstance} still holds the call`).toBeUndefined();
        else expect(copy?.socket ?? null, `instance ${this.otherInstance} still has a socket for the call`).toBeNull();
      },
      { timeout: SETTLE_MS, interval: 20 },
    );
  }

  async dispose(): Promise<void> {
    this.tale.open();
    await this.call?.drop();
    for (const ts of Object.values(this.servers)) await ts.close();
    await this.llm.close();
    if (this.opts.store === 'redis') await clearRedisPrefix(REDIS_URL, this.opts.redisPrefix);
    await rm(dirname(this.sqlitePath), { recursive: true, force: true });
  }
}

function textOf(messages: OutboundMessage[]): string {
  return messages.map((m) => (m.type === 'text' ? m.token : '')).join('');
}

function textSince(call: SimulatedCall, start: number): string {
  return textOf(call.messages.slice(start));
}

function unread(call: SimulatedCall): OutboundMessage[] {
  return call.messages.slice(call.readCursor);
}
