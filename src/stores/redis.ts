// Shared snapshot store on Redis: fencing and writes are atomic Lua scripts, retention is key TTLs.
// Works on one server, behind Sentinel and on Redis Cluster (see redis-connection.ts): every script
// gets all its keys in KEYS, and the keys of one call share a hash tag, so each script touches one slot.
import { closeClient, connectRedis, duplicateClient, onConnectionError, parseRedisUrl, scanKeys, type RedisClient } from './redis-connection.js';
import {
  DEFAULT_MIN_LEASE_MS,
  RecordChangedError,
  StaleLeaseError,
  type AcquireOptions,
  type CallTokenGrant,
  type Lease,
  type RetentionOptions,
  type SaveInput,
  type SessionRecord,
  type SnapshotStore,
} from './types.js';

/** How long the readiness probe's key outlives the last probe, so it goes soon after the last instance. */
const PROBE_TTL_MS = 60_000;

/** A Lua script run as an ioredis custom command (defineCommand: EVALSHA, loading the script when the server lacks it). */
interface LuaScript {
  /** The command's name on the client. */
  name: string;
  numberOfKeys: number;
  lua: string;
}

// Newest wins: bump the epoch, make sure an orphaned lease (never saved) still expires, and announce
// the new owner so the previous one can stop right away. A channel is no key: in a cluster a PUBLISH
// reaches subscribers on every node.
// With ARGV[4] (an epoch, or '' for none): only if the epoch is still that one, else an error naming it.
// With ARGV[5] (likewise): only if the record was written under that epoch (0: no record). save()
// writes a record's own epoch among its last fields, after the snapshot, so it is read from the end
// without decoding the snapshot: digits and one closing brace, which no field of a nested object can
// end the text with. A record in another shape is decoded (cjson): -1 when it has no epoch, and one
// that is not JSON fails the script, as load() would fail on it.
// KEYS: epoch, record. ARGV: minTtlMs, leaseChannel, callSid, ifEpoch, ifRecordEpoch.
const TAKE_LEASE = `
if ARGV[4] ~= '' or ARGV[5] ~= '' then
  local current = tonumber(redis.call('GET', KEYS[1]) or '0')
  if ARGV[4] ~= '' and current ~= tonumber(ARGV[4]) then return redis.error_reply('STALE ' .. current) end
  if ARGV[5] ~= '' then
    local raw = redis.call('GET', KEYS[2])
    local written = 0
    if raw then written = tonumber(string.match(raw, '"epoch":(%d+),"updatedAt":%d+,"retainUntil":%d+}$') or cjson.decode(raw).epoch) or -1 end
    if written ~= tonumber(ARGV[5]) then return redis.error_reply('CHANGED ' .. current .. ' ' .. written) end
  end
end
local epoch = redis.call('INCR', KEYS[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
redis.call('PUBLISH', ARGV[2], epoch .. ' ' .. ARGV[3])
`;
const ACQUIRE: LuaScript = { name: 'relayAcquire', numberOfKeys: 2, lua: `${TAKE_LEASE}return epoch` };
// ACQUIRE, then the record in the same atomic step (one round trip for a restore).
const ACQUIRE_AND_LOAD: LuaScript = { name: 'relayAcquireAndLoad', numberOfKeys: 2, lua: `${TAKE_LEASE}return { epoch, redis.call('GET', KEYS[2]) }` };

// Returns the current epoch (a number) when the lease is stale, 'OK' once written.
// The epoch key is raised to the lease epoch (it may have expired) and only ever gets a later expiry.
// KEYS: record, epoch. ARGV: leaseEpoch, recordJson, retainUntil, epochKeepUntil, now.
const SAVE: LuaScript = {
  name: 'relaySave',
  numberOfKeys: 2,
  lua: `
local lease = tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
if lease < current then return current end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
if lease > current then redis.call('SET', KEYS[2], lease) end
local ttl = redis.call('PTTL', KEYS[2])
if ttl >= 0 and tonumber(ARGV[5]) + ttl >= tonumber(ARGV[4]) then return redis.status_reply('OK') end
redis.call('PEXPIREAT', KEYS[2], ARGV[4])
return redis.status_reply('OK')
`,
};

