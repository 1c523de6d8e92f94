// A deploy as an operator runs it: Debian's nginx (round robin, no sticky sessions) in front of three
// instances sharing Redis; 60 calls keep talking and typing phone numbers while every instance is
// restarted in turn with SIGTERM. Twilio is simulated exactly: a socket closed without `end` posts
// the action callback through the balancer and follows the returned TwiML to a new socket.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisStore } from '../src/stores/index.js';
import { Nginx, nginxInstalled } from './support/nginx.js';
import { useProcessFixture } from './support/process-fixture.js';
import { REDIS_URL, redisAvailable } from './support/redis.js';
import { DIGITS_OK, lastUserText, storedDtmfBuffer, transcriptOf } from './support/resume-scenario.js';
import { ServerProcess } from './support/server-process.js';
import { TwilioCallLoop } from './support/twilio-call-loop.js';

const redisUp = await redisAvailable();
const hasNginx = nginxInstalled();
if (!hasNginx && process.env.CI) throw new Error('nginx is required in CI (.ci/run installs it)');
const fx = useProcessFixture('deploy-nginx', redisUp);

const CALLS = Number(process.env.DEPLOY_TEST_CALLS ?? 60);
const FIRST_KEYS = '5551';
const LAST_KEYS = '234567';

/**
 * Key presses have no acknowledgement in the protocol: a key sent at the instant its socket is handed
 * on is lost, on a real call too. So keys are pressed only while no instance is stopping, and a stop
 * waits for presses in flight to be stored. Speech needs no such care: every prompt gets a reply.
 */
class KeyWindow {
  private pressing = 0;
  private stopping: Promise<void> | undefined;
  private idle: (() => void) | undefined;

  async press<T>(work: () => Promise<T>): Promise<T> {
    while (this.stopping) await this.stopping;
    this.pressing++;
    try {
      return await work();
    } finally {
      if (--this.pressing === 0) this.idle?.();
    }
  }

  async whileClosed(work: () => Promise<void>): Promise<void> {
    let open!: () => void;
    this.stopping = new Promise((resolve) => (open = resolve));
    if (this.pressing > 0) await new Promise<void>((resolve) => (this.idle = resolve));
    this.idle = undefined;
    try {
      await work();
    } finally {
      this.stopping = undefined;
      open();
    }
  }
}

