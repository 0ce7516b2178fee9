// Machinery shared by the cell families: the packed time schedule, GEMM, activations.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "fusedrnn/rnn.h"

namespace fusedrnn {
namespace detail {

// Samples are processed sorted by length, longest first, so that the samples still running at
// step t are always the first batch[t] rows: each step's work is one dense block and the total
// work follows sum(lengths), not T * N. Row (t, k) of a "packed" array is row offset[t] + k.
// Only time_index() knows how a step maps to a position in x and y, so per-sample start
// offsets (pre-padded batches) can later be added there alone.
struct Plan {
  int64_t T = 0, N = 0;
  int64_t steps = 0;           // longest length: the number of steps to run
  int64_t rows = 0;            // sum of lengths
  bool reverse = false;
  bool identity = false;       // packed layout == [T, N] layout: no gather or scatter needed
  std::vector<int64_t> order;  // order[k]: original index of the k-th longest sample
  std::vector<int64_t> len;    // len[k] = lengths[order[k]]
  std::vector<int64_t> batch;  // batch[t]: samples running at step t (non-increasing)
  std::vector<int64_t> offset; // offset[t]: first packed row of step t; offset[steps] == rows

  Plan(const RnnDesc& desc, const int32_t* lengths);
  int64_t time_index(int64_t k, int64_t t) const { return reverse ? len[k] - 1 - t : t; }
};

// Row-major C[M, N] = alpha * op(A) op(B) + beta * C.
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
          int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc);

// Gathers [T, N, W] rows into the packed layout (src null: zeros).
template <typename T>
void gather_rows(const Plan& plan, const T* src, int64_t width, T* dst);
// Scatters packed rows into [T, N, W], zeroing positions past each sample's length.
template <typename T>
void scatter_rows(const Plan& plan, const T* src, int64_t width, T* dst);
// [N, W] state in original sample order <-> sorted order.
template <typename T>
void gather_state(const Plan& plan, const T* src, int64_t width, T* dst);
template <typename T>
void scatter_state(const Plan& plan, const T* src, int64_t width, T* dst);
// Final state: for each sample the packed row of its last step, or init (sorted) if length 0.
template <typename T>
void gather_final(const Plan& plan, const T* packed, const T* init_sorted, int64_t width,
                  T* dst);
// prev[offset[t] + k] = (t == 0 ? init_sorted : packed step t-1)[k] for k < batch[t].
template <typename T>
void shift_prev(const Plan& plan, const T* packed, const T* init_sorted, int64_t width,
                T* prev);
// out[j] = sum over packed rows of g[r, col0 + j], j < width.
template <typename T>
void column_sums(const T* g, int64_t rows, int64_t ld, int64_t width, T* out);

// Elementwise math. Float uses branch-free code that GCC vectorises (max error ~2 ulp
// relative to libm on the ranges the gates see); double stays on libm for the float64
// gradient checks.
inline float fast_exp(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float n = std::nearbyint(x * 1.44269504088896341f);
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  // Scale by 2^n by adding n to the exponent field; the clamp keeps the result normal.
  int32_t bits;
  std::memcpy(&bits, &p, sizeof bits);
  bits += static_cast<int32_t>(n) * (1 << 23);
  float out;
  std::memcpy(&out, &bits, sizeof out);
  return out;
}

inline float sigmoid(float x) { return 1.0f / (1.0f + fast_exp(-x)); }
inline double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
inline float tanh_(float x) {
  // tanh = 1 - 2 / (exp(2x) + 1), with an odd polynomial near 0 where that loses digits.
  const float ax = std::fabs(x);
  const float e = fast_exp(2.0f * ax);
  float t = 1.0f - 2.0f / (e + 1.0f);
  const float x2 = x * x;
  const float small = ax * (1.0f + x2 * (-0.333333333f + x2 * (0.133333333f +
                                         x2 * (-0.0539682540f + x2 * 0.0218694885f))));
  t = ax < 0.25f ? small : t;
  return std::copysign(t, x);
}
inline double tanh_(double x) { return std::tanh(x); }

}  // namespace detail
}  // namespace fusedrnn
