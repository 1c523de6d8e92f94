// Snapshots encrypted at rest: the keyring, the store wrapper (round trip, rotation, tampering,
// wrong callSid), the start-up wiring, and end to end over the real server: after a call with a
// transcript and a keypad entry, neither shows up in the SQLite file (and its WAL) or in Redis,
// while a restarted server still resumes the call with its history.
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import { Writable } from 'node:stream';
import Database from 'better-sqlite3';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { SimulatedCall } from '../src/testing/twilio-sim.js';
import { loadConfig } from '../src/config.js';
import { startFakeOpenAI, type FakeOpenAI } from '../src/testing/fake-openai-server.js';
import { createLogger } from '../src/server/logger.js';
import { startServer, type RunningServer } from '../src/server/server.js';
import { plaintextSnapshotWarning } from '../src/server/snapshot-encryption.js';
import { isSealed, openSnapshot, sealSnapshot, UnreadableSnapshotError, withEncryption, type SealedSnapshot } from '../src/stores/encrypted-store.js';
import { DEFAULT_KID, KeyringError, parseKeyring, type Keyring } from '../src/stores/keyring.js';
import { MemoryStore, type Lease, type SnapshotStore } from '../src/stores/index.js';
import { connectCall, waitUntil } from './support/conditions.js';
import { startTestServer, tempSqlitePath, type TestServer } from './support/harness.js';
import { hashSecret } from '../src/server/resume-proof.js';
import { REDIS_URL, redisAvailable } from './support/redis.js';
import {
  DIGITS_OK,
  clearRedisPrefix,
  expectedResumeLine,
  lastUserText,
  nextSpokenReply,
  resumeViaReconnection,
  say,
  scenarioScript,
  transcriptOf,
  waitForRequest,
} from './support/resume-scenario.js';

const redisUp = await redisAvailable();

const newKey = () => randomBytes(32).toString('base64');
const newSid = () => `CA${randomUUID().replaceAll('-', '')}`;
const keyring = (spec: string): Keyring => parseKeyring({ keys: spec })!;

const snapshot = {
  status: 'active',
  value: { link: 'connected' },
  context: { history: [{ role: 'user', content: 'my PIN is 4321' }], from: '+15550100001' },
};
const input = { snapshot, state: 'connected', retainUntil: Date.now() + 60_000 };

describe('keyring', () => {
  it('SNAPSHOT_KEY is one key with the id "default"; SNAPSHOT_KEYS encrypts with its first key', () => {
    const key = newKey();
    const single = parseKeyring({ key })!;
    expect(single.current.kid).toBe(DEFAULT_KID);
    expect(single.current.key).toEqual(Buffer.from(key, 'base64'));

    const [k1, k2] = [newKey(), newKey()];
    const rotated = parseKeyring({ keys: ` new:${k1} , old:${k2}` })!;
    expect(rotated.current).toEqual({ kid: 'new', key: Buffer.from(k1, 'base64') });
    expect([...rotated.keys.keys()]).toEqual(['new', 'old']);
    expect(rotated.keys.get('old')).toEqual(Buffer.from(k2, 'base64'));

    expect(parseKeyring({})).toBeUndefined();
  });

  it.each([
    ['a 16-byte key', { key: randomBytes(16).toString('base64') }, /16 bytes, not 32/],
    ['bad base64', { key: `${newKey().slice(0, 40)}!!!=` }, /not valid base64/],
    ['base64 without its padding', { key: newKey().replace(/=+$/, '') }, /not valid base64/],
    ['an empty key', { key: '' }, /is empty/],
    ['both variables', { key: newKey(), keys: `a:${newKey()}` }, /not both/],
    ['a duplicate key id', { keys: `a:${newKey()},b:${newKey()},a:${newKey()}` }, /"a" twice/],
    ['an entry without a key id', { keys: newKey() }, /not "kid:base64key"/],
    ['a key id with a space', { keys: `my key:${newKey()}` }, /key id "my key"/],
    ['a short key in a rotation', { keys: `a:${newKey()},b:${randomBytes(24).toString('base64')}` }, /key "b" is 24 bytes/],
    ['an empty list', { keys: '' }, /not "kid:base64key"/],
  ])('%s is a clear error', (_, source, message) => {
    expect(() => parseKeyring(source)).toThrow(KeyringError);
    expect(() => parseKeyring(source)).toThrow(message);
  });

  it('bad keys in the environment stop loadConfig with the reason and without echoing the key', () => {
    const short = randomBytes(31).toString('base64');
    const problem = (env: NodeJS.ProcessEnv) => {
      try {
        loadConfig(env);
      } catch (err) {
        return (err as Error).message;
      }
      throw new Error('loadConfig accepted a bad key');
    };
    const single = problem({ SNAPSHOT_KEY: short });
    expect(single).toMatch(/SNAPSHOT_KEY is 31 bytes, not 32/);
    expect(single).toMatch(/at snapshotKey/);
    const rotation = problem({ SNAPSHOT_KEYS: `k1:${newKey()},k1:${short}` });
    expect(rotation).toContain('SNAPSHOT_KEYS names key id "k1" twice');
    expect(rotation).toMatch(/at snapshotKeys/);
    expect(problem({ SNAPSHOT_KEYS: `k1:${short}` })).not.toContain(short);

    const key = newKey();
    expect(loadConfig({ SNAPSHOT_KEY: key }).snapshotKey).toBe(key);
    expect(loadConfig({}).snapshotKey).toBeUndefined();
  });
});

