// `npm run bench`: runs the whole benchmark once, prints the tables and writes bench/results.json.
// Each side's calls (1,000 at the top level, as many in a storm) need a socket each in this process
// and in the measured child: the soft fd limit is raised by re-running under `ulimit -n` when the hard
// limit allows it, otherwise the sizes are lowered to fit and the run says so.
import { spawnSync } from 'node:child_process';
import { benchOptionsFromEnv } from './options.js';
import { runBench } from './bench.js';
import { renderReport } from './report.js';

/** Sockets besides the idle sessions: LLM connections, stdio, sqlite, Redis, slack. */
const FD_HEADROOM = 1024;

function shellLimit(flag: '-Sn' | '-Hn'): number {
  const out = spawnSync('sh', ['-c', `ulimit ${flag}`], { encoding: 'utf8' }).stdout.trim();
  return out === 'unlimited' ? Number.POSITIVE_INFINITY : Number(out);
}

/** `npm run bench -- --quick`: small sizes, done in under 40 s; set variables still win. */
const QUICK: Record<string, string> = {
  BENCH_LEVELS: '1,100',
  BENCH_LEVEL_MS: '300',
  BENCH_STORM_SESSIONS: '100',
  BENCH_STORM_NEW_CALLS: '10',
  BENCH_DEPLOY_SESSIONS: '20',
  BENCH_IDLE_SESSIONS: '300',
  BENCH_LLM_HOP_BASELINE: '0',
};
const quick = process.argv.slice(2).includes('--quick');
const options = benchOptionsFromEnv(quick ? { ...QUICK, ...process.env } : process.env);
const notes: string[] = [];
/**
 * Calls open at once: every side (the floor and each store) keeps its calls until the interleaved
 * load runs end, each as many as its largest phase (idle, a level, a storm with its new calls).
 */
const callsAtOnce = () => (1 + options.stores.length) * Math.max(options.idleSessions, ...options.levels, options.stormSessions + 2 * options.stormNewCalls);
const needed = callsAtOnce() + FD_HEADROOM;
let soft = shellLimit('-Sn');
if (soft < needed) {
  const hard = shellLimit('-Hn');
  if (hard >= needed && !process.env.BENCH_FD_RAISED) {
    console.log(`raising the open-file limit from ${soft} to ${needed} (ulimit -n) and re-running`);
    const rerun = spawnSync('sh', ['-c', `ulimit -n ${needed} && exec "$0" "$@"`, process.execPath, ...process.execArgv, ...process.argv.slice(1)], {
      stdio: 'inherit',
      env: { ...process.env, BENCH_FD_RAISED: '1' },
    });
    process.exit(rerun.status ?? 1);
  }
  // Per side: the sides' calls are open together.
  const fits = Math.max(2 + 2 * options.stormNewCalls, Math.floor((Math.min(soft, hard) - FD_HEADROOM) / (1 + options.stores.length)));
  options.idleSessions = Math.min(options.idleSessions, fits);
  options.stormSessions = Math.min(options.stormSessions, fits - 2 * options.stormNewCalls);
  options.levels = options.levels.filter((n) => n <= fits);
  if (options.levels.length === 0) options.levels = [1];
  notes.push(`open-file limit ${soft} (hard ${hard}) is below ${needed}: at most ${fits} calls at once (idle ${options.idleSessions}, storm ${options.stormSessions}, levels ${options.levels.join('/')})`);
  soft = Math.min(soft, hard);
}

console.log(
  `relay-actors bench${quick ? ' (quick)' : ''}: levels ${options.levels.join('/')} x instant/paced, ${options.levelMs} ms each, ` +
    `stores ${options.stores.join('/')}, storms of ${options.stormSessions}, ${options.idleSessions} idle calls, fd limit ${soft}`,
);
try {
  const t0 = performance.now();
  const log = (line: string) => console.log(`  ${((performance.now() - t0) / 1000).toFixed(1).padStart(5)} s  ${line}`);
  const results = await runBench(options, { log, fdSoftLimit: Number.isFinite(soft) ? soft : null, notes });
  console.log('');
  console.log(renderReport(results));
  console.log('');
  console.log(`results written to ${options.resultsPath} (${(results.durationMs / 1000).toFixed(1)} s); all targets ${results.pass ? 'PASS' : 'not met'}`);
  process.exit(process.env.BENCH_STRICT === '1' && !results.pass ? 1 : 0);
} catch (err) {
  console.error('bench failed:', err);
  process.exit(2);
}
