// Store faults fail fast and visibly, against real stores made to fail for real: a private
// redis-server hung (SIGSTOP) or killed (SIGKILL) and restarted on its port, and a SQLite server
// process whose file writes fail (RLIMIT_FSIZE lowered with prlimit: tests run as root here, and root
// ignores read-only permissions, but not a file-size limit). A new call or a resume must be ended with
// the apology within 5 s (the requirement, used as the bound of the wait), /readyz must go 503 and
// come back, and the failures must be counted.
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { SimulatedCall } from '../src/testing/twilio-sim.js';
import { postAction, postIncomingCall } from '../src/testing/twilio-webhooks.js';
import { startFakeOpenAI, type FakeOpenAI } from '../src/testing/fake-openai-server.js';
import type { EndMessage } from '../src/protocol/messages.js';
import { RedisStore, SqliteStore, StaleLeaseError, StoreTimeoutError, StoreUnavailableError, withTimeouts, type StoreOp } from '../src/stores/index.js';
import { connectCall, scrapeCounter, waitUntil } from './support/conditions.js';
import { startTestServer, tempSqlitePath, type TestServer } from './support/harness.js';
import { RedisServer } from './support/redis-server.js';
import { killAllServerProcesses, readMetric, ServerProcess } from './support/server-process.js';

/** The requirement: a caller whose session cannot be had is sent away within this long, never left in silence. */
const TURNED_AWAY_WITHIN_MS = 5000;
/** /readyz follows the store within "a few seconds": one probe interval (1 s) plus the store timeout (2 s). */
const READINESS_FOLLOWS_WITHIN_MS = 5000;
const APOLOGY = /<Say[^>]*>Sorry, we are having technical trouble[^<]*<\/Say><Hangup\/>/;
const ROOT = fileURLToPath(new URL('..', import.meta.url));

const execFileAsync = promisify(execFile);
const hasCommand = async (cmd: string) => execFileAsync('sh', ['-c', `command -v ${cmd}`]).then(() => true, () => false);
const redisServerInstalled = await hasCommand('redis-server');
const prlimitInstalled = await hasCommand('prlimit');
if (!redisServerInstalled) console.warn('[skip] redis-server is not installed: the Redis outage tests are skipped');
if (!prlimitInstalled) console.warn('[skip] prlimit is not installed: the SQLite write-failure tests are skipped');

const calls: SimulatedCall[] = [];
const track = (call: SimulatedCall) => (calls.push(call), call);
afterEach(async () => {
  await Promise.all(calls.splice(0).map((c) => c.drop()));
});

interface Endpoints {
  httpUrl: string;
  relayUrl: string;
}

/**
 * Opens a call (or a resume of `resumeOf`) and waits, at most the required 5 s from the moment it
 * dials, for the `end` frame; then posts the action callback Twilio would post after it and returns
 * the TwiML the caller hears.
 */
async function expectTurnedAway(at: Endpoints, resumeOf?: SimulatedCall): Promise<{ elapsedMs: number; twiml: string }> {
  const started = performance.now();
  const call = track(
    await SimulatedCall.connect(
      resumeOf ? { url: at.relayUrl, callSid: resumeOf.callSid, sessionId: resumeOf.sessionId, reconnection: true } : { url: at.relayUrl },
    ),
  );
  const end = (await call.waitFor((m) => m.type === 'end', { timeoutMs: Math.max(1, TURNED_AWAY_WITHIN_MS - (performance.now() - started)) })) as EndMessage;
  const elapsedMs = performance.now() - started;
  expect(elapsedMs).toBeLessThan(TURNED_AWAY_WITHIN_MS);
  expect(JSON.parse(end.handoffData ?? '{}')).toEqual({ reason: 'service-unavailable' });
  // What Twilio posts after our `end`: the call then follows this TwiML.
  const res = await postAction(at.httpUrl, {
    CallSid: call.callSid,
    CallStatus: 'in-progress',
    SessionId: call.sessionId,
    SessionStatus: 'ended',
    HandoffData: end.handoffData,
  });
  expect(res.status).toBe(200);
  return { elapsedMs, twiml: res.body };
}

const readyStatus = async (httpUrl: string) => (await fetch(`${httpUrl}/readyz`)).status;

