// GRU (gates r z n), both variants:
//   reset_after (MXNet, cuDNN, PyTorch): n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
//   reset before (original, Keras 2):    n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)
//   h' = (1 - z) * n + z * h
// Forward stores [r, z, n, q] per row ([rows, 4H]) where q = W_hn h + b_hn (reset_after) or
// q = r * h (reset before); the input projection is computed into the first 3H columns of
// the same rows, so training needs no other buffer.
#include "families.h"

namespace fusedrnn {
namespace detail {

size_t gru_reserve_size(const RnnDesc& d) {
  return static_cast<size_t>(d.steps) * static_cast<size_t>(d.batch) * 4 *
         static_cast<size_t>(d.hidden_size);
}

template <typename T>
void gru_forward(const FwdArgs<T>& a) {
  const RnnDesc& d = a.desc;
  const Plan& p = a.plan;
  const int64_t C = d.input_size, H = d.hidden_size, G = 3 * H, S = 4 * H;
  const bool store = a.extra != nullptr;
  const T* b_ih = a.w.b_ih;
  const T* b_hh = a.w.b_hh;

  std::vector<T> scratch(d.batch * G + (store ? 0 : p.rows * S));
  T* gh = scratch.data();  // recurrent projection of one step
  T* rows = store ? a.extra : gh + d.batch * G;

  gemm<T>(false, true, p.rows, G, C, T(1), a.xp, C, a.w.w_ih, C, T(0), rows, S);
  for (int64_t t = 0; t < p.steps; ++t) {
    const int64_t B = p.batch[t], off = p.offset[t];
    const T* h_prev = t == 0 ? a.h0 : a.hp + p.offset[t - 1] * H;
    T* s = rows + off * S;
    T* h_out = a.hp + off * H;
    if (d.reset_after) {
      gemm<T>(false, true, B, G, H, T(1), h_prev, H, a.w.w_hh, H, T(0), gh, G);
      for (int64_t k = 0; k < B; ++k) {
        T* __restrict sk = s + k * S;
        const T* __restrict ghk = gh + k * G;
        const T* __restrict hp = h_prev + k * H;
        T* __restrict ho = h_out + k * H;
        for (int64_t j = 0; j < H; ++j) {
          const T r = sigmoid(sk[j] + b_ih[j] + ghk[j] + b_hh[j]);
          const T z = sigmoid(sk[H + j] + b_ih[H + j] + ghk[H + j] + b_hh[H + j]);
          const T q = ghk[2 * H + j] + b_hh[2 * H + j];
          const T n = tanh_(sk[2 * H + j] + b_ih[2 * H + j] + r * q);
          ho[j] = (T(1) - z) * n + z * hp[j];
          sk[j] = r;
          sk[H + j] = z;
          sk[2 * H + j] = n;
          sk[3 * H + j] = q;
        }
      }
    } else {
      gemm<T>(false, true, B, 2 * H, H, T(1), h_prev, H, a.w.w_hh, H, T(0), gh, G);
      for (int64_t k = 0; k < B; ++k) {
        T* __restrict sk = s + k * S;
        const T* __restrict ghk = gh + k * G;
        const T* __restrict hp = h_prev + k * H;
        for (int64_t j = 0; j < H; ++j) {
          const T r = sigmoid(sk[j] + b_ih[j] + ghk[j] + b_hh[j]);
          sk[H + j] = sigmoid(sk[H + j] + b_ih[H + j] + ghk[H + j] + b_hh[H + j]);
          sk[j] = r;
          sk[3 * H + j] = r * hp[j];
        }
      }
      // W_hn (r * h), reading r * h straight from the stored rows.
      gemm<T>(false, true, B, H, H, T(1), s + 3 * H, S, a.w.w_hh + 2 * H * H, H, T(0),
              gh + 2 * H, G);
      for (int64_t k = 0; k < B; ++k) {
        T* __restrict sk = s + k * S;
        const T* __restrict ghk = gh + k * G;
        const T* __restrict hp = h_prev + k * H;
        T* __restrict ho = h_out + k * H;
        for (int64_t j = 0; j < H; ++j) {
          const T z = sk[H + j];
          const T n = tanh_(sk[2 * H + j] + b_ih[2 * H + j] + ghk[2 * H + j] + b_hh[2 * H + j]);
          ho[j] = (T(1) - z) * n + z * hp[j];
          sk[2 * H + j] = n;
        }
      }
    }
  }
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
  std::vector<T> scratch(d.reset_after ? p.rows * G : d.batch * H);
  T* dgh = d.reset_after ? scratch.data() : dgx;
  T* drh = scratch.data();

  for (int64_t t = p.steps - 1; t >= 0; --t) {
    const int64_t B = p.batch[t], off = p.offset[t];
    const T* h_prev = t == 0 ? a.h0 : a.hp + p.offset[t - 1] * H;
    const T* s = stored + off * S;
    T* gx = dgx + off * G;
    for (int64_t k = 0; k < B; ++k) {
      const T* __restrict sk = s + k * S;
      const T* __restrict hp = h_prev + k * H;
      const T* __restrict dy = a.dyp ? a.dyp + (off + k) * H : nullptr;
      T* __restrict dh = a.dh + k * H;
      T* __restrict gxk = gx + k * G;
      T* __restrict ghk = dgh + (off + k) * G;
      for (int64_t j = 0; j < H; ++j) {
        const T r = sk[j], z = sk[H + j], n = sk[2 * H + j], q = sk[3 * H + j];
        const T dhv = dh[j] + (dy ? dy[j] : T(0));
        const T dn = dhv * (T(1) - z) * (T(1) - n * n);
        gxk[H + j] = dhv * (hp[j] - n) * z * (T(1) - z);
        gxk[2 * H + j] = dn;
        dh[j] = dhv * z;
        if (d.reset_after) {
          gxk[j] = dn * q * r * (T(1) - r);
          ghk[j] = gxk[j];
          ghk[H + j] = gxk[H + j];
          ghk[2 * H + j] = dn * r;
        }
      }
    }
    if (d.reset_after) {
      gemm<T>(false, false, B, H, G, T(1), dgh + off * G, G, a.w.w_hh, H, T(1), a.dh, H);
      continue;
    }
    gemm<T>(false, false, B, H, H, T(1), gx + 2 * H, G, a.w.w_hh + 2 * H * H, H, T(0), drh, H);
    for (int64_t k = 0; k < B; ++k) {
      const T* __restrict sk = s + k * S;
      const T* __restrict hp = h_prev + k * H;
      const T* __restrict dq = drh + k * H;
      T* __restrict dh = a.dh + k * H;
      T* __restrict gxk = gx + k * G;
      for (int64_t j = 0; j < H; ++j) {
        const T r = sk[j];
        gxk[j] = dq[j] * hp[j] * r * (T(1) - r);
        dh[j] += dq[j] * r;
      }
    }
    gemm<T>(false, false, B, H, 2 * H, T(1), gx, G, a.w.w_hh, H, T(1), a.dh, H);
  }

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

}  // namespace detail
}  // namespace fusedrnn
