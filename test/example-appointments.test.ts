// examples/appointments, run as an outside user runs it: `npm pack` of this repo (prepack builds
// dist/), the example copied into a new project that installs the tarball and what the example needs
// from the registry, then the example's own type check and its own vitest, in that project. Only the
// published files reach it: a missing export, declaration or dependency fails here.
import { spawn, type ChildProcess } from 'node:child_process';
import { cp, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const EXAMPLE = join(ROOT, 'examples', 'appointments');
/** The example's test count (appointments.test.ts): the run must have run them all. */
const EXAMPLE_TESTS = 4;
// npm pack builds with tsc, and the install takes its time on the 2-core machine: caps, not speed checks.
const SETUP_TIMEOUT_MS = 15 * 60_000;
const RUN_TIMEOUT_MS = 5 * 60_000;

let tmp: string | undefined;
let project: string;
const started = new Set<ChildProcess>();

/**
 * The children get the environment without what npm and vitest set for this run (`npm_config_*`
 * from `npm test` would point npm at this repo; `VITEST_*` would tell the inner vitest it is a worker).
 */
function cleanEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([key]) => !/^(npm_|VITEST)/i.test(key)));
}

interface RunResult {
  code: number | null;
  output: string;
}

/** Runs a command in its own process group (so it and its children can be ended by its PID); output for failure messages. */
function run(command: string, args: string[], cwd: string): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    started.add(child);
    let output = '';
    child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
    child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
    child.once('error', reject);
    child.once('close', (code) => {
      started.delete(child);
      // Colour codes out, so the summary lines can be read.
      resolve({ code, output: output.replace(/\x1b\[[0-9;]*m/g, '') }); // eslint-disable-line no-control-regex
    });
  });
}

async function mustRun(command: string, args: string[], cwd: string): Promise<string> {
  const result = await run(command, args, cwd);
  if (result.code !== 0) throw new Error(`${command} ${args.join(' ')} exited ${result.code}:\n${result.output}`);
  return result.output;
}

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'relay-example-'));
  const packed = join(tmp, 'pack');
  await mkdir(packed);
  await mustRun('npm', ['pack', '--pack-destination', packed], ROOT);
  const [tarball] = (await readdir(packed)).filter((f) => f.endsWith('.tgz'));
  if (!tarball) throw new Error('npm pack made no tarball');

  // The example as a project of its own, depending on the tarball instead of this repo.
  project = join(tmp, 'appointments');
  await cp(EXAMPLE, project, { recursive: true, filter: (src) => !/[\\/](node_modules|data)$/.test(src) });
  const pkg = JSON.parse(await readFile(join(project, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
  pkg.dependencies['relay-actors'] = `file:${join(packed, tarball)}`;
  await writeFile(join(project, 'package.json'), `${JSON.stringify(pkg, null, 2)}\n`);
  // No install scripts: the one with a script, better-sqlite3, would compile its addon from source here
  // (minutes of CPU beside the other test files), and the example's test runs on the memory store,
  // which never loads it (the addon is loaded when a SQLite database is opened).
  await mustRun('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', '--ignore-scripts'], project);
}, SETUP_TIMEOUT_MS);

afterAll(async () => {
  // Only what this file started, by PID (its whole process group: npm's and vitest's children too).
  for (const child of started) {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  if (tmp) await rm(tmp, { recursive: true, force: true });
}, RUN_TIMEOUT_MS);

it('the example type-checks against the published declarations', async () => {
  await mustRun('npm', ['run', 'typecheck'], project);
}, RUN_TIMEOUT_MS);

it("the example's own tests pass against the installed package", async () => {
  const { code, output } = await run('npm', ['test'], project);
  expect(code, output).toBe(0);
  expect(output).toMatch(new RegExp(`Tests\\s+${EXAMPLE_TESTS} passed \\(${EXAMPLE_TESTS}\\)`));
}, RUN_TIMEOUT_MS);
