// The tables printed at the end of a run: ours / floor per store, mode and level; idle memory;
// the reconnect storms with the new calls during them; the deploy; the targets.
import type { MemoryResult } from './memory.js';
import type { ModeName } from './modes.js';
import type { BenchResults, ComparedRun, LoadRun } from './results.js';
import { round } from './stats.js';

type Cell = string | number | null;

function table(header: string[], rows: Cell[][]): string {
  const cells = [header, ...rows.map((row) => row.map((c) => (c === null ? '-' : String(c))))];
  const widths = header.map((_, i) => Math.max(...cells.map((row) => (row[i] ?? '').length)));
  const line = (row: string[]) => row.map((c, i) => c.padEnd(widths[i]!)).join('  ');
  return [line(cells[0]!), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.slice(1).map(line)].join('\n');
}

const f = (v: number, digits = 2) => round(v, digits);
const us = (v: number) => (Number.isFinite(v) ? `${f(v, 0)} us` : null);
const x = (v: number | null) => (v === null || !Number.isFinite(v) ? null : `${f(v)}x`);
const pct = (v: number) => (Number.isFinite(v) ? `${f(v, 0)}%` : null);
const kb = (bytes: number) => f(bytes / 1024);

function loadRow(side: string, run: ComparedRun, floor: LoadRun): Cell[] {
  const ours = run.result;
  const base = floor.result;
  return [
    side,
    run.sessions,
    us(base.cpuUsPerTurn),
    us(ours.cpuUsPerTurn),
    x(run.ratios.cpuPerTurn),
    f(base.p99Ms),
    f(ours.p99Ms),
    x(run.ratios.firstTokenP99),
    f(base.turnsPerSec, 0),
    f(ours.turnsPerSec, 0),
    pct(run.ratios.turnsPerSecPct),
    ours.failed + base.failed || null,
  ];
}

function modeTable(r: BenchResults, mode: ModeName): string {
  const floorRun = (run: LoadRun) => r.floor.load.find((l) => l.mode === run.mode && l.sessions === run.sessions)!;
  const rows: Cell[][] = [];
  for (const s of r.stores) {
    if (s.status === 'skipped') {
      rows.push([s.store, `skipped (${s.reason ?? 'unknown'})`]);
      continue;
    }
    for (const run of s.load.filter((l) => l.mode === mode)) rows.push(loadRow(s.store, run, floorRun(run)));
  }
  for (const run of (r.llmHop ?? []).filter((l) => l.mode === mode)) rows.push(loadRow('llm-hop (info)', run, floorRun(run)));
  return table(
    ['side', 'calls', 'floor cpu/turn', 'ours cpu/turn', 'cpu x', 'floor p99 ms', 'ours p99 ms', 'p99 x', 'floor turns/s', 'ours turns/s', '% floor', 'failed'],
    rows.map((row) => [...row, ...Array<Cell>(12 - row.length).fill(null)]),
  );
}

function memoryTable(r: BenchResults): string {
  const row = (name: string, m: MemoryResult, rssRatio: number | null, heapRatio: number | null): Cell[] => [
    name,
    m.sessions,
    m.held,
    m.hibernated ?? '-',
    kb(m.rssPerSessionBytes),
    x(rssRatio),
    kb(m.heapPerSessionBytes),
    x(heapRatio),
    kb(m.rawRssPerSessionBytes),
  ];
  const rows = [row('floor', r.floor.idle, null, null)];
  for (const s of r.stores) if (s.idle) rows.push(row(s.store, s.idle.result, s.idle.rssRatio, s.idle.heapRatio));
  return table(['process', 'calls', 'held', 'hibernated', 'RSS KB/call', 'RSS x', 'heap KB/call', 'heap x', 'plain RSS KB/call'], rows);
}

