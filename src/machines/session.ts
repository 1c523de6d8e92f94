// The call session: one actor per callSid. Two parallel regions while the call is live:
// `link` tracks the WebSocket (the socket is an edge, not the session) and `conversation`
// runs the LLM and keypad input. Side effects leave the machine only as emitted `outbound`
// messages (the socket edge sends them) and invoked actors (LLM, timers, DTMF children).
import { assign, emit, enqueueActions, fromCallback, sendTo, setup, stateIn } from 'xstate';
import type { OutboundMessage } from '../protocol/messages.js';
import type { DtmfDigit } from '../protocol/messages.js';
import type { ChatTurn, ReplyInput, ToolCall } from '../llm/types.js';
import { parseToolCall, type CollectDigitsArgs } from '../llm/tools.js';
import type { Clock } from '../clock.js';
import { createDeadlineTimer, deadlineTimer } from './deadline-timer.js';
import { dtmfMachines, type DtmfInput, type DtmfKind, type DtmfResult, type DtmfSrc } from './dtmf/index.js';
import { resumeLine, llmFailureLine } from './phrases.js';
import { boundHistory, DEFAULT_HISTORY_LIMITS, type HistoryLimits } from './history-bound.js';

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

interface ReplyInFlight {
  runId: string | null;
  text: string;
}

