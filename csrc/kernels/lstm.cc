// LSTM (gates i f g o), with optional projection (LSTMP) and cell clipping.
//   c' = f * c + i * g (clipped),  h' = o * tanh(c'),  r' = W_hr h' (projection; r' is state)
// Forward stores the gate activations [rows, 4H] (and h' before projection) for backward; for
// the i f o gates what GateAct::keep makes of them (the sigmoid, or hard_sigmoid's y).
#include "families.h"
#include "panel.h"
#include "skinny.h"

namespace fusedrnn {
namespace detail {
namespace FUSEDRNN_ISA {

size_t lstm_reserve_size(const RnnDesc& d) {
  const size_t rows = static_cast<size_t>(d.steps) * static_cast<size_t>(d.batch);
  const size_t h = static_cast<size_t>(d.hidden_size);
  return rows * 4 * h + (d.proj_size > 0 ? rows * h : 0);
}

namespace {

// The cell update for units [j, j + m) of one row, from the product acc (i f g o), plus the
// row gx of the input projection (pre-activations without bias) unless acc includes it. With
// act, the activations go there for backward.
template <typename T, typename M>
inline void cell_forward(const Vec<T>* acc, const T* gx, T* act, int64_t H, int64_t j, M m,
                         const T* bias, const T* c_prev, T* c_out, T* h_out,
                         const Clip<T>& clip, const GateAct<T>& gate) {
  const auto pre = [&](int g) {
    const Vec<T> v = acc[g] + load(bias + g * H + j, m);
    return gx ? v + load(gx + g * H + j, m) : v;
  };
  const Vec<T> si = gate.keep(pre(0)), sf = gate.keep(pre(1));
  const Vec<T> c_hat = vtanh(pre(2)), so = gate.keep(pre(3));
  const Vec<T> i = gate.value(si), f = gate.value(sf), o = gate.value(so);
  Vec<T> c = f * load(c_prev + j, m) + i * c_hat;
  if (clip.on) c = clip.apply(c);
  store(c_out + j, c, m);
  store(h_out + j, o * vtanh(c), m);
  if (act) {
    store(act + j, si, m);
    store(act + H + j, sf, m);
    store(act + 2 * H + j, c_hat, m);
    store(act + 3 * H + j, so, m);
  }
}

// One step backward, B rows. dh: gradient w.r.t. h' (before projection); dc: gradient w.r.t.
// c' on entry, w.r.t. c on exit. dg gets the pre-activation gradients. With i f g o the
// activated gates (act) and c' = f * c + i * g, h' = o * tanh(c'):
//   d sigmoid(v) = sigmoid(v) * (1 - sigmoid(v)),  d tanh(v) = 1 - tanh(v)^2
//   (hard_sigmoid: 0.2 or 0, see GateAct; sigma' below is the gate activation's derivative)
//   dc' = dc' (from step t+1) + dh' * o * (1 - tanh(c')^2)
//   dc  = dc' * f
//   d(pre i) = dc' * g * sigma'_i         d(pre f) = dc' * c * sigma'_f
//   d(pre g) = dc' * i * (1 - g^2)        d(pre o) = dh' * tanh(c') * sigma'_o
// With clipping, d clip(c') / dc' = 1 inside [clip_min, clip_max] and 0 outside.
template <typename T>
void backward_rows(int64_t B, int64_t H, int64_t u0, int64_t u1, const T* act, const T* c_now,
                   const T* c_prev, const T* dh, T* dc, T* dg, const Clip<T>& clip,
                   const GateAct<T>& gate) {
  const Vec<T> zero = {};
  for (int64_t k = 0; k < B; ++k) {
    const T* a = act + k * 4 * H;
    T* dgk = dg + k * 4 * H;
    for_lanes<T>(u0, u1, [&](int64_t j, auto m) {
      const Vec<T> si = load(a + j, m), sf = load(a + H + j, m);
      const Vec<T> c_hat = load(a + 2 * H + j, m), so = load(a + 3 * H + j, m);
      const Vec<T> i = gate.value(si), f = gate.value(sf), o = gate.value(so);
      const Vec<T> cp = load(c_prev + k * H + j, m), dhv = load(dh + k * H + j, m);
      const Vec<T> tc = vtanh(load(c_now + k * H + j, m));
      Vec<T> dcv = load(dc + k * H + j, m) + dhv * o * (T(1) - tc * tc);
      Vec<T> df = gate.times_slope(dcv * cp, sf);
      if (clip.on) {
        // A clipped cell passes no gradient; selecting (not multiplying by 0) keeps a NaN
        // previous cell that clip_nan absorbed from leaking back in as 0 * NaN.
        const Vec<T> pre = f * cp + i * c_hat;
        const auto through = (pre >= clip.lo) & (pre <= clip.hi);
        dcv = through ? dcv : zero;
        df = through ? df : zero;
      }
      store(dc + k * H + j, dcv * f, m);
      store(dgk + j, gate.times_slope(dcv * c_hat, si), m);
      store(dgk + H + j, df, m);
      store(dgk + 2 * H + j, dcv * i * (T(1) - c_hat * c_hat), m);
      store(dgk + 3 * H + j, gate.times_slope(dhv * tc, so), m);
    });
  }
}

}  // namespace

template <typename T>
void lstm_forward(const FwdArgs<T>& a) {
  const RnnDesc& d = a.desc;
  const Plan& p = a.plan;
  constexpr int L = kLanes<T>;
  const int64_t C = d.input_size, H = d.hidden_size, P = d.out_size(), G = 4 * H;
  const int64_t TN = d.steps * d.batch;
  const bool proj = d.proj_size > 0, keep = a.extra != nullptr;
  const Clip<T> clip(d);
  const GateAct<T> gate(d);
  const int64_t unit_panels = unit_blocks<T>(H), proj_panels = unit_blocks<T>(P);
  const int threads = threads_for(p.steps ? p.batch[0] : 0, p.rows, H, G * P);
  // Small weights: the input product joins the recurrent one, [x_t | h] @ [W_ih | W_hh]^T per
  // step, so the input pre-activations never go through memory (fuse_bytes says how small).
  // Larger ones keep a single input product over all steps.
  // One step (a cell): the weights are used once, so packing them would not pay; the general
  // GEMM computes the gates and the cell update runs on them.
  const bool direct = p.steps == 1;
  const int64_t fused_bytes = packed_gates_size<T>(H, C + P, 4) * static_cast<int64_t>(sizeof(T));
  const bool fuse_input =
      !direct && p.steps > 0 && fused_bytes <= fuse_bytes(p.batch[0]) * threads;
  const int64_t K = fuse_input ? C + P : P;

  // Scratch: the summed biases; the gate activations (if kept, in the reserve) or the input
  // products (if not fused); h' before projection (kept in the reserve for backward, else one
  // step's); the packed W_ih | W_hh and W_hr panels.
  const bool need_gates = keep || !fuse_input;
  const int64_t w_size = direct ? 0 : packed_gates_size<T>(H, K, 4);
  const int64_t w_hr_size = proj && !direct ? packed_gates_size<T>(P, H, 1) : 0;
  T *bias, *gates, *hraw, *w, *w_hr;
  Workspace<T> scratch;
  scratch.add(&bias, G)
      .add(&gates, keep || !need_gates ? 0 : p.rows * G)
      .add(&hraw, proj && !keep ? d.batch * H : 0)
      .add(&w, w_size)
      .add(&w_hr, w_hr_size)
      .allocate();
  if (keep) gates = a.extra;
  if (keep && proj) hraw = a.extra + TN * G;
  for (int64_t j = 0; j < G; ++j) bias[j] = a.w.b_ih[j] + a.w.b_hh[j];

  if (!fuse_input)
    product_nt<T>(p.rows, G, C, a.xp, C, a.w.w_ih, C, false, gates, G);
  if (direct) {
    const int64_t B = p.batch[0];
    product_nt<T>(B, G, P, a.h0, P, a.w.w_hh, P, true, gates, G);
    const Vec<T> none[4] = {};
    T* h_out = proj ? hraw : a.hp;
    for (int64_t r = 0; r < B; ++r)
      for_lanes<T>(0, H, [&](int64_t j, auto m) {
        cell_forward<T>(none, gates + r * G, keep ? gates + r * G : nullptr, H, j, m, bias,
                        a.c0 + r * H, a.cp + r * H, h_out + r * (proj ? H : P), clip, gate);
      });
    if (proj) product_nt<T>(B, P, H, hraw, H, a.w.w_hr, H, false, a.hp, P);
    return;
  }
  const bool by_rows = split_by_rows(p, threads, (w_size + w_hr_size) * sizeof(T));
  parallel_run(threads, [&](int tid, int n, Barrier& barrier) {
    // Each thread packs its share of the panels: units [u0, u1) and projection columns
    // [q0, q1), in blocks of L. Split by units, it then uses only those.
    int64_t u0, u1, q0, q1;
    split(unit_panels, tid, n, 1, &u0, &u1);
    split(proj_panels, tid, n, 1, &q0, &q1);
    if (fuse_input) pack_gates(a.w.w_ih, H, C, 4, C, u0, u1, w, 0, K);
    pack_gates(a.w.w_hh, H, P, 4, P, u0, u1, w, K - P, K);
    if (proj) pack_gates(a.w.w_hr, P, H, 1, H, q0, q1, w_hr);
    StepSplit rows_of;
    if (by_rows) {
      barrier.wait();  // each thread uses every panel
      rows_of = rows_for(p, tid, n);
      u0 = q0 = 0;
      u1 = unit_panels;
      q1 = proj_panels;
    }
    for (int64_t t = 0; t < p.steps; ++t) {
      const int64_t B = p.batch[t], off = p.offset[t];
      const int64_t lo = rows_of.lo(B), hi = rows_of.hi(B);
      const T* h_prev = t == 0 ? a.h0 : a.hp + p.offset[t - 1] * P;
      const T* c_prev = t == 0 ? a.c0 : a.cp + p.offset[t - 1] * H;
      T* h_out = proj ? (keep ? hraw + off * H : hraw) : a.hp + off * P;
      const int64_t ld_h = proj ? H : P;
      const Rows<T> rows = fuse_input ? Rows<T>{a.xp + off * C, C, C, h_prev, P, P}
                                      : Rows<T>{h_prev, P, P};
      panel_product<T, 4>(hi - lo, rows.offset(lo), w, u0, u1,
                          [&](int64_t b, int64_t i, const Vec<T>* acc) {
        const int64_t j = b * L, r = lo + i;
        T* g = gates ? gates + (off + r) * G : nullptr;
        const T* cp = c_prev + r * H;
        T* co = a.cp + (off + r) * H;
        T* ho = h_out + r * ld_h;
        at_block<T>(j, H, [&](auto m) {
          cell_forward<T>(acc, fuse_input ? nullptr : g, keep ? g : nullptr, H, j, m, bias, cp,
                          co, ho, clip, gate);
        });
      });
      if (proj) {
        if (!by_rows) barrier.wait();  // the projection reads every unit of h
        panel_product<T, 1>(hi - lo, H, h_out + lo * H, H, w_hr, q0, q1,
                            [&](int64_t b, int64_t i, const Vec<T>* acc) {
          at_block<T>(b * L, P, [&](auto m) {
            store(a.hp + (off + lo + i) * P + b * L, acc[0], m);
          });
        });
      }
      if (!by_rows) barrier.wait();
    }
  });
}

template <typename T, int V>
void lstm_backward_panels(const BwdArgs<T>& a) {
  const RnnDesc& d = a.desc;
  const Plan& p = a.plan;
  const int64_t H = d.hidden_size, P = d.out_size(), G = 4 * H;
  const int64_t TN = d.steps * d.batch;
  const bool proj = d.proj_size > 0;
  const Clip<T> clip(d);
  const GateAct<T> gate(d);
  const T* act = a.extra;
  const T* hraw = proj ? a.extra + TN * G : nullptr;

  // Packed weights for dh = dG @ W_hh (and dh' = dr @ W_hr), in panels of W columns.
  const int64_t W = V * kLanes<T>;
  const int64_t col_panels = column_blocks<T>(P, V), unit_panels = column_blocks<T>(H, V);
  const int64_t w_hh_size = packed_columns_size<T>(G, P, V);
  const int64_t w_hr_size = proj ? packed_columns_size<T>(P, H, V) : 0;
  // With projection: dr packed over all steps (for dW_hr) and dh' for one step.
  T *w_hh, *w_hr, *dr, *dh_raw;
  Workspace<T> scratch;
  scratch.add(&w_hh, w_hh_size)
      .add(&w_hr, w_hr_size)
      .add(&dr, proj ? p.rows * P : 0)
      .add(&dh_raw, proj ? d.batch * H : 0)
      .allocate();

  const int threads = threads_for(p.steps ? p.batch[0] : 0, p.rows, H, G * P);
  const bool by_rows = split_by_rows(p, threads, (w_hh_size + w_hr_size) * sizeof(T));
  parallel_run(threads, [&](int tid, int n, Barrier& barrier) {
    // Split by columns, each thread owns panels of columns of dh ([q0, q1)) and of units
    // ([u0, u1)). Without projection the two are the same (P == H): the product a thread
    // writes into dh is what its own elementwise pass reads next step, so that needs no
    // barrier.
    int64_t qb0, qb1, q0, q1, ub0, ub1, u0, u1;
    split_panels(col_panels, W, P, tid, n, &qb0, &qb1, &q0, &q1);
    split_panels(unit_panels, W, H, tid, n, &ub0, &ub1, &u0, &u1);
    pack_columns(a.w.w_hh, G, P, V, P, qb0, qb1, w_hh);
    if (proj) pack_columns(a.w.w_hr, P, H, V, H, ub0, ub1, w_hr);
    StepSplit rows_of;
    if (by_rows) {
      barrier.wait();  // each thread uses every panel
      rows_of = rows_for(p, tid, n);
      qb0 = ub0 = q0 = u0 = 0;
      qb1 = col_panels;
      ub1 = unit_panels;
      q1 = P;
      u1 = H;
    }
    for (int64_t t = p.steps - 1; t >= 0; --t) {
      const int64_t B = p.batch[t], off = p.offset[t];
      const int64_t lo = rows_of.lo(B), hi = rows_of.hi(B);
      // Gradient w.r.t. this step's output state: recurrent part (in a.dh) + upstream dy. With
      // projection r' = W_hr h', dh' = dr' @ W_hr (and dW_hr = sum over steps dr'^T h').
      T* dstate = proj ? dr + off * P : a.dh;
      for (int64_t k = lo; k < hi; ++k)
        for (int64_t q = q0; q < q1; ++q)
          dstate[k * P + q] = a.dh[k * P + q] + (a.dyp ? a.dyp[(off + k) * P + q] : T(0));
      const T* dh = a.dh;
      if (proj) {
        if (!by_rows) barrier.wait();
        packed_gemm<T, V>(hi - lo, P, H, dstate + lo * P, P, w_hr, ub0, ub1, dh_raw + lo * H, H,
                          false);
        dh = dh_raw;
      }
      const T* c_prev = t == 0 ? a.c0 : a.cp + p.offset[t - 1] * H;
      backward_rows(hi - lo, H, u0, u1, act + (off + lo) * G, a.cp + (off + lo) * H,
                    c_prev + lo * H, dh + lo * H, a.dc + lo * H, a.dgx + (off + lo) * G, clip,
                    gate);
      if (!by_rows) barrier.wait();
      // The recurrent part for step t-1: dh = d(pre gates) @ W_hh.
      packed_gemm<T, V>(hi - lo, G, P, a.dgx + (off + lo) * G, G, w_hh, qb0, qb1, a.dh + lo * P,
                        P, false);
    }
  });

  // dW_hh = sum over steps d(pre gates)^T h_prev; db_hh = sum over rows of d(pre gates).
  if (a.dw_hh) big_gemm<T>(true, false, G, P, p.rows, T(1), a.dgx, G, a.hprev, P, T(0), a.dw_hh, P);
  if (a.db_hh) column_sums(a.dgx, p.rows, G, G, a.db_hh);
  if (proj && a.dw_hr) big_gemm<T>(true, false, P, H, p.rows, T(1), dr, P, hraw, H, T(0), a.dw_hr, H);
}

// Backward of a single step (a cell): general GEMMs, no packing (see lstm_forward).
template <typename T>
void lstm_backward_step(const BwdArgs<T>& a) {
  const RnnDesc& d = a.desc;
  const int64_t H = d.hidden_size, P = d.out_size(), G = 4 * H, B = a.plan.batch[0];
  const bool proj = d.proj_size > 0;
  const T* hraw = proj ? a.extra + d.steps * d.batch * G : nullptr;
  Buffer<T> scratch(proj ? B * (P + H) : 0);
  T* dstate = proj ? scratch.get() : a.dh;
  for (int64_t k = 0; k < B * P; ++k) dstate[k] = a.dh[k] + (a.dyp ? a.dyp[k] : T(0));
  const T* dh = a.dh;
  if (proj) {
    big_gemm<T>(false, false, B, H, P, T(1), dstate, P, a.w.w_hr, H, T(0), dstate + B * P, H);
    dh = dstate + B * P;
  }
  backward_rows(B, H, 0, H, a.extra, a.cp, a.c0, dh, a.dc, a.dgx, Clip<T>(d), GateAct<T>(d));
  big_gemm<T>(false, false, B, P, G, T(1), a.dgx, G, a.w.w_hh, P, T(0), a.dh, P);
  if (a.dw_hh) big_gemm<T>(true, false, G, P, B, T(1), a.dgx, G, a.hprev, P, T(0), a.dw_hh, P);
  if (a.db_hh) column_sums(a.dgx, B, G, G, a.db_hh);
  if (proj && a.dw_hr) big_gemm<T>(true, false, P, H, B, T(1), dstate, P, hraw, H, T(0), a.dw_hr, H);
}

template <typename T>
void lstm_backward(const BwdArgs<T>& a) {
  if (a.plan.steps == 1) {
    lstm_backward_step(a);
    return;
  }
  with_panel_width<T>(a.desc.out_size(), loop_threads(), [&](auto v) {
    lstm_backward_panels<T, decltype(v)::value>(a);
  });
}

template void lstm_forward<float>(const FwdArgs<float>&);
template void lstm_forward<double>(const FwdArgs<double>&);
template void lstm_backward<float>(const BwdArgs<float>&);
template void lstm_backward<double>(const BwdArgs<double>&);

}  // namespace FUSEDRNN_ISA
}  // namespace detail
}  // namespace fusedrnn
