// The call as the caller sees it, for model-based tests with @xstate/graph. This machine never
// talks to the server: its context is what the REAL server is expected to hold after each step
// (history length, keypad digits so far, language, lifecycle state, resume count). The test
// drives the server with one exec per event and checks every state against these expectations.
// Guards keep the graph finite: bounded history, drops, keypad batches and restarts.
import { and, assign, not, setup, type SnapshotFrom } from 'xstate';

export type StoreKind = 'memory' | 'sqlite' | 'redis';

/** The server's lifecycle name for the session (lifecycleOf / SessionRecord.state). */
export type Lifecycle = 'connected' | 'disconnected' | 'grace' | 'expired';

export type Language = 'en-US' | 'es-US';

export interface CallExpectation {
  store: StoreKind;
  /** null until the first CONNECT. */
  lifecycle: Lifecycle | null;
  /** Entries in the session's history (user, assistant and tool turns). */
  history: number;
  language: Language;
  /** Digits typed so far in an active phone-number entry; null when no entry is active. */
  dtmf: number | null;
  resumes: number;
  /** Bounds only: drops and restarts so far on this path (the server does not see these). */
  drops: number;
  restarts: number;
  /**
   * The transition that last changed these expectations (its event type, or a label for a special
   * branch): it makes each transition's target its own graph node, so shortest paths cover transitions.
   */
  via: string | null;
}

export type CallModelEvent =
  | { type: 'CONNECT' }
  | { type: 'PROMPT' }
  | { type: 'INTERRUPT' }
  | { type: 'SWITCH_LANGUAGE' }
  | { type: 'START_DTMF' }
  | { type: 'DIGITS' }
  | { type: 'DROP' }
  | { type: 'ACTION' }
  | { type: 'RESUME_TWILIO' }
  | { type: 'RESUME_RECONNECT' }
  | { type: 'GRACE_EXPIRE' }
  | { type: 'SERVER_RESTART' };

export const LIMITS = {
  /** Conversation size per session: room for a few turns around each drop. */
  history: 6,
  drops: 2,
  restarts: 1,
  /** Digits per DIGITS event, and how many may be typed per entry (2 batches of a 10-digit number). */
  digitsPerBatch: 3,
  digits: 6,
} as const;

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
  /** user + assistant tool call (the tool result comes when the entry completes) */
  startDtmf: 2,
} as const;

