// Threads for the time loop. A step's work is split by hidden units (or output columns)
// across the threads of an OpenMP team (MXNet's own where MXNet is loaded; fusedrnn's own
// pool only in a forked child, see parallel.cc); the threads meet at a spinning barrier
// between the phases of a step (a step takes tens of microseconds, far less than a
// sleep/wake cycle).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>

namespace fusedrnn {
namespace detail {

// The most threads set_num_threads accepts (and OMP_NUM_THREADS gives).
constexpr int kMaxThreads = 1024;

class Barrier {
 public:
  explicit Barrier(int n) : n_(n) {}
  void wait();

 private:
  const int n_;
  std::atomic<int> count_{0};
  std::atomic<int> phase_{0};
};

// Runs body(tid, n, barrier) on n threads (the caller is tid 0) and returns when all are
// done; barrier is shared by exactly those n. While another call holds the threads (calls
// from several Python or engine threads at once), this one waits for them, so a call's
// results depend only on n. Inside a parallel body (or an OpenMP region) the body runs alone
// (n = 1).
using ParallelBody = std::function<void(int tid, int n, Barrier& barrier)>;
void parallel_run(int n, const ParallelBody& body);

// How many threads a time loop should use: up to loop_threads(), fewer when the work is too
// small to share. batch: rows of the first (largest) step; rows: all packed rows; width:
// units the product splits over; macs_per_row: multiply-adds of one row's recurrent product.
int threads_for(int64_t batch, int64_t rows, int64_t width, int64_t macs_per_row);

// Threads fusedrnn may use (set_num_threads; default OMP_NUM_THREADS, else the usable cores).
// OpenBLAS itself is kept single-threaded: big_gemm splits large products across these.
int loop_threads();

// The slice [begin, end) of [0, total) for thread tid of n, in multiples of `align` so that
// slices do not share vector lanes or cache lines.
inline void split(int64_t total, int tid, int n, int64_t align, int64_t* begin, int64_t* end) {
  const int64_t blocks = (total + align - 1) / align;
  const int64_t b0 = blocks * tid / n, b1 = blocks * (tid + 1) / n;
  *begin = b0 * align < total ? b0 * align : total;
  *end = b1 * align < total ? b1 * align : total;
}

}  // namespace detail
}  // namespace fusedrnn
