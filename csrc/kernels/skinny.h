// Products with the weights transposed, C = A @ W^T (+ C), where A has few rows: a cell's
// step or a short sequence at small batch. The weights are read in place, with dot products
// along k, four weight rows against up to four rows of A at a time, so each weight row is
// read once per call and reused from L1 for every row of A. A general GEMM packs the weights
// first, which for a few rows costs more than the product: OpenBLAS reaches 25-65 GFLOP/s at
// m = 4-16 here (numpy, H = 256), against ~170 for large m.
#pragma once

#include <algorithm>
#include <cstring>

#include "common.h"
#include "parallel.h"
#include "simd.h"

namespace fusedrnn {
namespace detail {
namespace FUSEDRNN_ISA {

// Rows of A up to which product_nt uses the in-place kernel.
constexpr int64_t kSkinnyRows = 32;

template <typename T, int N>
struct LanesOf {
  typedef T type __attribute__((vector_size(N * sizeof(T))));
};

// The sum of a vector's lanes, halving the vector at each step.
template <typename T, int N>
inline T reduce_add(typename LanesOf<T, N>::type v) {
  if constexpr (N == 2) {
    return v[0] + v[1];
  } else {
    typename LanesOf<T, N / 2>::type lo, hi;
    std::memcpy(&lo, &v, sizeof lo);
    std::memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof lo, sizeof hi);
    return reduce_add<T, N / 2>(lo + hi);
  }
}

// C[MI rows, NJ columns] (+)= A rows . W rows over k, for one block.
template <typename T, int MI, int NJ>
inline void skinny_block(int64_t k, const T* a, int64_t lda, const T* w, int64_t ldw,
                         bool accumulate, T* c, int64_t ldc) {
  constexpr int L = kLanes<T>;
  Vec<T> acc[MI][NJ] = {};
  auto step = [&](int64_t kk, auto m) {
    Vec<T> wv[NJ];
    for (int j = 0; j < NJ; ++j) wv[j] = load(w + j * ldw + kk, m);
    for (int i = 0; i < MI; ++i) {
      const Vec<T> av = load(a + i * lda + kk, m);
      for (int j = 0; j < NJ; ++j) acc[i][j] += av * wv[j];
    }
  };
  int64_t kk = 0;
  for (; kk + L <= k; kk += L) step(kk, Full{});
  if (kk < k) step(kk, k - kk);
  for (int i = 0; i < MI; ++i)
    for (int j = 0; j < NJ; ++j) {
      const T sum = reduce_add<T, L>(acc[i][j]);
      c[i * ldc + j] = accumulate ? c[i * ldc + j] + sum : sum;
    }
}

template <typename T, int NJ>
inline void skinny_rows(int64_t m, int64_t k, const T* a, int64_t lda, const T* w,
                        int64_t ldw, bool accumulate, T* c, int64_t ldc) {
  int64_t i = 0;
  for (; i + 4 <= m; i += 4)
    skinny_block<T, 4, NJ>(k, a + i * lda, lda, w, ldw, accumulate, c + i * ldc, ldc);
  const T* ar = a + i * lda;
  T* cr = c + i * ldc;
  switch (m - i) {
    case 3: skinny_block<T, 3, NJ>(k, ar, lda, w, ldw, accumulate, cr, ldc); break;
    case 2: skinny_block<T, 2, NJ>(k, ar, lda, w, ldw, accumulate, cr, ldc); break;
    case 1: skinny_block<T, 1, NJ>(k, ar, lda, w, ldw, accumulate, cr, ldc); break;
    default: break;
  }
}

// Columns [j0, j1) of C[m, n] (+)= A[m, k] @ W[n, k]^T.
template <typename T>
void skinny_columns(int64_t j0, int64_t j1, int64_t m, int64_t k, const T* a, int64_t lda,
                    const T* w, int64_t ldw, bool accumulate, T* c, int64_t ldc) {
  int64_t j = j0;
  for (; j + 4 <= j1; j += 4)
    skinny_rows<T, 4>(m, k, a, lda, w + j * ldw, ldw, accumulate, c + j, ldc);
  for (; j < j1; ++j) skinny_rows<T, 1>(m, k, a, lda, w + j * ldw, ldw, accumulate, c + j, ldc);
}

// C[m, n] = A[m, k] @ W[n, k]^T (+ C if accumulate): in place for m <= kSkinnyRows, else the
// GEMM, split across fusedrnn's threads when large.
template <typename T>
void product_nt(int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, const T* w,
                int64_t ldw, bool accumulate, T* c, int64_t ldc) {
  if (m > kSkinnyRows) {
    big_gemm<T>(false, true, m, n, k, T(1), a, lda, w, ldw, T(accumulate ? 1 : 0), c, ldc);
    return;
  }
  // Shared from ~4M multiply-adds, as big_gemm's products. A step shared by two threads reads
  // half the weights on each core (LSTM step, N = 1, H = 256, 2 MB of weights: 98 us on one
  // thread, 45 us on two, measured without MXNet), but with MXNet in the process libgomp
  // counts its engine's teams too, stops spinning between parallel regions, and each region
  // then waits for its team to wake: in a decoding loop inside MXNet (AMD EPYC, 2 cores) a
  // step took 120-330 us on two threads and 70-120 on one at H = 256, and at H = 512 too
  // two threads were slower (300-1360 us against 230-560).
  const int threads = m * n * k < (int64_t{1} << 22) ? 1 : loop_threads();
  parallel_run(threads, [&](int tid, int nt, Barrier&) {
    int64_t j0, j1;
    split(n, tid, nt, 16, &j0, &j1);
    skinny_columns(j0, j1, m, k, a, lda, w, ldw, accumulate, c, ldc);
  });
}

}  // namespace FUSEDRNN_ISA
}  // namespace detail
}  // namespace fusedrnn
