// GEMM for the kernels: OpenBLAS (scipy-openblas32) on the calling thread, and big_gemm, which
// splits a large product across fusedrnn's threads.
#include <cblas.h>

#include "common.h"
#include "parallel.h"

namespace fusedrnn {
namespace detail {

namespace {

// The CBLAS routines of one dtype.
template <typename T>
struct Blas;
template <>
struct Blas<float> {
  static constexpr auto gemm = scipy_cblas_sgemm;
  static constexpr auto gemv = scipy_cblas_sgemv;
};
template <>
struct Blas<double> {
  static constexpr auto gemm = scipy_cblas_dgemm;
  static constexpr auto gemv = scipy_cblas_dgemv;
};

}  // namespace

template <typename T>
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda,
          const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {  // OpenBLAS may return early without applying beta.
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == T(0) ? T(0) : beta * c[i * ldc + j];
    return;
  }
  if (m == 1) {
    // One row (a cell at batch 1): GEMV, which streams the matrix once; OpenBLAS's GEMM
    // would pack it first. (c may hold garbage, NaN included: with beta 0, clear it rather
    // than trust 0 * NaN.)
    if (beta == T(0)) std::fill(c, c + n, T(0));
    Blas<T>::gemv(CblasRowMajor, tb ? CblasNoTrans : CblasTrans, tb ? n : k, tb ? k : n, alpha,
                  b, ldb, a, ta ? lda : 1, beta, c, 1);
    return;
  }
  Blas<T>::gemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m,
                n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

template <typename T>
void big_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
              int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  // Below ~4M multiply-adds (a few tens of microseconds on one core) waking the threads costs
  // more than it saves (measured on the steps of cells at batch 16, H = 256).
  const int threads = m * n * k < (int64_t{1} << 22) ? 1 : loop_threads();
  parallel_run(threads, [&](int tid, int nt, Barrier&) {
    int64_t lo, hi;
    if (m >= n) {
      split(m, tid, nt, 16, &lo, &hi);
      gemm<T>(ta, tb, hi - lo, n, k, alpha, ta ? a + lo : a + lo * lda, lda, b, ldb, beta,
              c + lo * ldc, ldc);
    } else {
      split(n, tid, nt, 16, &lo, &hi);
      gemm<T>(ta, tb, m, hi - lo, k, alpha, a, lda, tb ? b + lo * ldb : b + lo, ldb, beta, c + lo,
              ldc);
    }
  });
}

#define FUSEDRNN_INSTANTIATE(T)                                                                \
  template void gemm<T>(bool, bool, int64_t, int64_t, int64_t, T, const T*, int64_t, const T*, \
                        int64_t, T, T*, int64_t);                                              \
  template void big_gemm<T>(bool, bool, int64_t, int64_t, int64_t, T, const T*, int64_t,       \
                            const T*, int64_t, T, T*, int64_t);
FUSEDRNN_INSTANTIATE(float)
FUSEDRNN_INSTANTIATE(double)
#undef FUSEDRNN_INSTANTIATE

}  // namespace detail
}  // namespace fusedrnn