describe.skipIf(!redisServerInstalled)('Redis outage (a private redis-server stopped by PID)', () => {
  let redis: RedisServer;
  let ts: TestServer | undefined;

  beforeAll(async () => {
    redis = await RedisServer.start();
  });
  afterEach(async () => {
    redis.resume(); // a failed test may have left it frozen
    await ts?.close();
    ts = undefined;
    if (!redis.running) await redis.restart(); // a failed test may have left it killed
  });
  afterAll(async () => {
    await redis.kill();
  });

  const start = async () => {
    ts = await startTestServer({ config: { store: 'redis', redisUrl: redis.url } });
    return { ts, at: { httpUrl: ts.server.httpUrl, relayUrl: ts.server.relayUrl } };
  };

  it('withTimeouts: a call a hung Redis never answers fails after the timeout; a stale lease is no fault; a store known down is not even asked', async () => {
    const failures: Array<[StoreOp, string]> = [];
    let down: string | undefined;
    const inner = new RedisStore(redis.url, { prefix: `test:store-faults:${Date.now()}:` });
    const store = withTimeouts(inner, { timeoutMs: 300, onFailure: (op, err) => failures.push([op, (err as Error).name]), unavailable: () => down });
    try {
      const old = await store.acquire('CAstale', 'a');
      await store.acquire('CAstale', 'b');
      await expect(store.save(old, { snapshot: {}, state: 'connected', retainUntil: Date.now() + 60_000 })).rejects.toBeInstanceOf(StaleLeaseError);
      expect(failures).toEqual([]);

      redis.pause();
      const started = performance.now();
      await expect(store.load('CAany')).rejects.toBeInstanceOf(StoreTimeoutError);
      expect(performance.now() - started).toBeGreaterThanOrEqual(300 - 1);
      expect(failures).toEqual([['load', 'StoreTimeoutError']]);

      down = 'the probe failed';
      await expect(store.acquire('CAany', 'a')).rejects.toBeInstanceOf(StoreUnavailableError);
      expect(failures.at(-1)).toEqual(['acquire', 'StoreUnavailableError']);
    } finally {
      redis.resume();
      await inner.close();
    }
  });

  it('a hung Redis (SIGSTOP): new calls and a resume are ended with the apology within 5 s, /readyz goes 503 and back', async () => {
    const { ts, at } = await start();
    expect(await readyStatus(at.httpUrl)).toBe(200);
    // A call that drops while Redis still answers: its resume will come during the outage.
    const dropped = track(await connectCall(ts));
    await dropped.drop();
    await waitUntil(() => ts.server.manager.get(dropped.callSid)?.socket === null, 'the dropped call noticed');
    await ts.server.manager.flush();
    const errorsBefore = await scrapeCounter(at.httpUrl, 'relay_store_errors_total');

    redis.pause();
    // Before readiness has noticed: four new calls at once (they queue behind each other's store
    // look-ups) and the resume, each bounded by its own 5 s.
    const outcomes = await Promise.all([...Array.from({ length: 4 }, () => expectTurnedAway(at)), expectTurnedAway(at, dropped)]);
    for (const { twiml } of outcomes) expect(twiml).toMatch(APOLOGY);

    await expect.poll(() => readyStatus(at.httpUrl), { timeout: READINESS_FOLLOWS_WITHIN_MS, interval: 50 }).toBe(503);
    const body = (await (await fetch(`${at.httpUrl}/readyz`)).json()) as { ready: boolean; reason: string; store: string };
    expect(body).toMatchObject({ ready: false, reason: 'store unavailable', store: 'redis' });
    expect(await scrapeCounter(at.httpUrl, 'relay_store_errors_total')).toBeGreaterThan(errorsBefore);
    // Known not ready: a call is turned away at once, at the webhook and at the socket.
    expect(await postIncomingCall(at.httpUrl)).toMatch(APOLOGY);
    expect((await expectTurnedAway(at)).twiml).toMatch(APOLOGY);
    // /healthz stays liveness.
    expect((await fetch(`${at.httpUrl}/healthz`)).status).toBe(200);

    redis.resume();
    await expect.poll(() => readyStatus(at.httpUrl), { timeout: READINESS_FOLLOWS_WITHIN_MS, interval: 50 }).toBe(200);
    const call = track(await connectCall(ts));
    expect(ts.server.manager.get(call.callSid)).toBeDefined();
    expect(await postIncomingCall(at.httpUrl)).toContain('<ConversationRelay');
  });

  it('a killed Redis (SIGKILL): a new call is ended with the apology within 5 s; a restart on the same port makes it ready again', async () => {
    const { ts, at } = await start();
    const live = track(await connectCall(ts));
    const loadErrorsBefore = await scrapeCounterWith(at.httpUrl, 'relay_store_errors_total', { op: 'load' });

    await redis.kill();
    expect((await expectTurnedAway(at)).twiml).toMatch(APOLOGY);
    await expect.poll(() => readyStatus(at.httpUrl), { timeout: READINESS_FOLLOWS_WITHIN_MS, interval: 50 }).toBe(503);
    expect(await scrapeCounterWith(at.httpUrl, 'relay_store_errors_total', { op: 'load' })).toBeGreaterThan(loadErrorsBefore);
    expect(await scrapeCounterWith(at.httpUrl, 'relay_store_errors_total', { op: 'probe' })).toBeGreaterThan(0);
    // A call that was live goes on talking meanwhile (its writes fail and are counted).
    expect(live.isOpen).toBe(true);

    await redis.restart();
    await expect.poll(() => readyStatus(at.httpUrl), { timeout: READINESS_FOLLOWS_WITHIN_MS, interval: 50 }).toBe(200);
    const call = track(await connectCall(ts));
    expect(ts.server.manager.get(call.callSid)).toBeDefined();
  });
});

