#include "kernels/parallel.hpp"

#include <algorithm>
#include <limits>

namespace shoal::kernels {

namespace {

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

/// Polls `done()` with `pause` for up to `spin`, then sleeps on `word`
/// (std::atomic::wait, a futex on Linux) until `done()`; `word` must change
/// (and be notified) whenever `done()` may turn true.
template <class Done>
void spin_then_wait(const std::atomic<uint32_t>& word, std::chrono::microseconds spin,
                    Done done) noexcept {
  using clock = std::chrono::steady_clock;
  if (done())
    return;
  if (spin.count() > 0) {
    auto until = clock::now() + spin;
    for (unsigned i = 1;; ++i) {
      cpu_relax();
      if (done())
        return;
      if (i % 64 == 0 && clock::now() >= until)
        break;
    }
  }
  for (;;) {
    uint32_t seen = word.load(std::memory_order_acquire);
    if (done())
      return;
    word.wait(seen, std::memory_order_acquire);
  }
}

/// A segment of a job with more than 2^32-1 tasks (see worker_pool::run).
struct segment {
  task_fn fn;
  void* ctx;
  size_t base;
  static void call(void* s, size_t task) {
    auto* seg = static_cast<segment*>(s);
    seg->fn(seg->ctx, seg->base + task);
  }
};

} // namespace

void serial_pool::run(size_t n_tasks, task_fn fn, void* ctx) {
  for (size_t i = 0; i < n_tasks; ++i)
    fn(ctx, i);
}

worker_pool::worker_pool(size_t n_threads, std::chrono::microseconds spin) : spin_(spin) {
  if (n_threads == 0)
    n_threads = std::max(1u, std::thread::hardware_concurrency());
  workers_.reserve(n_threads - 1);
  try {
    for (size_t i = 1; i < n_threads; ++i)
      workers_.emplace_back([this] { worker_main(); });
  } catch (...) {
    stop_.store(true);
    generation_.fetch_add(1);
    generation_.notify_all();
    for (auto& t : workers_)
      t.join();
    throw;
  }
}

worker_pool::~worker_pool() {
  stop_.store(true, std::memory_order_seq_cst);
  generation_.fetch_add(1, std::memory_order_seq_cst);
  generation_.notify_all();
  for (auto& t : workers_)
    t.join();
}

void worker_pool::run(size_t n_tasks, task_fn fn, void* ctx) {
  if (n_tasks == 0)
    return;
  // Serial fallback: no workers, a single task, or the pool is already
  // running a job (nested call from a task, or another thread's job).
  if (workers_.empty() || n_tasks == 1 || busy_.exchange(true, std::memory_order_acquire)) {
    for (size_t i = 0; i < n_tasks; ++i)
      fn(ctx, i);
    return;
  }
  constexpr size_t max_job = std::numeric_limits<uint32_t>::max() - 1024;
  if (n_tasks <= max_job) {
    run_job(static_cast<uint32_t>(n_tasks), fn, ctx);
  } else {
    for (size_t base = 0; base < n_tasks; base += max_job) {
      segment seg{fn, ctx, base};
      run_job(static_cast<uint32_t>(std::min(max_job, n_tasks - base)), &segment::call, &seg);
    }
  }
  busy_.store(false, std::memory_order_release);
}

bool worker_pool::claim(uint32_t id, uint32_t n_tasks, uint32_t& task) noexcept {
  uint64_t s = claim_.load(std::memory_order_relaxed);
  for (;;) {
    if (static_cast<uint32_t>(s >> 32) != id || static_cast<uint32_t>(s) >= n_tasks)
      return false;
    if (claim_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel,
                                     std::memory_order_relaxed)) {
      task = static_cast<uint32_t>(s);
      return true;
    }
  }
}

void worker_pool::run_job(uint32_t n_tasks, task_fn fn, void* ctx) {
  // Workers that joined the previous job (closed by the previous run) may
  // still be reading its fields: wait until they left. The Dekker pair
  // in_flight_ / claim_ (both seq_cst) guarantees a worker either saw that
  // job closed or is counted here. Usually they left long ago: waiting here
  // rather than at the end of the previous run spares each run a round trip
  // to the workers' cache lines.
  if (in_flight_.load(std::memory_order_seq_cst) != 0)
    spin_then_wait(in_flight_, spin_,
                   [&] { return in_flight_.load(std::memory_order_acquire) == 0; });

  // Publish: the seq_cst store of claim_ releases the job fields.
  uint32_t id = ++job_id_;
  if (id == 0)
    id = ++job_id_;
  fn_ = fn;
  ctx_ = ctx;
  n_tasks_ = n_tasks;
  done_.store(0, std::memory_order_relaxed);
  claim_.store(uint64_t{id} << 32, std::memory_order_seq_cst);
  generation_.fetch_add(1, std::memory_order_seq_cst);
  generation_.notify_all(); // a syscall only if some worker sleeps

  // Work alongside the workers. The owner may fetch_add: the job stays open
  // until it closes it below, and the low word cannot overflow into the id
  // (at most one increment per participant past n_tasks).
  uint32_t mine = 0;
  for (;;) {
    auto task = static_cast<uint32_t>(claim_.fetch_add(1, std::memory_order_acq_rel));
    if (task >= n_tasks)
      break;
    fn(ctx, task);
    ++mine;
  }
  if (mine != 0 && done_.fetch_add(mine, std::memory_order_acq_rel) + mine == n_tasks) {
    // every task done
  } else {
    spin_then_wait(done_, spin_, [&] { return done_.load(std::memory_order_acquire) == n_tasks; });
  }

  // Close the job: every task is done; a worker still in flight finds no
  // task to claim (the next run waits for it to leave before reusing the
  // job fields).
  claim_.store(0, std::memory_order_seq_cst);
}

void worker_pool::worker_main() {
  // Not a load here: a thread may first run after jobs (or even the
  // destructor's stop) were published; generation 0 is the one before them.
  uint32_t seen = 0;
  for (;;) {
    spin_then_wait(generation_, spin_,
                   [&] { return generation_.load(std::memory_order_acquire) != seen; });
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load(std::memory_order_acquire))
      return;

    in_flight_.fetch_add(1, std::memory_order_seq_cst);
    uint64_t s = claim_.load(std::memory_order_seq_cst);
    auto id = static_cast<uint32_t>(s >> 32);
    if (id != 0) {
      task_fn fn = fn_;
      void* ctx = ctx_;
      uint32_t n = n_tasks_;
      uint32_t task;
      while (claim(id, n, task)) {
        fn(ctx, task);
        if (done_.fetch_add(1, std::memory_order_acq_rel) + 1 == n)
          done_.notify_one();
      }
    }
    if (in_flight_.fetch_sub(1, std::memory_order_seq_cst) == 1)
      in_flight_.notify_one();
  }
}

index_range split_range(size_t n, size_t n_chunks, size_t i, size_t align) noexcept {
  size_t units = (n + align - 1) / align;
  size_t b = units * i / n_chunks * align;
  size_t e = units * (i + 1) / n_chunks * align;
  return {std::min(b, n), std::min(e, n)};
}

size_t chunk_count(size_t n, size_t n_threads, size_t min_chunk, size_t per_thread) noexcept {
  size_t want = std::max<size_t>(1, n_threads) * std::max<size_t>(1, per_thread);
  size_t most = n / std::max<size_t>(1, min_chunk);
  return std::max<size_t>(1, std::min(want, most));
}

} // namespace shoal::kernels
