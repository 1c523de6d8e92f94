// The call session: one actor per callSid. Two parallel regions while the call is live:
// `link` tracks the WebSocket (the socket is an edge, not the session) and `conversation`
// runs the LLM, the agent's tools and keypad input. Side effects leave the machine only as emitted
// `outbound` messages (the socket edge sends them) and invoked actors (llm, tool, dtmf, timers),
// which the server provides; the machine reads no clock.
import { assign, emit, enqueueActions, fromCallback, fromPromise, raise, sendTo, setup, stateIn, type EventObject, type GuardPredicate } from 'xstate';
import type { OutboundMessage } from '../protocol/messages.js';
import type { DtmfDigit } from '../protocol/messages.js';
import type { Clock } from '../clock.js';
import { createDeadlineTimer, deadlineTimer } from './deadline-timer.js';
import { createKeypadMachine, keypadMachine, type DtmfInput, type DtmfResult, type KeypadSpecs } from './dtmf/index.js';
import { resumeLine, llmFailureLine } from './phrases.js';
import { boundHistory, DEFAULT_HISTORY_LIMITS, type HistoryLimits } from './history-bound.js';
import type { ChatTurn, ReplyCommand, ReplyEvent, ReplyInput, ToolCall } from './reply.js';
import type { KeypadRequest, ParsedToolCall, ToolEffect, ToolInput, ToolOutcome } from './tool-call.js';

export interface SessionTimeouts {
  graceMs: number;
  retentionMs: number;
  dtmfIdleMs: number;
  maxResumes: number;
}

export interface SessionInput {
  callSid: string;
  /** sha256 of the setup's sessionId: a `reconnection: true` resume proves itself by repeating that id. */
  sessionKeyHash: string;
  /** sha256 of the client's own `resumeKey` custom parameter, when it sent one; a resume must repeat it. */
  resumeKeyHash: string | null;
  accountSid: string;
  from: string;
  to: string;
  customParameters: Record<string, string>;
  language: string;
  timeouts: SessionTimeouts;
  now: number;
  /** Bounds of the stored and LLM-bound history; defaults when omitted. */
  historyLimits?: HistoryLimits;
}

interface DtmfRequest extends KeypadRequest {
  toolCallId: string;
  /** When the entry was asked for (epoch ms): its first idle period counts from here. */
  requestedAt: number;
}

export interface SessionContext {
  callSid: string;
  /**
   * Resume proofs, only ever as hashes (the edge hashes what the caller sends): the current
   * sessionId, the client's resumeKey, and the single-use tokens of the reconnect TwiML answered
   * since the drop (a callback posted again adds one; any of them, once).
   */
  sessionKeyHash: string;
  resumeKeyHash: string | null;
  resumeTokenHashes: string[];
  /**
   * The sessionIds (hashed) of the sockets resumes replaced: an action callback naming one is a
   * replay. Bounded by the resume cap.
   */
  earlierSessionKeyHashes: string[];
  accountSid: string;
  from: string;
  to: string;
  customParameters: Record<string, string>;
  language: string;
  timeouts: SessionTimeouts;
  historyLimits: HistoryLimits;
  history: ChatTurn[];
  /** Turns dropped from the front of `history` to keep it within `historyLimits`. */
  historyDropped: number;
  /** A reply that finished while no socket was attached; spoken after resume. */
  undelivered: string | null;
  /** The tool call being run (the `tool` actor's input is built from it). */
  toolCall: ParsedToolCall | null;
  dtmf: DtmfRequest | null;
  /** Tool rounds since the caller last spoke; bounds model tool loops. */
  toolRounds: number;
  resumes: number;
  disconnects: number;
  lastCloseCode: number | null;
  /** Absolute epoch ms; a deadline (not a duration) so restore keeps the remaining time. */
  graceDeadline: number | null;
  handoffData: string | null;
  createdAt: number;
  /** When the latest resume happened (epoch ms): a second connection moments later is a duplicate, not a reconnect. */
  resumedAt: number | null;
  endedReason: string | null;
}

/**
 * `at` (epoch ms) is when the event happened, stamped by the edge that sends it. The machine never
 * reads a clock: every deadline (grace, keypad idle) counts from the `at` of the event that starts it.
 */