interface DtmfRequest {
  toolCallId: string;
  /** When the model asked for the entry (epoch ms): its first idle period counts from here. */
  requestedAt: number;
  kind: DtmfKind;
  label?: string;
  minLength?: number;
  maxLength?: number;
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
  /** The reply being generated; survives socket drops so it can be completed after resume. */
  reply: ReplyInFlight | null;
  /** A reply that finished while no socket was attached; spoken after resume. */
  undelivered: string | null;
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
  | { type: 'LLM.DELTA'; runId: string; text: string }
  | { type: 'LLM.DONE'; runId: string; text: string; toolCalls: ToolCall[]; at: number }
  | { type: 'LLM.ERROR'; runId: string; message: string }
  | { type: 'DTMF.SAY'; text: string };

export type SessionEmitted = { type: 'outbound'; message: OutboundMessage };

const MAX_TOOL_ROUNDS = 4;
/** Reconnect tokens a session in grace accepts at once: the answer to a callback and its retries. */
export const MAX_RESUME_TOKENS = 6;

/** Placeholder; the server provides the real LLM actor (OpenAI or offline) with machine.provide(). */
const llmReplyPlaceholder = fromCallback<{ type: string }, ReplyInput>(() => {
  throw new Error('llmReply actor not provided');
});

function firstToolCall(event: SessionEvent) {
  if (event.type !== 'LLM.DONE') return undefined;
  const call = event.toolCalls[0];
  return call ? parseToolCall(call) : undefined;
}

/** The history with `turns` appended, trimmed oldest first to the call's limits. */
function withTurns(context: SessionContext, ...turns: ChatTurn[]): Pick<SessionContext, 'history' | 'historyDropped'> {
  // Snapshots stored before the limits existed have neither field: they get the defaults.
  const { history, dropped } = boundHistory([...context.history, ...turns], context.historyLimits ?? DEFAULT_HISTORY_LIMITS);
  return { history, historyDropped: (context.historyDropped ?? 0) + dropped };
}

/** Whether the call may still be resumed: shared by the machine's guards and the session manager. */
export function hasResumesLeft(context: Pick<SessionContext, 'resumes' | 'timeouts'>): boolean {
  return context.resumes < context.timeouts.maxResumes;
}

/** Speech and recognition both follow the call's language. */
function languageMessage(language: string): SessionEmitted {
  return { type: 'outbound', message: { type: 'language', ttsLanguage: language, transcriptionLanguage: language } };
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

/**
 * One keypad entry: invoke the kind's child machine (by string src, so it is restored from a
 * snapshot) and hand its result to the model; the language menu also tells Twilio the language.
 */
function collectWith(src: DtmfSrc, opts: { announceLanguage?: boolean } = {}) {
  const record = { type: 'recordDtmfResult', params: ({ event }: { event: { output: DtmfResult } }) => ({ result: event.output }) } as const;
  return {
    invoke: {
      id: 'dtmf',
      src,
      input: ({ context }: { context: SessionContext }) => dtmfInputFor(context),
      onDone: {
        target: '#session.live.conversation.responding',
        actions: opts.announceLanguage ? [record, 'emitLanguage' as const] : [record],
      },
    },
  } as const;
}

export const sessionMachine = setup({
  types: {
    context: {} as SessionContext,
    events: {} as SessionEvent,
    input: {} as SessionInput,
    emitted: {} as SessionEmitted,
  },
  actors: {
    llmReply: llmReplyPlaceholder,
    deadlineTimer,
    ...dtmfMachines,
  },
  guards: {
    isFinalPrompt: ({ event }) => event.type === 'PROMPT' && event.last && event.text.trim().length > 0,
    isCurrentRun: ({ context, event }) =>
      'runId' in event && (context.reply?.runId === null || context.reply?.runId === event.runId),
    isNewRun: ({ context, event }) => 'runId' in event && context.reply !== null && context.reply.runId !== event.runId,
    linkConnected: stateIn('#session.live.link.connected'),
    conversationFinished: stateIn('#session.live.conversation.finished'),
    canResume: ({ context }) => hasResumesLeft(context),
    actionResumable: ({ context, event }) => event.type === 'ACTION' && event.resumable && hasResumesLeft(context),
    tooManyToolRounds: ({ context, event }) =>
      event.type === 'LLM.DONE' && event.toolCalls.length > 0 && context.toolRounds >= MAX_TOOL_ROUNDS,
    wantsLanguageSwitch: ({ event }) => firstToolCall(event)?.name === 'switch_language',
    wantsDigits: ({ event }) => firstToolCall(event)?.name === 'collect_digits',
    wantsHandoff: ({ event }) => firstToolCall(event)?.name === 'human_agent_handoff',
    hasToolCalls: ({ event }) => event.type === 'LLM.DONE' && event.toolCalls.length > 0,
    dtmfKindLanguage: ({ context }) => context.dtmf?.kind === 'language',
    dtmfKindPhone: ({ context }) => context.dtmf?.kind === 'phoneNumber',
    dtmfKindDateOfBirth: ({ context }) => context.dtmf?.kind === 'dateOfBirth',
    lastTurnIsAssistant: ({ context }) => context.history.at(-1)?.role === 'assistant',
  },
  actions: {
    recordUserTurn: assign(({ context, event }) => ({
      ...(event.type === 'PROMPT' ? withTurns(context, { role: 'user', content: event.text }) : {}),
      toolRounds: 0,
    })),
    startReply: assign({ reply: { runId: null, text: '' } }),
    /** A restarted LLM run (new runId, e.g. after a server restart) regenerates from scratch. */
    restartReplyText: assign({
      reply: ({ event }) => ('runId' in event ? { runId: event.runId, text: '' } : null),
    }),
    appendDelta: assign({
      reply: ({ context, event }) =>
        event.type === 'LLM.DELTA' ? { runId: event.runId, text: (context.reply?.text ?? '') + event.text } : context.reply,
    }),
    emitDelta: emit(({ event }) => ({
      type: 'outbound' as const,
      message: { type: 'text' as const, token: event.type === 'LLM.DELTA' ? event.text : '', last: false },
    })),
    closeTalkCycle: emit({ type: 'outbound', message: { type: 'text', token: '', last: true } }),
    finishReply: assign(({ context, event }) => {
      if (event.type !== 'LLM.DONE') return { reply: null };
      const turn: ChatTurn = event.toolCalls.length
        ? { role: 'assistant', content: event.text, toolCalls: event.toolCalls }
        : { role: 'assistant', content: event.text };
      return { ...withTurns(context, turn), reply: null };
    }),
    /** Replies finished while away are spoken one after another after the resume, a space apart. */
    markUndelivered: assign({
      undelivered: ({ context, event }) =>
        event.type === 'LLM.DONE' && event.text ? [context.undelivered, event.text].filter(Boolean).join(' ') : context.undelivered,
    }),
    /** Only what the caller actually heard becomes the assistant turn. */
    recordInterruptedReply: assign(({ context, event }) => ({
      // Interrupted before anything was heard: there is no assistant turn to keep.
      ...(event.type === 'INTERRUPT' && event.utterance.trim()
        ? withTurns(context, { role: 'assistant', content: event.utterance, interrupted: true })
        : {}),
      reply: null,
    })),
    /** The reply had finished generating but was still being spoken: truncate it to what was heard. */
    truncateLastReply: assign({
      history: ({ context, event }) => {
        const last = context.history.at(-1);
        if (event.type !== 'INTERRUPT' || last?.role !== 'assistant' || last.toolCalls) return context.history;
        return [...context.history.slice(0, -1), { role: 'assistant' as const, content: event.utterance, interrupted: true }];
      },
      undelivered: null,
    }),
    dropReply: assign({ reply: null }),
    /** The caller heard whatever streamed before the failure, then the apology: keep both. */
    recordLlmFailure: assign(({ context }) => ({
      ...withTurns(context, {
        role: 'assistant',
        content: [context.reply?.text, llmFailureLine(context.language)].filter(Boolean).join(' '),
      }),
      reply: null,
    })),
    sayLlmFailure: emit(({ context }) => ({
      type: 'outbound' as const,
      message: { type: 'text' as const, token: `${context.reply?.text ? ' ' : ''}${llmFailureLine(context.language)}`, last: false },
    })),
    answerToolCalls: assign(({ context, event }) => {
      // Every tool call needs a result before the next model turn; the first one is executed,
      // any others are answered as skipped.
      const toolRounds = context.toolRounds + 1;
      if (event.type !== 'LLM.DONE') return { toolRounds };
      const [first, ...rest] = event.toolCalls;
      const results: ChatTurn[] = rest.map((c) => ({
        role: 'tool',
        toolCallId: c.id,
        content: 'skipped: one action at a time',
      }));
      const parsed = first ? parseToolCall(first) : undefined;
      if (parsed?.name === 'switch_language') {
        results.unshift({ role: 'tool', toolCallId: parsed.call.id, content: `language switched to ${parsed.args.language}` });
      } else if (parsed?.name === 'human_agent_handoff') {
        results.unshift({ role: 'tool', toolCallId: parsed.call.id, content: 'handing off to a human agent' });
      } else if (parsed?.name === 'invalid') {
        results.unshift({ role: 'tool', toolCallId: parsed.call.id, content: `error: ${parsed.error}` });
      }
      return { ...withTurns(context, ...results), toolRounds };
    }),
    refuseToolLoop: assign(({ context, event }) =>
      event.type === 'LLM.DONE'
        ? withTurns(
            context,
            ...event.toolCalls.map((c) => ({
              role: 'tool' as const,
              toolCallId: c.id,
              content: 'refused: too many tool calls in a row, answer the caller now',
            })),
          )
        : {},
    ),
    applyLanguage: assign({
      language: ({ context, event }) => {
        const call = firstToolCall(event);
        return call?.name === 'switch_language' ? call.args.language : context.language;
      },
    }),
    emitLanguage: emit(({ context }) => languageMessage(context.language)),
    rememberDtmfRequest: assign({
      dtmf: ({ event }) => {
        const call = firstToolCall(event);
        if (event.type !== 'LLM.DONE' || call?.name !== 'collect_digits') return null;
        const args: CollectDigitsArgs = call.args;
        return { toolCallId: call.call.id, requestedAt: event.at, ...args };
      },
    }),
    // Relayed to the child collector; digits themselves are never logged.
    forwardDigit: sendTo('dtmf', ({ event }) => event),
    // Nobody can type without a socket: the entry's idle timer stops until the caller is back.
    pauseDtmf: sendTo('dtmf', { type: 'PAUSE' }),
    continueDtmf: sendTo('dtmf', (_, params: { at: number }) => ({ type: 'CONTINUE' as const, at: params.at })),
    /** A keypad prompt said while no socket is attached is spoken after the resume line instead. */
    keepDtmfSayForResume: assign({
      undelivered: ({ context, event }) => (event.type === 'DTMF.SAY' ? event.text : context.undelivered),
    }),
    relayDtmfSay: emit(({ event }) => ({
      type: 'outbound' as const,
      message: { type: 'text' as const, token: event.type === 'DTMF.SAY' ? event.text : '', last: true },
    })),
    recordDtmfResult: assign(({ context }, params: { result: DtmfResult }) => ({
      ...(context.dtmf ? withTurns(context, { role: 'tool', toolCallId: context.dtmf.toolCallId, content: JSON.stringify(params.result) }) : {}),
      language: params.result.status === 'ok' && params.result.kind === 'language' ? params.result.value : context.language,
      dtmf: null,
      // Keypad input is the caller taking part, like speaking: the tool-loop bound starts over.
      toolRounds: 0,
    })),
    recordDtmfCancelled: assign(({ context }) => ({
      ...(context.dtmf
        ? withTurns(context, {
            role: 'tool',
            toolCallId: context.dtmf.toolCallId,
            content: JSON.stringify({ status: 'failed', kind: context.dtmf.kind, reason: 'cancelled' }),
          })
        : {}),
      dtmf: null,
    })),
    emitEnd: emit(({ context }) => ({
      type: 'outbound' as const,
      message: { type: 'end' as const, ...(context.handoffData ? { handoffData: context.handoffData } : {}) },
    })),
    prepareHandoff: assign({
      handoffData: ({ context, event }) => {
        const call = firstToolCall(event);
        return JSON.stringify({
          reason: call?.name === 'human_agent_handoff' ? call.args.reason : 'handoff',
          callSid: context.callSid,
          language: context.language,
        });
      },
    }),
    /** The grace period counts from when the link was lost (`at` of the close or the action callback). */
    recordDisconnect: assign({
      disconnects: ({ context }) => context.disconnects + 1,
      lastCloseCode: ({ event }) => (event.type === 'SOCKET.CLOSED' ? event.code : null),
      graceDeadline: ({ context }, params: { at: number }) => params.at + context.timeouts.graceMs,
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
    /** Tell the caller we are back, then complete whatever was cut off by the drop. */
    greetOnResume: enqueueActions(({ context, enqueue }) => {
      const streaming = context.reply !== null;
      const cutOff = context.reply?.text || context.undelivered;
      const text = (token: string, last: boolean): SessionEmitted => ({ type: 'outbound', message: { type: 'text', token, last } });
      // A new Twilio session starts in the TwiML's language: switch it back to the call's current one.
      enqueue.emit(languageMessage(context.language));
      // A reply restarted from its beginning (restored by a restarted or another instance) has no cut-off
      // text yet: its first delta follows the line, so the line ends with the space between them.
      const line = resumeLine(context.language);
      enqueue.emit(text(streaming && !cutOff ? `${line} ` : line, !streaming && !cutOff));
      // A reply still streaming is continued by its next deltas; a finished one closes the cycle.
      if (cutOff) enqueue.emit(text(` ${cutOff}`, !streaming));
      enqueue.assign({ undelivered: null });
    }),
    markEnded: assign({
      endedReason: ({ event }) =>
        event.type === 'ACTION' ? `action:${event.sessionStatus || event.errorCode}` : event.type.toLowerCase(),
    }),
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
    reply: null,
    undelivered: null,
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
                  { guard: 'conversationFinished', target: '#session.ended', actions: 'markEnded' },
                  { target: 'disconnected', actions: { type: 'recordDisconnect', params: ({ event }) => ({ at: event.at }) } },
                ],
                // Newest authenticated connection wins: a second socket for a live call takes over.
                RESUME: { target: 'connected', reenter: true, actions: [{ type: 'recordResume', params: ({ event }) => ({ sessionKeyHash: event.sessionKeyHash, at: event.at }) }, 'greetOnResume'] },
                // The action callback can overtake our noticing the close.
                ACTION: [
                  {
                    guard: 'actionResumable',
                    target: 'grace',
                    actions: [{ type: 'recordDisconnect', params: ({ event }) => ({ at: event.at }) }, { type: 'storeResumeToken', params: ({ event }) => ({ hash: event.resumeTokenHash }) }],
                  },
                  { target: '#session.ended', actions: 'markEnded' },
                ],
              },
            },
            // Socket gone; Twilio normally posts the action callback next.
            disconnected: {
              invoke: { src: 'deadlineTimer', input: ({ context }) => ({ at: context.graceDeadline ?? 0, event: 'GRACE.EXPIRED' }) },
              on: {
                ACTION: [
                  { guard: 'actionResumable', target: 'grace', actions: { type: 'storeResumeToken', params: ({ event }) => ({ hash: event.resumeTokenHash }) } },
                  { target: '#session.ended', actions: 'markEnded' },
                ],
                RESUME: { guard: 'canResume', target: 'connected', actions: [{ type: 'recordResume', params: ({ event }) => ({ sessionKeyHash: event.sessionKeyHash, at: event.at }) }, 'greetOnResume'] },
                'GRACE.EXPIRED': '#session.expired',
              },
            },
            // Twilio was told to reconnect; waiting for the new socket.
            grace: {
              invoke: { src: 'deadlineTimer', input: ({ context }) => ({ at: context.graceDeadline ?? 0, event: 'GRACE.EXPIRED' }) },
              on: {
                RESUME: { guard: 'canResume', target: 'connected', actions: [{ type: 'recordResume', params: ({ event }) => ({ sessionKeyHash: event.sessionKeyHash, at: event.at }) }, 'greetOnResume'] },
                ACTION: [
                  { guard: 'actionResumable', target: 'grace', actions: { type: 'storeResumeToken', params: ({ event }) => ({ hash: event.resumeTokenHash }) } },
                  { target: '#session.ended', actions: 'markEnded' },
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
                PROMPT: { guard: 'isFinalPrompt', target: 'responding', actions: 'recordUserTurn' },
                INTERRUPT: { guard: 'lastTurnIsAssistant', actions: 'truncateLastReply' },
              },
            },
            responding: {
              entry: 'startReply',
              invoke: {
                src: 'llmReply',
                input: ({ context }) => ({ turns: context.history, language: context.language }),
              },
              on: {
                'LLM.DELTA': [
                  { guard: 'isNewRun', actions: ['restartReplyText', 'appendDelta', 'emitDelta'] },
                  { guard: 'isCurrentRun', actions: ['appendDelta', 'emitDelta'] },
                ],
                'LLM.DONE': [
                  // A model stuck calling tools gets refusals and the caller gets the floor back.
                  { guard: 'tooManyToolRounds', target: 'idle', actions: ['finishReply', 'refuseToolLoop', 'sayLlmFailure', 'closeTalkCycle'] },
                  {
                    guard: 'wantsHandoff',
                    target: 'finished',
                    actions: ['finishReply', 'answerToolCalls', 'closeTalkCycle', 'prepareHandoff', 'emitEnd'],
                  },
                  {
                    guard: 'wantsLanguageSwitch',
                    target: 'responding',
                    reenter: true,
                    actions: ['finishReply', 'answerToolCalls', 'closeTalkCycle', 'applyLanguage', 'emitLanguage'],
                  },
                  {
                    guard: 'wantsDigits',
                    target: 'collecting',
                    actions: ['finishReply', 'answerToolCalls', 'closeTalkCycle', 'rememberDtmfRequest'],
                  },
                  // Unknown or invalid tool: the model is told why and answers again.
                  { guard: 'hasToolCalls', target: 'responding', reenter: true, actions: ['finishReply', 'answerToolCalls'] },
                  { guard: 'linkConnected', target: 'idle', actions: ['finishReply', 'closeTalkCycle'] },
                  { target: 'idle', actions: ['markUndelivered', 'finishReply'] },
                ],
                'LLM.ERROR': { target: 'idle', actions: ['sayLlmFailure', 'recordLlmFailure', 'closeTalkCycle'] },
                INTERRUPT: { target: 'idle', actions: ['recordInterruptedReply', 'closeTalkCycle'] },
                // A new utterance cancels the stream in flight (exiting stops the invoked actor).
                PROMPT: {
                  guard: 'isFinalPrompt',
                  target: 'responding',
                  reenter: true,
                  actions: ['dropReply', 'closeTalkCycle', 'recordUserTurn'],
                },
              },
            },
            collecting: {
              initial: 'route',
              on: {
                DIGIT: { actions: 'forwardDigit' },
                // Said while the caller is away (an entry the model started during a drop): kept for after the
                // resume line, and the entry waits without using up idle attempts.
                'DTMF.SAY': [{ guard: 'linkConnected', actions: 'relayDtmfSay' }, { actions: ['keepDtmfSayForResume', 'pauseDtmf'] }],
                // Alongside the link region's own transitions; the guard mirrors link's so can(RESUME) is unchanged.
                'SOCKET.CLOSED': { actions: 'pauseDtmf' },
                RESUME: { guard: 'canResume', actions: { type: 'continueDtmf', params: ({ event }) => ({ at: event.at }) } },
                // Speaking instead of typing cancels the keypad entry and is answered normally.
                PROMPT: { guard: 'isFinalPrompt', target: 'responding', actions: ['recordDtmfCancelled', 'recordUserTurn'] },
              },
              states: {
                route: {
                  always: [
                    { guard: 'dtmfKindLanguage', target: 'language' },
                    { guard: 'dtmfKindPhone', target: 'phoneNumber' },
                    { guard: 'dtmfKindDateOfBirth', target: 'dateOfBirth' },
                    { target: 'digits' },
                  ],
                },
                language: collectWith('languageMenu', { announceLanguage: true }),
                phoneNumber: collectWith('phoneNumber'),
                dateOfBirth: collectWith('dateOfBirth'),
                digits: collectWith('digits'),
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
 * timer) on `clock`; provide them with `sessionMachine.provide({ actors: { ...timersOn(clock) } })`.
 */
export function timersOn(clock: Clock) {
  const timer = createDeadlineTimer(clock);
  const actors = { actors: { deadlineTimer: timer } };
  return {
    deadlineTimer: timer,
    languageMenu: dtmfMachines.languageMenu.provide(actors),
    phoneNumber: dtmfMachines.phoneNumber.provide(actors),
    dateOfBirth: dtmfMachines.dateOfBirth.provide(actors),
    digits: dtmfMachines.digits.provide(actors),
  };
}
