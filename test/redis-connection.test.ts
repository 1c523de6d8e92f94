// REDIS_URL forms (one server, Sentinel, Cluster): what each parses to, the clear error for a bad
// one, and connection errors reported (not thrown) in every mode while the servers are unreachable.
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { maskRedisUrl, parseRedisUrl, RedisUrlError, seedAddresses } from '../src/stores/redis-connection.js';
import { RedisStore } from '../src/stores/redis.js';

describe('parseRedisUrl', () => {
  it('passes a plain redis:// or rediss:// URL to ioredis as it is', () => {
    expect(parseRedisUrl('redis://127.0.0.1:6379')).toEqual({ mode: 'plain', url: 'redis://127.0.0.1:6379' });
    expect(parseRedisUrl('rediss://:pw@cache.example:6380/2')).toEqual({ mode: 'plain', url: 'rediss://:pw@cache.example:6380/2' });
  });

  it('reads a Sentinel URL: sentinels, master name, db, credentials', () => {
    expect(parseRedisUrl('redis-sentinel://s1:26379,s2:26380,s3/mymaster')).toEqual({
      mode: 'sentinel',
      sentinels: [
        { host: 's1', port: 26379 },
        { host: 's2', port: 26380 },
        { host: 's3', port: 26379 },
      ],
      name: 'mymaster',
      db: 0,
      username: undefined,
      password: undefined,
      sentinelUsername: undefined,
      sentinelPassword: undefined,
    });
    expect(parseRedisUrl('redis-sentinel://app:p%40ss@[::1]:26379/my%20master/3?sentinelPassword=s3cret&sentinelUsername=watch')).toMatchObject({
      sentinels: [{ host: '::1', port: 26379 }],
      name: 'my master',
      db: 3,
      username: 'app',
      password: 'p@ss',
      sentinelUsername: 'watch',
      sentinelPassword: 's3cret',
    });
    // The default user with a password, as in redis://:pw@host.
    expect(parseRedisUrl('redis-sentinel://:pw@s1/m')).toMatchObject({ username: undefined, password: 'pw' });
  });

  it('reads a Cluster URL: startup nodes and credentials', () => {
    expect(parseRedisUrl('redis-cluster://u:pw@10.0.0.1:7000,10.0.0.2:7001,node3')).toEqual({
      mode: 'cluster',
      nodes: [
        { host: '10.0.0.1', port: 7000 },
        { host: '10.0.0.2', port: 7001 },
        { host: 'node3', port: 6379 },
      ],
      username: 'u',
      password: 'pw',
    });
  });

  it.each([
    ['http://127.0.0.1:6379', /unknown scheme/],
    ['127.0.0.1:6379', /unknown scheme/],
    ['redis://', /not a valid URL|no host/],
    ['redis-sentinel://s1:26379', /master name is missing/],
    ['redis-sentinel://s1:26379/m/x', /database "x" is not a number/],
    ['redis-sentinel://s1:26379/m/1/extra', /\/masterName or \/masterName\/db/],
    ['redis-sentinel://s1:26379/m?password=x', /unknown parameter "password"/],
    ['redis-cluster://n1:7000/0', /no database or master name/],
    ['redis-cluster://n1:7000?tls=1', /no query parameters/],
    ['redis-cluster://n1:7000,', /"" is not host:port/],
    ['redis-cluster://n1:70000', /bad port/],
    ['redis-cluster://n1:abc', /"n1:abc" is not host:port/],
  ])('rejects %s with a clear error', (url, reason) => {
    const err = (() => {
      try {
        parseRedisUrl(url);
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(RedisUrlError);
    expect((err as Error).message).toMatch(reason);
    // Every error lists the accepted forms.
    expect((err as Error).message).toContain('redis-cluster://host:port');
  });

  it('never repeats a password in an error', () => {
    expect(() => parseRedisUrl('redis-cluster://u:hunter2@n1:bad')).toThrow(/u:\*\*\*@n1/);
    expect(() => parseRedisUrl('redis-cluster://u:hunter2@n1:bad')).not.toThrow(/hunter2/);
    expect(maskRedisUrl('redis-sentinel://s1/m?sentinelPassword=hunter2&sentinelUsername=w')).toBe('redis-sentinel://s1/m?sentinelPassword=***&sentinelUsername=w');
  });

  it('names the addresses a reachability check tries', () => {
    expect(seedAddresses('redis://[::1]:6390')).toEqual([{ host: '::1', port: 6390 }]);
    expect(seedAddresses('redis://localhost')).toEqual([{ host: 'localhost', port: 6379 }]);
    expect(seedAddresses('redis-cluster://a:1,b:2')).toEqual([
      { host: 'a', port: 1 },
      { host: 'b', port: 2 },
    ]);
  });
});

describe('REDIS_URL in the configuration', () => {
  it('fails start-up with the reason when the Redis store is chosen', () => {
    expect(() => loadConfig({ STORE: 'redis', REDIS_URL: 'redis-cluster://n1:7000/0' })).toThrow(/no database or master name[\s\S]*redisUrl/);
    expect(loadConfig({ STORE: 'redis', REDIS_URL: 'redis-cluster://n1:7000,n2:7000' }).redisUrl).toBe('redis-cluster://n1:7000,n2:7000');
  });

  it('is not checked for the other stores', () => {
    expect(loadConfig({ STORE: 'sqlite', REDIS_URL: 'not a url' }).store).toBe('sqlite');
  });

  it('is checked again by the store itself (configs built in code skip loadConfig)', () => {
    expect(() => new RedisStore('redis-sentinel://s1:26379')).toThrow(RedisUrlError);
  });
});

describe('connection errors in every mode', () => {
  // Port 1 on loopback refuses connections: the outage a store must survive.
  it.each([
    ['sentinel', 'redis-sentinel://127.0.0.1:1/mymaster', /sentinels are unreachable/],
    ['cluster', 'redis-cluster://127.0.0.1:1', /127\.0\.0\.1:1|startup nodes|slots cache/],
  ])('%s: reported to onError, never thrown; close() returns while unreachable', async (_mode, url, message) => {
    const errors: Error[] = [];
    const store = new RedisStore(url, { onError: (err) => errors.push(err) });
    store.onLeaseChange(() => {}); // the subscriber connection reports through the same listener
    await expect.poll(() => errors.length, { timeout: 5000 }).toBeGreaterThan(0);
    expect(errors.some((e) => message.test(e.message))).toBe(true);
    await store.close();
  });
});