export type SessionEvent =
  | { type: 'PROMPT'; text: string; lang: string; last: boolean }
  | { type: 'DIGIT'; digit: DtmfDigit; at: number }
  | { type: 'INTERRUPT'; utterance: string; durationMs: number }
  | { type: 'SOCKET.CLOSED'; code: number; at: number }
  /** `resumeTokenHash`: the hash of the token handed to Twilio in the reconnect TwiML, when resumable. */
  | { type: 'ACTION'; resumable: boolean; sessionStatus: string; errorCode: string; at: number; resumeTokenHash?: string }
  /** `sessionKeyHash`: the hash of the new socket's sessionId, the proof for its own later resumes. */
  | { type: 'RESUME'; sessionKeyHash: string; via: 'twilio' | 'reconnection'; at: number }
  | { type: 'GRACE.EXPIRED' }
  | ReplyEvent
  | { type: 'DTMF.SAY'; text: string }
  | ToolEffectEvent;

/** Raised by the machine itself once a tool has answered: what happens next, one event per effect. */
type ToolEffectEvent =
  | { type: 'TOOL.ANSWERED' }
  | { type: 'TOOL.SWITCH_LANGUAGE'; language: string }
  | { type: 'TOOL.COLLECT_DIGITS'; request: KeypadRequest; at: number; toolCallId: string }
  | { type: 'TOOL.HANDOFF'; reason: string };

export type SessionEmitted = { type: 'outbound'; message: OutboundMessage };

const MAX_TOOL_ROUNDS = 4;
export const TOOL_INTERRUPTED = 'interrupted: the caller spoke before it finished, so its outcome is unknown; check before calling it again';
/** Reconnect tokens a session in grace accepts at once: the answer to a callback and its retries. */
export const MAX_RESUME_TOKENS = 6;

/** Placeholders; the server provides the real LLM and tool actors (from the agent) with machine.provide(). */
const llmReplyPlaceholder = fromCallback<ReplyCommand, ReplyInput>(() => {
  throw new Error('llmReply actor not provided');
});
const toolPlaceholder = fromPromise<ToolOutcome, ToolInput>(() => Promise.reject(new Error('tool actor not provided')));

/** The history with `turns` appended, trimmed oldest first to the call's limits. */
function withTurns(context: SessionContext, ...turns: ChatTurn[]): Pick<SessionContext, 'history' | 'historyDropped'> {
  // Snapshots stored before the limits existed have neither field: they get the defaults.
  const { history, dropped } = boundHistory([...context.history, ...turns], context.historyLimits ?? DEFAULT_HISTORY_LIMITS);
  return { history, historyDropped: (context.historyDropped ?? 0) + dropped };
}

const toolResult = (toolCallId: string, content: string): ChatTurn => ({ role: 'tool', toolCallId, content });

/** Whether the call may still be resumed: shared by the machine's guards and the session manager. */
export function hasResumesLeft(context: Pick<SessionContext, 'resumes' | 'timeouts'>): boolean {
  return context.resumes < context.timeouts.maxResumes;
}

/** Speech and recognition both follow the call's language. */
function languageMessage(language: string): SessionEmitted {
  return { type: 'outbound', message: { type: 'language', ttsLanguage: language, transcriptionLanguage: language } };
}

function textMessage(token: string, last: boolean): SessionEmitted {
  return { type: 'outbound', message: { type: 'text', token, last } };
}

function dtmfInputFor(context: SessionContext): DtmfInput {
  const request = context.dtmf;
  // Set in the same transition that enters `collecting`, which is the only place this is invoked.
  if (!request) throw new Error('keypad entry started without a request');
  return {
    kind: request.kind,
    startedAt: request.requestedAt,
    idleMs: context.timeouts.dtmfIdleMs,
    label: request.label,
    minLength: request.minLength,
    maxLength: request.maxLength,
    language: context.language,
  };
}

function toolInputFor(context: SessionContext): ToolInput {
  // Set in the same transition that enters `tool`, which is the only place this is invoked.
  if (!context.toolCall) throw new Error('tool started without a call');
  const { callSid, language, from, to, customParameters } = context;
  return { call: context.toolCall, callSid, language, from, to, customParameters };
}

