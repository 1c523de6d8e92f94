// One machine, no call lost on a restart: WORKERS=2 on a SQLite file, and SIGHUP to the primary
// reloads the workers one at a time while calls talk and type. Every call is driven like Twilio
// drives it (a closed socket -> POST /action -> the TwiML's new socket), so a worker that stopped
// without handing its calls on would show up here as a lost call or a lost or doubled turn.
import { mkdirSync, mkdtempSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { ChatMessageIn } from '../src/testing/fake-openai-server.js';
import { contentToText } from '../src/testing/fake-openai-server.js';
import { SqliteStore } from '../src/stores/index.js';
import { tempSqlitePath } from './support/harness.js';
import { useProcessFixture } from './support/process-fixture.js';
import { DIGITS_OK, STORY, expectedResumeLine, persisted, storedDtmfBuffer, transcriptOf, waitForRecord } from './support/resume-scenario.js';
import { ServerProcess, type LogLine } from './support/server-process.js';
import { talk, TwilioCallLoop, type CallReport } from './support/twilio-call-loop.js';

// The resume scenario's fake LLM: "phone" starts a phone-number entry, "story" streams a long
// reply, anything else is echoed.
const fx = useProcessFixture('cluster-reload', false);

const TALKERS = 4;
const KEYPAD_CALLERS = 4;
const TURNS_AFTER_RELOAD = 3;
const KEYPAD_PROMPT = 'Please enter your 10-digit phone number, starting with the area code.';
const RESUME_LINE = expectedResumeLine('en-US');

const range = (n: number) => Array.from({ length: n }, (_, i) => i);
const replyTo = (said: string) => (said.includes('story') ? STORY : `You said: ${said}`);
/** Talkers alternate a long streamed reply (a drain has to wait for it) with short ones. */
const talkerPrompt = (i: number, k: number) => (k % 2 === 0 ? `talker ${i} turn ${k}: tell me a story` : `talker ${i} turn ${k}`);
const phoneNumber = (i: number) => `555010${1000 + i}`;
/** Digits typed before the reload: 2 to 5, the rest after it. */
const typedBefore = (i: number) => 2 + (i % 4);
const phoneResult = (i: number) => `tool:${JSON.stringify({ status: 'ok', kind: 'phoneNumber', value: phoneNumber(i) })}`;

/** Worker pids, from the instance ids (`<pid>-<random>`) in their 'relay-actors listening' lines. */
const workerPids = (lines: LogLine[]) =>
  lines.filter((l) => l.msg === 'relay-actors listening').map((l) => Number(String(l.instanceId).split('-')[0]));

const isAlive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** The chat requests whose newest message is the caller saying `text`: one per turn the LLM saw. */
const requestsFor = (text: string) =>
  fx.llm.requests.filter((r) => {
    const last: ChatMessageIn | undefined = r.messages.at(-1);
    return last?.role === 'user' && contentToText(last.content) === text;
  });

/** What the caller heard, resume lines aside, must be exactly one reply per turn, in order. */
function expectEveryTurnOnce(report: CallReport, expectedReplies: string[]): void {
  expect(report.lost, report.callSid).toBeUndefined();
  expect(report.heard.filter((h) => h !== RESUME_LINE), report.callSid).toEqual(expectedReplies);
  for (const said of report.said) expect(requestsFor(said), `${report.callSid}: ${said}`).toHaveLength(1);
}

function server(sqlitePath: string): ServerProcess {
  return new ServerProcess({
    store: 'sqlite',
    sqlitePath,
    openaiBaseUrl: fx.llm.baseURL,
    workers: 2,
    // Nothing may expire or re-prompt on its own while the test waits on a slow machine.
    graceMs: 120_000,
    dtmfIdleMs: 120_000,
    // Talkers talk until the reload is over, which takes longer on a busy machine: keep every turn.
    env: { DRAIN_TIMEOUT_MS: '60000', HISTORY_MAX_TURNS: '100000', HISTORY_MAX_BYTES: '10000000' },
  });
}

describe('WORKERS=2: SIGHUP reloads the workers without losing a call', () => {
  it('hands every call on mid-conversation and mid-entry; SIGTERM then drains both workers and exits 0', { timeout: 240_000 }, async () => {
    const sqlitePath = tempSqlitePath();
    const store = fx.keep(new SqliteStore(sqlitePath));
    const primary = server(sqlitePath);
    await primary.start();
    await primary.waitForLog((l) => l.msg === 'workers ready');
    // Workers and primary write to one pipe: a worker's own line may come after the primary's.
    await expect.poll(() => new Set(workerPids(primary.logs)).size).toBe(2);
    const oldPids = workerPids(primary.logs);

    const talkers = await Promise.all(range(TALKERS).map(() => TwilioCallLoop.start(primary.httpUrl)));
    const keypadCallers = await Promise.all(range(KEYPAD_CALLERS).map(() => TwilioCallLoop.start(primary.httpUrl)));

    // Keypad callers stop mid-entry: a few digits typed and stored before the reload.
    await Promise.all(
      keypadCallers.map(async (call, i) => {
        const hello = `keypad caller ${i}: hello`;
        expect(await call.say(hello)).toBe(replyTo(hello));
        expect(await call.say(`keypad caller ${i}: my phone number please`)).toBe(KEYPAD_PROMPT);
        const partial = phoneNumber(i).slice(0, typedBefore(i));
        await call.press(partial);
        await waitForRecord(store, call.callSid, (r) => storedDtmfBuffer(r) === partial);
      }),
    );

    // Talkers never stop: turn after turn until the reload is over, then a few more.
    let reloaded = false;
    const firstTurns: Promise<unknown>[] = [];
    const talking = Promise.all(
      talkers.map(async (call, i) => {
        let k = 0;
        const turn = () => call.say(talkerPrompt(i, k++));
        const first = turn();
        firstTurns.push(first);
        await first;
        while (!reloaded) await turn();
        for (let n = 0; n < TURNS_AFTER_RELOAD; n++) await turn();
      }),
    );
    talking.catch(() => undefined); // awaited below; a lost call must not surface as unhandled first
    await Promise.all(firstTurns);

    const reloadFrom = primary.logs.length;
    primary.signal('SIGHUP');
    await primary.waitForLog((l) => l.msg === 'workers reloaded', 120_000, reloadFrom);
    reloaded = true;

    // The entries go on where they stopped, on the new workers.
    await Promise.all(
      keypadCallers.map(async (call, i) => {
        await call.press(phoneNumber(i).slice(typedBefore(i)));
        expect(await call.hear()).toBe(DIGITS_OK);
        await talk(call, TURNS_AFTER_RELOAD, (k) => `keypad caller ${i}: after the entry ${k}`);
      }),
    );
    await talking;

    // Both workers were replaced, and the old processes are gone.
    await expect.poll(() => workerPids(primary.logs.slice(reloadFrom)).length).toBe(2);
    const newPids = workerPids(primary.logs.slice(reloadFrom));
    expect(newPids).toHaveLength(2);
    expect(newPids.filter((pid) => oldPids.includes(pid))).toEqual([]);
    for (const pid of oldPids) expect(isAlive(pid), `old worker ${pid}`).toBe(false);
    const health = await primary.getJson<{ instance: string }>('/healthz');
    expect(newPids).toContain(Number(health.instance.split('-')[0]));

    // No call lost, every call handed on at least once, each turn heard once and seen once by the LLM.
    for (const [i, call] of talkers.entries()) {
      const report = call.report();
      expect(report.sockets, report.callSid).toBeGreaterThanOrEqual(2);
      expect(report.said.length).toBeGreaterThan(TURNS_AFTER_RELOAD);
      expect(report.said).toEqual(range(report.said.length).map((k) => talkerPrompt(i, k)));
      expectEveryTurnOnce(report, report.said.map(replyTo));
      const last = requestsFor(report.said.at(-1)!)[0]!;
      expect(transcriptOf(last.messages)).toEqual(report.said.flatMap((s) => [`user:${s}`, `assistant:${replyTo(s)}`]).slice(0, -1));
    }
    for (const [i, call] of keypadCallers.entries()) {
      const report = call.report();
      expect(report.sockets, report.callSid).toBeGreaterThanOrEqual(2);
      expect(report.keyed).toBe(phoneNumber(i));
      const [hello, phone, ...after] = report.said;
      expectEveryTurnOnce(report, [replyTo(hello!), KEYPAD_PROMPT, DIGITS_OK, ...after.map(replyTo)]);
      const last = requestsFor(report.said.at(-1)!)[0]!;
      expect(transcriptOf(last.messages)).toEqual([
        `user:${hello}`,
        `assistant:${replyTo(hello!)}`,
        `user:${phone}`,
        'assistant: [collect_digits]',
        phoneResult(i),
        `assistant:${DIGITS_OK}`,
        ...after.flatMap((s) => [`user:${s}`, `assistant:${replyTo(s)}`]).slice(0, -1),
      ]);
    }
    const handedOn = primary.logs.slice(reloadFrom).filter((l) => l.msg === 'call handed on for a restart');
    expect(handedOn.length).toBeGreaterThanOrEqual(TALKERS + KEYPAD_CALLERS);

    // SIGTERM stops the whole machine: both workers drain (the one call still up is stored, ready
    // for a restart) and the primary exits 0. With no process left, that call's callback finds nobody.
    const [stays, ...others] = [...talkers, ...keypadCallers];
    await Promise.all(others.map((call) => call.hangup()));
    const stopFrom = primary.logs.length;
    const exit = await primary.kill('SIGTERM');
    expect(exit).toEqual({ code: 0, signal: null });
    const stopLogs = primary.logs.slice(stopFrom);
    expect(stopLogs.find((l) => l.msg === 'shutting down workers')).toMatchObject({ workers: 2 });
    expect(stopLogs.filter((l) => l.msg === 'drained and closed')).toHaveLength(2);
    expect(stopLogs.filter((l) => l.msg === 'call handed on for a restart').map((l) => l.callSid)).toEqual([stays!.callSid]);
    expect(persisted(await store.load(stays!.callSid))).toMatchObject({ status: 'active' });
    await expect(stays!.say('anyone there?')).rejects.toThrow(/lost/);
    expect(stays!.report().lost).toMatch(/reconnect failed/);
  });
});

describe('WORKERS=2: a reload that goes wrong', () => {
  it('keeps the old workers when a new one cannot start, and finishes when an old one dies mid-reload', { timeout: 180_000 }, async () => {
    // The store's directory is reached through a symlink, so a "bad deploy" can break it for new
    // workers only: the running ones have the file open already.
    const base = mkdtempSync(join(tmpdir(), 'relay-cluster-'));
    mkdirSync(join(base, 'real'));
    const link = join(base, 'db');
    symlinkSync(join(base, 'real'), link);
    const primary = server(join(link, 'sessions.db'));
    await primary.start();
    await primary.waitForLog((l) => l.msg === 'workers ready');
    await expect.poll(() => new Set(workerPids(primary.logs)).size).toBe(2);
    const oldPids = workerPids(primary.logs);
    const call = await TwilioCallLoop.start(primary.httpUrl);
    expect(await call.say('before the reloads')).toBe('You said: before the reloads');

    unlinkSync(link);
    writeFileSync(link, 'not a directory');
    let from = primary.logs.length;
    primary.signal('SIGHUP');
    const failed = await primary.waitForLog((l) => l.msg === 'reload failed', 120_000, from);
    expect(JSON.stringify(failed.err)).toMatch(/exited before listening/);
    expect(primary.rawOutput.join('\n')).toMatch(/EEXIST|ENOTDIR/);
    // The broken worker is not started again and again, and the old ones keep the calls.
    expect(primary.logs.slice(from).filter((l) => l.msg === 'worker died; starting a replacement')).toEqual([]);
    for (const pid of oldPids) expect(isAlive(pid), `old worker ${pid}`).toBe(true);
    expect(await call.say('after the failed reload')).toBe('You said: after the failed reload');
    expect(call.report().sockets).toBe(1);

    // Repaired; this time an old worker is killed while the reload is under way.
    unlinkSync(link);
    symlinkSync(join(base, 'real'), link);
    from = primary.logs.length;
    primary.signal('SIGHUP');
    await primary.waitForLog((l) => l.msg === 'reloading workers one at a time', 60_000, from);
    process.kill(oldPids[1]!, 'SIGKILL');
    await primary.waitForLog((l) => l.msg === 'worker died; starting a replacement' && l.pid === oldPids[1], 60_000, from);
    await primary.waitForLog((l) => l.msg === 'workers reloaded', 120_000, from);
    for (const pid of oldPids) expect(isAlive(pid), `old worker ${pid}`).toBe(false);
    // The call was idle on one of them: handed on or restored from its last stored turn.
    expect(await call.say('after the second reload')).toBe('You said: after the second reload');
    const report = call.report();
    expect(report.lost).toBeUndefined();
    expect(report.sockets).toBeGreaterThanOrEqual(2);
    expect(transcriptOf(requestsFor('after the second reload')[0]!.messages)).toEqual([
      'user:before the reloads',
      'assistant:You said: before the reloads',
      'user:after the failed reload',
      'assistant:You said: after the failed reload',
      'user:after the second reload',
    ]);
    expect(await primary.kill('SIGTERM')).toEqual({ code: 0, signal: null });
  });
});
