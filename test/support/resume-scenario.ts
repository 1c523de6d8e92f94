// A scripted call used by the persistence suites: a language switch, a keypad entry and a slow
// streamed reply, plus the two ways a dropped call comes back (Twilio's /action path and
// `reconnection: true`). The fake LLM answers by keywords, so every request it records can be
// compared with the history the session should have.
import { vi } from 'vitest';
import { SimulatedCall, twilioReconnectOptions, type AgentReply } from '../../src/testing/twilio-sim.js';
import { postAction } from '../../src/testing/twilio-webhooks.js';
import { contentToText, splitIntoChunks, type ChatMessageIn, type FakeOpenAI, type ScriptFn } from '../../src/testing/fake-openai-server.js';
import { resumeLine } from '../../src/machines/phrases.js';
import type { OutboundMessage } from '../../src/protocol/messages.js';
import { closeClient, connectRedis, scanKeys } from '../../src/stores/redis-connection.js';
import type { SessionRecord, SnapshotStore } from '../../src/stores/types.js';

export const SPANISH_OK = 'Claro, hablemos en español.';
export const DIGITS_OK = 'Gracias, número recibido.';
export const STORY =
  'Once upon a time a small robot answered phones all day long and it never forgot a single caller, ' +
  'not even when the line went quiet for a while and came back again.';
export const STORY_CHUNKS = splitIntoChunks(STORY);

export interface ScriptOptions {
  /** Delay between the story's chunks (the in-flight reply cut by a drop). */
  storyDelayMs?: number;
  /** Every story stops after `chunks` chunks until `until` resolves: still streaming when the test cuts it. */
  storyHold?: { chunks: number; until: Promise<unknown> };
}

/** A promise the test opens when it chooses (e.g. to let a held reply go on). */
export function gate(): { opened: Promise<void>; open: () => void } {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { opened, open };
}

const lastMessage = (messages: ChatMessageIn[]) => messages.at(-1);

/**
 * The next story `llm` streams (with `script`) stops after `chunks` chunks until the returned function
 * is called: the test cuts it by a drop at a point it chooses instead of racing the chunk delays.
 */
export function holdNextStory(llm: FakeOpenAI, script: ScriptFn, chunks: number): () => void {
  let release!: () => void;
  const until = new Promise<void>((resolve) => (release = resolve));
  llm.setScript(async (req) => {
    const reply = await script(req);
    if (!lastUserText(req.messages).includes('story')) return reply;
    llm.setScript(script);
    return { ...reply, holdAfter: { chunks, until } };
  });
  return release;
}

/**
 * "spanish" -> switch_language es-US; "phone" -> collect_digits phoneNumber; "story" -> STORY streamed
 * slowly; a tool result -> a short acknowledgement; anything else -> "You said: <text>".
 */
export function scenarioScript(opts: ScriptOptions = {}): ScriptFn {
  return ({ messages }) => {
    const last = lastMessage(messages);
    if (last?.role === 'tool') {
      const text = contentToText(last.content);
      return { text: text.startsWith('language switched') ? SPANISH_OK : DIGITS_OK };
    }
    const said = contentToText(last?.content).toLowerCase();
    if (said.includes('spanish')) return { toolCalls: [{ name: 'switch_language', arguments: '{"language":"es-US"}' }] };
    if (said.includes('phone')) return { toolCalls: [{ name: 'collect_digits', arguments: '{"kind":"phoneNumber"}' }] };
    if (said.includes('story')) return { chunks: STORY_CHUNKS, delayMs: opts.storyDelayMs ?? 60, holdAfter: opts.storyHold };
    return { text: `You said: ${contentToText(last?.content)}` };
  };
}

const isText = (m: OutboundMessage): m is Extract<OutboundMessage, { type: 'text' }> => m.type === 'text';

/** The next reply that says something: skips empty talk-cycle closes (e.g. after a tool call). */
export async function nextSpokenReply(call: SimulatedCall, timeoutMs = 10_000): Promise<AgentReply> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const reply = await call.nextReply(Math.max(1, deadline - Date.now()));
    if (reply.text !== '') return reply;
  }
}

/** The caller speaks and the agent's spoken answer comes back. */
export async function say(call: SimulatedCall, text: string, timeoutMs?: number): Promise<string> {
  call.prompt(text);
  return (await nextSpokenReply(call, timeoutMs)).text;
}

/** Waits until `n` text deltas (non-empty, last=false) arrived after the read cursor. */
export function waitForDeltas(call: SimulatedCall, n: number, timeoutMs = 10_000): Promise<void> {
  let seen = 0;
  return call
    .waitFor((m) => isText(m) && !m.last && m.token !== '' && ++seen >= n, { timeoutMs })
    .then(() => undefined);
}

export interface TwilioResume {
  call: SimulatedCall;
  /** The TwiML /action answered. */
  twiml: string;
}

/** Twilio's /action callback after a dropped socket (ErrorCode 64105, call still in progress). */
export function postDroppedAction(baseUrl: string, call: Pick<SimulatedCall, 'callSid' | 'sessionId'>, authToken?: string) {
  return postAction(
    baseUrl,
    {
      CallSid: call.callSid,
      CallStatus: 'in-progress',
      SessionId: call.sessionId,
      SessionStatus: 'failed',
      ErrorCode: '64105',
      ErrorMessage: 'WebSocket ended',
    },
    { authToken },
  );
}

/** The wss URL of `<ConversationRelay url>` in TwiML. */
export function relayUrlOf(twiml: string): string {
  const url = /<ConversationRelay[^>]*\surl="([^"]+)"/.exec(twiml)?.[1];
  if (!url) throw new Error(`no ConversationRelay url in TwiML: ${twiml}`);
  return url.replace(/&amp;/g, '&');
}

