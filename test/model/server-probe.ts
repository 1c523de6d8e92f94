// What the real server holds for one call, reduced to the values the call model predicts: read
// from the live actor (when this instance has one) and from the stored record, so every model
// state checks both the running session and what was persisted for it.
import type { SnapshotFrom } from 'xstate';
import type { RunningServer } from '../../src/server/server.js';
import { lifecycleOf, type SessionMachine } from '../../src/machines/session.js';
import type { SessionRecord } from '../../src/stores/types.js';
import { persisted, storedDtmfBuffer } from '../support/resume-scenario.js';

export interface SessionView {
  lifecycle: string;
  history: number;
  language: string;
  /** Digits typed so far in the active keypad entry (the DTMF child's buffer), null without one. */
  dtmf: number | null;
  resumes: number;
  /** A reply is being generated (the conversation is responding). */
  replying: boolean;
  /** The hash of the resume token the latest reconnect TwiML handed out, until a resume spends it. */
  resumeTokenHash: string | null;
  /** Broken history invariants (duplicated or unanswered turns); empty when sound. */
  historyProblems: string[];
}

export interface Observation {
  /** This instance's actor for the call, if it holds one. */
  live: (SessionView & { socketAttached: boolean }) | undefined;
  stored: SessionView | undefined;
}

interface Turn {
  role?: unknown;
  content?: unknown;
}

/**
 * Every caller utterance in these tests is unique and answered once: a user turn repeated (a
 * resume replaying history) or left without an answer, or two identical turns in a row, is a bug.
 * Only the last turn may be a user turn still waiting for its answer, and only while the reply to
 * it is in flight or after the session ended with it (expired or ended mid-reply): the caller
 * decides, see `unanswered`.
 */
export function historyProblems(history: readonly Turn[], opts: { lastMayBeUnanswered?: boolean } = {}): string[] {
  const problems: string[] = [];
  const seen = new Set<string>();
  history.forEach((turn, i) => {
    const text = `${String(turn.role)}:${String(turn.content)}`;
    if (turn.role === 'user') {
      if (seen.has(text)) problems.push(`user turn repeated at ${i}: ${text}`);
      seen.add(text);
      const last = i === history.length - 1;
      if (history[i + 1]?.role !== 'assistant' && !(last && opts.lastMayBeUnanswered)) problems.push(`user turn at ${i} not followed by an answer`);
    }
    const previous = history[i - 1];
    if (previous && previous.role === turn.role && previous.content === turn.content && turn.role !== 'tool') {
      problems.push(`turn ${i} duplicates turn ${i - 1}: ${text}`);
    }
  });
  return problems;
}

function liveDtmfBuffer(snapshot: SnapshotFrom<SessionMachine>): string | undefined {
  const child: unknown = snapshot.children.dtmf?.getSnapshot();
  const buffer = (child as { context?: { buffer?: unknown } } | undefined)?.context?.buffer;
  return typeof buffer === 'string' ? buffer : undefined;
}

function viewOfRecord(record: SessionRecord, lastMayBeUnanswered: boolean): SessionView {
  const { context, value } = persisted(record);
  const history = (context?.history ?? []) as Turn[];
  const buffer = storedDtmfBuffer(record);
  return {
    lifecycle: record.state,
    history: history.length,
    language: context?.language ?? '?',
    dtmf: buffer === undefined ? null : buffer.length,
    resumes: context?.resumes ?? -1,
    replying: (value as { live?: { conversation?: unknown } } | undefined)?.live?.conversation === 'responding',
    resumeTokenHash: context?.resumeTokenHashes?.at(-1) ?? null,
    historyProblems: historyProblems(history, { lastMayBeUnanswered }),
  };
}

/**
 * The call's session on `server`: its live actor (if this instance holds one) and its stored record.
 * `lastMayBeUnanswered`: the caller's last turn may still wait for its answer (see historyProblems).
 */
export async function observe(server: RunningServer, callSid: string, lastMayBeUnanswered = false): Promise<Observation> {
  const session = server.manager.get(callSid);
  let live: Observation['live'];
  if (session) {
    const snapshot = session.actor.getSnapshot();
    const buffer = liveDtmfBuffer(snapshot);
    live = {
      lifecycle: lifecycleOf(snapshot.value),
      history: snapshot.context.history.length,
      language: snapshot.context.language,
      dtmf: buffer === undefined ? null : buffer.length,
      resumes: snapshot.context.resumes,
      replying: snapshot.matches({ live: { conversation: 'responding' } }),
      resumeTokenHash: snapshot.context.resumeTokenHashes.at(-1) ?? null,
      historyProblems: historyProblems(snapshot.context.history, { lastMayBeUnanswered }),
      socketAttached: session.socket !== null,
    };
  }
  const record = await server.store.load(callSid);
  return { live, stored: record && viewOfRecord(record, lastMayBeUnanswered) };
}
