// GRU (gates r z n), both variants:
//   reset_after (MXNet, cuDNN, PyTorch): n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
//   reset before (original, Keras 2):    n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)
//   h' = (1 - z) * n + z * h
// Forward stores [r, z, n, q] per row ([rows, 4H]) where q = W_hn h + b_hn (reset_after) or
// q = r * h (reset before); the input projection is computed into the first 3H columns of
// the same rows, so training needs no other buffer.
#include "families.h"
#include "simd.h"

namespace fusedrnn {
namespace detail {
namespace FUSEDRNN_ISA {

size_t gru_reserve_size(const RnnDesc& d) {
  return static_cast<size_t>(d.steps) * static_cast<size_t>(d.batch) * 4 *
         static_cast<size_t>(d.hidden_size);
}

template <typename T>
void gru_forward(const FwdArgs<T>& a) {
  const RnnDesc& d = a.desc;
  const Plan& p = a.plan;
  const int64_t C = d.input_size, H = d.hidden_size, G = 3 * H, S = 4 * H;
  const bool keep = a.extra != nullptr;
  const T* bi = a.w.b_ih;
  const T* bh = a.w.b_hh;

  Buffer<T> scratch(d.batch * G + (keep ? 0 : p.rows * S));
  T* gh = scratch.get();  // recurrent projection of one step
  T* rows = keep ? a.extra : gh + d.batch * G;

  gemm<T>(false, true, p.rows, G, C, T(1), a.xp, C, a.w.w_ih, C, T(0), rows, S);
  const int threads = threads_for(p.steps ? p.batch[0] : 0, H, p.steps ? p.batch[0] * G * H : 0);
  parallel_run(threads, [&](int tid, int n, Barrier& barrier) {
    int64_t u0, u1;  // this thread's hidden units
    split(H, tid, n, kSliceAlign, &u0, &u1);
    for (int64_t t = 0; t < p.steps; ++t) {
      const int64_t B = p.batch[t], off = p.offset[t];
      const T* h_prev = t == 0 ? a.h0 : a.hp + p.offset[t - 1] * H;
      T* s = rows + off * S;
      T* h_out = a.hp + off * H;
      const int recurrent_gates = d.reset_after ? 3 : 2;
      for (int gate = 0; gate < recurrent_gates && u1 > u0; ++gate)
        gemm<T>(false, true, B, u1 - u0, H, T(1), h_prev, H, a.w.w_hh + (gate * H + u0) * H, H,
                T(0), gh + gate * H + u0, G);
      if (d.reset_after) {
        for (int64_t k = 0; k < B; ++k) {
          T* sk = s + k * S;
          const T* ghk = gh + k * G;
          for_lanes<T>(u0, u1, [&](int64_t j, auto m) {
            const Vec<T> r = vsigmoid(load(sk + j, m) + load(bi + j, m) + load(ghk + j, m) +
                                      load(bh + j, m));
            const Vec<T> z = vsigmoid(load(sk + H + j, m) + load(bi + H + j, m) +
                                      load(ghk + H + j, m) + load(bh + H + j, m));
            const Vec<T> q = load(ghk + 2 * H + j, m) + load(bh + 2 * H + j, m);
            const Vec<T> n = vtanh(load(sk + 2 * H + j, m) + load(bi + 2 * H + j, m) + r * q);
            store(h_out + k * H + j, (T(1) - z) * n + z * load(h_prev + k * H + j, m), m);
            store(sk + j, r, m);
            store(sk + H + j, z, m);
            store(sk + 2 * H + j, n, m);
            store(sk + 3 * H + j, q, m);
          });
        }
      } else {
        for (int64_t k = 0; k < B; ++k) {
          T* sk = s + k * S;
          const T* ghk = gh + k * G;
          for_lanes<T>(u0, u1, [&](int64_t j, auto m) {
            const Vec<T> r = vsigmoid(load(sk + j, m) + load(bi + j, m) + load(ghk + j, m) +
                                      load(bh + j, m));
            const Vec<T> z = vsigmoid(load(sk + H + j, m) + load(bi + H + j, m) +
                                      load(ghk + H + j, m) + load(bh + H + j, m));
            store(sk + j, r, m);
            store(sk + H + j, z, m);
            store(sk + 3 * H + j, r * load(h_prev + k * H + j, m), m);
          });
        }
        barrier.wait();  // W_hn (r * h) needs every unit of r * h
        if (u1 > u0)
          gemm<T>(false, true, B, u1 - u0, H, T(1), s + 3 * H, S, a.w.w_hh + (2 * H + u0) * H, H,
                  T(0), gh + 2 * H + u0, G);
        for (int64_t k = 0; k < B; ++k) {
          T* sk = s + k * S;
          const T* ghk = gh + k * G;
          for_lanes<T>(u0, u1, [&](int64_t j, auto m) {
            const Vec<T> z = load(sk + H + j, m);
            const Vec<T> n = vtanh(load(sk + 2 * H + j, m) + load(bi + 2 * H + j, m) +
                                   load(ghk + 2 * H + j, m) + load(bh + 2 * H + j, m));
            store(h_out + k * H + j, (T(1) - z) * n + z * load(h_prev + k * H + j, m), m);
            store(sk + 2 * H + j, n, m);
          });
        }
      }
      barrier.wait();
    }
  });
}

template <typename T>
void gru_backward(const BwdArgs<T>& a) {
  const RnnDesc& d = a.desc;
  const Plan& p = a.plan;
  const int64_t H = d.hidden_size, G = 3 * H, S = 4 * H;
  const T* stored = a.extra;
  T* dgx = a.dgx;

  // reset_after: the recurrent pre-activation gradient differs from dgx in the n block
  // (scaled by r), so it gets its own packed buffer. Reset before: they are equal, and one
  // step needs dL/d(r*h).
  Buffer<T> scratch(d.reset_after ? p.rows * G : d.batch * H);
  T* dgh = d.reset_after ? scratch.get() : dgx;
  T* drh = scratch.get();
  const Vec<T> zero = {};

  const int threads = threads_for(p.steps ? p.batch[0] : 0, H, p.steps ? p.batch[0] * G * H : 0);
  parallel_run(threads, [&](int tid, int n, Barrier& barrier) {
    // Each thread's units are also its columns of dh (P == H): the recurrent product it
    // writes is what its own elementwise pass reads next step.
    int64_t u0, u1;
    split(H, tid, n, kSliceAlign, &u0, &u1);
    for (int64_t t = p.steps - 1; t >= 0; --t) {
      const int64_t B = p.batch[t], off = p.offset[t];
      const T* h_prev = t == 0 ? a.h0 : a.hp + p.offset[t - 1] * H;
      const T* s = stored + off * S;
      T* gx = dgx + off * G;
      for (int64_t k = 0; k < B; ++k) {
        const T* sk = s + k * S;
        T* dh = a.dh + k * H;
        T* gxk = gx + k * G;
        T* ghk = dgh + (off + k) * G;
        const T* dy = a.dyp ? a.dyp + (off + k) * H : nullptr;
        for_lanes<T>(u0, u1, [&](int64_t j, auto m) {
          const Vec<T> r = load(sk + j, m), z = load(sk + H + j, m);
          const Vec<T> n = load(sk + 2 * H + j, m), q = load(sk + 3 * H + j, m);
          const Vec<T> dhv = load(dh + j, m) + (dy ? load(dy + j, m) : zero);
          const Vec<T> dn = dhv * (T(1) - z) * (T(1) - n * n);
          const Vec<T> dz = dhv * (load(h_prev + k * H + j, m) - n) * z * (T(1) - z);
          store(gxk + H + j, dz, m);
          store(gxk + 2 * H + j, dn, m);
          store(dh + j, dhv * z, m);
          if (d.reset_after) {
            const Vec<T> dr = dn * q * r * (T(1) - r);
            store(gxk + j, dr, m);
            store(ghk + j, dr, m);
            store(ghk + H + j, dz, m);
            store(ghk + 2 * H + j, dn * r, m);
          }
        });
      }
      barrier.wait();
      if (d.reset_after) {
        gemm<T>(false, false, B, u1 - u0, G, T(1), dgh + off * G, G, a.w.w_hh + u0, H, T(1),
                a.dh + u0, H);
        continue;
      }
      gemm<T>(false, false, B, u1 - u0, H, T(1), gx + 2 * H, G, a.w.w_hh + 2 * H * H + u0, H,
              T(0), drh + u0, H);
      for (int64_t k = 0; k < B; ++k) {
        const T* sk = s + k * S;
        for_lanes<T>(u0, u1, [&](int64_t j, auto m) {
          const Vec<T> r = load(sk + j, m), dq = load(drh + k * H + j, m);
          store(gx + k * G + j, dq * load(h_prev + k * H + j, m) * r * (T(1) - r), m);
          store(a.dh + k * H + j, load(a.dh + k * H + j, m) + dq * r, m);
        });
      }
      barrier.wait();  // the r block of dgx, all units
      gemm<T>(false, false, B, u1 - u0, 2 * H, T(1), gx, G, a.w.w_hh + u0, H, T(1), a.dh + u0, H);
    }
  });

  if (a.dw_hh) {
    if (d.reset_after) {
      gemm<T>(true, false, G, H, p.rows, T(1), dgh, G, a.hprev, H, T(0), a.dw_hh, H);
    } else {
      gemm<T>(true, false, 2 * H, H, p.rows, T(1), dgx, G, a.hprev, H, T(0), a.dw_hh, H);
      gemm<T>(true, false, H, H, p.rows, T(1), dgx + 2 * H, G, stored + 3 * H, S, T(0),
              a.dw_hh + 2 * H * H, H);
    }
  }
  if (a.db_hh) column_sums(dgh, p.rows, G, G, a.db_hh);
}

template void gru_forward<float>(const FwdArgs<float>&);
template void gru_forward<double>(const FwdArgs<double>&);
template void gru_backward<float>(const BwdArgs<float>&);
template void gru_backward<double>(const BwdArgs<double>&);

}  // namespace FUSEDRNN_ISA
}  // namespace detail
}  // namespace fusedrnn
