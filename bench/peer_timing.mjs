// Timing helpers shared by the peer comparisons (learning_peer.mjs,
// sona_peer.mjs): command-line options, nearest-rank percentiles, and
// batched per-call timing with process.hrtime.

/// The value after `--name` on the command line, or `fallback`.
export function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

/// Nearest-rank percentile of sorted values, q in [0, 1].
export function percentile(sorted, q) {
  const rank = Math.ceil(q * sorted.length);
  return sorted[Math.min(Math.max(rank, 1), sorted.length) - 1];
}

/// Median, p99 (nearest rank) and count of values (not modified).
export function summary(values) {
  const s = [...values].sort((a, b) => a - b);
  return { median: percentile(s, 0.5), p99: percentile(s, 0.99), n: s.length };
}

/// Median and p99 of per-call ns over `batches` batches of `batch` calls of
/// `call`, after a warm-up of 20 batches' worth of calls (JIT tiers, caches);
/// `between` runs untimed after the warm-up and after each batch.
export function measure(call, { batch, batches, between = () => {} }) {
  for (let i = 0; i < 20 * batch; ++i) call();
  between();
  const per = [];
  for (let b = 0; b < batches; ++b) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < batch; ++i) call();
    const t1 = process.hrtime.bigint();
    per.push(Number(t1 - t0) / batch);
    between();
  }
  return summary(per);
}
