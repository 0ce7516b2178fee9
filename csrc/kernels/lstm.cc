// LSTM (gates i f g o), with optional projection (LSTMP) and cell clipping.
//   c' = f * c + i * g (clipped),  h' = o * tanh(c'),  r' = W_hr h' (projection; r' is state)
// Forward stores the gate activations [rows, 4H] (and h' before projection) for backward.
#include "families.h"

namespace fusedrnn {
namespace detail {

size_t lstm_reserve_size(const RnnDesc& d) {
  const size_t rows = static_cast<size_t>(d.steps) * static_cast<size_t>(d.batch);
  const size_t h = static_cast<size_t>(d.hidden_size);
  return rows * 4 * h + (d.proj_size > 0 ? rows * h : 0);
}

namespace {

template <typename T>
struct Clip {
  bool on;
  T lo, hi;
  bool nan_to_lo;
  explicit Clip(const RnnDesc& d)
      : on(d.clip), lo(T(d.clip_min)), hi(T(d.clip_max)), nan_to_lo(d.clip_nan) {}
  // NaN fails both comparisons and so passes through unless nan_to_lo.
  T apply(T c) const {
    c = c < lo ? lo : c;
    c = c > hi ? hi : c;
    return nan_to_lo && c != c ? lo : c;
  }
  // Gradient of the clip: 1 inside [lo, hi], 0 where the value was clipped (or NaN).
  bool passes(T c) const { return c >= lo && c <= hi; }
};

// One step, B rows: g holds the pre-activations without bias on entry; with store it gets
// the activations i f g o back for backward.
template <typename T>
void forward_rows(int64_t B, int64_t H, T* __restrict g, const T* __restrict bias,
                  const T* __restrict c_prev, T* __restrict c_out, T* __restrict h_out,
                  int64_t ld_h, const Clip<T>& clip, bool store) {
  for (int64_t k = 0; k < B; ++k) {
    T* gk = g + k * 4 * H;
    const T* cp = c_prev + k * H;
    T* co = c_out + k * H;
    T* ho = h_out + k * ld_h;
    for (int64_t j = 0; j < H; ++j) {
      const T i = sigmoid(gk[j] + bias[j]);
      const T f = sigmoid(gk[H + j] + bias[H + j]);
      const T c_hat = tanh_(gk[2 * H + j] + bias[2 * H + j]);
      const T o = sigmoid(gk[3 * H + j] + bias[3 * H + j]);
      T c = f * cp[j] + i * c_hat;
      if (clip.on) c = clip.apply(c);
      co[j] = c;
      ho[j] = o * tanh_(c);
      if (store) {
        gk[j] = i;
        gk[H + j] = f;
        gk[2 * H + j] = c_hat;
        gk[3 * H + j] = o;
      }
    }
  }
}

// One step backward, B rows. dh: gradient w.r.t. h' (before projection); dc: gradient w.r.t.
// c' on entry, w.r.t. c on exit. dg gets the pre-activation gradients.
template <typename T>
void backward_rows(int64_t B, int64_t H, const T* __restrict act, const T* __restrict c_now,
                   const T* __restrict c_prev, const T* __restrict dh, T* __restrict dc,
                   T* __restrict dg, const Clip<T>& clip) {
  for (int64_t k = 0; k < B; ++k) {
    const T* a = act + k * 4 * H;
    const T* cn = c_now + k * H;
    const T* cp = c_prev + k * H;
    const T* dhk = dh + k * H;
    T* dck = dc + k * H;
    T* dgk = dg + k * 4 * H;
    for (int64_t j = 0; j < H; ++j) {
      const T i = a[j], f = a[H + j], c_hat = a[2 * H + j], o = a[3 * H + j];
      const T tc = tanh_(cn[j]);
      // A clipped cell passes no gradient; selecting (not multiplying by 0) keeps a NaN
      // previous cell that clip_nan absorbed from leaking back in as 0 * NaN.
      const bool through = !clip.on || clip.passes(f * cp[j] + i * c_hat);
      const T dcv = through ? dck[j] + dhk[j] * o * (T(1) - tc * tc) : T(0);
      dck[j] = dcv * f;
      dgk[j] = dcv * c_hat * i * (T(1) - i);
      dgk[H + j] = through ? dcv * cp[j] * f * (T(1) - f) : T(0);
      dgk[2 * H + j] = dcv * i * (T(1) - c_hat * c_hat);
      dgk[3 * H + j] = dhk[j] * tc * o * (T(1) - o);
    }
  }
}

}  // namespace

template <typename T>
void lstm_forward(const FwdArgs<T>& a) {
  const RnnDesc& d = a.desc;
  const Plan& p = a.plan;
  const int64_t C = d.input_size, H = d.hidden_size, P = d.out_size(), G = 4 * H;
  const int64_t TN = d.steps * d.batch;
  const bool proj = d.proj_size > 0, store = a.extra != nullptr;
  const Clip<T> clip(d);

  std::vector<T> scratch(G + (store ? 0 : p.rows * G) + (proj && !store ? d.batch * H : 0));
  T* bias = scratch.data();
  for (int64_t j = 0; j < G; ++j) bias[j] = a.w.b_ih[j] + a.w.b_hh[j];
  T* gates = store ? a.extra : bias + G;
  T* hraw = proj ? (store ? a.extra + TN * G : bias + G + p.rows * G) : nullptr;

  gemm<T>(false, true, p.rows, G, C, T(1), a.xp, C, a.w.w_ih, C, T(0), gates, G);
  for (int64_t t = 0; t < p.steps; ++t) {
    const int64_t B = p.batch[t], off = p.offset[t];
    const T* h_prev = t == 0 ? a.h0 : a.hp + p.offset[t - 1] * P;
    const T* c_prev = t == 0 ? a.c0 : a.cp + p.offset[t - 1] * H;
    T* g = gates + off * G;
    gemm<T>(false, true, B, G, P, T(1), h_prev, P, a.w.w_hh, P, T(1), g, G);
    if (proj) {
      T* hr = store ? hraw + off * H : hraw;
      forward_rows(B, H, g, bias, c_prev, a.cp + off * H, hr, H, clip, store);
      gemm<T>(false, true, B, P, H, T(1), hr, H, a.w.w_hr, H, T(0), a.hp + off * P, P);
    } else {
      forward_rows(B, H, g, bias, c_prev, a.cp + off * H, a.hp + off * P, P, clip, store);
    }
  }
}

template <typename T>
void lstm_backward(const BwdArgs<T>& a) {
  const RnnDesc& d = a.desc;
  const Plan& p = a.plan;
  const int64_t H = d.hidden_size, P = d.out_size(), G = 4 * H;
  const int64_t TN = d.steps * d.batch;
  const bool proj = d.proj_size > 0;
  const Clip<T> clip(d);
  const T* act = a.extra;
  const T* hraw = proj ? a.extra + TN * G : nullptr;

  // With projection: dr packed over all steps (for dW_hr) and dh' for one step.
  std::vector<T> scratch(proj ? p.rows * P + d.batch * H : 0);
  T* dr = scratch.data();
  T* dh_raw = proj ? dr + p.rows * P : nullptr;

  for (int64_t t = p.steps - 1; t >= 0; --t) {
    const int64_t B = p.batch[t], off = p.offset[t];
    // Gradient w.r.t. this step's output state: recurrent part (in a.dh) + upstream dy.
    T* dstate = proj ? dr + off * P : a.dh;
    for (int64_t k = 0; k < B * P; ++k)
      dstate[k] = a.dh[k] + (a.dyp ? a.dyp[off * P + k] : T(0));
    const T* dh = a.dh;
    if (proj) {
      gemm<T>(false, false, B, H, P, T(1), dstate, P, a.w.w_hr, H, T(0), dh_raw, H);
      dh = dh_raw;
    }
    const T* c_prev = t == 0 ? a.c0 : a.cp + p.offset[t - 1] * H;
    backward_rows(B, H, act + off * G, a.cp + off * H, c_prev, dh, a.dc, a.dgx + off * G, clip);
    gemm<T>(false, false, B, P, G, T(1), a.dgx + off * G, G, a.w.w_hh, P, T(0), a.dh, P);
  }

  if (a.dw_hh) gemm<T>(true, false, G, P, p.rows, T(1), a.dgx, G, a.hprev, P, T(0), a.dw_hh, P);
  if (a.db_hh) column_sums(a.dgx, p.rows, G, G, a.db_hh);
  if (proj && a.dw_hr) gemm<T>(true, false, P, H, p.rows, T(1), dr, P, hraw, H, T(0), a.dw_hr, H);
}

template void lstm_forward<float>(const FwdArgs<float>&);
template void lstm_forward<double>(const FwdArgs<double>&);
template void lstm_backward<float>(const BwdArgs<float>&);
template void lstm_backward<double>(const BwdArgs<double>&);

}  // namespace detail
}  // namespace fusedrnn