/**
 * The real Twilio path after a drop: /action answers fresh ConversationRelay TwiML and Twilio opens
 * the socket it names with a NEW sessionId, the SAME callSid, account and numbers, and the TwiML's
 * parameters (the single-use resume token) in customParameters.
 */
export async function resumeViaTwilio(
  baseUrl: string,
  call: Pick<SimulatedCall, 'callSid' | 'sessionId' | 'setup'>,
  extra: { headers?: Record<string, string>; authToken?: string } = {},
): Promise<TwilioResume> {
  const res = await postDroppedAction(baseUrl, call, extra.authToken);
  if (res.status !== 200 || !res.body.includes('<ConversationRelay')) {
    throw new Error(`/action did not ask Twilio to reconnect: HTTP ${res.status} ${res.body}`);
  }
  const resumed = await SimulatedCall.connect(twilioReconnectOptions(res.body, call, { headers: extra.headers }));
  return { call: resumed, twiml: res.body };
}

/** A non-Twilio client's own resume: setup with the same sessionId/callSid and reconnection=true. */
export function resumeViaReconnection(
  relayUrl: string,
  call: Pick<SimulatedCall, 'callSid' | 'sessionId'> & { setup?: SimulatedCall['setup'] },
): Promise<SimulatedCall> {
  const { accountSid, from, to, customParameters } = call.setup ?? {};
  return SimulatedCall.connect({ url: relayUrl, callSid: call.callSid, sessionId: call.sessionId, reconnection: true, accountSid, from, to, customParameters });
}

export type ResumePath = 'twilio' | 'reconnection';

export async function resume(path: ResumePath, server: { httpUrl: string; relayUrl: string }, call: SimulatedCall): Promise<SimulatedCall> {
  if (path === 'twilio') return (await resumeViaTwilio(server.httpUrl, call)).call;
  return resumeViaReconnection(server.relayUrl, call);
}

/** The resume line in `language`, which the resumed caller hears first. */
export function expectedResumeLine(language: string): string {
  return resumeLine(language);
}

// ------------------------------------------------------------------ store inspection

interface PersistedChild {
  snapshot?: { context?: { buffer?: unknown } };
}

interface PersistedSession {
  value?: unknown;
  context?: {
    language?: string;
    history?: unknown[];
    resumes?: number;
    sessionId?: string;
    graceDeadline?: number | null;
    resumeTokenHashes?: string[];
  };
  children?: Record<string, PersistedChild>;
}

export function persisted(record: SessionRecord | undefined): PersistedSession {
  return (record?.snapshot ?? {}) as PersistedSession;
}

/** Digits typed so far in the persisted DTMF child (its buffer), or undefined without one. */
export function storedDtmfBuffer(record: SessionRecord | undefined): string | undefined {
  const buffer = persisted(record).children?.dtmf?.snapshot?.context?.buffer;
  return typeof buffer === 'string' ? buffer : undefined;
}

/** Waits until the stored record satisfies `predicate` (what a restore would find); returns it. */
export function waitForRecord(
  store: SnapshotStore,
  callSid: string,
  predicate: (r: SessionRecord | undefined) => boolean,
  timeoutMs = 10_000,
): Promise<SessionRecord | undefined> {
  return vi.waitFor(
    async () => {
      const record = await store.load(callSid);
      if (!predicate(record)) {
        throw new Error(`store record for ${callSid} does not match; last: ${JSON.stringify(record && { state: record.state, epoch: record.epoch })}`);
      }
      return record;
    },
    { timeout: timeoutMs, interval: 25 },
  );
}

// ------------------------------------------------------------------ LLM request inspection

/** The requests the fake LLM received whose latest message satisfies `predicate`. */
export function requestsWhere(llm: FakeOpenAI, predicate: (last: ChatMessageIn | undefined) => boolean) {
  return llm.requests.filter((r) => predicate(r.messages.at(-1)));
}

export function lastUserText(messages: ChatMessageIn[]): string {
  return contentToText([...messages].reverse().find((m) => m.role === 'user')?.content);
}

/** Waits for an LLM request (from index `from` on) whose messages satisfy `predicate`. */
export function waitForRequest(llm: FakeOpenAI, predicate: (messages: ChatMessageIn[]) => boolean, timeoutMs = 10_000, from = 0) {
  return vi.waitFor(
    () => {
      const found = llm.requests.slice(from).find((r) => predicate(r.messages));
      if (!found) throw new Error(`no matching LLM request yet (${llm.requests.length} requests)`);
      return found;
    },
    { timeout: timeoutMs, interval: 20 },
  );
}

/** A compact, comparable view of a chat request: role + text (+ tool name / tool result). */
export function transcriptOf(messages: ChatMessageIn[]): string[] {
  return messages
    .filter((m) => m.role !== 'system')
    .map((m) => {
      const calls = Array.isArray(m.tool_calls)
        ? (m.tool_calls as Array<{ function?: { name?: string } }>).map((c) => c.function?.name ?? '?').join(',')
        : '';
      return `${m.role}:${contentToText(m.content)}${calls ? ` [${calls}]` : ''}`;
    });
}

/** Deletes every key under a test's Redis prefix (on every master of a cluster). */
export async function clearRedisPrefix(url: string, prefix: string): Promise<void> {
  // One DEL per key: a cluster refuses a DEL across slots; auto-pipelining batches them per node.
  const redis = connectRedis(url, { autoPipelining: true });
  try {
    for await (const keys of scanKeys(redis, `${prefix.replace(/[*?[\]\\]/g, '\\$&')}*`)) {
      await Promise.all(keys.map((key) => redis.del(key)));
    }
  } finally {
    await closeClient(redis);
  }
}
