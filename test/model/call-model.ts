// The call as the caller sees it, for model-based tests with @xstate/graph. This machine never
// talks to the server: its context is what the REAL server is expected to hold after each step
// (history length, keypad digits so far, language, lifecycle state, resume count, a reply cut off
// in flight, which instance holds the call). The test drives the server with one exec per event
// and checks every state against these expectations. Guards keep the graph finite: per session,
// bounded history, drops, restarts, moves between instances and keypad batches (a fresh session of
// the call, after it expired or ended, starts the bounds over, so one path can go on for long).
import { and, assign, not, setup, type SnapshotFrom } from 'xstate';

export type StoreKind = 'memory' | 'sqlite' | 'redis';

/** The server's lifecycle name for the session (lifecycleOf / SessionRecord.state). */
export type Lifecycle = 'connected' | 'disconnected' | 'grace' | 'expired' | 'ended';

export type Language = 'en-US' | 'es-US';

/** Which of the two server instances holds the call (and takes the next request): A, or B on a shared store. */
export type Instance = 'A' | 'B';

export interface CallExpectation {
  store: StoreKind;
  /** null until the first CONNECT. */
  lifecycle: Lifecycle | null;
  /** Entries in the session's history (user, assistant and tool turns). */
  history: number;
  language: Language;
  /** Digits typed so far in an active phone-number entry; null when no entry is active. */
  dtmf: number | null;
  /** Keypad idle timeouts in the active entry (the third one fails it). */
  keypadTimeouts: number;
  /** A reply was still streaming when the socket dropped: its user turn is stored, its answer is not yet. */
  replying: boolean;
  resumes: number;
  /** A forged resume was refused since the socket dropped: the genuine caller must still get back in. */
  forgedTried: boolean;
  instance: Instance;
  /** Bounds only: drops, restarts and moves so far in this session (the server does not see these). */
  drops: number;
  restarts: number;
  moves: number;
}

export type CallModelEvent =
  | { type: 'CONNECT' }
  | { type: 'PROMPT' }
  | { type: 'INTERRUPT' }
  | { type: 'SWITCH_LANGUAGE' }
  | { type: 'START_DTMF' }
  | { type: 'DIGITS' }
  | { type: 'COMPLETE_DTMF' }
  | { type: 'KEYPAD_IDLE' }
  | { type: 'LLM_ERROR' }
  | { type: 'HANDOFF' }
  | { type: 'END_CALL' }
  | { type: 'DROP' }
  | { type: 'DROP_MID_REPLY' }
  | { type: 'ACTION' }
  | { type: 'ACTION_COMPLETED' }
  | { type: 'ACTION_ELSEWHERE' }
  | { type: 'RESUME_TWILIO' }
  | { type: 'RESUME_RECONNECT' }
  | { type: 'RESUME_ELSEWHERE' }
  | { type: 'RESUME_FORGED' }
  | { type: 'GRACE_EXPIRE' }
  | { type: 'SERVER_RESTART' };

export const LIMITS = {
  /** Conversation size per session: room for a few turns around each drop. */
  history: 8,
  /** Drops with resumes left; one more is allowed once they are used up, to hit the cap. */
  drops: 2,
  restarts: 1,
  /** Moves of the call to the other instance (and back). */
  moves: 2,
  /** Digits per DIGITS event, and how many may be typed in batches before COMPLETE_DTMF types the rest. */
  digitsPerBatch: 3,
  digits: 6,
  /** A phone number entry completes at its 10th digit. */
  phoneDigits: 10,
  /** The keypad collector's attempts: this many idle timeouts fail the entry. */
  keypadAttempts: 3,
} as const;

/** The server's MAX_RESUMES in these tests: the model reaches it. */
export const MAX_RESUMES = 2;

/** History entries each conversational event adds (see the session machine's actions). */
export const HISTORY_ADDED = {
  /** user + assistant */
  prompt: 2,
  /** a cancelled keypad entry's tool result + user + assistant */
  promptCancellingDtmf: 3,
  /** user + assistant (only what the caller heard) */
  interrupt: 2,
  /** user + assistant tool call + tool result + assistant answer */
  switchLanguage: 4,
  /** user + assistant tool call (the tool result comes when the entry ends) */
  startDtmf: 2,
  /** the entry's tool result (ok, or failed after the last idle timeout) + the assistant's answer */
  dtmfResult: 2,
  /** user + assistant (what was streamed before the failure, then the apology) */
  llmError: 2,
  /** user + assistant (final words with the handoff tool call) + tool result */
  handoff: 3,
  /** the user turn is stored when the reply starts; the answer once it finished after the resume */
  replyCutOff: 1,
  replyFinished: 1,
} as const;

