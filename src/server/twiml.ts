import twilio from 'twilio';
import type { AgentLanguage } from '../agent/agent.js';
import { withOverrides } from './connection-overrides.js';

export interface TwimlOptions {
  publicHost: string;
  /** Whether the host is reached over TLS (wss/https); plain ws/http for local runs. */
  secure: boolean;
  language: string;
  /** Every language the agent speaks, with its voice and recognition (`<Language>` elements). */
  languages: AgentLanguage[];
  welcomeGreeting?: string;
  parameters?: Record<string, string>;
  /** Relay URL path segment binding the socket to this TwiML's token (see resume-proof.ts). */
  ticket?: string;
  /** Twilio connection overrides for the action callback (fragment without `#`); '' or absent for none. */
  actionOverrides?: string;
}

/** `wss://host/relay`, or `wss://host/relay/<ticket>`: a path, since the wss URL must carry no query string. */
export function relayUrl(opts: Pick<TwimlOptions, 'publicHost' | 'secure' | 'ticket'>): string {
  return `${opts.secure ? 'wss' : 'ws'}://${opts.publicHost}/relay${opts.ticket ? `/${opts.ticket}` : ''}`;
}

/** The <Connect action> URL as written in TwiML: with the connection overrides as its fragment. */
export function actionUrl(opts: Pick<TwimlOptions, 'publicHost' | 'secure' | 'actionOverrides'>): string {
  return withOverrides(`${opts.secure ? 'https' : 'http'}://${opts.publicHost}/action`, opts.actionOverrides ?? '');
}

/** `<Connect action><ConversationRelay>` for a new call, or (without greeting) for a resume. */
export function conversationRelayTwiml(opts: TwimlOptions): string {
  const response = new twilio.twiml.VoiceResponse();
  const connect = response.connect({ action: actionUrl(opts) });
  const relay = connect.conversationRelay({
    url: relayUrl(opts),
    language: opts.language,
    dtmfDetection: true,
    interruptible: 'any',
    ...(opts.welcomeGreeting ? { welcomeGreeting: opts.welcomeGreeting } : {}),
  });
  for (const { code, ttsProvider, voice, transcriptionProvider, speechModel } of opts.languages) {
    relay.language({ code, ttsProvider, voice, transcriptionProvider, speechModel });
  }
  for (const [name, value] of Object.entries(opts.parameters ?? {})) relay.parameter({ name, value });
  return response.toString();
}

/** Built once per message: the few hang-up lines never change, and building TwiML costs more than answering. */
const hangups = new Map<string, string>();

/** Ends the call politely, e.g. when resumes are exhausted or the session is gone. */
export function hangupTwiml(message?: string): string {
  const key = message ?? '';
  let twiml = hangups.get(key);
  if (twiml === undefined) {
    const response = new twilio.twiml.VoiceResponse();
    if (message) response.say(message);
    response.hangup();
    twiml = response.toString();
    // The callers pass fixed lines (one per language at most); the bound keeps it so whatever they pass.
    if (hangups.size < 64) hangups.set(key, twiml);
  }
  return twiml;
}

/** Transfers the caller to a human agent after a handoff. */
export function dialTwiml(number: string): string {
  const response = new twilio.twiml.VoiceResponse();
  response.dial(number);
  return response.toString();
}
