// A fresh session machine input for machine-level tests: unique callSid and sessionId each time.
import { randomUUID } from 'node:crypto';
import { hashSecret } from '../../src/server/resume-proof.js';
import type { SessionInput, SessionTimeouts } from '../../src/machines/session.js';

const TIMEOUTS: SessionTimeouts = { graceMs: 60_000, retentionMs: 60_000, dtmfIdleMs: 30_000, maxResumes: 3 };

export function sessionInput(timeouts: Partial<SessionTimeouts> = {}): SessionInput {
  return {
    callSid: `CA${randomUUID().replace(/-/g, '')}`,
    sessionKeyHash: hashSecret(`VX${randomUUID().replace(/-/g, '')}`),
    resumeKeyHash: null,
    accountSid: 'AC00000000000000000000000000007e57',
    from: '+15550100001',
    to: '+15550100002',
    customParameters: {},
    language: 'en-US',
    timeouts: { ...TIMEOUTS, ...timeouts },
    now: Date.now(),
  };
}