describe('encrypted store over a real store', () => {
  const lease = (callSid: string, epoch = 1): Lease => ({ callSid, owner: 'test', epoch });

  async function setup(ring: Keyring) {
    const inner = new MemoryStore();
    const unreadable: UnreadableSnapshotError[] = [];
    const store = withEncryption(inner, ring, { onUnreadable: (err) => unreadable.push(err) });
    return { inner, store, unreadable };
  }

  it('round trip: the inner store holds only the sealed value; load and list give the snapshot back', async () => {
    const { inner, store } = await setup(keyring(`k1:${newKey()}`));
    const sid = newSid();
    const l = await store.acquire(sid, 'test');
    await store.save(l, input);
    await store.save(l, input);

    const raw = await inner.load(sid);
    expect(isSealed(raw?.snapshot)).toBe(true);
    expect((raw?.snapshot as SealedSnapshot).kid).toBe('k1');
    expect(JSON.stringify(raw)).not.toContain('4321');
    expect(raw).toMatchObject({ state: 'connected', epoch: 1, retainUntil: input.retainUntil });

    expect((await store.load(sid))?.snapshot).toEqual(snapshot);
    expect((await store.list()).map((r) => r.snapshot)).toEqual([snapshot]);
    expect(await store.currentEpoch(sid)).toBe(1);
    expect(store.kind).toBe('memory');
  });

  it('a fresh nonce per write: the same snapshot never encrypts to the same bytes', () => {
    const ring = keyring(`k1:${newKey()}`);
    const a = sealSnapshot(ring, 'CA1', snapshot);
    const b = sealSnapshot(ring, 'CA1', snapshot);
    expect(a.iv).not.toBe(b.iv);
    expect(a.data).not.toBe(b.data);
    expect(Buffer.from(a.iv, 'base64')).toHaveLength(12);
    expect(Buffer.from(a.tag, 'base64')).toHaveLength(16);
  });

  it('rotation: a record written with the old key reads once the new key is first; new writes use the new key', async () => {
    const [oldKey, newerKey] = [newKey(), newKey()];
    const inner = new MemoryStore();
    const sid = newSid();
    const before = withEncryption(inner, keyring(`old:${oldKey}`));
    const l = await before.acquire(sid, 'test');
    await before.save(l, input);

    const after = withEncryption(inner, keyring(`new:${newerKey},old:${oldKey}`));
    expect((await after.load(sid))?.snapshot).toEqual(snapshot);
    expect((await after.list()).map((r) => r.callSid)).toEqual([sid]);
    await after.save(l, { ...input, state: 'grace' });
    expect(((await inner.load(sid))?.snapshot as SealedSnapshot).kid).toBe('new');
    // Once rewritten, the old key can go.
    const newOnly = withEncryption(inner, keyring(`new:${newerKey}`));
    expect((await newOnly.load(sid))?.state).toBe('grace');
  });

  it('an unknown key id reads as missing, is reported, and list skips it', async () => {
    const inner = new MemoryStore();
    const [sid, other] = [newSid(), newSid()];
    const writer = withEncryption(inner, keyring(`gone:${newKey()}`));
    await writer.save(await writer.acquire(sid, 'test'), input);
    const { store, unreadable } = await setupOver(inner, keyring(`k1:${newKey()}`));
    await store.save(await store.acquire(other, 'test'), input);

    expect(await store.load(sid)).toBeUndefined();
    expect((await store.list()).map((r) => r.callSid)).toEqual([other]);
    expect(unreadable.map((e) => [e.callSid, e.message])).toEqual([
      [sid, `stored snapshot of ${sid} is unreadable: written with key id "gone", which is not configured`],
      [sid, expect.stringContaining('"gone"')],
    ]);
  });

  it('tampering with the ciphertext, tag, nonce or key id is detected', async () => {
    const ring = keyring(`k1:${newKey()},k2:${newKey()}`);
    const { inner, store, unreadable } = await setup(ring);
    const flip = (b64: string) => {
      const bytes = Buffer.from(b64, 'base64');
      bytes[0]! ^= 1;
      return bytes.toString('base64');
    };
    const variants: Array<[string, (s: SealedSnapshot) => unknown]> = [
      ['data', (s) => ({ ...s, data: flip(s.data) })],
      ['tag', (s) => ({ ...s, tag: flip(s.tag) })],
      ['iv', (s) => ({ ...s, iv: flip(s.iv) })],
      ['kid', (s) => ({ ...s, kid: 'k2' })],
      ['short tag', (s) => ({ ...s, tag: Buffer.from(s.tag, 'base64').subarray(0, 4).toString('base64') })],
      ['missing data', ({ data: _data, ...s }) => s],
    ];
    for (const [what, tamper] of variants) {
      const sid = newSid();
      await inner.save(lease(sid), { ...input, snapshot: tamper(sealSnapshot(ring, sid, snapshot)) });
      expect(await store.load(sid), what).toBeUndefined();
      expect(unreadable.at(-1)?.callSid, what).toBe(sid);
    }
    expect(unreadable).toHaveLength(variants.length);
    expect(unreadable[0]!.message).toMatch(/authentication failed/);
    expect(await store.list()).toEqual([]);
  });

  it("a sealed snapshot moved under another call's callSid fails authentication (the callSid is the associated data)", async () => {
    const ring = keyring(`k1:${newKey()}`);
    const { inner, store, unreadable } = await setup(ring);
    const [a, b] = [newSid(), newSid()];
    await store.save(await store.acquire(a, 'test'), input);
    const copied = (await inner.load(a))!;
    await inner.save(lease(b), { ...input, snapshot: copied.snapshot });

    expect((await store.load(a))?.snapshot).toEqual(snapshot);
    expect(await store.load(b)).toBeUndefined();
    expect(unreadable.map((e) => e.callSid)).toEqual([b]);
    expect(() => openSnapshot(ring, b, copied.snapshot)).toThrow(/authentication failed/);
  });

  it('plaintext written before a key was configured is read (migration) and encrypted on its next save', async () => {
    const { inner, store, unreadable } = await setup(keyring(`k1:${newKey()}`));
    const sid = newSid();
    await inner.save(lease(sid), input);
    expect((await store.load(sid))?.snapshot).toEqual(snapshot);
    await store.save(lease(sid), input);
    expect(isSealed((await inner.load(sid))?.snapshot)).toBe(true);
    expect(unreadable).toEqual([]);
  });

  async function setupOver(inner: SnapshotStore, ring: Keyring) {
    const unreadable: UnreadableSnapshotError[] = [];
    return { store: withEncryption(inner, ring, { onUnreadable: (err) => unreadable.push(err) }), unreadable };
  }
});

