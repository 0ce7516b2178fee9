// What the driver and the cell families share: the packed time schedule (Plan, plan.cc) and
// the moves between it and the caller's layout, denormal flushing, GEMM (blas.cc), and the
// per-thread scratch arena with its planner (Buffer, Workspace; workspace.cc). The vector
// activations are in simd.h, the packed register-tiled products in panel.h and skinny.h.
#pragma once

#include <xmmintrin.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include "fusedrnn/rnn.h"

namespace fusedrnn {
namespace detail {

// Samples are processed sorted by length, longest first, so that the samples still running at
// step t are always the first batch[t] rows: each step's work is one dense block and the total
// work follows sum(lengths), not T * N. Row (t, k) of a "packed" array is row offset[t] + k.
// Only time_index() knows how a step maps to a position in x and y (Valid::positions: pre-
// padded batches and masks with holes).
struct Plan {
  int64_t T = 0, N = 0;
  int64_t steps = 0;           // longest length: the number of steps to run
  int64_t rows = 0;            // sum of lengths
  bool reverse = false;
  bool carry = false;          // Valid::carry
  const int32_t* positions = nullptr;  // Valid::positions
  bool identity = false;       // packed layout == [T, N] layout: no gather or scatter needed
  std::vector<int64_t> order;  // order[k]: original index of the k-th longest sample
  std::vector<int64_t> len;    // len[k] = lengths[order[k]]
  std::vector<int64_t> batch;  // batch[t]: samples running at step t (non-increasing)
  std::vector<int64_t> offset; // offset[t]: first packed row of step t; offset[steps] == rows

  Plan(const RnnDesc& desc, const Valid& valid);
  int64_t time_index(int64_t k, int64_t t) const {
    const int64_t s = reverse ? len[k] - 1 - t : t;
    return positions != nullptr ? positions[order[k] * T + s] : s;
  }
};

// Denormal numbers (|x| < 1.2e-38 in float32) make x86 arithmetic up to ~100x slower, and
// long runs over zero padding drive states and gradients into that range: the backward of an
// LSTM over 160 zero-padded steps took 4x as long. Each call therefore flushes denormal
// results and inputs to zero on the calling thread (so does every thread of parallel_run), as
// oneDNN and torch.set_flush_denormal do.
class FlushDenormals {
 public:
  static constexpr unsigned kFlushBits = 0x8040;  // MXCSR flush-to-zero | denormals-are-zero
  FlushDenormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | kFlushBits); }
  ~FlushDenormals() { _mm_setcsr(saved_); }
  FlushDenormals(const FlushDenormals&) = delete;
  FlushDenormals& operator=(const FlushDenormals&) = delete;

 private:
  unsigned saved_;
};

// Row-major C[M, N] = alpha * op(A) op(B) + beta * C, on the calling thread (OpenBLAS is kept
// single-threaded).
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
          int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc);
// The same, split across fusedrnn's threads by rows or columns of C when it is large: for the
// products over all steps (input projections, weight and input gradients).
template <typename T>
void big_gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
              int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc);

// Gathers [T, N, W] rows into the packed layout, rows ld apart in dst.
template <typename T>
void gather_rows(const Plan& plan, const T* src, int64_t width, T* dst, int64_t ld);
// Scatters packed rows into [T, N, W]; the positions a sample skips get 0.
template <typename T>
void scatter_rows(const Plan& plan, const T* src, int64_t width, T* dst);
// Forward output y: scatter_rows, or with plan.carry each skipped position gets the row of
// the sample's previous step in visiting order (0 before the first).
template <typename T>
void scatter_output(const Plan& plan, const T* src, int64_t width, T* dst);
// The adjoint of scatter_output for dy: each packed row also sums the skipped positions'
// rows that carried it.
template <typename T>
void gather_output_grad(const Plan& plan, const T* src, int64_t width, T* dst);
// [N, W] state in original sample order <-> sorted order.
template <typename T>
void gather_state(const Plan& plan, const T* src, int64_t width, T* dst);
template <typename T>
void scatter_state(const Plan& plan, const T* src, int64_t width, T* dst);
// Final state: for each sample the packed row of its last step, or init (sorted) if length 0.
template <typename T>
void gather_final(const Plan& plan, const T* packed, const T* init_sorted, int64_t width,
                  T* dst);
// prev[offset[t] + k] = (t == 0 ? init_sorted : packed step t-1)[k] for k < batch[t]; rows
// of prev are ld apart.
template <typename T>
void shift_prev(const Plan& plan, const T* packed, const T* init_sorted, int64_t width,
                T* prev, int64_t ld);
// out[j] = sum over packed rows of g[r, col0 + j], j < width.
template <typename T>
void column_sums(const T* g, int64_t rows, int64_t ld, int64_t width, T* out);

// Scratch memory for one call, from an arena per thread that keeps its pages between calls:
// fresh pages cost a page fault each, which at small sizes is more than the work itself.
// Buffers are released in reverse order of creation (they are scoped), and nothing is
// allocated inside a time loop.
class Arena {
 public:
  static Arena& local();
  void* take(size_t bytes);
  struct Mark {
    size_t chunk, used;
  };
  Mark mark() const { return {current_, chunks_.empty() ? 0 : chunks_[current_].used}; }
  void release(Mark m);

 private:
  struct Chunk {
    std::unique_ptr<char[]> data;
    size_t size, used;
  };
  std::vector<Chunk> chunks_;
  size_t current_ = 0;
};

template <typename T>
class Buffer {
 public:
  explicit Buffer(size_t n) : arena_(Arena::local()), mark_(arena_.mark()),
      data_(static_cast<T*>(arena_.take(n * sizeof(T)))) {}
  ~Buffer() { arena_.release(mark_); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  T* get() const { return data_; }
  T& operator[](size_t i) const { return data_[i]; }

 private:
  Arena& arena_;
  Arena::Mark mark_;
  T* data_;
};

// One call's scratch, planned before anything is taken: add() each piece with its element
// count (0: not needed; its pointer becomes null), then allocate() takes them from the arena
// as one Buffer, in order, which lives as long as the Workspace.
template <typename T>
class Workspace {
 public:
  Workspace& add(T** piece, size_t count) {
    pieces_.at(used_++) = {piece, count};
    total_ += count;
    return *this;
  }
  void allocate() {
    buffer_.emplace(total_);
    T* at = buffer_->get();
    for (size_t i = 0; i < used_; ++i) {
      *pieces_[i].ptr = pieces_[i].count > 0 ? at : nullptr;
      at += pieces_[i].count;
    }
  }

 private:
  struct Piece {
    T** ptr;
    size_t count;
  };
  std::array<Piece, 16> pieces_{};
  size_t used_ = 0, total_ = 0;
  std::optional<Buffer<T>> buffer_;
};

}  // namespace detail
}  // namespace fusedrnn
