// Reads the few Prometheus series the benchmark needs from a /metrics text exposition.

export interface Histogram {
  /** Cumulative counts by upper bound, ascending; the last one is +Inf. */
  buckets: Array<{ le: number; count: number }>;
  count: number;
  sum: number;
}

function seriesValue(line: string): number {
  return Number(line.slice(line.lastIndexOf(' ') + 1));
}

export function parseHistogram(text: string, name: string): Histogram {
  const buckets: Histogram['buckets'] = [];
  let count = 0;
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith(`${name}_bucket{`)) {
      const le = /le="([^"]+)"/.exec(line)?.[1];
      if (le !== undefined) buckets.push({ le: le === '+Inf' ? Infinity : Number(le), count: seriesValue(line) });
    } else if (line.startsWith(`${name}_count`)) count = seriesValue(line);
    else if (line.startsWith(`${name}_sum`)) sum = seriesValue(line);
  }
  buckets.sort((a, b) => a.le - b.le);
  return { buckets, count, sum };
}

/** `after` minus `before` (two readings of one histogram): the observations made in between. */
export function histogramDelta(after: Histogram, before: Histogram): Histogram {
  const earlier = new Map(before.buckets.map((b) => [b.le, b.count]));
  return {
    buckets: after.buckets.map((b) => ({ le: b.le, count: b.count - (earlier.get(b.le) ?? 0) })),
    count: after.count - before.count,
    sum: after.sum - before.sum,
  };
}

/** Like PromQL histogram_quantile: linear interpolation inside the bucket holding the q-th observation. */
export function histogramQuantile(h: Histogram, q: number): number {
  if (h.count === 0 || h.buckets.length === 0) return Number.NaN;
  const target = q * h.count;
  let prevLe = 0;
  let prevCount = 0;
  for (const { le, count } of h.buckets) {
    if (count >= target) {
      if (le === Infinity) return prevLe; // beyond the largest finite bound: report that bound
      const inBucket = count - prevCount;
      return inBucket === 0 ? le : prevLe + ((le - prevLe) * (target - prevCount)) / inBucket;
    }
    prevLe = le;
    prevCount = count;
  }
  return prevLe;
}

/** Share of observations at or below `bound` (exact when `bound` is a bucket edge). */
export function fractionAtOrBelow(h: Histogram, bound: number): number {
  if (h.count === 0) return Number.NaN;
  const bucket = h.buckets.find((b) => b.le === bound);
  return bucket ? bucket.count / h.count : Number.NaN;
}

/** Value of one series, e.g. counterValue(text, 'relay_resumes_total', 'outcome="succeeded"'); 0 when absent. */
export function counterValue(text: string, name: string, labels = ''): number {
  const prefix = labels ? `${name}{${labels}}` : `${name} `;
  const line = text.split('\n').find((l) => l.startsWith(prefix));
  return line ? seriesValue(line) : 0;
}