/**
 * A fresh session (a new call, or a reconnect after the call's session expired or ended). The
 * bounds start over with it, so one path can go on through several sessions of the call.
 */
const fresh = {
  lifecycle: 'connected',
  history: 0,
  language: 'en-US',
  dtmf: null,
  keypadTimeouts: 0,
  replying: false,
  resumes: 0,
  forgedTried: false,
  drops: 0,
  restarts: 0,
  moves: 0,
} as const;

const room = (entries: number) => ({ type: 'roomFor', params: { entries } }) as const;
const grow = (entries: number) => ({ type: 'addHistory', params: { entries } }) as const;

export const callModel = setup({
  types: {
    context: {} as CallExpectation,
    events: {} as CallModelEvent,
    input: {} as { store: StoreKind },
  },
  guards: {
    roomFor: ({ context }, params: { entries: number }) => context.history + params.entries <= LIMITS.history,
    collecting: ({ context }) => context.dtmf !== null,
    moreDigitsAllowed: ({ context }) => context.dtmf !== null && context.dtmf + LIMITS.digitsPerBatch <= LIMITS.digits,
    lastKeypadAttempt: ({ context }) => context.keypadTimeouts + 1 >= LIMITS.keypadAttempts,
    english: ({ context }) => context.language === 'en-US',
    resumesLeft: ({ context }) => context.resumes < MAX_RESUMES,
    /** Drops are bounded; once the resumes are used up one more drop shows the cap. */
    mayDrop: ({ context }) => context.drops < LIMITS.drops || (context.drops === LIMITS.drops && context.resumes >= MAX_RESUMES),
    /** The memory store dies with the process: a restart is only modelled for persistent stores. */
    mayRestart: ({ context }) => context.store !== 'memory' && context.restarts < LIMITS.restarts,
    /** Only stores that instances share (a SQLite file, Redis) let a second instance take the call. */
    mayMove: ({ context }) => context.store !== 'memory' && context.moves < LIMITS.moves,
  },
  actions: {
    startFresh: assign(fresh),
    addHistory: assign({ history: ({ context }, params: { entries: number }) => context.history + params.entries }),
    speakSpanish: assign({ language: 'es-US' }),
    openDtmfEntry: assign({ dtmf: 0, keypadTimeouts: 0 }),
    closeDtmfEntry: assign({ dtmf: null, keypadTimeouts: 0 }),
    typeDigits: assign({ dtmf: ({ context }) => (context.dtmf ?? 0) + LIMITS.digitsPerBatch }),
    /** The collector re-prompts and starts the entry over. */
    keypadTimedOut: assign({ dtmf: 0, keypadTimeouts: ({ context }) => context.keypadTimeouts + 1 }),
    dropSocket: assign({ lifecycle: 'disconnected', drops: ({ context }) => context.drops + 1 }),
    cutReply: assign({ replying: true }),
    askTwilioToReconnect: assign({ lifecycle: 'grace' }),
    resumed: assign({
      lifecycle: 'connected',
      resumes: ({ context }) => context.resumes + 1,
      // The cut-off reply is spoken in full after the resume line and becomes the assistant turn.
      history: ({ context }) => context.history + (context.replying ? HISTORY_ADDED.replyFinished : 0),
      replying: false,
      forgedTried: false,
    }),
    refuseForged: assign({ forgedTried: true }),
    moveToOtherInstance: assign({
      instance: ({ context }) => (context.instance === 'A' ? 'B' : 'A'),
      moves: ({ context }) => context.moves + 1,
    }),
    expire: assign({ lifecycle: 'expired', dtmf: null, keypadTimeouts: 0, replying: false, forgedTried: false }),
    end: assign({ lifecycle: 'ended', dtmf: null, keypadTimeouts: 0, replying: false, forgedTried: false }),
    restart: assign({ restarts: ({ context }) => context.restarts + 1 }),
    // A shutdown closes live sockets as a disconnect, so the stored session waits out its grace.
    shutDownSocket: assign({ lifecycle: 'disconnected' }),
  },
}).createMachine({
  id: 'call',
  // Before the first call: a fresh session's bounds, no link yet, on the first instance.
  context: ({ input }) => ({ ...fresh, store: input.store, lifecycle: null, instance: 'A' }),
  initial: 'idle',
  states: {
    idle: {
      on: { CONNECT: { target: 'connected', actions: 'startFresh' } },
    },
    connected: {
      on: {
        PROMPT: [
          // Speaking instead of typing cancels the keypad entry.
          {
            guard: and(['collecting', room(HISTORY_ADDED.promptCancellingDtmf)]),
            actions: ['closeDtmfEntry', grow(HISTORY_ADDED.promptCancellingDtmf)],
          },
          { guard: and([not('collecting'), room(HISTORY_ADDED.prompt)]), actions: grow(HISTORY_ADDED.prompt) },
        ],
        INTERRUPT: { guard: and([not('collecting'), room(HISTORY_ADDED.interrupt)]), actions: grow(HISTORY_ADDED.interrupt) },
        SWITCH_LANGUAGE: {
          guard: and(['english', not('collecting'), room(HISTORY_ADDED.switchLanguage)]),
          actions: ['speakSpanish', grow(HISTORY_ADDED.switchLanguage)],
        },
        // Room is kept for the entry's result and the answer to it.
        START_DTMF: {
          guard: and([not('collecting'), room(HISTORY_ADDED.startDtmf + HISTORY_ADDED.dtmfResult)]),
          actions: ['openDtmfEntry', grow(HISTORY_ADDED.startDtmf)],
        },
        DIGITS: { guard: 'moreDigitsAllowed', actions: 'typeDigits' },
        COMPLETE_DTMF: { guard: 'collecting', actions: ['closeDtmfEntry', grow(HISTORY_ADDED.dtmfResult)] },
        KEYPAD_IDLE: [
          { guard: and(['collecting', 'lastKeypadAttempt']), actions: ['closeDtmfEntry', grow(HISTORY_ADDED.dtmfResult)] },
          { guard: 'collecting', actions: 'keypadTimedOut' },
        ],
        LLM_ERROR: { guard: and([not('collecting'), room(HISTORY_ADDED.llmError)]), actions: grow(HISTORY_ADDED.llmError) },
        HANDOFF: { guard: and([not('collecting'), room(HISTORY_ADDED.handoff)]), target: 'handedOff', actions: grow(HISTORY_ADDED.handoff) },
        DROP: { guard: 'mayDrop', target: 'dropped', actions: 'dropSocket' },
        // Room for the user turn now and the answer after the resume.
        DROP_MID_REPLY: {
          guard: and(['mayDrop', not('collecting'), room(HISTORY_ADDED.replyCutOff + HISTORY_ADDED.replyFinished)]),
          target: 'dropped',
          actions: ['dropSocket', 'cutReply', grow(HISTORY_ADDED.replyCutOff)],
        },
        // The caller's socket is closed by the shutdown; Twilio then posts the action callback.
        SERVER_RESTART: { guard: 'mayRestart', target: 'dropped', actions: ['restart', 'shutDownSocket'] },
      },
    },
    // The agent sent its last words and `end` (handoffData); the socket is still open.
    handedOff: {
      on: {
        // Twilio closes the socket and posts the action callback (SessionStatus=ended, HandoffData).
        END_CALL: { target: 'ended', actions: 'end' },
      },
    },
    // The socket is gone; Twilio has not called back yet.
    dropped: {
      on: {
        ACTION: [
          { guard: 'resumesLeft', target: 'reconnecting', actions: 'askTwilioToReconnect' },
          // Resumes used up: /action answers hangup TwiML and the session ends.
          { target: 'ended', actions: 'end' },
        ],
        // The callback lands on the other instance: it takes the session over and asks Twilio to reconnect there.
        ACTION_ELSEWHERE: { guard: and(['mayMove', 'resumesLeft']), target: 'reconnecting', actions: ['moveToOtherInstance', 'askTwilioToReconnect'] },
        // The caller hung up (CallStatus=completed): nothing to resume.
        ACTION_COMPLETED: { target: 'ended', actions: 'end' },
        RESUME_RECONNECT: [
          { guard: 'resumesLeft', target: 'connected', actions: 'resumed' },
          // Refused (resume limit reached): the session is left as it was.
          { target: 'dropped' },
        ],
        RESUME_ELSEWHERE: { guard: and(['mayMove', 'resumesLeft']), target: 'connected', actions: ['moveToOtherInstance', 'resumed'] },
        // A Twilio-style setup without the reconnect TwiML's token: refused, the session is left as it was.
        RESUME_FORGED: { target: 'dropped', actions: 'refuseForged' },
        GRACE_EXPIRE: { target: 'expired', actions: 'expire' },
        // A reply held in flight dies with the process; the instance that restores the session regenerates it.
        SERVER_RESTART: { guard: 'mayRestart', actions: 'restart' },
      },
    },
    // /action answered with fresh ConversationRelay TwiML: Twilio opens a new socket next.
    reconnecting: {
      on: {
        RESUME_TWILIO: { target: 'connected', actions: 'resumed' },
        RESUME_RECONNECT: { target: 'connected', actions: 'resumed' },
        RESUME_ELSEWHERE: { guard: 'mayMove', target: 'connected', actions: ['moveToOtherInstance', 'resumed'] },
        RESUME_FORGED: { target: 'reconnecting', actions: 'refuseForged' },
        GRACE_EXPIRE: { target: 'expired', actions: 'expire' },
        SERVER_RESTART: { guard: 'mayRestart', actions: 'restart' },
      },
    },
    // Nobody came back in time; a later reconnect for the same call starts a fresh session.
    expired: {
      on: { RESUME_RECONNECT: { target: 'connected', actions: 'startFresh' } },
    },
    // Over (hung up, handed off, or out of resumes); a later reconnect for the same call starts afresh too.
    ended: {
      on: { RESUME_RECONNECT: { target: 'connected', actions: 'startFresh' } },
    },
  },
});

