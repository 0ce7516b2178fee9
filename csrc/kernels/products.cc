// The input gradient over all steps, dx = dG @ W_ih, on the packed register-tiled kernel
// (panel.h): for this shape (many rows, short sides) it beats the general GEMM, which repacks
// dG. The weight gradients (a long reduction over all steps) stay on the GEMM, whose cache
// blocking of that reduction the register tile lacks.
#include "families.h"
#include "panel.h"

namespace fusedrnn {
namespace detail {
namespace FUSEDRNN_ISA {

template <typename T>
void input_gradient(int64_t rows, int64_t GH, int64_t C, const T* dg, const T* w_ih, T* dx) {
  constexpr int V = 4;
  const int64_t panels = column_blocks<T>(C, V);
  Buffer<T> packed(packed_columns_size<T>(GH, C, V));
  pack_columns(w_ih, GH, C, V, C, 0, panels, packed.get());
  const int threads = rows * GH * C < (int64_t{1} << 22) ? 1 : loop_threads();
  parallel_run(threads, [&](int tid, int n, Barrier&) {
    int64_t r0, r1;
    split(rows, tid, n, 16, &r0, &r1);
    packed_gemm<T, V>(r1 - r0, GH, C, dg + r0 * GH, GH, packed.get(), 0, panels, dx + r0 * C, C,
                      false);
  });
}

template void input_gradient<float>(int64_t, int64_t, int64_t, const float*, const float*,
                                    float*);
template void input_gradient<double>(int64_t, int64_t, int64_t, const double*, const double*,
                                     double*);

}  // namespace FUSEDRNN_ISA
}  // namespace detail
}  // namespace fusedrnn
