// `npm start` runs the compiled JavaScript, with no TypeScript tooling: build src/ with the build
// config (into a temporary directory), start it exactly as the start script does with plain node,
// take a call through it, and stop it with SIGTERM: exit code 0.
import { execFile, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { placeTwilioCall } from '../src/testing/twilio-call.js';
import type { SimulatedCall } from '../src/testing/twilio-sim.js';
import { ServerProcess } from './support/server-process.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
// tsc on the whole of src/ takes 20-40 s on the 2-core machine, far more when it is busy.
const BUILD_TIMEOUT_MS = 180_000;

interface PackageJson {
  scripts: Record<string, string>;
  dependencies: Record<string, string>;
}

let tmp: string;
let build: ChildProcess | undefined;
let server: ServerProcess | undefined;
let call: SimulatedCall | undefined;
let pkg: PackageJson;

beforeAll(async () => {
  pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as PackageJson;
  tmp = await mkdtemp(join(tmpdir(), 'relay-production-start-'));
  // Only the runtime dependencies are visible next to the build, as after `npm ci --omit=dev`: an
  // import of a devDependency (tsx, vitest, ...) from src/ fails to resolve.
  for (const name of Object.keys(pkg.dependencies)) {
    const link = join(tmp, 'node_modules', name);
    await mkdir(dirname(link), { recursive: true });
    await symlink(join(ROOT, 'node_modules', name), link, 'dir');
  }
  const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  const running = promisify(execFile)(process.execPath, [tsc, '-p', 'tsconfig.build.json', '--outDir', join(tmp, 'dist')], { cwd: ROOT });
  build = running.child;
  await running.catch((err: { stdout?: string; stderr?: string; message: string }) => {
    throw new Error(`build failed: ${err.message}\n${err.stdout ?? ''}${err.stderr ?? ''}`);
  });
}, BUILD_TIMEOUT_MS);

afterAll(async () => {
  await call?.drop();
  // Only what this file started, by its PID: a build still running (the hook timed out) and the server.
  if (build && build.exitCode === null && build.signalCode === null) build.kill('SIGKILL');
  if (server?.isRunning) await server.kill();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

it('the start script runs the compiled server with plain node: it answers a call and exits 0 on SIGTERM', async () => {
  // `node <flags> dist/server/main.js`: no tsx loader, so nothing is compiled at start-up.
  const [command, ...args] = pkg.scripts.start!.split(/\s+/);
  expect(command).toBe('node');
  expect(args.at(-1)).toBe('dist/server/main.js');
  expect(args).not.toContain('--import');
  const nodeFlags = args.slice(0, -1);

  server = new ServerProcess({ store: 'memory', nodeArgs: [...nodeFlags, join(tmp, 'dist', 'server', 'main.js')] });
  await server.start(); // port 0: the port the server logs as listening
  await expect.poll(async () => (await fetch(`${server!.httpUrl}/readyz`)).status).toBe(200);

  // A call as Twilio places it (no LLM configured: the offline responder answers).
  call = (await placeTwilioCall({ baseUrl: server.httpUrl })).call;
  call.prompt('Hello from the compiled build');
  expect((await call.nextReply()).text).toMatch(/offline mode.*Hello from the compiled build/);

  expect(await server.kill('SIGTERM')).toEqual({ code: 0, signal: null });
  await server.waitForLog((l) => l.msg === 'drained and closed');
});

it("a build without the playground's bundle (tsc alone) does not serve tsc's unbundled module as its script", async () => {
  const playground = new ServerProcess({ store: 'memory', env: { PLAYGROUND: '1' }, nodeArgs: [join(tmp, 'dist', 'server', 'main.js')] });
  try {
    await playground.start();
    const script = await fetch(`${playground.httpUrl}/playground/app.js`);
    // tsc's app.js imports '../client/index.js', which a browser cannot load from /client: the page
    // would be dead. Without the bundle (and no esbuild at run time) the answer is "not built".
    expect({ status: script.status, text: await script.text() }).toEqual({ status: 503, text: 'the playground is not built: run npm run build' });
  } finally {
    if (playground.isRunning) await playground.kill();
  }
});
