// Simple RNN: h' = act(W_ih x + b_ih + W_hh h + b_hh), act = tanh or relu.
// The pre-activations are accumulated in the output rows themselves and activated in place;
// backward recovers act' from h' alone, so nothing else is stored.
#include "families.h"

namespace fusedrnn {
namespace detail {

size_t rnn_reserve_size(const RnnDesc&) { return 0; }

template <typename T>
void rnn_forward(const FwdArgs<T>& a) {
  const RnnDesc& d = a.desc;
  const Plan& p = a.plan;
  const int64_t C = d.input_size, H = d.hidden_size;
  const bool relu = d.mode == Mode::kRnnRelu;

  std::vector<T> bias(H);
  for (int64_t j = 0; j < H; ++j) bias[j] = a.w.b_ih[j] + a.w.b_hh[j];
  gemm<T>(false, true, p.rows, H, C, T(1), a.xp, C, a.w.w_ih, C, T(0), a.hp, H);
  for (int64_t t = 0; t < p.steps; ++t) {
    const int64_t B = p.batch[t], off = p.offset[t];
    const T* h_prev = t == 0 ? a.h0 : a.hp + p.offset[t - 1] * H;
    T* h = a.hp + off * H;
    gemm<T>(false, true, B, H, H, T(1), h_prev, H, a.w.w_hh, H, T(1), h, H);
    for (int64_t k = 0; k < B; ++k) {
      T* __restrict hk = h + k * H;
      const T* __restrict b = bias.data();
      if (relu) {
        for (int64_t j = 0; j < H; ++j) hk[j] = std::max(hk[j] + b[j], T(0));
      } else {
        for (int64_t j = 0; j < H; ++j) hk[j] = tanh_(hk[j] + b[j]);
      }
    }
  }
}

template <typename T>
void rnn_backward(const BwdArgs<T>& a) {
  const RnnDesc& d = a.desc;
  const Plan& p = a.plan;
  const int64_t H = d.hidden_size;
  const bool relu = d.mode == Mode::kRnnRelu;

  for (int64_t t = p.steps - 1; t >= 0; --t) {
    const int64_t B = p.batch[t], off = p.offset[t];
    for (int64_t k = 0; k < B; ++k) {
      const T* __restrict h = a.hp + (off + k) * H;
      const T* __restrict dy = a.dyp ? a.dyp + (off + k) * H : nullptr;
      const T* __restrict dh = a.dh + k * H;
      T* __restrict g = a.dgx + (off + k) * H;
      for (int64_t j = 0; j < H; ++j) {
        const T dhv = dh[j] + (dy ? dy[j] : T(0));
        g[j] = relu ? (h[j] > T(0) ? dhv : T(0)) : dhv * (T(1) - h[j] * h[j]);
      }
    }
    gemm<T>(false, false, B, H, H, T(1), a.dgx + off * H, H, a.w.w_hh, H, T(0), a.dh, H);
  }
  if (a.dw_hh) gemm<T>(true, false, H, H, p.rows, T(1), a.dgx, H, a.hprev, H, T(0), a.dw_hh, H);
  if (a.db_hh) column_sums(a.dgx, p.rows, H, H, a.db_hh);
}

template void rnn_forward<float>(const FwdArgs<float>&);
template void rnn_forward<double>(const FwdArgs<double>&);
template void rnn_backward<float>(const BwdArgs<float>&);
template void rnn_backward<double>(const BwdArgs<double>&);

}  // namespace detail
}  // namespace fusedrnn
