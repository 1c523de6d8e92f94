// Idle memory per connected call alone, without the rest of the bench: the floor and each store's
// server, each in a fresh child, measured the way `npm run bench` measures it (bench/memory.ts).
// A few seconds of CPU per store instead of minutes.
//
//   npx tsx bench/idle-memory.ts                 # 1,000 calls, floor + memory + sqlite
//   IDLE_CALLS=500 IDLE_STORES=memory,sqlite,redis npx tsx bench/idle-memory.ts
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { spawnChild, type ChildHandle } from './child-process.js';
import { compiledChildScript } from './compile.js';
import { closeAll } from './load.js';
import { measureIdleMemory, type MemoryResult } from './memory.js';
import type { StoreKind } from './options.js';
import { removeRedisKeys } from './redis-keys.js';

const calls = Number(process.env.IDLE_CALLS ?? 1000);
const stores = (process.env.IDLE_STORES ?? 'memory,sqlite').split(',').filter(Boolean) as StoreKind[];
const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const timeoutMs = 60_000;
// Idle calls send no prompt: nothing reaches this address.
const llmBaseUrl = 'http://127.0.0.1:9/v1';

const kb = (bytes: number) => `${(bytes / 1024).toFixed(1)} KB`;
const line = (name: string, r: MemoryResult, floor?: MemoryResult) =>
  `${name.padEnd(8)} RSS ${kb(r.rssPerSessionBytes).padStart(9)}${floor ? ` (${(r.rssPerSessionBytes / floor.rssPerSessionBytes).toFixed(2)}x)` : '        '}` +
  `  heap ${kb(r.heapPerSessionBytes).padStart(9)}  external ${kb(r.externalPerSessionBytes).padStart(8)}  held ${r.held}` +
  (r.hibernated === null ? '' : `  hibernated ${r.hibernated}`);

const tmp = mkdtempSync(join(os.tmpdir(), 'relay-idle-'));
const started = Date.now();
const children: ChildHandle[] = [];
const compiled = await compiledChildScript();
try {
  const floorChild = spawnChild('fetch-floor', compiled.script, join(tmp, 'floor.log'));
  children.push(floorChild);
  const floorPort = (await floorChild.call('start', { llmBaseUrl })).port;
  const floor = await measureIdleMemory(floorChild, `ws://127.0.0.1:${floorPort}`, calls, 200, timeoutMs);
  console.log(line('floor', floor.result));
  await closeAll(floor.calls);
  await floorChild.exit();
  for (const store of stores) {
    const child = spawnChild('server', compiled.script, join(tmp, `server-${store}.log`));
    children.push(child);
    const { port } = await child.call('start', {
      store,
      sqlitePath: join(tmp, `${store}.db`),
      redisUrl,
      redisPrefix: `idle:${started}:`,
      llmBaseUrl,
      graceMs: 10 * 60_000,
      logLevel: 'info',
    });
    const idle = await measureIdleMemory(child, `ws://127.0.0.1:${port}/relay`, calls, 200, timeoutMs, `http://127.0.0.1:${port}`);
    console.log(line(store, idle.result, floor.result));
    await closeAll(idle.calls);
    await child.exit();
  }
} finally {
  await Promise.all(children.map((c) => c.exit()));
  compiled.remove();
  if (stores.includes('redis')) await removeRedisKeys(redisUrl, `idle:${started}:`).catch(() => {});
  rmSync(tmp, { recursive: true, force: true });
}