// The epoch key is kept so an older owner cannot resurrect the session.
// KEYS: record, epoch. ARGV: leaseEpoch.
const DELETE: LuaScript = {
  name: 'relayDelete',
  numberOfKeys: 2,
  lua: `
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[1]) < current then return current end
redis.call('DEL', KEYS[1])
return redis.status_reply('OK')
`,
};

// A new call's admission token: one hash per call, re-issued only while unredeemed.
// KEYS: callToken. ARGV: hash, expiresAt, keepUntil.
const ISSUE_CALL_TOKEN: LuaScript = {
  name: 'relayIssueCallToken',
  numberOfKeys: 1,
  lua: `
if redis.call('HGET', KEYS[1], 'used') == '1' then return 0 end
redis.call('HSET', KEYS[1], 'h', ARGV[1], 'exp', ARGV[2])
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
return 1
`,
};
// Single use, atomically: marks the entry used (it stays until its expiry, so no new token is issued).
// KEYS: callToken. ARGV: hash, now.
const REDEEM_CALL_TOKEN: LuaScript = {
  name: 'relayRedeemCallToken',
  numberOfKeys: 1,
  lua: `
local v = redis.call('HMGET', KEYS[1], 'h', 'exp', 'used')
if v[3] == '1' or v[1] ~= ARGV[1] or tonumber(v[2] or '0') <= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'used', '1')
redis.call('HDEL', KEYS[1], 'h')
return 1
`,
};

const SCRIPTS = [ACQUIRE, ACQUIRE_AND_LOAD, SAVE, DELETE, ISSUE_CALL_TOKEN, REDEEM_CALL_TOKEN];

export interface RedisStoreOptions extends RetentionOptions {
  /** Key prefix; default 'relay:'. No braces on a cluster: they would change the hash tag that keeps a call on one slot. */
  prefix?: string;
  /** Connection errors (ioredis reconnects by itself); without a listener ioredis prints them raw. */
  onError?: (err: Error) => void;
  /**
   * Every command fails after this long without a reply (a hung or stopped server), instead of
   * waiting for ever; unset keeps ioredis' defaults. The server passes STORE_TIMEOUT_MS.
   */
  commandTimeoutMs?: number;
}

export class RedisStore implements SnapshotStore {
  readonly kind = 'redis' as const;
  private readonly redis: RedisClient;
  private readonly prefix: string;
  /** Pub/sub needs its own connection (in a cluster, its own cluster client); opened by the first onLeaseChange. */
  private subscriber: RedisClient | undefined;
  private readonly leaseListeners = new Set<(callSid: string, epoch: number) => void>();
  private readonly onError: (err: Error) => void;
  /** Set by the first close(); later calls wait for the same one. */
  private closed: Promise<void> | undefined;
  private readonly minLeaseMs: number;

  constructor(url: string, opts: RedisStoreOptions = {}) {
    const prefix = opts.prefix ?? 'relay:';
    // A bad REDIS_URL fails here, with the accepted forms, before any connection.
    const target = parseRedisUrl(url);
    if (target.mode === 'cluster' && /[{}]/.test(prefix)) {
      throw new Error(`REDIS_PREFIX "${prefix}" must not contain { or } on a cluster: the call's hash tag follows it`);
    }
    this.prefix = prefix;
    this.redis = connectRedis(target, { autoPipelining: true, commandTimeoutMs: opts.commandTimeoutMs });
    this.minLeaseMs = opts.minLeaseMs ?? DEFAULT_MIN_LEASE_MS;
    this.onError = opts.onError ?? (() => {});
    onConnectionError(this.redis, this.onError);
    for (const { name, numberOfKeys, lua } of SCRIPTS) this.redis.defineCommand(name, { numberOfKeys, lua });
  }