/** A tool's effect as the event the `tool` state takes its next step on. */
function effectEvent(outcome: ToolOutcome, toolCallId: string): ToolEffectEvent {
  const effect: ToolEffect | undefined = outcome.effect;
  switch (effect?.type) {
    case 'switchLanguage':
      return { type: 'TOOL.SWITCH_LANGUAGE', language: effect.language };
    case 'collectDigits':
      return { type: 'TOOL.COLLECT_DIGITS', request: effect.request, at: outcome.at, toolCallId };
    case 'handoff':
      return { type: 'TOOL.HANDOFF', reason: effect.reason };
    default:
      return { type: 'TOOL.ANSWERED' };
  }
}

/** A reply is streaming (its reply actor runs). Typed for `check` in actions, which know no named guards. */
const replying = stateIn('#session.live.conversation.responding') as GuardPredicate<SessionContext, EventObject, undefined, never>;

type Done = Extract<SessionEvent, { type: 'LLM.DONE' }>;
const doneParams = ({ event }: { event: Done }) => ({ text: event.text, toolCalls: event.toolCalls });

export const sessionMachine = setup({
  types: {
    context: {} as SessionContext,
    events: {} as SessionEvent,
    input: {} as SessionInput,
    emitted: {} as SessionEmitted,
    children: {} as { llm: 'llmReply'; tool: 'tool'; dtmf: 'keypad'; graceTimer: 'deadlineTimer' },
  },
  actors: {
    llmReply: llmReplyPlaceholder,
    tool: toolPlaceholder,
    keypad: keypadMachine,
    deadlineTimer,
  },
  guards: {
    isFinalPrompt: (_, params: { text: string; last: boolean }) => params.last && params.text.trim().length > 0,
    linkConnected: stateIn('#session.live.link.connected'),
    conversationFinished: stateIn('#session.live.conversation.finished'),
    canResume: ({ context }) => hasResumesLeft(context),
    actionResumable: ({ context }, params: { resumable: boolean }) => params.resumable && hasResumesLeft(context),
    callsTool: (_, params: { toolCall: ParsedToolCall | undefined }) => params.toolCall !== undefined,
    tooManyToolRounds: ({ context }, params: { toolCall: ParsedToolCall | undefined }) =>
      params.toolCall !== undefined && context.toolRounds >= MAX_TOOL_ROUNDS,
    wasLanguageMenu: (_, params: { result: DtmfResult }) => params.result.kind === 'language',
    lastTurnIsAssistant: ({ context }) => context.history.at(-1)?.role === 'assistant',
  },
  actions: {
    recordUserTurn: assign(({ context }, params: { text: string }) => ({
      ...withTurns(context, { role: 'user', content: params.text }),
      toolRounds: 0,
    })),
    // A streamed token changes no context (its reply actor keeps the text): no new snapshot per token.
    emitDelta: emit((_, params: { text: string }) => textMessage(params.text, false)),
    emitDeltas: enqueueActions(({ enqueue }, params: { texts: readonly string[] }) => {
      for (const text of params.texts) enqueue.emit(textMessage(text, false));
    }),
    closeTalkCycle: emit(textMessage('', true)),
    /** Before a tool runs: words the model said with the call are a talk cycle of their own. */
    closeSpokenCycle: enqueueActions(({ enqueue }, params: { text: string }) => {
      if (params.text) enqueue.emit(textMessage('', true));
    }),
    finishReply: assign(({ context }, params: { text: string; toolCalls: ToolCall[] }) => {
      const turn: ChatTurn = params.toolCalls.length
        ? { role: 'assistant', content: params.text, toolCalls: params.toolCalls }
        : { role: 'assistant', content: params.text };
      return withTurns(context, turn);
    }),
    /** Replies finished while away are spoken one after another after the resume, a space apart. */
    markUndelivered: assign({
      undelivered: ({ context }, params: { text: string }) =>
        params.text ? [context.undelivered, params.text].filter(Boolean).join(' ') : context.undelivered,
    }),
    /** Only what the caller actually heard becomes the assistant turn. */
    recordInterruptedReply: assign(({ context }, params: { utterance: string }) =>
      // Interrupted before anything was heard: there is no assistant turn to keep.
      params.utterance.trim() ? withTurns(context, { role: 'assistant', content: params.utterance, interrupted: true }) : {},
    ),
    /** The reply had finished generating but was still being spoken: truncate it to what was heard. */
    truncateLastReply: assign({
      history: ({ context }, params: { utterance: string }) => {
        const last = context.history.at(-1);
        if (last?.role !== 'assistant' || last.toolCalls) return context.history;
        return [...context.history.slice(0, -1), { role: 'assistant' as const, content: params.utterance, interrupted: true }];
      },
      undelivered: null,
    }),
    /** The caller heard whatever streamed before the failure, then the apology: keep both. */
    recordLlmFailure: assign(({ context }, params: { text: string }) =>
      withTurns(context, {
        role: 'assistant',
        content: [params.text, llmFailureLine(context.language)].filter(Boolean).join(' '),
      }),
    ),
    sayLlmFailure: emit(({ context }, params: { text: string }) => textMessage(`${params.text ? ' ' : ''}${llmFailureLine(context.language)}`, false)),
    /** The model gets one tool at a time: the first call runs, any others are answered as skipped. */
    startToolCall: assign(({ context }, params: { toolCall: ParsedToolCall; toolCalls: ToolCall[] }) => ({
      ...withTurns(
        context,
        ...params.toolCalls.filter((c) => c.id !== params.toolCall.id).map((c) => toolResult(c.id, 'skipped: one action at a time')),
      ),
      toolCall: params.toolCall,
      toolRounds: context.toolRounds + 1,
    })),
    refuseToolLoop: assign(({ context }, params: { toolCalls: ToolCall[] }) =>
      withTurns(context, ...params.toolCalls.map((c) => toolResult(c.id, 'refused: too many tool calls in a row, answer the caller now'))),
    ),
    recordToolResult: assign(({ context }, params: { content: string | undefined }) => ({
      ...(context.toolCall && params.content !== undefined ? withTurns(context, toolResult(context.toolCall.id, params.content)) : {}),
      toolCall: null,
    })),
    /**
     * The tool was cut short (the caller spoke or interrupted): it may have taken effect already (a
     * payment sent before the abort), so the model is told its outcome is unknown, not that it failed.
     */
    recordToolCancelled: assign(({ context }) => ({
      ...(context.toolCall ? withTurns(context, toolResult(context.toolCall.id, TOOL_INTERRUPTED)) : {}),
      toolCall: null,
    })),
    raiseToolEffect: raise((_, params: { outcome: ToolOutcome; toolCallId: string }) => effectEvent(params.outcome, params.toolCallId)),
    applyLanguage: assign({ language: (_, params: { language: string }) => params.language }),
    emitLanguage: emit(({ context }) => languageMessage(context.language)),
    rememberDtmfRequest: assign({
      dtmf: ({ context }, params: { request: KeypadRequest; at: number; toolCallId: string }) => ({
        ...params.request,
        toolCallId: params.toolCallId,
        requestedAt: params.at,
      }),
    }),
    // Relayed to the child collector; digits themselves are never logged.
    forwardDigit: sendTo('dtmf', (_, params: { digit: DtmfDigit; at: number }) => ({ type: 'DIGIT' as const, ...params })),
    // Nobody can type without a socket: the entry's idle timer stops until the caller is back.
    pauseDtmf: sendTo('dtmf', { type: 'PAUSE' }),
    continueDtmf: sendTo('dtmf', (_, params: { at: number }) => ({ type: 'CONTINUE' as const, at: params.at })),
    /** A keypad prompt said while no socket is attached is spoken after the resume line instead. */
    keepDtmfSayForResume: assign({ undelivered: (_, params: { text: string }) => params.text }),
    relayDtmfSay: emit((_, params: { text: string }) => textMessage(params.text, true)),
    recordDtmfResult: assign(({ context }, params: { result: DtmfResult }) => ({
      ...(context.dtmf ? withTurns(context, toolResult(context.dtmf.toolCallId, JSON.stringify(params.result))) : {}),
      language: params.result.status === 'ok' && params.result.kind === 'language' ? params.result.value : context.language,
      dtmf: null,
      // Keypad input is the caller taking part, like speaking: the tool-loop bound starts over.
      toolRounds: 0,
    })),
    recordDtmfCancelled: assign(({ context }) => ({
      ...(context.dtmf
        ? withTurns(context, toolResult(context.dtmf.toolCallId, JSON.stringify({ status: 'failed', kind: context.dtmf.kind, reason: 'cancelled' })))
        : {}),
      dtmf: null,
    })),
    emitEnd: emit(({ context }) => ({
      type: 'outbound' as const,
      message: { type: 'end' as const, ...(context.handoffData ? { handoffData: context.handoffData } : {}) },
    })),
    prepareHandoff: assign({
      handoffData: ({ context }, params: { reason: string }) =>
        JSON.stringify({ reason: params.reason, callSid: context.callSid, language: context.language }),
    }),
    /** The grace period counts from when the link was lost (`at` of the close or the action callback). */
    recordDisconnect: assign({
      disconnects: ({ context }) => context.disconnects + 1,
      lastCloseCode: (_, params: { at: number; code: number | null }) => params.code,
      graceDeadline: ({ context }, params: { at: number; code: number | null }) => params.at + context.timeouts.graceMs,
    }),
    recordResume: assign(({ context }, params: { sessionKeyHash: string; at: number }) => ({
      resumes: context.resumes + 1,
      sessionKeyHash: params.sessionKeyHash,
      // Our own clients resume with the same sessionId: that socket is not an earlier one.
      earlierSessionKeyHashes:
        params.sessionKeyHash === context.sessionKeyHash
          ? (context.earlierSessionKeyHashes ?? [])
          : [...(context.earlierSessionKeyHashes ?? []), context.sessionKeyHash].slice(-(context.timeouts.maxResumes + 1)),
      // Single use: the token that let this socket in (if any) is spent, and so are its siblings.
      resumeTokenHashes: [],
      resumedAt: params.at,
      graceDeadline: null,
    })),
    /**
     * The reconnect TwiML carries a new token. Earlier ones stay valid (a callback posted again must not
     * spoil the TwiML Twilio already acts on), up to a few: Twilio retries a callback at most 5 times.
     */
    storeResumeToken: assign(({ context }, params: { hash: string | undefined }) => ({
      // The first ones are kept: later ones (replays) must not crowd out the token Twilio acts on.
      resumeTokenHashes: params.hash ? [...(context.resumeTokenHashes ?? []), params.hash].slice(0, MAX_RESUME_TOKENS) : (context.resumeTokenHashes ?? []),
    })),
    /**
     * Tell the caller we are back, then complete whatever was cut off by the drop: a reply that finished
     * while away is said at once; a reply still streaming is asked for what it streamed so far (its reply
     * actor answers with LLM.CUT_OFF before its next token), then goes on with its next tokens.
     */
    greetOnResume: enqueueActions(({ context, enqueue, check }) => {
      const streaming = check(replying);
      const cutOff = context.undelivered;
      // A new Twilio session starts in the TwiML's language: switch it back to the call's current one.
      enqueue.emit(languageMessage(context.language));
      const line = resumeLine(context.language);
      enqueue.emit(textMessage(line, !streaming && !cutOff));
      if (cutOff) enqueue.emit(textMessage(` ${cutOff}`, !streaming));
      if (streaming) enqueue.sendTo('llm', { type: 'REPLAY' });
      enqueue.assign({ undelivered: null });
    }),
    markEnded: assign({ endedReason: (_, params: { reason: string }) => params.reason }),
  },
}).createMachine({
  id: 'session',
  context: ({ input }) => ({
    callSid: input.callSid,
    sessionKeyHash: input.sessionKeyHash,
    resumeKeyHash: input.resumeKeyHash,
    resumeTokenHashes: [],
    earlierSessionKeyHashes: [],
    accountSid: input.accountSid,
    from: input.from,
    to: input.to,
    customParameters: input.customParameters,
    language: input.language,
    timeouts: input.timeouts,
    historyLimits: input.historyLimits ?? DEFAULT_HISTORY_LIMITS,
    history: [],
    historyDropped: 0,
    undelivered: null,
    toolCall: null,
    dtmf: null,
    toolRounds: 0,
    resumes: 0,
    disconnects: 0,
    lastCloseCode: null,
    graceDeadline: null,
    handoffData: null,
    createdAt: input.now,
    resumedAt: null,
    endedReason: null,
  }),
  initial: 'live',
  states: {
    live: {
      type: 'parallel',
      states: {
        link: {
          initial: 'connected',
          states: {
            connected: {
              on: {
                'SOCKET.CLOSED': [
                  { guard: 'conversationFinished', target: '#session.ended', actions: { type: 'markEnded', params: { reason: 'socket.closed' } } },
                  { target: 'disconnected', actions: { type: 'recordDisconnect', params: ({ event }) => ({ at: event.at, code: event.code }) } },
                ],
                // Newest authenticated connection wins: a second socket for a live call takes over.
                RESUME: {
                  target: 'connected',
                  reenter: true,
                  actions: [{ type: 'recordResume', params: ({ event }) => ({ sessionKeyHash: event.sessionKeyHash, at: event.at }) }, 'greetOnResume'],
                },
                // The action callback can overtake our noticing the close.
                ACTION: [
                  {
                    guard: { type: 'actionResumable', params: ({ event }) => ({ resumable: event.resumable }) },
                    target: 'grace',
                    actions: [
                      { type: 'recordDisconnect', params: ({ event }) => ({ at: event.at, code: null }) },
                      { type: 'storeResumeToken', params: ({ event }) => ({ hash: event.resumeTokenHash }) },
                    ],
                  },
                  { target: '#session.ended', actions: { type: 'markEnded', params: ({ event }) => ({ reason: `action:${event.sessionStatus || event.errorCode}` }) } },
                ],
              },
            },
            // Socket gone; Twilio normally posts the action callback next.
            disconnected: {
              invoke: { id: 'graceTimer', src: 'deadlineTimer', input: ({ context }) => ({ at: context.graceDeadline ?? 0, event: 'GRACE.EXPIRED' }) },
              on: {
                ACTION: [
                  {
                    guard: { type: 'actionResumable', params: ({ event }) => ({ resumable: event.resumable }) },
                    target: 'grace',
                    actions: { type: 'storeResumeToken', params: ({ event }) => ({ hash: event.resumeTokenHash }) },
                  },
                  { target: '#session.ended', actions: { type: 'markEnded', params: ({ event }) => ({ reason: `action:${event.sessionStatus || event.errorCode}` }) } },
                ],
                RESUME: {
                  guard: 'canResume',
                  target: 'connected',
                  actions: [{ type: 'recordResume', params: ({ event }) => ({ sessionKeyHash: event.sessionKeyHash, at: event.at }) }, 'greetOnResume'],
                },
                'GRACE.EXPIRED': '#session.expired',
              },
            },
            // Twilio was told to reconnect; waiting for the new socket.
            grace: {
              invoke: { id: 'graceTimer', src: 'deadlineTimer', input: ({ context }) => ({ at: context.graceDeadline ?? 0, event: 'GRACE.EXPIRED' }) },
              on: {
                RESUME: {
                  guard: 'canResume',
                  target: 'connected',
                  actions: [{ type: 'recordResume', params: ({ event }) => ({ sessionKeyHash: event.sessionKeyHash, at: event.at }) }, 'greetOnResume'],
                },
                ACTION: [
                  {
                    guard: { type: 'actionResumable', params: ({ event }) => ({ resumable: event.resumable }) },
                    target: 'grace',
                    actions: { type: 'storeResumeToken', params: ({ event }) => ({ hash: event.resumeTokenHash }) },
                  },
                  { target: '#session.ended', actions: { type: 'markEnded', params: ({ event }) => ({ reason: `action:${event.sessionStatus || event.errorCode}` }) } },
                ],
                'GRACE.EXPIRED': '#session.expired',
              },
            },
          },
        },
        conversation: {
          initial: 'idle',
          states: {
            idle: {
              on: {
                PROMPT: {
                  guard: { type: 'isFinalPrompt', params: ({ event }) => event },
                  target: 'responding',
                  actions: { type: 'recordUserTurn', params: ({ event }) => ({ text: event.text }) },
                },
                INTERRUPT: {
                  guard: 'lastTurnIsAssistant',
                  actions: { type: 'truncateLastReply', params: ({ event }) => ({ utterance: event.utterance }) },
                },
              },
            },
            responding: {
              invoke: {
                id: 'llm',
                src: 'llmReply',
                input: ({ context }) => ({
                  turns: context.history,
                  call: { callSid: context.callSid, language: context.language, from: context.from, to: context.to, customParameters: context.customParameters },
                }),
                // The reply actor itself failing (not the LLM: that is LLM.ERROR) is answered the same way.
                onError: {
                  target: 'idle',
                  actions: [
                    { type: 'sayLlmFailure', params: { text: '' } },
                    { type: 'recordLlmFailure', params: { text: '' } },
                    'closeTalkCycle',
                  ],
                },
              },
              on: {
                'LLM.DELTA': { actions: { type: 'emitDelta', params: ({ event }) => ({ text: event.text }) } },
                'LLM.DELTAS': { actions: { type: 'emitDeltas', params: ({ event }) => ({ texts: event.texts }) } },
                // What streamed before a resume, said again after the resume line; the space between them
                // comes first even when nothing streamed yet (a reply restarted after a restore).
                'LLM.CUT_OFF': { actions: { type: 'emitDelta', params: ({ event }) => ({ text: ` ${event.text}` }) } },
                // The reply's run died with its process (restored from a snapshot): it starts over.
                'LLM.RESTART': { target: 'responding', reenter: true },
                'LLM.DONE': [
                  // A model stuck calling tools gets refusals and the caller gets the floor back.
                  {
                    guard: { type: 'tooManyToolRounds', params: ({ event }) => ({ toolCall: event.toolCall }) },
                    target: 'idle',
                    actions: [
                      { type: 'finishReply', params: doneParams },
                      { type: 'refuseToolLoop', params: ({ event }) => ({ toolCalls: event.toolCalls }) },
                      { type: 'sayLlmFailure', params: ({ event }) => ({ text: event.text }) },
                      'closeTalkCycle',
                    ],
                  },
                  {
                    guard: { type: 'callsTool', params: ({ event }) => ({ toolCall: event.toolCall }) },
                    target: 'tool',
                    actions: [
                      { type: 'finishReply', params: doneParams },
                      { type: 'closeSpokenCycle', params: ({ event }) => ({ text: event.text }) },
                      { type: 'startToolCall', params: ({ event }) => ({ toolCall: event.toolCall!, toolCalls: event.toolCalls }) },
                    ],
                  },
                  { guard: 'linkConnected', target: 'idle', actions: [{ type: 'finishReply', params: doneParams }, 'closeTalkCycle'] },
                  {
                    target: 'idle',
                    actions: [{ type: 'markUndelivered', params: ({ event }) => ({ text: event.text }) }, { type: 'finishReply', params: doneParams }],
                  },
                ],
                'LLM.ERROR': {
                  target: 'idle',
                  actions: [
                    { type: 'sayLlmFailure', params: ({ event }) => ({ text: event.text ?? '' }) },
                    { type: 'recordLlmFailure', params: ({ event }) => ({ text: event.text ?? '' }) },
                    'closeTalkCycle',
                  ],
                },
                INTERRUPT: {
                  target: 'idle',
                  actions: [{ type: 'recordInterruptedReply', params: ({ event }) => ({ utterance: event.utterance }) }, 'closeTalkCycle'],
                },
                // A new utterance cancels the stream in flight (exiting stops the invoked actor).
                PROMPT: {
                  guard: { type: 'isFinalPrompt', params: ({ event }) => event },
                  target: 'responding',
                  reenter: true,
                  actions: ['closeTalkCycle', { type: 'recordUserTurn', params: ({ event }) => ({ text: event.text }) }],
                },
              },
            },
            // One of the agent's tools runs (built-in ones too); leaving the state aborts it.
            tool: {
              invoke: {
                id: 'tool',
                src: 'tool',
                input: ({ context }) => toolInputFor(context),
                onDone: {
                  actions: [
                    // Raised before the result clears the call: the effect event carries the call's id.
                    { type: 'raiseToolEffect', params: ({ context, event }) => ({ outcome: event.output, toolCallId: context.toolCall?.id ?? '' }) },
                    { type: 'recordToolResult', params: ({ event }) => ({ content: event.output.content }) },
                  ],
                },
                // The edge turns a tool's failure into its result; this is the edge itself failing.
                onError: {
                  target: 'responding',
                  actions: { type: 'recordToolResult', params: ({ event }) => ({ content: `error: ${String(event.error)}` }) },
                },
              },
              on: {
                'TOOL.ANSWERED': 'responding',
                'TOOL.SWITCH_LANGUAGE': {
                  target: 'responding',
                  actions: [{ type: 'applyLanguage', params: ({ event }) => ({ language: event.language }) }, 'emitLanguage'],
                },
                'TOOL.COLLECT_DIGITS': {
                  target: 'collecting',
                  actions: {
                    type: 'rememberDtmfRequest',
                    params: ({ event }) => ({ request: event.request, at: event.at, toolCallId: event.toolCallId }),
                  },
                },
                'TOOL.HANDOFF': {
                  target: 'finished',
                  actions: [{ type: 'prepareHandoff', params: ({ event }) => ({ reason: event.reason }) }, 'emitEnd'],
                },
                INTERRUPT: { target: 'idle', actions: 'recordToolCancelled' },
                PROMPT: {
                  guard: { type: 'isFinalPrompt', params: ({ event }) => event },
                  target: 'responding',
                  actions: ['recordToolCancelled', { type: 'recordUserTurn', params: ({ event }) => ({ text: event.text }) }],
                },
              },
            },
            collecting: {
              invoke: {
                id: 'dtmf',
                src: 'keypad',
                input: ({ context }) => dtmfInputFor(context),
                onDone: [
                  {
                    // The language menu also tells Twilio the language (unchanged when no choice was made).
                    guard: { type: 'wasLanguageMenu', params: ({ event }) => ({ result: event.output }) },
                    target: 'responding',
                    actions: [{ type: 'recordDtmfResult', params: ({ event }) => ({ result: event.output }) }, 'emitLanguage'],
                  },
                  { target: 'responding', actions: { type: 'recordDtmfResult', params: ({ event }) => ({ result: event.output }) } },
                ],
                // An agent's keypad check failing in a way it could not catch: the entry fails, the call goes on.
                onError: {
                  target: 'responding',
                  actions: {
                    type: 'recordDtmfResult',
                    params: ({ context }) => ({ result: { status: 'failed' as const, kind: context.dtmf?.kind ?? 'digits', reason: 'cancelled' as const } }),
                  },
                },
              },
              on: {
                DIGIT: { actions: { type: 'forwardDigit', params: ({ event }) => ({ digit: event.digit, at: event.at }) } },
                // Said while the caller is away (an entry the model started during a drop): kept for after the
                // resume line, and the entry waits without using up idle attempts.
                'DTMF.SAY': [
                  { guard: 'linkConnected', actions: { type: 'relayDtmfSay', params: ({ event }) => ({ text: event.text }) } },
                  { actions: [{ type: 'keepDtmfSayForResume', params: ({ event }) => ({ text: event.text }) }, 'pauseDtmf'] },
                ],
                // Alongside the link region's own transitions; the guard mirrors link's so can(RESUME) is unchanged.
                'SOCKET.CLOSED': { actions: 'pauseDtmf' },
                RESUME: { guard: 'canResume', actions: { type: 'continueDtmf', params: ({ event }) => ({ at: event.at }) } },
                // Speaking instead of typing cancels the keypad entry and is answered normally.
                PROMPT: {
                  guard: { type: 'isFinalPrompt', params: ({ event }) => event },
                  target: 'responding',
                  actions: ['recordDtmfCancelled', { type: 'recordUserTurn', params: ({ event }) => ({ text: event.text }) }],
                },
              },
            },
            // `end` was sent after the final words; the socket closing now ends the session.
            finished: {},
          },
        },
      },
    },
    expired: { type: 'final' },
    ended: { type: 'final' },
  },
});

export type SessionMachine = typeof sessionMachine;

/** Top-level lifecycle name for listings and metrics: connected | disconnected | grace | expired | ended. */
export function lifecycleOf(value: unknown): string {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object' && 'live' in value) {
    const live = (value as { live: { link?: unknown } }).live;
    if (typeof live.link === 'string') return live.link;
  }
  return 'unknown';
}

/**
 * Actor implementations that put every timer of a session (grace, and each keypad entry's idle
 * timer) on `clock`, with the agent's keypad entries (`keypad`, the built-in kinds by default);
 * provide them with `sessionMachine.provide({ actors: { ...timersOn(clock) } })`.
 */
export function timersOn(clock: Clock, keypad?: KeypadSpecs) {
  const timer = createDeadlineTimer(clock);
  return {
    deadlineTimer: timer,
    keypad: createKeypadMachine(keypad).provide({ actors: { deadlineTimer: timer } }),
  };
}
