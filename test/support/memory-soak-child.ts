// Child process of the memory-store soak (test/retention-soak.test.ts), started with --expose-gc and
// with V8's optimising tiers off, so that heap growth after a forced GC is what the server keeps, not
// compiled code warming up. Runs rounds of calls against a real in-process server on the memory store,
// waits (polling the store) until every record and epoch of the round is swept, forces a GC and prints
// one JSON line per round: { round, heapUsed }. Exits non-zero with the reason on any failure.
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/server/logger.js';
import { startServer } from '../../src/server/server.js';
import { pollUntil, soakRound } from './soak-calls.js';

const env = (name: string) => Number(process.env[name]);
const rounds = env('SOAK_ROUNDS');
const perKind = env('SOAK_PER_KIND');
const goneWithinMs = env('SOAK_GONE_WITHIN_MS');

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('start this child with --expose-gc');

// Offline replies: no LLM client, and nothing in this process records requests.
const config = loadConfig({}, { port: 0, host: '127.0.0.1', store: 'memory', graceMs: env('SOAK_GRACE_MS'), retentionMs: env('SOAK_RETENTION_MS'), logLevel: 'silent' });
const server = await startServer(config, { logger: createLogger('silent') });
try {
  for (let round = 0; round < rounds; round++) {
    const sids = await soakRound(server, perKind, goneWithinMs);
    // Swept: no record and no fencing epoch of this round is left in the store.
    const left = async () => (await server.store.list()).length + (await Promise.all(sids.map((sid) => server.store.currentEpoch(sid)))).filter((e) => e > 0).length;
    await pollUntil(async () => (await left()) === 0, `the store to forget every record and epoch of round ${round}`, goneWithinMs);
    for (let i = 0; i < 3; i++) gc();
    process.stdout.write(`${JSON.stringify({ round, calls: sids.length, heapUsed: process.memoryUsage().heapUsed })}\n`);
  }
} finally {
  await server.close();
}
