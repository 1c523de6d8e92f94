// The secrets a resume proves itself with, at the edge: random tokens come from node:crypto and
// only their sha256 ever reaches a session (its context is stored, logged redacted and inspected).
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/** Custom parameters that are proofs: never kept in a session's context. */
export const SECRET_PARAMETERS: ReadonlySet<string> = new Set(['resumeToken', 'resumeKey', 'callToken']);

export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret, 'utf8').digest('hex');
}

/** A fresh single-use token for a TwiML `<Parameter>` (256 bits, URL-safe): resumeToken or callToken. */
export function newProofToken(): string {
  return randomBytes(32).toString('base64url');
}

/**
 * The relay URL path segment that binds a socket to the TwiML that issued `token`: Twilio signs the
 * upgrade over the wss URL exactly as written, so only Twilio can open `/relay/<ticket>` with a valid
 * signature. Whoever replays a signed webhook gets a token, but no signature for its ticket; whoever
 * replays a captured upgrade gets the ticket of a token already spent. Derived, not the token itself,
 * since URLs end up in access logs.
 */
export function relayTicket(token: string): string {
  return createHash('sha256').update(`relay-ticket\0${token}`, 'utf8').digest('base64url');
}

/** A ticket as it may appear in a relay path (sha256, base64url). */
export const RELAY_TICKET_PATTERN = /^[A-Za-z0-9_-]{43}$/;

/** Whether a socket opened at `/relay/<ticket>` was issued for `token`, in constant time. */
export function ticketMatches(ticket: string | undefined, token: string | undefined): boolean {
  if (!ticket || !token) return false;
  const a = Buffer.from(ticket);
  const b = Buffer.from(relayTicket(token));
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Whether `secret` hashes to `storedHash`, compared in constant time. A missing side never matches. */
export function matchesHash(secret: string | undefined, storedHash: string | null | undefined): boolean {
  if (secret === undefined || secret === '' || !storedHash) return false;
  const a = Buffer.from(hashSecret(secret), 'hex');
  const b = Buffer.from(storedHash, 'hex');
  return a.length === b.length && timingSafeEqual(a, b);
}

/** The caller's custom parameters without the proofs. */
export function withoutSecrets(parameters: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(parameters).filter(([name]) => !SECRET_PARAMETERS.has(name)));
}