export type CallModel = typeof callModel;
export type ModelSnapshot = SnapshotFrom<CallModel>;

/**
 * Events whose outcome depends on what is in flight and on where the session comes from, together:
 * the actions and resumes that hand a session back, and the keypad events that finish an entry
 * carried across them (its digits, its idle timer).
 */
const PAIRED: ReadonlySet<CallModelEvent['type']> = new Set([
  'ACTION',
  'ACTION_ELSEWHERE',
  'RESUME_TWILIO',
  'RESUME_RECONNECT',
  'RESUME_ELSEWHERE',
  'COMPLETE_DTMF',
  'KEYPAD_IDLE',
]);

/**
 * What a transition covers: goals that each pair its event with one fact about the source state
 * that changes what the server has to do with it, instead of every combination of those facts:
 * the branch taken (source and target state, e.g. a resume refused at the cap), the language, what
 * is in flight (a keypad entry and how far it got, or a reply cut off by the drop), and where the
 * session comes from (this process since the call began, a resume, a restore by a restarted
 * instance, by the other instance, or back on the first one). For the PAIRED events the pair (in
 * flight, origin) is one goal too: a keypad entry or a reply carried across a restart or a move is
 * what the store has to get right. The paths take every goal the model can reach at least once.
 */
export function coverageGoals(source: ModelSnapshot, event: CallModelEvent, target: ModelSnapshot): string[] {
  const c = source.context;
  const keypad = c.dtmf === null ? 'none' : c.dtmf === 0 ? (c.keypadTimeouts > 0 ? 're-asked' : 'asked') : 'typing';
  const inFlight = c.replying ? 'reply' : keypad;
  const origin = c.moves > 1 ? 'moved back' : c.moves === 1 ? 'moved' : c.restarts > 0 ? 'restarted' : c.resumes > 0 ? 'resumed' : 'first';
  const goal = (...facts: unknown[]) => JSON.stringify([event.type, ...facts]);
  const goals = [goal('branch', source.value, target.value), goal('language', c.language), goal('in flight', inFlight), goal('origin', origin)];
  if (PAIRED.has(event.type)) goals.push(goal('in flight from origin', inFlight, origin));
  // A refused forgery leaves the session as it was: the genuine resume right after it still works.
  if (event.type.startsWith('RESUME_') && event.type !== 'RESUME_FORGED') goals.push(goal('after a forged resume', c.forgedTried));
  return goals;
}