describe.skipIf(!prlimitInstalled)('SQLite writes failing (file-size limit on the server process)', () => {
  let llm: FakeOpenAI;
  beforeAll(async () => {
    llm = await startFakeOpenAI();
  });
  afterAll(async () => {
    await killAllServerProcesses();
    await llm.close();
  });

  const setFileSizeLimit = (pid: number, soft: '0' | 'unlimited') => execFileAsync('prlimit', ['--pid', String(pid), `--fsize=${soft}:unlimited`]);

  it('a new call is ended with the apology within 5 s, /readyz goes 503, and both recover when writes work again', async () => {
    const server = new ServerProcess({ store: 'sqlite', sqlitePath: tempSqlitePath(), openaiBaseUrl: llm.baseURL });
    await server.start();
    const pid = server.pid!;
    const at = { httpUrl: server.httpUrl, relayUrl: server.relayUrl };
    expect(await readyStatus(at.httpUrl)).toBe(200);

    await setFileSizeLimit(pid, '0');
    try {
      expect((await expectTurnedAway(at)).twiml).toMatch(APOLOGY);
      await expect.poll(() => readyStatus(at.httpUrl), { timeout: READINESS_FOLLOWS_WITHIN_MS, interval: 50 }).toBe(503);
      expect(await server.metric('relay_store_errors_total', { op: 'acquire' })).toBeGreaterThan(0);
      expect(await server.metric('relay_store_errors_total', { op: 'probe' })).toBeGreaterThan(0);
      await server.waitForLog((l) => l.msg === 'store cannot be written: not ready');
    } finally {
      await setFileSizeLimit(pid, 'unlimited');
    }
    await expect.poll(() => readyStatus(at.httpUrl), { timeout: READINESS_FOLLOWS_WITHIN_MS, interval: 50 }).toBe(200);
    const call = track(await SimulatedCall.connect({ url: at.relayUrl }));
    call.prompt('hello again');
    expect((await call.nextReply(10_000)).text).not.toBe('');
    await server.stop();
  });

  it('start-up fails with the reason when the SQLite file cannot be written', async () => {
    const file = tempSqlitePath();
    // The file, its schema and its WAL files exist (held open here, as by a sibling process), so the
    // server opens and reads it; only its first write, the readiness probe, fails.
    const sibling = new SqliteStore(file);
    try {
      const { code, stderr } = await runMain({ STORE: 'sqlite', SQLITE_PATH: file }, ['prlimit', '--fsize=0:unlimited', '--']);
      expect(code).toBe(1);
      expect(stderr).toContain(`start-up failed: the SQLite store at ${file} cannot be written: disk I/O error`);
    } finally {
      await sibling.close();
    }
  });

  it('start-up fails with the reason when the SQLite path cannot be opened', async () => {
    const notADir = path.join(path.dirname(tempSqlitePath()), 'plain-file');
    fs.writeFileSync(notADir, 'not a directory');
    const file = path.join(notADir, 'sessions.db');
    const { code, stderr } = await runMain({ STORE: 'sqlite', SQLITE_PATH: file });
    expect(code).toBe(1);
    expect(stderr).toContain(`start-up failed: cannot open the SQLite store at ${file}`);
  });

  /** Runs src/server/main.ts (optionally behind a wrapper command) until it exits. */
  async function runMain(env: Record<string, string>, wrapper: string[] = []) {
    const argv = [...wrapper, process.execPath, '--import', 'tsx', 'src/server/main.ts'];
    const child = spawn(argv[0]!, argv.slice(1), {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', PORT: '0', HOST: '127.0.0.1', OPENAI_BASE_URL: llm.baseURL, OPENAI_API_KEY: 'k', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
    child.stdout.resume();
    const [code] = (await once(child, 'exit')) as [number | null];
    return { code, stderr };
  }
});

async function scrapeCounterWith(httpUrl: string, name: string, labels: Record<string, string>): Promise<number> {
  return readMetric(await (await fetch(`${httpUrl}/metrics`)).text(), name, labels);
}