describe.skipIf(!redisUp || !hasNginx)('a rolling restart behind nginx', () => {
  let instances: ServerProcess[] = [];
  let nginx: Nginx | undefined;
  let store: RedisStore;

  beforeAll(async () => {
    instances = [0, 1, 2].map(
      (i) =>
        new ServerProcess({
          store: 'redis',
          openaiBaseUrl: fx.llm.baseURL,
          redisUrl: REDIS_URL,
          redisPrefix: fx.prefix,
          graceMs: 300_000,
          dtmfIdleMs: 300_000,
          instanceId: `nginx-${i}`,
          // Every turn of a call stays in its history, so the test can check each one was kept once.
          env: { DRAIN_TIMEOUT_MS: '30000', HISTORY_MAX_TURNS: '100000', HISTORY_MAX_BYTES: '10000000', STORE_TIMEOUT_MS: '10000' },
        }),
    );
    await Promise.all(instances.map((s) => s.start()));
    nginx = new Nginx(instances.map((s) => `127.0.0.1:${s.port}`));
    await nginx.start();
    store = fx.keep(new RedisStore(REDIS_URL, { prefix: fx.prefix }));
  });
  afterAll(async () => {
    await Promise.all(instances.map((s) => s.stop()));
    await nginx?.stop();
  });

  it('keeps every call, every turn and every keypad entry', async () => {
    const keys = new KeyWindow();
    let restartsDone = false;
    let startRestarts!: () => void;
    const begin = new Promise<void>((resolve) => (startRestarts = resolve));

    let finishRestarts!: () => void;
    const restartsFinished = new Promise<void>((resolve) => (finishRestarts = resolve));

    // Even calls keep talking through the restarts; odd calls leave a keypad entry half typed across
    // them (speaking would cancel the entry) and finish it afterwards.
    const runCall = async (i: number) => {
      const call = await TwilioCallLoop.start(nginx!.url);
      try {
        const say = async (text: string) => expect(await call.say(text)).toBe(`You said: ${text}`);
        await say(`call ${i} says hello`);
        if (i % 2 === 0) {
          ready();
          for (let turn = 0; !restartsDone || turn < 3; turn++) await say(`call ${i} turn ${turn}`);
        } else {
          expect(await call.say('my phone number')).toMatch(/10-digit/);
          await keys.press(async () => {
            await call.press(FIRST_KEYS);
            await expect.poll(async () => storedDtmfBuffer(await store.load(call.callSid)), { timeout: 20_000 }).toBe(FIRST_KEYS);
          });
          ready();
          await restartsFinished;
          await keys.press(async () => {
            await call.press(LAST_KEYS);
            expect(await call.hear()).toBe(DIGITS_OK);
          });
        }
        await say(`call ${i} final`);
      } catch (err) {
        const logs = instances.flatMap((s) => s.logs.filter((l) => l.callSid === call.callSid).map((l) => `${s.opts.instanceId} ${JSON.stringify(l)}`));
        throw new Error(`${String(err)}\n${JSON.stringify(call.report())}\n${logs.join('\n')}\nnginx: ${nginx!.errorLog().slice(-3000)}`);
      }
      return call;
    };
    let waiting = CALLS;
    const ready = () => --waiting === 0 && startRestarts();

    const calls = Promise.all(Array.from({ length: CALLS }, (_, i) => runCall(i)));
    // A call that fails before every call is ready fails the test now, not at its timeout.
    await Promise.race([begin, calls]);
    for (const instance of instances) {
      await keys.whileClosed(async () => {
        // The instance answers with its own pid: the one that comes back is a new process.
        const before = instance.pid;
        expect((await instance.kill('SIGTERM')).code).toBe(0);
        await instance.start(instance.port);
        expect(instance.pid).not.toBe(before);
      });
    }
    restartsDone = true;
    finishRestarts();
    const done = await calls;

    const handedOn = instances.reduce((n, s) => n + s.logs.filter((l) => l.msg === 'call handed on for a restart').length, 0);
    expect(handedOn).toBeGreaterThanOrEqual(CALLS / 2);
    let moved = 0;
    for (const call of done) {
      const report = call.report();
      expect(report.lost, report.callSid).toBeUndefined();
      if (report.sockets > 1) moved++;
      // What the model saw last: every user turn once, in order, each answered once, and the full number.
      const final = [...fx.llm.requests].reverse().find((r) => lastUserText(r.messages) === report.said.at(-1));
      expect(final, report.callSid).toBeDefined();
      const lines = transcriptOf(final!.messages);
      const userTurns = lines.filter((l) => l.startsWith('user:')).map((l) => l.slice('user:'.length));
      if (JSON.stringify(userTurns) !== JSON.stringify(report.said)) {
        // Everything known about this call, to find out how a turn came to be said twice or lost.
        const logs = instances.flatMap((s) => s.logs.filter((l) => l.callSid === report.callSid).map((l) => `${s.opts.instanceId} ${JSON.stringify(l)}`));
        expect.fail(`user turns ${JSON.stringify(userTurns)}\nreport ${JSON.stringify(report)}\n${logs.join('\n')}`);
      }
      const echoed = report.said.filter((s) => s !== 'my phone number');
      for (const said of echoed.slice(0, -1)) expect(lines.filter((l) => l === `assistant:You said: ${said}`), said).toHaveLength(1);
      if (report.keyed) {
        expect(report.keyed).toBe(FIRST_KEYS + LAST_KEYS);
        expect(lines.filter((l) => l === `tool:{"status":"ok","kind":"phoneNumber","value":"${FIRST_KEYS}${LAST_KEYS}"}`)).toHaveLength(1);
      }
      // The caller heard each reply once (resume lines aside).
      for (const said of echoed) expect(report.heard.filter((h) => h === `You said: ${said}`), said).toHaveLength(1);
    }
    // Every call lived on an instance that restarted, so every call moved at least once.
    expect(moved).toBe(CALLS);
  }, 240_000);
});
