// `npm run bench`: runs the whole benchmark once, prints the tables and writes bench/results.json.
// 10,000 idle sessions need about that many sockets in this process (and in the server child):
// the soft fd limit is raised by re-running under `ulimit -n` when the hard limit allows it,
// otherwise the idle session count is lowered to fit and the run says so.
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

/** `npm run bench -- --quick`: small sizes for a look in well under a minute; set variables still win. */
const QUICK: Record<string, string> = {
  BENCH_LEVELS: '1,100',
  BENCH_ROUNDS: '200,5',
  BENCH_STORM_SESSIONS: '100',
  BENCH_DEPLOY_SESSIONS: '20',
  BENCH_IDLE_SESSIONS: '1000',
  BENCH_LLM_FLOOR_REQUESTS: '200',
};
const quick = process.argv.slice(2).includes('--quick');
const options = benchOptionsFromEnv(quick ? { ...QUICK, ...process.env } : process.env);
const notes: string[] = [];
const needed = options.idleSessions + FD_HEADROOM;
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
  const fitted = Math.max(1, Math.min(soft, hard) - FD_HEADROOM);
  notes.push(`open-file limit ${soft} (hard ${hard}) is below ${needed}: idle sessions lowered from ${options.idleSessions} to ${fitted}`);
  options.idleSessions = fitted;
  soft = Math.min(soft, hard);
}

console.log(
  `relay-actors bench${quick ? ' (quick)' : ''}: levels ${options.levels.join('/')}, storms ${options.stormSessions} x ${options.stores.join('/')}, ` +
    `${options.idleSessions} idle sessions, fd limit ${soft}`,
);
try {
  const results = await runBench(options, { log: (line) => console.log(`  ${line}`), fdSoftLimit: Number.isFinite(soft) ? soft : null, notes });
  console.log('');
  console.log(renderReport(results));
  console.log('');
  console.log(`results written to ${options.resultsPath} (${(results.durationMs / 1000).toFixed(1)} s); all targets ${results.pass ? 'PASS' : 'not met'}`);
  process.exit(process.env.BENCH_STRICT === '1' && !results.pass ? 1 : 0);
} catch (err) {
  console.error('bench failed:', err);
  process.exit(2);
}
