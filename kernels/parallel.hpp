#pragma once
/// @file The thread pool kernels split their work over, provided by the
/// caller (kernels never start threads of their own).
///
/// Caveats first:
///  - `thread_pool::run` is a fork-join: it returns when every task has run.
///    Tasks must not throw (an exception escaping a task on a worker thread
///    ends the process, as any exception escaping a std::thread).
///  - A pool runs one job at a time. A `run` that finds the pool busy — a
///    task calling `run` on its own pool (nesting), or a second thread
///    calling while a job is in flight — runs all its tasks on the calling
///    thread instead of waiting. It never deadlocks and every task still runs
///    exactly once, but it gets no parallelism.
///  - No allocation, no std::function: a job is a plain function pointer and
///    a context pointer; `parallel_for` wraps a lambda without copying it.
///
/// `worker_pool` is the concrete pool: n-1 std::thread workers plus the
/// calling thread. Decode calls a pool hundreds to thousands of times per
/// second with jobs of tens of microseconds, so the hand-off is built for
/// latency: idle workers spin (with `pause`) for a short window after each
/// job, then sleep on a futex (std::atomic::wait); the caller starts on the
/// tasks at once and never waits for a worker that has not joined yet.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <thread>
#include <type_traits>
#include <vector>

namespace shoal::kernels {

/// A task: `fn(ctx, task)` for task in [0, n_tasks). Must not throw.
using task_fn = void (*)(void* ctx, size_t task);

/// Interface kernels split work over (rows of a matrix, heads of attention).
/// Thread-safety: `size` from any thread; `run` from any thread (see the
/// file caveats for concurrent and nested calls).
class thread_pool {
public:
  virtual ~thread_pool() = default;
  /// Threads that execute tasks during `run`, the calling thread included
  /// (>= 1). Kernels cut work into a few chunks per thread.
  virtual size_t size() const noexcept = 0;
  /// Runs fn(ctx, i) once for every i in [0, n_tasks), spread over the
  /// pool's threads in no particular order, and returns when all are done.
  /// Writes made by the tasks are visible to the caller after it returns.
  virtual void run(size_t n_tasks, task_fn fn, void* ctx) = 0;
};

/// A pool of one: runs every task on the calling thread, in order.
class serial_pool final : public thread_pool {
public:
  size_t size() const noexcept override { return 1; }
  void run(size_t n_tasks, task_fn fn, void* ctx) override;
};

/// `n_threads` - 1 worker threads plus the thread calling `run`.
///
/// Hand-off: `run` publishes the job (one 64-bit word holds the job id and
/// the next task index; tasks are claimed one at a time), wakes sleeping
/// workers, and works on the tasks itself. It returns once every task has
/// finished. A worker that wakes after all tasks are claimed finds nothing
/// to do; the caller does not wait for it (the next `run` does, if that
/// worker still reads the old job's fields, which is rare).
/// After a job, workers poll for the next one for `spin` (default 100 µs),
/// then sleep until woken. Construction starts the threads; destruction
/// wakes and joins them (it must not run concurrently with `run`).
class worker_pool final : public thread_pool {
public:
  /// @param n_threads threads taking part, the caller included; 0 means
  ///        std::thread::hardware_concurrency(). 1 = no workers (serial).
  /// @param spin how long an idle worker and a waiting caller poll before
  ///        sleeping on a futex. 0 = sleep at once (lowest CPU use when the
  ///        machine is shared; adds a wake-up of ~5-50 µs to each job).
  /// Throws std::system_error if a thread cannot be started.
  explicit worker_pool(size_t n_threads = 0,
                       std::chrono::microseconds spin = std::chrono::microseconds(100));
  ~worker_pool() override;
  worker_pool(const worker_pool&) = delete;
  worker_pool& operator=(const worker_pool&) = delete;

  size_t size() const noexcept override { return workers_.size() + 1; }
  void run(size_t n_tasks, task_fn fn, void* ctx) override;

private:
  void worker_main();
  void run_job(uint32_t n_tasks, task_fn fn, void* ctx);
  bool claim(uint32_t id, uint32_t n_tasks, uint32_t& task) noexcept;

  // The words of a hand-off share one cache line: a worker learns of a job,
  // claims a task and reports it done with the fewest line transfers.
  alignas(64) std::atomic<uint64_t> claim_{0}; // (job id << 32) | next task; id 0 = no job open
  std::atomic<uint32_t> generation_{0};        // bumped per job and at stop; workers sleep on it
  std::atomic<uint32_t> done_{0};              // tasks finished in the open job
  alignas(64) std::atomic<uint32_t> in_flight_{0}; // workers between joining and leaving a job
  alignas(64) std::atomic<bool> busy_{false};      // a `run` owns the pool
  std::atomic<bool> stop_{false};
  // The open job: written by the owning `run` while no worker is in flight,
  // read by workers that saw its id in claim_.
  task_fn fn_ = nullptr;
  void* ctx_ = nullptr;
  uint32_t n_tasks_ = 0;
  uint32_t job_id_ = 0;
  std::chrono::microseconds spin_;
  std::vector<std::thread> workers_; // last: started after everything above exists
};

/// Half-open index range [begin, end).
struct index_range {
  size_t begin = 0;
  size_t end = 0;
  size_t size() const noexcept { return end - begin; }
};

/// Part `i` of [0, n) cut into `n_chunks` near-equal parts whose boundaries
/// are multiples of `align` (except the last end, n). Parts may be empty
/// when n_chunks > ceil(n/align). @pre i < n_chunks, align >= 1.
index_range split_range(size_t n, size_t n_chunks, size_t i, size_t align = 1) noexcept;

/// How many chunks to cut n items into on a pool of `n_threads`: about
/// `per_thread` chunks per thread (dynamic claiming balances a shared,
/// noisy machine), but no chunk smaller than `min_chunk` items; at least 1.
size_t chunk_count(size_t n, size_t n_threads, size_t min_chunk, size_t per_thread = 4) noexcept;

/// Runs f(task) for task in [0, n_tasks) on `pool` (nullptr = the calling
/// thread, in order). `f` is called concurrently from several threads and
/// is not copied. Same contract as `thread_pool::run`.
template <class F>
void parallel_for(thread_pool* pool, size_t n_tasks, F&& f) {
  using fn_type = std::remove_reference_t<F>;
  if (pool == nullptr || n_tasks <= 1 || pool->size() <= 1) {
    for (size_t i = 0; i < n_tasks; ++i)
      f(i);
    return;
  }
  pool->run(
    n_tasks, [](void* ctx, size_t task) { (*static_cast<fn_type*>(ctx))(task); },
    const_cast<void*>(static_cast<const void*>(std::addressof(f))));
}

} // namespace shoal::kernels
