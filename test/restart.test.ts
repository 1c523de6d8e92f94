// kill -9 of the server process mid-call, then a new process on the same store: the calls resume
// by both paths with nothing lost, and grace deadlines keep their original (absolute) time. These
// processes run on real time, so the tests wait for events (log lines, stored records, frames) and
// compare times the server itself wrote, never the test's own clock against a margin.
import { describe, expect, it } from 'vitest';
import { SimulatedCall } from '../src/testing/twilio-sim.js';
import { RedisStore, SqliteStore, type SnapshotStore } from '../src/stores/index.js';
import { tempSqlitePath } from './support/harness.js';
import { REDIS_URL, redisAvailable } from './support/redis.js';
import { ServerProcess, type LogLine } from './support/server-process.js';
import { useProcessFixture } from './support/process-fixture.js';
import {
  DIGITS_OK,
  SPANISH_OK,
  STORY,
  expectedResumeLine,
  lastUserText,
  nextSpokenReply,
  persisted,
  postDroppedAction,
  resume,
  say,
  gate,
  storedDtmfBuffer,
  transcriptOf,
  waitForDeltas,
  waitForRecord,
  waitForRequest,
  type ResumePath,
} from './support/resume-scenario.js';

const redisUp = await redisAvailable();
const fx = useProcessFixture('restart', redisUp);
const { prefix, track } = fx;

const backends = [
  { store: 'sqlite' as const, available: true },
  { store: 'redis' as const, available: redisUp },
];

/** A call that started a keypad entry (after switching to Spanish) and typed 4 of 10 digits. */
async function callInKeypadEntry(server: ServerProcess, store: SnapshotStore): Promise<SimulatedCall> {
  const call = track(await SimulatedCall.connect({ url: server.relayUrl }));
  expect(await say(call, 'hello there')).toBe('You said: hello there');
  expect(await say(call, 'speak spanish')).toBe(SPANISH_OK);
  call.prompt('my phone number');
  expect((await nextSpokenReply(call)).text).toMatch(/10 dígitos/);
  call.digits('5551');
  await waitForRecord(store, call.callSid, (r) => storedDtmfBuffer(r) === '5551');
  return call;
}

/** A call whose reply is streaming right now. */
async function callMidStream(server: ServerProcess): Promise<SimulatedCall> {
  const call = track(await SimulatedCall.connect({ url: server.relayUrl }));
  expect(await say(call, 'hello there')).toBe('You said: hello there');
  call.prompt('tell me a story');
  await waitForDeltas(call, 3);
  return call;
}

describe.each(backends)('kill -9 with the $store store', ({ store: kind, available }) => {
  it.skipIf(!available)('resumes on a restarted process by both paths with nothing lost', async () => {
    const sqlitePath = tempSqlitePath();
    const server = new ServerProcess({
      store: kind,
      openaiBaseUrl: fx.llm.baseURL,
      sqlitePath,
      redisUrl: REDIS_URL,
      redisPrefix: prefix,
      graceMs: 60_000,
      dtmfIdleMs: 60_000,
    });
    const store = kind === 'sqlite' ? new SqliteStore(sqlitePath) : new RedisStore(REDIS_URL, { prefix });
    fx.keep(store);
    await server.start();

    const keypad = { twilio: await callInKeypadEntry(server, store), reconnection: await callInKeypadEntry(server, store) };
    // The stories stop after three chunks until the process is dead: still in flight at the kill.
    const kill = gate();
    fx.holdStories(3, kill.opened);
    const streaming = { twilio: await callMidStream(server), reconnection: await callMidStream(server) };
    const streamRequests = fx.llm.requests.length;

    expect((await server.kill('SIGKILL')).signal).toBe('SIGKILL');
    kill.open();
    for (const call of [...Object.values(keypad), ...Object.values(streaming)]) expect((await call.closed).code).toBe(1006);
    await server.start();

    const paths: ResumePath[] = ['twilio', 'reconnection'];
    await Promise.all(
      paths.map(async (path) => {
        const call = track(await resume(path, server, keypad[path]));
        expect(call.callSid).toBe(keypad[path].callSid);
        expect(await call.waitForType('language')).toMatchObject({ ttsLanguage: 'es-US', transcriptionLanguage: 'es-US' });
        expect((await call.nextReply()).text).toBe(expectedResumeLine('es-US'));
        call.digits('234567');
        expect((await nextSpokenReply(call)).text).toBe(DIGITS_OK);
        const record = await waitForRecord(store, call.callSid, (r) => persisted(r).context?.history?.length === 10);
        const history = persisted(record).context?.history as Array<{ role: string; content: string }>;
        expect(history.map((t) => `${t.role}:${t.content}`)).toEqual([
          'user:hello there',
          'assistant:You said: hello there',
          'user:speak spanish',
          'assistant:',
          'tool:language switched to es-US',
          `assistant:${SPANISH_OK}`,
          'user:my phone number',
          'assistant:',
          'tool:{"status":"ok","kind":"phoneNumber","value":"5551234567"}',
          `assistant:${DIGITS_OK}`,
        ]);
        expect(persisted(record).context?.language).toBe('es-US');
      }),
    );

    // Each keypad call's next LLM request carried the full number as the tool result.
    const digitResults = fx.llm.requests.slice(streamRequests).filter((r) => String(r.messages.at(-1)?.content).includes('"value":"5551234567"'));
    expect(digitResults).toHaveLength(2);

    await Promise.all(
      paths.map(async (path) => {
        const call = track(await resume(path, server, streaming[path]));
        const reply = await call.nextReply(15_000);
        const line = expectedResumeLine('en-US');
        expect(reply.text.startsWith(line)).toBe(true);
        expect(reply.text.slice(line.length).trimStart()).toBe(STORY);
        expect(reply.tokens.at(-1)).toMatchObject({ token: '', last: true });
        const n = fx.llm.requests.length;
        expect(await say(call, `thanks ${path}`)).toBe(`You said: thanks ${path}`);
        const request = await waitForRequest(fx.llm, (m) => lastUserText(m) === `thanks ${path}`, 5000, n);
        expect(transcriptOf(request.messages)).toEqual([
          'user:hello there',
          'assistant:You said: hello there',
          'user:tell me a story',
          `assistant:${STORY}`,
          `user:thanks ${path}`,
        ]);
      }),
    );
    // The dead process's runs were regenerated on the new one: one more story request per streaming call.
    const storyRuns = fx.llm.requests.slice(streamRequests).filter((r) => lastUserText(r.messages) === 'tell me a story');
    expect(storyRuns).toHaveLength(2);
    await server.stop();
  }, 45_000);
});