const fresh = { lifecycle: 'connected', history: 0, language: 'en-US', dtmf: null, resumes: 0 } as const;

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
    english: ({ context }) => context.language === 'en-US',
    mayDrop: ({ context }) => context.drops < LIMITS.drops,
    /** The memory store dies with the process: a restart is only modelled for persistent stores. */
    mayRestart: ({ context }) => context.store !== 'memory' && context.restarts < LIMITS.restarts,
    /** The server's grace timer only runs once it knows the socket is gone. */
    graceRunning: ({ context }) => context.lifecycle === 'disconnected' || context.lifecycle === 'grace',
  },
  actions: {
    noteEvent: assign({ via: ({ event }) => event.type }),
    noteTransition: assign({ via: (_, params: { label: string }) => params.label }),
    startFresh: assign(fresh),
    addHistory: assign({ history: ({ context }, params: { entries: number }) => context.history + params.entries }),
    speakSpanish: assign({ language: 'es-US' }),
    openDtmfEntry: assign({ dtmf: 0 }),
    closeDtmfEntry: assign({ dtmf: null }),
    typeDigits: assign({ dtmf: ({ context }) => (context.dtmf ?? 0) + LIMITS.digitsPerBatch }),
    dropSocket: assign({ lifecycle: 'disconnected', drops: ({ context }) => context.drops + 1 }),
    askTwilioToReconnect: assign({ lifecycle: 'grace' }),
    resumed: assign({ lifecycle: 'connected', resumes: ({ context }) => context.resumes + 1 }),
    expire: assign({ lifecycle: 'expired', dtmf: null }),
    restart: assign({ restarts: ({ context }) => context.restarts + 1 }),
    // A shutdown closes live sockets as a disconnect, so the stored session waits out its grace.
    shutDownSocket: assign({ lifecycle: 'disconnected' }),
  },
}).createMachine({
  id: 'call',
  context: ({ input }) => ({
    store: input.store,
    lifecycle: null,
    history: 0,
    language: 'en-US',
    dtmf: null,
    resumes: 0,
    drops: 0,
    restarts: 0,
    via: null,
  }),
  initial: 'idle',
  states: {
    idle: {
      on: { CONNECT: { target: 'connected', actions: ['startFresh', 'noteEvent'] } },
    },
    connected: {
      on: {
        PROMPT: [
          // Speaking instead of typing cancels the keypad entry.
          {
            guard: and(['collecting', { type: 'roomFor', params: { entries: HISTORY_ADDED.promptCancellingDtmf } }]),
            actions: [
              'closeDtmfEntry',
              { type: 'addHistory', params: { entries: HISTORY_ADDED.promptCancellingDtmf } },
              { type: 'noteTransition', params: { label: 'PROMPT over keypad entry' } },
            ],
          },
          {
            guard: and([not('collecting'), { type: 'roomFor', params: { entries: HISTORY_ADDED.prompt } }]),
            actions: [{ type: 'addHistory', params: { entries: HISTORY_ADDED.prompt } }, 'noteEvent'],
          },
        ],
        INTERRUPT: {
          guard: and([not('collecting'), { type: 'roomFor', params: { entries: HISTORY_ADDED.interrupt } }]),
          actions: [{ type: 'addHistory', params: { entries: HISTORY_ADDED.interrupt } }, 'noteEvent'],
        },
        SWITCH_LANGUAGE: {
          guard: and(['english', not('collecting'), { type: 'roomFor', params: { entries: HISTORY_ADDED.switchLanguage } }]),
          actions: ['speakSpanish', { type: 'addHistory', params: { entries: HISTORY_ADDED.switchLanguage } }, 'noteEvent'],
        },
        START_DTMF: {
          guard: and([not('collecting'), { type: 'roomFor', params: { entries: HISTORY_ADDED.startDtmf } }]),
          actions: ['openDtmfEntry', { type: 'addHistory', params: { entries: HISTORY_ADDED.startDtmf } }, 'noteEvent'],
        },
        DIGITS: { guard: 'moreDigitsAllowed', actions: ['typeDigits', 'noteEvent'] },
        DROP: { guard: 'mayDrop', target: 'dropped', actions: ['dropSocket', 'noteEvent'] },
        // The caller's socket is closed by the shutdown; Twilio then posts the action callback.
        SERVER_RESTART: { guard: 'mayRestart', target: 'dropped', actions: ['restart', 'shutDownSocket', 'noteEvent'] },
      },
    },
    // The socket is gone; Twilio has not called back yet.
    dropped: {
      on: {
        ACTION: { target: 'reconnecting', actions: ['askTwilioToReconnect', 'noteEvent'] },
        RESUME_RECONNECT: { target: 'connected', actions: ['resumed', 'noteEvent'] },
        GRACE_EXPIRE: { guard: 'graceRunning', target: 'expired', actions: ['expire', 'noteEvent'] },
        SERVER_RESTART: { guard: 'mayRestart', actions: ['restart', 'noteEvent'] },
      },
    },
    // /action answered with fresh ConversationRelay TwiML: Twilio opens a new socket next.
    reconnecting: {
      on: {
        RESUME_TWILIO: { target: 'connected', actions: ['resumed', 'noteEvent'] },
        RESUME_RECONNECT: { target: 'connected', actions: ['resumed', 'noteEvent'] },
        GRACE_EXPIRE: { guard: 'graceRunning', target: 'expired', actions: ['expire', 'noteEvent'] },
        SERVER_RESTART: { guard: 'mayRestart', actions: ['restart', 'noteEvent'] },
      },
    },
    // Nobody came back in time; a later reconnect for the same call starts a fresh session.
    expired: {
      on: { RESUME_RECONNECT: { target: 'connected', actions: ['startFresh', 'noteEvent'] } },
    },
  },
});

export type CallModel = typeof callModel;

/**
 * A state's identity for path generation. The exact counts stay in context and are checked at
 * every step, but states that differ only in how much was said (or how many digits beyond the
 * first batch were typed) are one class, while `via` keeps apart the classes reached by different
 * transitions: the chosen paths reach every (link state, lifecycle, language, keypad entry, drops,
 * restarts) combination by each of its incoming transitions, instead of every counter combination.
 */
export function coverageKey(snapshot: SnapshotFrom<CallModel>): string {
  const { lifecycle, language, dtmf, drops, restarts, via } = snapshot.context;
  const keypad = dtmf === null ? 'none' : dtmf === 0 ? 'asked' : 'typing';
  return JSON.stringify([snapshot.value, lifecycle, language, keypad, drops, restarts, via]);
}
