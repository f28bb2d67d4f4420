/// @file Minimal latency harness for shoal_bench: per-operation samples in
/// nanoseconds, summarised as median and p99 (nearest rank), printed as one
/// Markdown table so runs can be pasted into notes. Google Benchmark reports
/// per-iteration means; the node's targets are tail latencies of single
/// operations, hence this harness. Not thread-safe.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace shoal::bench {

inline int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
           std::chrono::steady_clock::now().time_since_epoch())
    .count();
}

/// Summary of latency samples (ns).
struct summary {
  size_t n = 0;
  double median_ns = 0;
  double p99_ns = 0;
  double mean_ns = 0;
};

/// Nearest-rank percentile of sorted samples, q in [0, 1].
inline double percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty())
    return 0;
  size_t rank = static_cast<size_t>(q * static_cast<double>(sorted.size()) + 0.999999);
  return sorted[std::clamp<size_t>(rank, 1, sorted.size()) - 1];
}

inline summary summarize(std::vector<double> samples) {
  summary s;
  s.n = samples.size();
  if (samples.empty())
    return s;
  std::sort(samples.begin(), samples.end());
  s.median_ns = percentile(samples, 0.5);
  s.p99_ns = percentile(samples, 0.99);
  double sum = 0;
  for (double x : samples)
    sum += x;
  s.mean_ns = sum / static_cast<double>(samples.size());
  return s;
}

/// Prints the table header once.
inline void print_header() {
  std::printf("| benchmark | n | median | p99 | throughput | notes |\n"
              "|---|---:|---:|---:|---:|---|\n");
}

inline std::string fmt_time(double ns) {
  char buf[32];
  if (ns < 1e3)
    std::snprintf(buf, sizeof buf, "%.0f ns", ns);
  else if (ns < 1e6)
    std::snprintf(buf, sizeof buf, "%.1f µs", ns / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.2f ms", ns / 1e6);
  return buf;
}

/// One table row; `throughput` is items per second (0 = not shown).
inline void print_row(const std::string& name, const summary& s, double throughput,
                      const std::string& unit, const std::string& notes) {
  char tp[48] = "";
  if (throughput > 0)
    std::snprintf(tp, sizeof tp, "%.0f %s/s", throughput, unit.c_str());
  // Throughput-only rows carry no latency samples: "-" rather than "0 ns".
  bool timed = s.median_ns > 0 || s.p99_ns > 0;
  std::printf("| %s | %zu | %s | %s | %s | %s |\n", name.c_str(), s.n,
              timed ? fmt_time(s.median_ns).c_str() : "-", timed ? fmt_time(s.p99_ns).c_str() : "-",
              tp, notes.c_str());
  std::fflush(stdout);
}

} // namespace shoal::bench
