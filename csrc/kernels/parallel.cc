#include "parallel.h"

#include <cblas.h>
#include <omp.h>
#include <pthread.h>

#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common.h"
#include "fusedrnn/rnn.h"

namespace fusedrnn {
namespace detail {

namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Set on a thread while it runs a parallel body: a nested parallel_run there runs alone
// (waiting for the pool it is part of would never end).
thread_local bool t_in_body = false;

// fusedrnn's own threads, for forked children (see forked()). Worker threads sleep on a
// condition variable between calls.
class Pool {
 public:
  void run(int n, const ParallelBody& body) {
    std::lock_guard<std::mutex> busy(busy_);
    grow(n - 1);
    Barrier barrier(n);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      body_ = &body;
      barrier_ = &barrier;
      active_ = n - 1;
      remaining_ = n - 1;
      ++generation_;
    }
    wake_.notify_all();
    t_in_body = true;
    body(0, n, barrier);
    t_in_body = false;
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return remaining_ == 0; });
    body_ = nullptr;
  }

 private:
  void grow(int workers) {
    while (static_cast<int>(threads_.size()) < workers) {
      const int tid = static_cast<int>(threads_.size()) + 1;
      threads_.emplace_back([this, tid] { work(tid); });
      threads_.back().detach();
    }
  }

  void work(int tid) {
    t_in_body = true;
    _mm_setcsr(_mm_getcsr() | FlushDenormals::kFlushBits);
    int64_t seen = 0;
    for (;;) {
      const ParallelBody* body;
      Barrier* barrier;
      int n;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        if (tid > active_) continue;
        body = body_;
        barrier = barrier_;
        n = active_ + 1;
      }
      (*body)(tid, n, *barrier);
      std::lock_guard<std::mutex> lock(mutex_);
      if (--remaining_ == 0) done_.notify_one();
    }
  }

  std::mutex busy_;   // held by the call that owns the pool
  std::mutex mutex_;  // guards the fields below
  std::condition_variable wake_, done_;
  std::vector<std::thread> threads_;
  const ParallelBody* body_ = nullptr;
  Barrier* barrier_ = nullptr;
  int active_ = 0;
  int remaining_ = 0;
  int64_t generation_ = 0;
};

// Threads fusedrnn uses: OMP_NUM_THREADS if set (MXNet's and PyTorch's convention), else
// the cores this process may run on.
int default_threads() {
  if (const char* env = std::getenv("OMP_NUM_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return std::min(n, kMaxThreads);
  }
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

std::atomic<int> g_threads{0};  // 0: not set yet
std::atomic<Pool*> g_pool{nullptr};
std::atomic<bool> g_forked{false};

// Set in a child forked after fusedrnn was loaded. libgomp's team does not survive fork (a
// parallel region in the child waits for threads that do not exist), so such a child runs
// on a pool of its own instead (DataLoader workers).
const bool g_atfork_registered = [] {
  pthread_atfork(nullptr, nullptr, [] {
    g_forked.store(true);
    g_pool.store(nullptr);  // the parent's pool threads do not exist here
  });
  return true;
}();

bool forked() { return g_forked.load(std::memory_order_relaxed); }

Pool& pool() {
  static std::mutex creating;
  std::lock_guard<std::mutex> lock(creating);
  if (g_pool.load() == nullptr) g_pool.store(new Pool());
  return *g_pool.load();
}

// Runs body on an OpenMP team. In a process with MXNet this is MXNet's own team (the same
// libgomp): after each of MXNet's operators its threads spin for a while, and a second pool
// next to them would fight them for the cores (measured: an LSTM layer, 50 steps, batch 64,
// H = 128, trained 1.6x slower on 2 threads than on a pool without them).
void run_on_team(int n, const ParallelBody& body) {
  static std::mutex busy;  // one call at a time gets the team
  std::lock_guard<std::mutex> lock(busy);
  std::optional<Barrier> barrier;
#pragma omp parallel num_threads(n)
  {
    // The team's threads also run MXNet's operators: flush denormals only for this body.
    const FlushDenormals flush;
    const bool outer = t_in_body;
    t_in_body = true;
#pragma omp single
    barrier.emplace(omp_get_num_threads());
    body(omp_get_thread_num(), omp_get_num_threads(), *barrier);
    t_in_body = outer;
  }
}

}  // namespace

void Barrier::wait() {
  const int phase = phase_.load(std::memory_order_acquire);
  if (count_.fetch_add(1, std::memory_order_acq_rel) == n_ - 1) {
    count_.store(0, std::memory_order_relaxed);
    phase_.store(phase + 1, std::memory_order_release);
    return;
  }
  // A step's phases take microseconds, so spin; past ~50 us the thread we wait for is most
  // likely descheduled (more runnable threads than cores), so give it the core.
  for (int spins = 0; phase_.load(std::memory_order_acquire) == phase; ++spins) {
    if (spins < 2048) {
      cpu_relax();
    } else {
      std::this_thread::yield();
    }
  }
}

void parallel_run(int n, const ParallelBody& body) {
  // Calls from several threads at once (Python threads, MXNet's engine) wait for the threads
  // rather than run alone: the way a call splits its work changes the order of its sums, so
  // running on fewer threads than asked would make results depend on timing.
  if (n > 1 && !t_in_body && !omp_in_parallel()) {
    if (forked()) {
      pool().run(n, body);
    } else {
      run_on_team(n, body);
    }
    return;
  }
  Barrier alone(1);
  body(0, 1, alone);
}

int threads_for(int64_t batch, int64_t rows, int64_t width, int64_t macs_per_row) {
  // Below ~64k multiply-adds a step (a few microseconds) the barrier and the split products
  // cost more than the second core gains. Waking the team costs ~40 us per call, so steps of
  // up to ~256k multiply-adds share only in calls of more than ~4M in all (measured: LSTM,
  // batch 8, H = 64: 8 steps 1.8x faster on one thread, 32 steps 1.2x faster on two). Each
  // thread needs at least 16 units.
  const int64_t per_step = batch * macs_per_row;
  if (batch == 0 || per_step < (int64_t{1} << 16)) return 1;
  if (per_step < (int64_t{1} << 18) && rows * macs_per_row < (int64_t{1} << 22)) return 1;
  const int64_t by_width = std::max<int64_t>(width / 16, 1);
  return static_cast<int>(std::min<int64_t>(loop_threads(), by_width));
}

int loop_threads() {
  static const bool ready = [] {
    int expected = 0;
    g_threads.compare_exchange_strong(expected, default_threads());
    return true;
  }();
  (void)ready;
  // Every GEMM runs on the calling thread; big_gemm splits the large ones across fusedrnn's
  // threads. Idle OpenBLAS workers would spin for ~0.1 s after each threaded GEMM, on the
  // cores fusedrnn needs next. Checked on every call: anything (threadpoolctl, say) may have
  // raised it.
  if (scipy_openblas_get_num_threads() != 1) scipy_openblas_set_num_threads(1);
  return g_threads.load(std::memory_order_relaxed);
}

}  // namespace detail

void set_num_threads(int n) {
  // libgomp aborts the process when it cannot create a team this large.
  if (n > detail::kMaxThreads)
    throw InvalidArgument("n (threads) must be at most " + std::to_string(detail::kMaxThreads) +
                          "; got " + std::to_string(n));
  detail::loop_threads();
  detail::g_threads.store(n > 0 ? n : detail::default_threads(), std::memory_order_relaxed);
}

int get_num_threads() { return detail::loop_threads(); }

}  // namespace fusedrnn
