// The sequence driver: plans the packed schedule, packs inputs and states, calls the cell
// family, unpacks outputs, and forms the gradients that every family shares. The arguments
// are validated here, once per call (fusedrnn/contract.h's describe() checks only the sizes
// that a binding reads from its arrays' shapes).
#include <cstdlib>

#include "families.h"
#include "parallel.h"

namespace fusedrnn {

size_t reserve_size(const RnnDesc& d, bool with_masks) {
  if (with_masks) return detail::base::regularised_reserve_size(d);
  const size_t rows = static_cast<size_t>(d.steps) * static_cast<size_t>(d.batch);
  size_t n = rows * static_cast<size_t>(d.out_size());
  switch (d.mode) {
    case Mode::kLstm:
      return n + rows * static_cast<size_t>(d.hidden_size) + detail::base::lstm_reserve_size(d);
    case Mode::kGru: return n + detail::base::gru_reserve_size(d);
    default: return n + detail::base::rnn_reserve_size(d);
  }
}

namespace detail {

// What every call sets up on its calling thread: denormals flushed, and OpenBLAS kept
// single-threaded before its first GEMM (loop_threads() sees to that). A call whose
// products are all too small to share never asks for the thread count otherwise, and
// reaches OpenBLAS with OpenBLAS's own threads, which fight MXNet's for the cores (measured:
// an LSTM layer of 50 steps at batch 1, H = 128, 15 ms a call instead of 0.5).
struct CallScope {
  CallScope() { loop_threads(); }
  FlushDenormals flush;
};

bool use_avx512() {
#if FUSEDRNN_HAVE_AVX512
  // FUSEDRNN_DISABLE_AVX512=1 forces the portable code (tests cover both paths with it).
  static const bool yes = [] {
    const char* off = std::getenv("FUSEDRNN_DISABLE_AVX512");
    return !(off != nullptr && off[0] != '\0' && off[0] != '0') &&
           __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw");
  }();
  return yes;
#else
  return false;
#endif
}

template <typename T>
void run_forward(const FwdArgs<T>& a) {
  const bool wide = use_avx512();
  switch (a.desc.mode) {
    case Mode::kLstm: wide ? avx512::lstm_forward(a) : base::lstm_forward(a); break;
    case Mode::kGru: wide ? avx512::gru_forward(a) : base::gru_forward(a); break;
    default: wide ? avx512::rnn_forward(a) : base::rnn_forward(a); break;
  }
}

template <typename T>
void run_backward(const BwdArgs<T>& a) {
  const bool wide = use_avx512();
  switch (a.desc.mode) {
    case Mode::kLstm: wide ? avx512::lstm_backward(a) : base::lstm_backward(a); break;
    case Mode::kGru: wide ? avx512::gru_backward(a) : base::gru_backward(a); break;
    default: wide ? avx512::rnn_backward(a) : base::rnn_backward(a); break;
  }
}

}  // namespace detail

using detail::Plan;

const char* instruction_set() { return detail::use_avx512() ? "avx512" : "base"; }

template <typename T>
void forward(const RnnDesc& d, const Valid& valid, const T* x, const Weights<T>& w,
             const T* h0, const T* c0, T* y, T* hy, T* cy, T* reserve) {
  validate(d, valid);
  const detail::CallScope scope;
  const Plan plan(d, valid);
  const int64_t C = d.input_size, H = d.hidden_size, P = d.out_size(), TN = d.steps * d.batch;
  const bool lstm = d.mode == Mode::kLstm;

  // Scratch: packed input, sorted initial states, and (inference) packed outputs and cells;
  // a training forward keeps outputs, cells and the family's extra in the reserve.
  const bool own_out = reserve == nullptr && !plan.identity;
  T* xpacked;
  T* h0s;
  T* c0s;
  T* hp = reserve != nullptr ? reserve : y;
  T* cp = reserve != nullptr ? reserve + TN * P : nullptr;
  T* extra = reserve != nullptr ? reserve + TN * P + (lstm ? TN * H : 0) : nullptr;
  detail::Workspace<T> ws;
  ws.add(&xpacked, plan.identity ? 0 : plan.rows * C)
      .add(&h0s, d.batch * P)
      .add(&c0s, lstm ? d.batch * H : 0);
  if (own_out) ws.add(&hp, plan.rows * P);
  if (reserve == nullptr && lstm) ws.add(&cp, plan.rows * H);
  ws.allocate();

  const T* xp = plan.identity ? x : xpacked;
  if (!plan.identity) detail::gather_rows(plan, x, C, xpacked, C);
  detail::gather_state(plan, h0, P, h0s);
  if (lstm) detail::gather_state(plan, c0, H, c0s);

  const detail::FwdArgs<T> args{d, plan, xp, w, h0s, c0s, hp, cp, extra};
  detail::run_forward(args);

  if (plan.identity) {
    if (hp != y) std::copy(hp, hp + TN * P, y);
  } else {
    detail::scatter_output(plan, hp, P, y);
  }
  if (hy != nullptr) detail::gather_final(plan, hp, h0s, P, hy);
  if (lstm && cy != nullptr) detail::gather_final(plan, cp, c0s, H, cy);
}

template <typename T>
void backward(const RnnDesc& d, const Valid& valid, const T* x, const Weights<T>& w,
              const T* h0, const T* c0, const T* reserve, const T* dy, const T* dhy,
              const T* dcy, const Grads<T>& g) {
  validate(d, valid);
  if (reserve == nullptr) throw InvalidArgument("reserve is required for backward");
  const detail::CallScope scope;
  const Plan plan(d, valid);
  const int64_t C = d.input_size, H = d.hidden_size, P = d.out_size(), TN = d.steps * d.batch;
  const int64_t GH = gate_count(d.mode) * H;
  const bool lstm = d.mode == Mode::kLstm;
  const T* hp = reserve;
  const T* cp = reserve + TN * P;
  const T* extra = cp + (lstm ? TN * H : 0);

  // LSTM and RNN share one gate gradient dG for both weights, so dW_ih, dW_hh and the bias
  // gradient come from one product, [dW_ih | dW_hh | db] = dG^T [x | h_prev | 1]; and
  // dx = dG @ W_ih.
  const bool merged = d.mode != Mode::kGru && g.dw_ih != nullptr && g.dw_hh != nullptr;
  const int64_t XH = C + P + 1;
  const bool pack = !plan.identity;
  // Scratch: the rows [x | h_prev | 1] (merged) or packed x and h_prev; packed dy; sorted
  // states and their gradients; the gate gradient; packed dx; the merged weight gradient.
  T *h0s, *xh, *xpacked, *hprev, *dypacked, *c0s, *dh, *dc, *dgx, *dxpacked, *dw;
  detail::Workspace<T> ws;
  ws.add(&h0s, d.batch * P)
      .add(&xh, merged ? plan.rows * XH : 0)
      .add(&xpacked, !merged && pack ? plan.rows * C : 0)
      .add(&hprev, merged ? 0 : plan.rows * P)
      .add(&dypacked, pack && dy ? plan.rows * P : 0)
      .add(&c0s, lstm ? d.batch * H : 0)
      .add(&dh, d.batch * P)
      .add(&dc, lstm ? d.batch * H : 0)
      .add(&dgx, plan.rows * GH)
      .add(&dxpacked, pack && g.dx ? plan.rows * C : 0)
      .add(&dw, merged ? GH * XH : 0)
      .allocate();

  detail::gather_state(plan, h0, P, h0s);
  const T* xp = x;
  int64_t ld_x = C;
  int64_t ld_h = P;
  if (merged) {
    if (pack) {
      detail::gather_rows(plan, x, C, xh, XH);
    } else {
      for (int64_t r = 0; r < plan.rows; ++r) std::copy(x + r * C, x + (r + 1) * C, xh + r * XH);
    }
    for (int64_t r = 0; r < plan.rows; ++r) xh[r * XH + C + P] = T(1);
    xp = xh;
    ld_x = ld_h = XH;
    hprev = xh + C;
  } else if (pack) {
    detail::gather_rows(plan, x, C, xpacked, C);
    xp = xpacked;
  }
  detail::shift_prev(plan, hp, h0s, P, hprev, ld_h);
  const T* dyp = dy;
  if (pack && dy != nullptr) {
    detail::gather_output_grad(plan, dy, P, dypacked);
    dyp = dypacked;
  }
  if (lstm) detail::gather_state(plan, c0, H, c0s);
  detail::gather_state(plan, dhy, P, dh);
  if (lstm) detail::gather_state(plan, dcy, H, dc);

  const detail::BwdArgs<T> args{d,     plan,  w,     h0s,    c0s,   hp,
                                hprev, cp,    extra, dyp,    dh,    dc,
                                dgx,   merged ? nullptr : g.dw_hh,  merged ? nullptr : g.db_hh,
                                g.dw_hr};
  detail::run_backward(args);

  if (g.dx != nullptr) {
    T* dxp = pack ? dxpacked : g.dx;
    if (plan.rows < 16) {  // too few rows to repay packing W_ih
      detail::big_gemm<T>(false, false, plan.rows, C, GH, T(1), dgx, GH, w.w_ih, C, T(0), dxp, C);
    } else if (detail::use_avx512()) {
      detail::avx512::input_gradient(plan.rows, GH, C, dgx, w.w_ih, dxp);
    } else {
      detail::base::input_gradient(plan.rows, GH, C, dgx, w.w_ih, dxp);
    }
    if (pack) detail::scatter_rows(plan, dxp, C, g.dx);
  }
  if (merged) {
    detail::big_gemm<T>(true, false, GH, XH, plan.rows, T(1), dgx, GH, xp, XH, T(0), dw, XH);
    for (int64_t r = 0; r < GH; ++r) {
      std::copy(dw + r * XH, dw + r * XH + C, g.dw_ih + r * C);
      std::copy(dw + r * XH + C, dw + r * XH + C + P, g.dw_hh + r * P);
      if (g.db_ih != nullptr) g.db_ih[r] = dw[r * XH + C + P];
      if (g.db_hh != nullptr) g.db_hh[r] = dw[r * XH + C + P];
    }
  } else {
    if (g.dw_ih != nullptr)
      detail::big_gemm<T>(true, false, GH, C, plan.rows, T(1), dgx, GH, xp, ld_x, T(0), g.dw_ih,
                          C);
    if (g.db_ih != nullptr) detail::column_sums(dgx, plan.rows, GH, GH, g.db_ih);
  }
  if (g.dh0 != nullptr) detail::scatter_state(plan, dh, P, g.dh0);
  if (lstm && g.dc0 != nullptr) detail::scatter_state(plan, dc, H, g.dc0);
}

namespace {

template <typename T>
void validate_masks(const RnnDesc& d, const Masks<T>& masks) {
  if (masks.zoneout_c != nullptr && d.mode != Mode::kLstm)
    throw InvalidArgument("zoneout_c is only for mode 'lstm'");
}

}  // namespace

// With masks, the regularised path (regularised.cc) runs the whole call; without, the
// families do, exactly as in the overloads above.
template <typename T>
void forward(const RnnDesc& d, const Valid& valid, const T* x, const Weights<T>& w,
             const T* h0, const T* c0, T* y, T* hy, T* cy, T* reserve, const Masks<T>& masks) {
  if (!masks.any()) return forward(d, valid, x, w, h0, c0, y, hy, cy, reserve);
  validate(d, valid);
  validate_masks(d, masks);
  const detail::CallScope scope;
  const Plan plan(d, valid);
  const detail::RegFwdArgs<T> args{d, plan, x, w, h0, c0, masks, y, hy, cy, reserve};
  if (detail::use_avx512()) {
    detail::avx512::regularised_forward(args);
  } else {
    detail::base::regularised_forward(args);
  }
}

template <typename T>
void backward(const RnnDesc& d, const Valid& valid, const T* x, const Weights<T>& w,
              const T* h0, const T* c0, const T* reserve, const T* dy, const T* dhy,
              const T* dcy, const Grads<T>& g, const Masks<T>& masks) {
  if (!masks.any()) return backward(d, valid, x, w, h0, c0, reserve, dy, dhy, dcy, g);
  validate(d, valid);
  validate_masks(d, masks);
  if (reserve == nullptr) throw InvalidArgument("reserve is required for backward");
  const detail::CallScope scope;
  const Plan plan(d, valid);
  const detail::RegBwdArgs<T> args{d, plan, x, w, h0, c0, masks, reserve, dy, dhy, dcy, g};
  if (detail::use_avx512()) {
    detail::avx512::regularised_backward(args);
  } else {
    detail::base::regularised_backward(args);
  }
}

#define FUSEDRNN_INSTANTIATE(T)                                                              \
  template void forward<T>(const RnnDesc&, const Valid&, const T*, const Weights<T>&,        \
                           const T*, const T*, T*, T*, T*, T*);                              \
  template void forward<T>(const RnnDesc&, const Valid&, const T*, const Weights<T>&,        \
                           const T*, const T*, T*, T*, T*, T*, const Masks<T>&);             \
  template void backward<T>(const RnnDesc&, const Valid&, const T*, const Weights<T>&,       \
                            const T*, const T*, const T*, const T*, const T*, const T*,      \
                            const Grads<T>&);                                                \
  template void backward<T>(const RnnDesc&, const Valid&, const T*, const Weights<T>&,       \
                            const T*, const T*, const T*, const T*, const T*, const T*,      \
                            const Grads<T>&, const Masks<T>&);
FUSEDRNN_INSTANTIATE(float)
FUSEDRNN_INSTANTIATE(double)
#undef FUSEDRNN_INSTANTIATE

}  // namespace fusedrnn