  async acquire(callSid: string, owner: string, opts: AcquireOptions = {}): Promise<Lease> {
    const epoch = await this.takeLease(ACQUIRE, callSid, [this.epochKey(callSid), this.recordKey(callSid)], opts);
    if (typeof epoch !== 'number') throw new Error(`unexpected acquire reply for ${callSid}: ${String(epoch)}`);
    return { callSid, owner, epoch };
  }

  async acquireAndLoad(callSid: string, owner: string, opts: AcquireOptions = {}): Promise<{ lease: Lease; record: SessionRecord | undefined }> {
    const reply = await this.takeLease(ACQUIRE_AND_LOAD, callSid, [this.epochKey(callSid), this.recordKey(callSid)], opts);
    // Lua's false (no record) arrives as null.
    if (!Array.isArray(reply) || typeof reply[0] !== 'number') throw new Error(`unexpected acquire reply for ${callSid}`);
    const raw: unknown = reply[1];
    return { lease: { callSid, owner, epoch: reply[0] }, record: parseLive(typeof raw === 'string' ? raw : null, Date.now()) };
  }

  async save(lease: Lease, input: SaveInput): Promise<void> {
    const now = Date.now();
    // The last fields' order is read by TAKE_LEASE: the record's epoch is found at its end.
    const record: SessionRecord = {
      callSid: lease.callSid,
      snapshot: input.snapshot,
      state: input.state,
      epoch: lease.epoch,
      updatedAt: now,
      retainUntil: input.retainUntil,
    };
    const keepEpochUntil = Math.max(input.retainUntil, now + this.minLeaseMs);
    const reply = await this.run(
      SAVE,
      [this.recordKey(lease.callSid), this.epochKey(lease.callSid)],
      [lease.epoch, JSON.stringify(record), input.retainUntil, keepEpochUntil, now],
    );
    if (typeof reply === 'number') throw new StaleLeaseError(lease.callSid, lease.epoch, reply);
  }

  async load(callSid: string): Promise<SessionRecord | undefined> {
    return parseLive(await this.redis.get(this.recordKey(callSid)), Date.now());
  }

  async currentEpoch(callSid: string): Promise<number> {
    return Number((await this.redis.get(this.epochKey(callSid))) ?? 0);
  }

  async delete(lease: Lease): Promise<void> {
    const reply = await this.run(DELETE, [this.recordKey(lease.callSid), this.epochKey(lease.callSid)], [lease.epoch]);
    if (typeof reply === 'number') throw new StaleLeaseError(lease.callSid, lease.epoch, reply);
  }

  async list(): Promise<SessionRecord[]> {
    const now = Date.now();
    const match = `${escapeGlob(this.prefix)}*:rec`;
    const records = new Map<string, SessionRecord>(); // SCAN may return a key twice
    // Each master in turn; one GET per key (a cluster refuses an MGET across slots), and auto-pipelining
    // sends a batch's GETs in one write per node.
    for await (const keys of scanKeys(this.redis, match)) {
      for (const raw of await Promise.all(keys.map((key) => this.redis.get(key)))) {
        const record = parseLive(raw, now);
        if (record) records.set(record.callSid, record);
      }
    }
    return [...records.values()];
  }

  async issueCallToken(callSid: string, grant: CallTokenGrant): Promise<boolean> {
    return (await this.run(ISSUE_CALL_TOKEN, [this.callTokenKey(callSid)], [grant.hash, grant.expiresAt, grant.keepUntil])) === 1;
  }

  async redeemCallToken(callSid: string, tokenHash: string, now: number): Promise<boolean> {
    return (await this.run(REDEEM_CALL_TOKEN, [this.callTokenKey(callSid)], [tokenHash, now])) === 1;
  }

  async sweep(): Promise<number> {
    return 0; // Retention is enforced by key TTLs.
  }

  async probe(): Promise<void> {
    await this.redis.set(this.probeKey(), String(Date.now()), 'PX', PROBE_TTL_MS);
  }