describe('start-up wiring', () => {
  it('warns when a public server would store snapshots in plaintext', () => {
    const base = { publicHost: 'relay.example.com', store: 'sqlite' as const, snapshotKey: undefined, snapshotKeys: undefined };
    expect(plaintextSnapshotWarning(base)).toMatch(/SNAPSHOT_KEY is not.*unencrypted in sqlite/);
    expect(plaintextSnapshotWarning({ ...base, store: 'redis' })).toMatch(/unencrypted in redis/);
    expect(plaintextSnapshotWarning({ ...base, snapshotKey: newKey() })).toBeUndefined();
    expect(plaintextSnapshotWarning({ ...base, snapshotKeys: `a:${newKey()}` })).toBeUndefined();
    expect(plaintextSnapshotWarning({ ...base, publicHost: undefined })).toBeUndefined();
    expect(plaintextSnapshotWarning({ ...base, store: 'memory' })).toBeUndefined();
  });

  describe('a server with a key', () => {
    let llm: FakeOpenAI;
    let server: RunningServer | undefined;
    const calls: SimulatedCall[] = [];
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer | string, _encoding, done) {
        lines.push(chunk.toString());
        done();
      },
    });
    const logged = () => lines.flatMap((l) => l.split('\n')).filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as Record<string, unknown>);

    beforeAll(async () => {
      llm = await startFakeOpenAI({ script: scenarioScript() });
    });
    afterAll(async () => {
      await Promise.all(calls.map((c) => c.drop()));
      await server?.close();
      await llm.close();
    });

    it('a bad key passed past loadConfig still stops startServer with the keyring error', async () => {
      const config = loadConfig({}, { port: 0, host: '127.0.0.1', store: 'memory', snapshotKey: 'c2hvcnQ=' });
      await expect(startServer(config, { logger: createLogger('silent') })).rejects.toThrow(/SNAPSHOT_KEY is 5 bytes/);
    });

    it('logs the plaintext warning at start-up when PUBLIC_HOST is set without a key', async () => {
      const config = loadConfig({}, { port: 0, host: '127.0.0.1', store: 'sqlite', sqlitePath: tempSqlitePath(), publicHost: 'relay.example.com', validateSignatures: 'false', openaiBaseUrl: llm.baseURL });
      const warned = await startServer(config, { logger: createLogger('info', sink) });
      await warned.close();
      expect(logged().find((e) => e.level === 40 && String(e.msg).includes('SNAPSHOT_KEY is not'))).toBeDefined();
    });

    it('a stored session it cannot decrypt is logged and treated as unknown: the caller gets a fresh session', async () => {
      const inner = new MemoryStore();
      const sid = newSid();
      const stranger = withEncryption(inner, keyring(`elsewhere:${newKey()}`));
      await stranger.save(await stranger.acquire(sid, 'other'), { snapshot, state: 'disconnected', retainUntil: Date.now() + 60_000 });

      const config = loadConfig({}, { port: 0, host: '127.0.0.1', store: 'memory', snapshotKey: newKey(), openaiApiKey: 'test-key', openaiBaseUrl: llm.baseURL });
      server = await startServer(config, { store: inner, logger: createLogger('info', sink), redisPrefix: `test:${randomUUID()}:` });
      const live = server;
      // Its start-up listing skipped the record, with a log line naming the call.
      const unreadable = () => logged().filter((e) => e.callSid === sid && e.msg === 'stored snapshot could not be decrypted; treating the session as unknown');
      expect(unreadable()).toHaveLength(1);

      const call = await SimulatedCall.connect({ url: live.relayUrl, callSid: sid, sessionId: 'VX-old', reconnection: true });
      calls.push(call);
      expect(await say(call, 'hello again')).toBe('You said: hello again');
      expect(unreadable().length).toBeGreaterThanOrEqual(2);
      expect(logged().some((e) => e.callSid === sid && e.msg === 'session started')).toBe(true);
      // The fresh session overwrote the unreadable record with one sealed under this server's key.
      await live.manager.flush();
      expect((((await inner.load(sid))?.snapshot) as SealedSnapshot).kid).toBe(DEFAULT_KID);
      expect((await live.store.load(sid))?.snapshot).toMatchObject({ context: { sessionKeyHash: hashSecret(call.sessionId) } });
    });
  });
});