describe('grace deadlines across a restart', () => {
  it('expires sessions left in grace at their original deadline, not graceMs after the restart', async () => {
    // Usually long enough for the restart and the action callback below to come before the deadline.
    const graceMs = 10_000;
    const sqlitePath = tempSqlitePath();
    const server = new ServerProcess({ store: 'sqlite', openaiBaseUrl: fx.llm.baseURL, sqlitePath, graceMs });
    const store = new SqliteStore(sqlitePath);
    fx.keep(store);
    await server.start();

    // Two calls drop and are told to reconnect; neither comes back before the restart.
    const dropped: SimulatedCall[] = [];
    for (let i = 0; i < 2; i++) {
      const call = track(await SimulatedCall.connect({ url: server.relayUrl }));
      expect(await say(call, `hello ${i}`)).toBe(`You said: hello ${i}`);
      await call.drop();
      expect((await postDroppedAction(server.httpUrl, call)).body).toContain('<ConversationRelay');
      dropped.push(call);
    }
    const deadlines = await Promise.all(
      dropped.map(async (call) => {
        const record = await waitForRecord(store, call.callSid, (r) => r?.state === 'grace');
        return persisted(record).context!.graceDeadline!;
      }),
    );

    await server.kill('SIGKILL');
    await server.start();

    // Twilio retries the action callback for the second call: the new process restores it, timer
    // included. On a machine slow enough that the restart outlasted the grace period, the call is
    // over by then instead, and the answer must say so: either way it expires at its deadline.
    const retried = await postDroppedAction(server.httpUrl, dropped[1]!);
    const restoredInTime = retried.body.includes('<ConversationRelay');
    if (!restoredInTime) {
      expect(retried.body).toContain('<Hangup/>');
      expect(Date.now()).toBeGreaterThanOrEqual(deadlines[1]!);
    }

    // The first is expired by the new process watching the deadline it found in the store; the second
    // by its own restored timer. Each at (never before) its original deadline, which it still holds.
    const ranOut = (callSid: string) => (l: LogLine) => l.callSid === callSid && l.msg === 'grace ran out while no instance owned the session';
    const finished = (callSid: string) => (l: LogLine) => l.callSid === callSid && l.msg === 'session finished' && l.state === 'expired';
    const waitMs = graceMs + 10_000;
    await server.waitForLog(ranOut(dropped[0]!.callSid), waitMs);
    for (const [i, call] of dropped.entries()) {
      const line = await server.waitForLog(finished(call.callSid), waitMs);
      expect(line.time).toBeGreaterThanOrEqual(deadlines[i]!);
      const record = await waitForRecord(store, call.callSid, (r) => r?.state === 'expired');
      expect(persisted(record).context?.graceDeadline).toBe(deadlines[i]);
    }
    // Restored in time, it ran out on its own restored timer, not as an orphan.
    if (restoredInTime) expect(server.logs.some(ranOut(dropped[1]!.callSid))).toBe(false);

    // A reconnect after expiry starts a fresh session.
    const late = track(await SimulatedCall.connect({ url: server.relayUrl, callSid: dropped[0]!.callSid, sessionId: dropped[0]!.sessionId, reconnection: true }));
    const n = fx.llm.requests.length;
    expect(await say(late, 'anyone?')).toBe('You said: anyone?');
    expect(transcriptOf((await waitForRequest(fx.llm, (m) => lastUserText(m) === 'anyone?', 5000, n)).messages)).toEqual(['user:anyone?']);
    expect(await server.metric('relay_resumes_total', { outcome: 'failed' })).toBe(1);
    await server.waitForLog((l) => l.callSid === late.callSid && /unknown or expired session: starting a fresh session/.test(l.msg));
    await server.stop();
  }, 60_000);
});
