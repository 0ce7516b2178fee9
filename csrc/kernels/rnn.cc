// Simple RNN: h' = act(W_ih x + b_ih + W_hh h + b_hh), act = tanh or relu.
// The pre-activations are accumulated in the output rows themselves and activated in place;
// backward recovers act' from h' alone, so nothing else is stored.
#include "families.h"
#include "panel.h"
#include "skinny.h"

namespace fusedrnn {
namespace detail {
namespace FUSEDRNN_ISA {

size_t rnn_reserve_size(const RnnDesc&) { return 0; }

template <typename T>
void rnn_forward(const FwdArgs<T>& a) {
  const RnnDesc& d = a.desc;
  const Plan& p = a.plan;
  constexpr int L = kLanes<T>;
  const int64_t C = d.input_size, H = d.hidden_size;
  const bool relu = d.mode == Mode::kRnnRelu;
  const int64_t panels = unit_blocks<T>(H);

  Buffer<T> scratch(H + packed_gates_size<T>(H, H, 1));
  T* bias = scratch.get();
  T* w_hh = bias + H;
  for (int64_t j = 0; j < H; ++j) bias[j] = a.w.b_ih[j] + a.w.b_hh[j];
  product_nt<T>(p.rows, H, C, a.xp, C, a.w.w_ih, C, false, a.hp, H);
  const auto activate = [&](T* h, int64_t j, auto m) {
    const Vec<T> pre = load(h + j, m) + load(bias + j, m);
    // (pre < 0, not pre > 0, selects 0: a NaN must pass through, as max(0, NaN) = NaN.)
    store(h + j, relu ? (pre < T(0) ? Vec<T>{} : pre) : vtanh(pre), m);
  };
  if (p.steps == 1) {  // one step (a cell): the weights are used once, not worth packing
    const int64_t B = p.batch[0];
    product_nt<T>(B, H, H, a.h0, H, a.w.w_hh, H, true, a.hp, H);
    for (int64_t k = 0; k < B; ++k)
      for_lanes<T>(0, H, [&](int64_t j, auto m) { activate(a.hp + k * H, j, m); });
    return;
  }
  const int threads = threads_for(p.steps ? p.batch[0] : 0, p.rows, H, H * H);
  parallel_run(threads, [&](int tid, int n, Barrier& barrier) {
    int64_t b0, b1;
    split(panels, tid, n, 1, &b0, &b1);
    pack_gates(a.w.w_hh, H, H, 1, H, b0, b1, w_hh);
    for (int64_t t = 0; t < p.steps; ++t) {
      const int64_t B = p.batch[t], off = p.offset[t];
      const T* h_prev = t == 0 ? a.h0 : a.hp + p.offset[t - 1] * H;
      T* h = a.hp + off * H;
      panel_product<T, 1>(B, H, h_prev, H, w_hh, b0, b1,
                          [&](int64_t b, int64_t k, const Vec<T>* acc) {
        const int64_t j = b * L;
        at_block<T>(j, H, [&](auto m) {
          store(h + k * H + j, acc[0] + load(h + k * H + j, m), m);
          activate(h + k * H, j, m);
        });
      });
      barrier.wait();
    }
  });
}

template <typename T, int V>
void rnn_backward_panels(const BwdArgs<T>& a) {
  const RnnDesc& d = a.desc;
  const Plan& p = a.plan;
  const int64_t W = V * kLanes<T>;
  const int64_t H = d.hidden_size;
  const bool relu = d.mode == Mode::kRnnRelu;
  const int64_t panels = column_blocks<T>(H, V);

  // d(pre h') = dh' * act'(pre), recovered from h' alone: d tanh = 1 - h'^2, d relu = [h' > 0];
  // dh = d(pre h') @ W_hh, dW_hh = sum over steps d(pre h')^T h_prev.
  Buffer<T> w_hh(packed_columns_size<T>(H, H, V));
  const int threads = threads_for(p.steps ? p.batch[0] : 0, p.rows, H, H * H);
  parallel_run(threads, [&](int tid, int n, Barrier& barrier) {
    // Each thread's units are also its columns of dh: what its product writes is what its
    // own elementwise pass reads next step.
    int64_t b0, b1, u0, u1;
    split_panels(panels, W, H, tid, n, &b0, &b1, &u0, &u1);
    pack_columns(a.w.w_hh, H, H, V, H, b0, b1, w_hh.get());
    for (int64_t t = p.steps - 1; t >= 0; --t) {
      const int64_t B = p.batch[t], off = p.offset[t];
      for (int64_t k = 0; k < B; ++k) {
        const T* dy = a.dyp ? a.dyp + (off + k) * H : nullptr;
        for_lanes<T>(u0, u1, [&](int64_t j, auto m) {
          const Vec<T> h = load(a.hp + (off + k) * H + j, m);
          const Vec<T> dhv = load(a.dh + k * H + j, m) + (dy ? load(dy + j, m) : Vec<T>{});
          store(a.dgx + (off + k) * H + j,
                relu ? (h > T(0) ? dhv : Vec<T>{}) : dhv * (T(1) - h * h), m);
        });
      }
      barrier.wait();
      packed_gemm<T, V>(B, H, H, a.dgx + off * H, H, w_hh.get(), b0, b1, a.dh, H, false);
    }
  });
  if (a.dw_hh) big_gemm<T>(true, false, H, H, p.rows, T(1), a.dgx, H, a.hprev, H, T(0), a.dw_hh, H);
  if (a.db_hh) column_sums(a.dgx, p.rows, H, H, a.db_hh);
}

template <typename T>
void rnn_backward(const BwdArgs<T>& a) {
  with_panel_width<T>(a.desc.hidden_size, loop_threads(), [&](auto v) {
    rnn_backward_panels<T, decltype(v)::value>(a);
  });
}

template void rnn_forward<float>(const FwdArgs<float>&);
template void rnn_forward<double>(const FwdArgs<double>&);
template void rnn_backward<float>(const BwdArgs<float>&);
template void rnn_backward<double>(const BwdArgs<double>&);

}  // namespace FUSEDRNN_ISA
}  // namespace detail
}  // namespace fusedrnn