function stormTables(r: BenchResults): string[] {
  const phases: Cell[][] = [];
  const newCalls: Cell[][] = [];
  for (const s of r.stores) {
    const storm = s.storm;
    if (!storm) {
      phases.push([s.store, s.status === 'skipped' ? `skipped (${s.reason ?? 'unknown'})` : 'no result']);
      continue;
    }
    for (const [name, p] of [['same instance', storm.live], ['after restart', storm.restart], ['restart, 1 by 1', storm.oneByOne]] as const) {
      if (!p) continue;
      phases.push([
        s.store,
        name,
        `${p.restored}/${storm.sessions}`,
        f(p.e2eP50Ms),
        f(p.e2eP99Ms),
        f(p.wallMs, 0),
        p.serverRestore ? f(p.serverRestore.p50Ms, 3) : null,
        p.serverRestore ? f(p.serverRestore.p99Ms, 3) : null,
      ]);
    }
    if (storm.newCalls) {
      const { quiet, duringStorm, pendingRestores, p99Ratio, afterBurst, afterBurstRatio } = storm.newCalls;
      newCalls.push([
        s.store,
        `${duringStorm.answered + afterBurst.answered}/${duringStorm.calls + afterBurst.calls}`,
        f(quiet.p50Ms),
        f(quiet.p99Ms),
        f(afterBurst.p99Ms),
        x(afterBurstRatio),
        pendingRestores,
        f(duringStorm.p50Ms),
        f(duringStorm.p99Ms),
        x(p99Ratio),
      ]);
    }
  }
  const fill = (rows: Cell[][], n: number) => rows.map((row) => [...row, ...Array<Cell>(n - row.length).fill(null)]);
  return [
    'Reconnect storms: every call reconnects at once; e2e = setup sent -> resume line (includes queueing)',
    'srv restore = relay_restore_seconds from /metrics (interpolated in its buckets)',
    table(['store', 'phase', 'restored', 'e2e p50', 'e2e p99', 'wall ms', 'srv restore p50', 'srv restore p99'], fill(phases, 8)),
    '',
    'New calls during the `after restart` storm (setup + prompt; prompt -> first token, ms) against as many on the quiet restarted',
    'instance, both batches judged. after burst: sent right after the reconnect burst was written, read after its setup frames;',
    'restoring: sent once resume lines come and the after-burst batch is answered, with `pending` restores still to come',
    table(['store', 'answered', 'quiet p50', 'quiet p99', 'after burst p99', 'x', 'pending', 'restoring p50', 'restoring p99', 'p99 x'], newCalls),
  ];
}

export function renderReport(r: BenchResults): string {
  const out: string[] = [];
  const seconds = f(r.options.levelMs / 1000);
  out.push(`Floor = raw ws + the same streamed request with plain fetch, SSE parsed by hand (same run). Each row: ${seconds} s measured after a warm-up round (paced @1: three times as long).`);
  out.push('cpu = server process CPU (user + system) per turn; p99 = prompt -> first token; x = ours / floor');
  for (const mode of r.modes) {
    out.push('');
    out.push(mode.chunkDelayMs === 0 ? `${mode.name} mode (the fake LLM sends every token at once)` : `${mode.name} mode (tokens streamed ${mode.chunkDelayMs} ms apart)`);
    out.push(modeTable(r, mode.name));
  }
  const runs = [...r.floor.load, ...r.stores.flatMap((s) => s.load), ...(r.llmHop ?? [])];
  const cut = runs.filter((run) => !run.result.warmupRound).length;
  if (cut > 0) out.push(`(${cut} of ${runs.length} runs cut their warm-up at BENCH_WARMUP_MAX_MS before a whole round: a few turns begun before may end in the measured time)`);
  out.push('');
  out.push('Idle memory per connected call (setup only): growth between two readings, each after a forced full GC; x = ours / floor');
  out.push("RSS = its anonymous part less V8's young generation (empty after the GC, but resident); plain RSS: informational");
  out.push(memoryTable(r));
  out.push('');
  out.push(...stormTables(r));
  out.push('');
  if (r.deploy) {
    const d = r.deploy;
    out.push('Deploy: calls talking to an instance that is stopped (drain) move through the action callback to another one');
    out.push('speech gap = last frame heard before the socket closed -> first token after the resume');
    out.push(table(['calls', 'moved', 'lost', 'gap p50 ms', 'gap p99 ms', 'gap max ms', 'drain ms'], [[d.sessions, d.moved, d.lost, d.gapP50Ms, d.gapP99Ms, d.gapMaxMs, f(d.drainMs, 0)]]));
    out.push('');
  }
  out.push('Targets');
  out.push(
    table(
      ['metric', 'value', 'target', 'result'],
      r.checks.map((c) => [c.metric, c.value === null ? null : `${c.value} ${c.unit}`.trim(), c.target, c.pass ? 'PASS' : c.invalid ? `FAIL (${c.invalid})` : 'FAIL']),
    ),
  );
  if (!r.frameCheck.identical) out.push(`note: the floor answers with ${r.frameCheck.floorFrames} frames, the server with ${r.frameCheck.serverFrames}`);
  for (const note of r.notes) out.push(`note: ${note}`);
  return out.join('\n');
}
