// The secrets a resume proves itself with, at the edge: random tokens come from node:crypto and
// only their sha256 ever reaches a session (its context is stored, logged redacted and inspected).
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/** Custom parameters that are proofs: never kept in a session's context. */
export const SECRET_PARAMETERS: ReadonlySet<string> = new Set(['resumeToken', 'resumeKey', 'callToken']);

export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret, 'utf8').digest('hex');
}

/** A fresh single-use token for a reconnect TwiML (256 bits, URL-safe). */
export function newResumeToken(): string {
  return randomBytes(32).toString('base64url');
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
