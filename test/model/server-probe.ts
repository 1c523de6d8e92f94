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
 */
export function historyProblems(history: readonly Turn[]): string[] {
  const problems: string[] = [];
  const seen = new Set<string>();
  history.forEach((turn, i) => {
    const text = `${String(turn.role)}:${String(turn.content)}`;
    if (turn.role === 'user') {
      if (seen.has(text)) problems.push(`user turn repeated at ${i}: ${text}`);
      seen.add(text);
      if (history[i + 1]?.role !== 'assistant') problems.push(`user turn at ${i} not followed by an answer`);
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

function viewOfRecord(record: SessionRecord): SessionView {
  const { context } = persisted(record);
  const history = (context?.history ?? []) as Turn[];
  const buffer = storedDtmfBuffer(record);
  return {
    lifecycle: record.state,
    history: history.length,
    language: context?.language ?? '?',
    dtmf: buffer === undefined ? null : buffer.length,
    resumes: context?.resumes ?? -1,
    historyProblems: historyProblems(history),
  };
}

export async function observe(server: RunningServer, callSid: string): Promise<Observation> {
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
      historyProblems: historyProblems(snapshot.context.history),
      socketAttached: session.socket !== null,
    };
  }
  const record = await server.store.load(callSid);
  return { live, stored: record && viewOfRecord(record) };
}