  onLeaseChange(listener: (callSid: string, epoch: number) => void): void {
    if (this.closed) return;
    this.leaseListeners.add(listener);
    if (this.subscriber) return;
    // duplicate() keeps the mode: a cluster client subscribes on one node and moves when it fails,
    // a sentinel client follows failovers; both resubscribe after reconnecting.
    const subscriber = duplicateClient(this.redis);
    this.subscriber = subscriber;
    onConnectionError(subscriber, this.onError);
    subscriber.on('message', (_channel: string, message: string) => {
      // "<epoch> <callSid>": the callSid goes last since only it could contain a space.
      const space = message.indexOf(' ');
      const epoch = Number(message.slice(0, space));
      if (space < 0 || !Number.isInteger(epoch)) return;
      for (const l of this.leaseListeners) l(message.slice(space + 1), epoch);
    });
    // Until the subscription is active, a stale owner is still stopped by its next rejected write.
    subscriber.subscribe(this.leaseChannel()).catch((err: unknown) => {
      if (this.closed) return; // closed before the subscription started
      process.emitWarning(err instanceof Error ? err : String(err), 'RedisStoreLeaseEvents');
    });
  }

  close(): Promise<void> {
    this.leaseListeners.clear();
    this.closed ??= Promise.all([this.subscriber && closeClient(this.subscriber), closeClient(this.redis)]).then(() => {});
    return this.closed;
  }

  // Keys share a hash tag so the scripts stay single-slot under Redis Cluster.
  private recordKey(callSid: string): string {
    return `${this.prefix}{${callSid}}:rec`;
  }

  private epochKey(callSid: string): string {
    return `${this.prefix}{${callSid}}:epoch`;
  }

  private callTokenKey(callSid: string): string {
    return `${this.prefix}{${callSid}}:calltoken`;
  }

  private probeKey(): string {
    return `${this.prefix}probe`;
  }

  private leaseChannel(): string {
    return `${this.prefix}leases`;
  }

  /** Runs a lease script; a conditional one that finds another epoch fails with StaleLeaseError. */
  private async takeLease(script: LuaScript, callSid: string, keys: string[], opts: AcquireOptions): Promise<unknown> {
    try {
      return await this.run(script, keys, [this.minLeaseMs, this.leaseChannel(), callSid, opts.ifEpoch ?? '', opts.ifRecordEpoch ?? '']);
    } catch (err) {
      const message = err instanceof Error ? err.message : '';
      const stale = /^STALE (\d+)/.exec(message);
      if (stale && opts.ifEpoch !== undefined) throw new StaleLeaseError(callSid, opts.ifEpoch, Number(stale[1]));
      const changed = /^CHANGED (\d+) (-?\d+)/.exec(message);
      if (changed && opts.ifRecordEpoch !== undefined) throw new RecordChangedError(callSid, Number(changed[1]), opts.ifRecordEpoch, Number(changed[2]));
      throw err;
    }
  }

  /** Runs one of the scripts defined on the client in the constructor. */
  private run(script: LuaScript, keys: string[], args: (string | number)[]): Promise<unknown> {
    const command = (this.redis as unknown as Record<string, (...argv: (string | number)[]) => Promise<unknown>>)[script.name]!;
    return command.call(this.redis, ...keys, ...args);
  }

}

function parseLive(raw: string | null, now: number): SessionRecord | undefined {
  if (raw === null) return undefined;
  const value: unknown = JSON.parse(raw);
  if (!isSessionRecord(value)) throw new Error('malformed session record in Redis');
  // TTLs already expire keys; this only guards against clock skew between us and Redis.
  return value.retainUntil > now ? value : undefined;
}

function escapeGlob(text: string): string {
  return text.replace(/[*?[\]\\]/g, '\\$&');
}

function isSessionRecord(value: unknown): value is SessionRecord {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as Record<string, unknown>;
  return (
    typeof v.callSid === 'string' &&
    typeof v.state === 'string' &&
    typeof v.epoch === 'number' &&
    typeof v.updatedAt === 'number' &&
    typeof v.retainUntil === 'number'
  );
}
