// Shared contract of the DTMF input child machines (invoked by the session machine with id 'dtmf').
import type { DtmfDigit } from '../../protocol/messages.js';

export type DtmfKind = 'language' | 'phoneNumber' | 'dateOfBirth' | 'digits';

/** Input of every DTMF machine. Must stay JSON-serialisable: it is persisted in the snapshot. */
export interface DtmfInput {
  kind: DtmfKind;
  /** Epoch ms when the entry started (stamped by the parent): the first idle period counts from it. */
  startedAt: number;
  /** Milliseconds without a key press before the caller is re-prompted (counts as a failed attempt). */
  idleMs: number;
  /** Failed attempts (invalid entry or idle timeout) allowed before giving up. Default 3. */
  maxAttempts?: number;
  /** Only used by the generic `digits` machine (default 4). */
  minLength?: number;
  /** Only used by the generic `digits` machine (default 12); reaching it completes the entry. */
  maxLength?: number;
  /** What is being entered, used in prompts: 'account number', 'PIN', ... */
  label?: string;
  /** Prompt language, e.g. 'en-US' or 'es-US'. An 'es' prefix selects Spanish, anything else English. */
  language?: string;
}

export type DtmfFailureReason = 'too-many-attempts' | 'timeout' | 'cancelled';

/**
 * The machine's `output` (the parent receives it as `xstate.done.actor.dtmf`).
 * value: language -> 'en-US' | 'es-US'; phoneNumber -> 10 digits; dateOfBirth -> 'YYYY-MM-DD';
 * digits -> the digits entered.
 */
export type DtmfResult =
  | { status: 'ok'; kind: DtmfKind; value: string }
  | { status: 'failed'; kind: DtmfKind; reason: DtmfFailureReason };

/**
 * Events the DTMF machines accept. IDLE_TIMEOUT is normally sent by their own idle timer.
 * PAUSE / CONTINUE bracket a dropped socket: nobody can type then, so the idle timer stops.
 * `at` (epoch ms, stamped by the edge) is when the event happened: the machines never read a clock,
 * and every event that starts an idle period carries it.
 */
export type DtmfEvent =
  | { type: 'DIGIT'; digit: DtmfDigit; at: number }
  | { type: 'CANCEL' }
  | { type: 'IDLE_TIMEOUT'; at: number }
  | { type: 'PAUSE' }
  | { type: 'CONTINUE'; at: number };

/** Sent to the parent: text to speak to the caller (initial prompt or re-prompt). */
export interface DtmfSayEvent {
  type: 'DTMF.SAY';
  text: string;
}

export type { DtmfDigit };