// ------------------------------------------------------------------ end to end, raw bytes at rest

const WORD = `quetzal${randomBytes(4).toString('hex')}`;
const DIGITS = '8675309421';
const CALLER = '+15550100001';

interface Backend {
  store: 'sqlite' | 'redis';
  available: boolean;
}

const backends: Backend[] = [
  { store: 'sqlite', available: true },
  { store: 'redis', available: redisUp },
];

describe.each(backends)('at rest in $store', ({ store: kind, available }) => {
  const key = newKey();
  const ring = parseKeyring({ key })!;
  const prefix = `test:snapcrypt:${randomUUID()}:`;
  const sqlitePath = tempSqlitePath();
  let llm: FakeOpenAI;
  const servers: TestServer[] = [];
  const calls: SimulatedCall[] = [];

  beforeAll(async () => {
    llm = await startFakeOpenAI({ script: scenarioScript() });
  });
  afterEach(async () => {
    await Promise.all(calls.splice(0).map((c) => c.drop()));
    await Promise.all(servers.splice(0).map((s) => s.close()));
  });
  afterAll(async () => {
    await llm.close();
    if (kind === 'redis' && redisUp) await clearRedisPrefix(REDIS_URL, prefix);
  });

  const start = async () => {
    const ts = await startTestServer({
      sharedLlm: llm,
      redisPrefix: prefix,
      config: { store: kind, sqlitePath, snapshotKey: key, graceMs: 60_000, dtmfIdleMs: 60_000 },
    });
    servers.push(ts);
    return ts;
  };

  /** Every stored byte: the SQLite file and its WAL, or every value under the test's Redis prefix. */
  async function rawBytes(): Promise<{ bytes: Buffer; walBytes?: number }> {
    if (kind === 'sqlite') {
      const db = fs.readFileSync(sqlitePath);
      const wal = fs.readFileSync(`${sqlitePath}-wal`);
      return { bytes: Buffer.concat([db, wal]), walBytes: wal.length };
    }
    const redis = new Redis(REDIS_URL);
    try {
      const values: Buffer[] = [];
      let cursor = '0';
      do {
        const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500);
        cursor = next;
        for (const k of keys) values.push(Buffer.from(k), (await redis.getBuffer(k)) ?? Buffer.alloc(0));
      } while (cursor !== '0');
      return { bytes: Buffer.concat(values) };
    } finally {
      await redis.quit();
    }
  }

  /** The stored snapshot column/field of the call, read past the server, still sealed. */
  async function storedSealed(callSid: string): Promise<unknown> {
    if (kind === 'sqlite') {
      const db = new Database(sqlitePath, { readonly: true });
      try {
        const row = db.prepare<[string], { snapshot: string }>('SELECT snapshot FROM records WHERE call_sid = ?').get(callSid);
        return row && (JSON.parse(row.snapshot) as unknown);
      } finally {
        db.close();
      }
    }
    const redis = new Redis(REDIS_URL);
    try {
      const raw = await redis.get(`${prefix}{${callSid}}:rec`);
      return raw && (JSON.parse(raw) as { snapshot: unknown }).snapshot;
    } finally {
      await redis.quit();
    }
  }

  it.skipIf(!available)('no transcript word, keypad digits or caller number in plaintext; a restarted server resumes the call with its history', async () => {
    const ts = await start();
    const call = await connectCall(ts);
    calls.push(call);
    expect(await say(call, `my secret word is ${WORD}`)).toBe(`You said: my secret word is ${WORD}`);
    call.prompt('let me type my phone number');
    expect((await nextSpokenReply(call)).text).toMatch(/10-digit phone number/);
    call.digits(DIGITS);
    expect((await nextSpokenReply(call)).text).toBe(DIGITS_OK);
    await ts.server.manager.flush();

    const { bytes, walBytes } = await rawBytes();
    if (kind === 'sqlite') expect(walBytes).toBeGreaterThan(0);
    // What we read is the store's data: the call's key and the sealed snapshot are there...
    expect(bytes.includes(call.callSid)).toBe(true);
    expect(bytes.includes('aes-256-gcm')).toBe(true);
    // ...and none of the caller's data is.
    for (const secret of [WORD, DIGITS, CALLER, CALLER.slice(1)]) expect(bytes.includes(secret), secret).toBe(false);
    // The sealed snapshot does hold them, for whoever has the key.
    const sealed = await storedSealed(call.callSid);
    expect(isSealed(sealed)).toBe(true);
    const opened = JSON.stringify(openSnapshot(ring, call.callSid, sealed));
    expect(opened).toContain(WORD);
    expect(opened).toContain(DIGITS);

    // The socket drops, the server restarts on the same store, and the caller comes back.
    await call.drop();
    await waitUntil(() => ts.server.manager.get(call.callSid)?.socket === null, 'the server noticing the drop');
    await ts.close();
    servers.splice(servers.indexOf(ts), 1);
    const restarted = await start();
    expect(restarted.server.manager.get(call.callSid)).toBeUndefined();
    const resumed = await resumeViaReconnection(restarted.server.relayUrl, call);
    calls.push(resumed);
    expect((await nextSpokenReply(resumed)).text).toBe(expectedResumeLine('en-US'));
    const from = llm.requests.length;
    expect(await say(resumed, 'what did I tell you')).toBe('You said: what did I tell you');
    const request = await waitForRequest(llm, (m) => lastUserText(m) === 'what did I tell you', 10_000, from);
    const history = transcriptOf(request.messages);
    expect(history).toContain(`user:my secret word is ${WORD}`);
    expect(history.some((line) => line.startsWith('tool:') && line.includes(DIGITS))).toBe(true);
    expect(history.at(-1)).toBe('user:what did I tell you');

    await restarted.server.manager.flush();
    for (const secret of [WORD, DIGITS]) expect((await rawBytes()).bytes.includes(secret), secret).toBe(false);
  });
});
