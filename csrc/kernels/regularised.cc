// Regularised recurrences (rnn.h's Masks): zoneout, the variational state mask and Keras'
// per-gate dropout masks, for every mode, forward and backward. A path of its own, so that
// calls without masks run the families' code unchanged. Each step multiplies the state the
// cell sees by W_hh packed once per call (panel.h; per gate where the gate masks differ), runs
// the cell's elementwise pass and zoneout; the products over all steps (input projection,
// input and weight gradients) are single GEMMs, as in the families.
//
// Packed rows follow Plan: row (t, k) is sample order[k] at step t, and row k of every
// sample-wise mask is sorted to match, so row k of any step reads row k of the sorted mask.
#include "families.h"
#include "panel.h"
#include "skinny.h"

namespace fusedrnn {
namespace detail {
namespace FUSEDRNN_ISA {

namespace {

// Per packed row, what a regularised forward keeps (the reserve in training): the zoned
// states h and c, the cell's new output h' (out) and cell c' (c_new), the zoned output track
// y, the gate activations as the families store them (LSTM i f g o; GRU r z n q) and, with a
// projection, LSTM's h before it. Without a zoneout mask a zoned array is the new one (h is
// out, y is out, c_new is c).
template <typename T>
struct Tracks {
  T *h, *out, *y, *c, *c_new, *act, *hraw;
};

int64_t track_width(const RnnDesc& d) {
  const int64_t H = d.hidden_size, P = d.out_size();
  switch (d.mode) {
    case Mode::kLstm: return 3 * P + 6 * H + (d.proj_size > 0 ? H : 0);
    case Mode::kGru: return 3 * P + 4 * H;
    default: return 3 * P;
  }
}

// The tracks in `base`, `capacity` rows each (the reserve: T * N, whatever the lengths); T
// may be const (backward reads them).
template <typename T, typename M>
Tracks<T> tracks(const RnnDesc& d, const M& masks, T* base, int64_t capacity) {
  const int64_t H = d.hidden_size, P = d.out_size();
  const auto take = [&](int64_t width) {
    T* at = base;
    base += capacity * width;
    return at;
  };
  Tracks<T> t{};
  t.h = take(P);
  t.out = take(P);
  t.y = take(P);
  if (d.mode == Mode::kLstm) {
    t.c = take(H);
    t.c_new = take(H);
    t.act = take(4 * H);
    if (d.proj_size > 0) t.hraw = take(H);
  } else if (d.mode == Mode::kGru) {
    t.act = take(4 * H);
  }
  if (masks.zoneout_h == nullptr) t.h = t.out;
  if (masks.zoneout_y == nullptr) t.y = t.out;
  if (masks.zoneout_c == nullptr) t.c_new = t.c;
  return t;
}

// The masks in the packed layout: zoneout per packed row, the others per sorted sample.
template <typename T>
struct PackedMasks {
  T *zoneout_h = nullptr, *zoneout_c = nullptr, *zoneout_y = nullptr;  // [rows, width]
  T *state_mask = nullptr;                                             // [N, P]
  T *input_gate_masks = nullptr, *recurrent_gate_masks = nullptr;      // [G, N, C or P]

  void plan(const RnnDesc& d, const Plan& p, const Masks<T>& m, Workspace<T>* ws) {
    const int64_t N = d.batch, C = d.input_size, H = d.hidden_size, P = d.out_size();
    const int64_t G = gate_count(d.mode);
    ws->add(&zoneout_h, m.zoneout_h ? p.rows * P : 0)
        .add(&zoneout_c, m.zoneout_c ? p.rows * H : 0)
        .add(&zoneout_y, m.zoneout_y ? p.rows * P : 0)
        .add(&state_mask, m.state_mask ? N * P : 0)
        .add(&input_gate_masks, m.input_gate_masks ? G * N * C : 0)
        .add(&recurrent_gate_masks, m.recurrent_gate_masks ? G * N * P : 0);
  }
  void fill(const RnnDesc& d, const Plan& p, const Masks<T>& m) const {
    const int64_t N = d.batch, C = d.input_size, H = d.hidden_size, P = d.out_size();
    if (zoneout_h) gather_rows(p, m.zoneout_h, P, zoneout_h, P);
    if (zoneout_c) gather_rows(p, m.zoneout_c, H, zoneout_c, H);
    if (zoneout_y) gather_rows(p, m.zoneout_y, P, zoneout_y, P);
    if (state_mask) gather_state(p, m.state_mask, P, state_mask);
    for (int64_t g = 0; g < gate_count(d.mode); ++g) {
      if (input_gate_masks)
        gather_state(p, m.input_gate_masks + g * N * C, C, input_gate_masks + g * N * C);
      if (recurrent_gate_masks)
        gather_state(p, m.recurrent_gate_masks + g * N * P, P,
                     recurrent_gate_masks + g * N * P);
    }
  }
};

// dst[r] = src[r] * mask[k] for the packed rows r = (t, k) of all steps (width elements;
// src rows ld apart).
template <typename T>
void mask_rows(const Plan& p, const T* src, int64_t ld, int64_t width, const T* mask, T* dst) {
  for (int64_t t = 0; t < p.steps; ++t)
    for (int64_t k = 0; k < p.batch[t]; ++k) {
      const int64_t r = p.offset[t] + k;
      for (int64_t j = 0; j < width; ++j)
        dst[r * width + j] = src[r * ld + j] * mask[k * width + j];
    }
}

// dst[k] = src[k] * mask[k] for the first B rows (width elements).
template <typename T>
void mask_batch(int64_t B, int64_t width, const T* src, const T* mask, T* dst) {
  for (int64_t i = 0; i < B * width; ++i) dst[i] = src[i] * mask[i];
}

// A matrix M [K, N] packed for the per-step products a @ M (pack_columns' layout, panels of
// kV vectors of columns), run on the calling thread.
constexpr int kV = 4;

template <typename T>
struct Packed {
  const T* panels = nullptr;
  int64_t K = 0, N = 0;
  // c [rows, N] (=, or += with accumulate) a [rows, K] @ M.
  void times(int64_t rows, const T* a, int64_t lda, T* c, int64_t ldc, bool accumulate) const {
    packed_gemm<T, kV>(rows, K, N, a, lda, panels, 0, column_blocks<T>(N, kV), c, ldc,
                       accumulate);
  }
};

// Packs M = src [K, N] (rows ld apart), or with transpose M = src^T (src [N, K]), at *at,
// which then moves past it.
template <typename T>
Packed<T> pack(const T* src, int64_t K, int64_t N, int64_t ld, bool transpose, T** at) {
  const int64_t width = kV * kLanes<T>;
  T* out = *at;
  for (int64_t b = 0; b < column_blocks<T>(N, kV); ++b)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t c = 0; c < width; ++c) {
        const int64_t n = b * width + c;
        *out++ = n >= N ? T(0) : transpose ? src[n * ld + k] : src[k * ld + n];
      }
  const Packed<T> packed{*at, K, N};
  *at += packed_columns_size<T>(K, N, kV);
  return packed;
}

// The per-step products with W_hh for its first `gates` gates: all at once, or gate by gate
// where the recurrent gate masks differ. Forward multiplies by W_hh^T, backward by W_hh.
template <typename T>
class StepWeights {
 public:
  StepWeights(const T* w_hh, int64_t H, int64_t N, int64_t P, int gates, bool per_gate,
              bool transpose)
      : H_(H), N_(N), P_(P), gates_(per_gate ? gates : 1),
        panels_(gates_ * block_size(per_gate ? H : gates * H, P, transpose)) {
    T* at = panels_.get();
    const int64_t rows = per_gate ? H : gates * H;  // of W_hh in each packed block
    for (int g = 0; g < gates_; ++g)
      packed_[g] = transpose ? pack(w_hh + g * H * P, P, rows, P, true, &at)
                             : pack(w_hh + g * H * P, rows, P, P, false, &at);
  }

  // gh [B, GH] columns [0, gates * H) from h [B, P] (what the cell sees): per gate
  // (h * masks[g]) W_hh[g]^T, or h W_hh^T without masks.
  void forward(int64_t B, const T* h, const T* masks, T* scratch, T* gh, int64_t GH) const {
    if (masks == nullptr) {
      packed_[0].times(B, h, P_, gh, GH, false);
      return;
    }
    for (int g = 0; g < gates_; ++g) {
      mask_batch(B, P_, h, masks + g * N_ * P_, scratch);
      packed_[g].times(B, scratch, P_, gh + g * H_, GH, false);
    }
  }

  // dh [B, P] += per gate (dg[g] W_hh[g]) * masks[g], or dg W_hh without masks.
  void backward(int64_t B, const T* dg, int64_t ld, const T* masks, T* scratch, T* dh) const {
    if (masks == nullptr) {
      packed_[0].times(B, dg, ld, dh, P_, true);
      return;
    }
    for (int g = 0; g < gates_; ++g) {
      packed_[g].times(B, dg + g * H_, ld, scratch, P_, false);
      const T* m = masks + g * N_ * P_;
      for (int64_t i = 0; i < B * P_; ++i) dh[i] += scratch[i] * m[i];
    }
  }

 private:
  // Elements of one packed block of `rows` rows of W_hh.
  static int64_t block_size(int64_t rows, int64_t P, bool transpose) {
    return transpose ? packed_columns_size<T>(P, rows, kV) : packed_columns_size<T>(rows, P, kV);
  }

  int64_t H_, N_, P_;
  int gates_;  // packed blocks: the gates one by one, or 1 for all together
  Buffer<T> panels_;
  Packed<T> packed_[4];
};

// Threads for a time loop whose weights (`weights` elements in all) every thread reads at
// every step: samples are independent, so with enough of them each thread runs its own rows
// through all steps with no barrier (StepSplit::by_rows); else one thread.
template <typename T>
int row_threads(const Plan& p, int64_t H, int64_t weights) {
  const int threads = threads_for(p.steps ? p.batch[0] : 0, p.rows, H, weights);
  return split_by_rows(p, threads, weights * static_cast<int64_t>(sizeof(T))) ? threads : 1;
}

// Which masks a call has, one bit each: the reserve's last element records forward's, so
// that a backward given other masks (whose tracks lie elsewhere) throws instead of reading
// the wrong ones.
template <typename T>
int mask_bits(const Masks<T>& m) {
  const void* given[] = {m.zoneout_h, m.zoneout_c, m.zoneout_y, m.state_mask,
                         m.input_gate_masks, m.recurrent_gate_masks};
  int bits = 0;
  for (int i = 0; i < 6; ++i) bits |= given[i] != nullptr ? 1 << i : 0;
  return bits;
}

}  // namespace

size_t regularised_reserve_size(const RnnDesc& d) {
  return static_cast<size_t>(d.steps) * static_cast<size_t>(d.batch) *
             static_cast<size_t>(track_width(d)) + 1;
}

template <typename T>
void regularised_forward(const RegFwdArgs<T>& a) {
  const RnnDesc& d = a.desc;
  const Plan& p = a.plan;
  const int64_t N = d.batch, C = d.input_size, H = d.hidden_size, P = d.out_size();
  const int G = gate_count(d.mode);
  const int64_t GH = G * H, S = 4 * H;
  const bool lstm = d.mode == Mode::kLstm, gru = d.mode == Mode::kGru;
  const bool relu = d.mode == Mode::kRnnRelu, proj = d.proj_size > 0;
  const GateAct<T> gate(d);
  const Clip<T> clip(d);

  PackedMasks<T> pm;
  Workspace<T> masks_ws;
  pm.plan(d, p, a.masks, &masks_ws);
  masks_ws.allocate();
  pm.fill(d, p, a.masks);

  // Scratch: packed x, sorted initial states, the input projection of all steps, one step's
  // recurrent products, the state the cell sees and a masked copy of it, the summed biases,
  // and (inference) the tracks.
  T *xp, *h0s, *c0s, *gx, *gh, *seen, *masked, *bias, *own;
  Workspace<T> ws;
  ws.add(&xp, p.rows * C)
      .add(&h0s, N * P)
      .add(&c0s, lstm ? N * H : 0)
      .add(&gx, p.rows * GH)
      .add(&gh, N * GH)
      .add(&seen, pm.state_mask ? N * P : 0)
      .add(&masked, N * P)
      .add(&bias, GH)
      .add(&own, a.reserve ? 0 : p.rows * track_width(d))
      .allocate();
  const Tracks<T> tr = a.reserve ? tracks(d, a.masks, a.reserve, d.steps * N)
                                 : tracks(d, a.masks, own, p.rows);
  if (a.reserve) a.reserve[d.steps * N * track_width(d)] = T(mask_bits(a.masks));
  gather_rows(p, a.x, C, xp, C);
  gather_state(p, a.h0, P, h0s);
  if (lstm) gather_state(p, a.c0, H, c0s);
  for (int64_t j = 0; j < GH; ++j) bias[j] = a.w.b_ih[j] + a.w.b_hh[j];

  // The input projection of all steps, per gate on masked copies of x with input masks.
  if (pm.input_gate_masks == nullptr) {
    product_nt<T>(p.rows, GH, C, xp, C, a.w.w_ih, C, false, gx, GH);
  } else {
    Buffer<T> xm(p.rows * C);
    for (int g = 0; g < G; ++g) {
      mask_rows(p, xp, C, C, pm.input_gate_masks + g * N * C, xm.get());
      product_nt<T>(p.rows, H, C, xm.get(), C, a.w.w_ih + g * H * C, C, false, gx + g * H, GH);
    }
  }

  const T* rec = pm.recurrent_gate_masks;
  const T* bi = a.w.b_ih;
  const T* bh = a.w.b_hh;
  // GRU reset before: n's recurrent term needs r first (W_hn, below).
  const int direct_gates = gru && !d.reset_after ? 2 : G;
  const StepWeights<T> w_hh(a.w.w_hh, H, N, P, direct_gates, rec != nullptr, true);
  Buffer<T> w_hn_hr(packed_columns_size<T>(H, H, kV) +
                    (proj ? packed_columns_size<T>(H, P, kV) : 0));
  T* at = w_hn_hr.get();
  const Packed<T> w_hn = gru && !d.reset_after
                             ? pack(a.w.w_hh + 2 * H * H, H, H, H, true, &at) : Packed<T>{};
  const Packed<T> w_hr = proj ? pack(a.w.w_hr, H, P, H, true, &at) : Packed<T>{};
  const int threads = row_threads<T>(p, H, GH * P + H * P);
  parallel_run(threads, [&](int tid, int n, Barrier&) {
    const StepSplit rows_of = n > 1 ? rows_for(p, tid, n) : StepSplit{};
    for (int64_t t = 0; t < p.steps; ++t) {
      const int64_t B = p.batch[t], off = p.offset[t];
      const int64_t lo = rows_of.lo(B), hi = rows_of.hi(B), rows = hi - lo;
      const T* h_prev = t == 0 ? h0s : tr.h + p.offset[t - 1] * P;
      const T* c_prev = !lstm ? nullptr : t == 0 ? c0s : tr.c + p.offset[t - 1] * H;
      const T* hs = h_prev;
      if (pm.state_mask) {
        mask_batch(rows, P, h_prev + lo * P, pm.state_mask + lo * P, seen + lo * P);
        hs = seen;
      }
      w_hh.forward(rows, hs + lo * P, rec ? rec + lo * P : nullptr, masked + lo * P, gh + lo * GH,
                   GH);

      for (int64_t k = lo; k < hi; ++k) {
        const int64_t r = off + k;
        const T* gxr = gx + r * GH;
        const T* ghr = gh + k * GH;
        T* out = tr.out + r * P;
        if (lstm) {
          T* act = tr.act + r * S;
          T* h_raw = proj ? tr.hraw + r * H : out;
          for_lanes<T>(0, H, [&](int64_t j, auto m) {
            const auto pre = [&](int g) {
              return load(gxr + g * H + j, m) + load(ghr + g * H + j, m) +
                     load(bias + g * H + j, m);
            };
            const Vec<T> si = gate.keep(pre(0)), sf = gate.keep(pre(1));
            const Vec<T> c_hat = vtanh(pre(2)), so = gate.keep(pre(3));
            Vec<T> c = gate.value(sf) * load(c_prev + k * H + j, m) + gate.value(si) * c_hat;
            if (clip.on) c = clip.apply(c);
            store(tr.c_new + r * H + j, c, m);
            store(h_raw + j, gate.value(so) * vtanh(c), m);
            store(act + j, si, m);
            store(act + H + j, sf, m);
            store(act + 2 * H + j, c_hat, m);
            store(act + 3 * H + j, so, m);
          });
        } else if (gru) {
          T* act = tr.act + r * S;
          const T* hk = hs + k * H;
          for_lanes<T>(0, H, [&](int64_t j, auto m) {
            const auto kept = [&](int g) {
              return gate.keep(load(gxr + g * H + j, m) + load(ghr + g * H + j, m) +
                               load(bi + g * H + j, m) + load(bh + g * H + j, m));
            };
            const Vec<T> sr = kept(0), sz = kept(1);
            store(act + j, sr, m);
            store(act + H + j, sz, m);
            if (d.reset_after) {
              const Vec<T> q = load(ghr + 2 * H + j, m) + load(bh + 2 * H + j, m);
              const Vec<T> n = vtanh(load(gxr + 2 * H + j, m) + load(bi + 2 * H + j, m) +
                                     gate.value(sr) * q);
              const Vec<T> z = gate.value(sz);
              store(out + j, (T(1) - z) * n + z * load(hk + j, m), m);
              store(act + 2 * H + j, n, m);
              store(act + 3 * H + j, q, m);
            } else {
              const Vec<T> h2 = rec ? load(hk + j, m) * load(rec + 2 * N * P + k * P + j, m)
                                    : load(hk + j, m);
              store(act + 3 * H + j, gate.value(sr) * h2, m);
            }
          });
        } else {
          for_lanes<T>(0, H, [&](int64_t j, auto m) {
            const Vec<T> pre = load(gxr + j, m) + load(ghr + j, m) + load(bias + j, m);
            store(out + j, relu ? (pre < T(0) ? Vec<T>{} : pre) : vtanh(pre), m);
          });
        }
      }
      if (gru && !d.reset_after) {
        // n = tanh(x_n + b_in + W_hn (r * h) + b_hn), h' = (1 - z) * n + z * h.
        w_hn.times(rows, tr.act + (off + lo) * S + 3 * H, S, gh + lo * GH + 2 * H, GH, false);
        for (int64_t k = lo; k < hi; ++k) {
          const int64_t r = off + k;
          T* act = tr.act + r * S;
          for_lanes<T>(0, H, [&](int64_t j, auto m) {
            const Vec<T> n = vtanh(load(gx + r * GH + 2 * H + j, m) + load(bi + 2 * H + j, m) +
                                   load(gh + k * GH + 2 * H + j, m) + load(bh + 2 * H + j, m));
            const Vec<T> z = gate.value(load(act + H + j, m));
            store(tr.out + r * P + j, (T(1) - z) * n + z * load(hs + k * H + j, m), m);
            store(act + 2 * H + j, n, m);
          });
        }
      }
      if (proj) w_hr.times(rows, tr.hraw + (off + lo) * H, H, tr.out + (off + lo) * P, P, false);

      // Zoneout: each unit takes the new value where its mask is set, else keeps the old one.
      const auto zoneout = [&](const T* mask, int64_t width, const T* fresh, const T* old,
                               T* dst) {
        for_lanes<T>(lo * width, hi * width, [&](int64_t i, auto m) {
          const int64_t at = off * width + i;
          const Vec<T> kept = old ? load(old + i, m) : Vec<T>{};
          store(dst + at, load(mask + at, m) != T(0) ? load(fresh + at, m) : kept, m);
        });
      };
      if (pm.zoneout_h) zoneout(pm.zoneout_h, P, tr.out, h_prev, tr.h);
      if (pm.zoneout_c) zoneout(pm.zoneout_c, H, tr.c_new, c_prev, tr.c);
      if (pm.zoneout_y)
        zoneout(pm.zoneout_y, P, tr.out, t == 0 ? nullptr : tr.y + p.offset[t - 1] * P, tr.y);
    }
  });

  scatter_output(p, tr.y, P, a.y);
  if (a.hy != nullptr) gather_final(p, tr.h, h0s, P, a.hy);
  if (lstm && a.cy != nullptr) gather_final(p, tr.c, c0s, H, a.cy);
}

template <typename T>
void regularised_backward(const RegBwdArgs<T>& a) {
  const RnnDesc& d = a.desc;
  const Plan& p = a.plan;
  const Grads<T>& g = a.grads;
  const int64_t N = d.batch, C = d.input_size, H = d.hidden_size, P = d.out_size();
  const int G = gate_count(d.mode);
  const int64_t GH = G * H, S = 4 * H;
  const bool lstm = d.mode == Mode::kLstm, gru = d.mode == Mode::kGru;
  const bool relu = d.mode == Mode::kRnnRelu, proj = d.proj_size > 0;
  const bool split_n = gru && d.reset_after;  // recurrent gradient differs from dgx in n
  const GateAct<T> gate(d);
  const Clip<T> clip(d);
  if (a.reserve[d.steps * N * track_width(d)] != T(mask_bits(a.masks)))
    throw InvalidArgument("backward needs the masks forward had (the same ones given, the "
                          "same ones absent)");
  const Tracks<const T> tr = tracks(d, a.masks, a.reserve, d.steps * N);

  PackedMasks<T> pm;
  Workspace<T> masks_ws;
  pm.plan(d, p, a.masks, &masks_ws);
  masks_ws.allocate();
  pm.fill(d, p, a.masks);
  const T* rec = pm.recurrent_gate_masks;

  // Scratch: packed x and dy, sorted initial states; the gradients w.r.t. the states h_t and
  // c_t (sorted; dhy, dcy on entry), the output track (zoneout_y), h' and c'; the pre-
  // activation gradients of the input and the recurrent products (all steps); with a
  // projection the gradients w.r.t. the projected h' (all steps).
  T *xp, *dyp, *h0s, *c0s, *dh, *dc, *dyc, *dhn, *dcn, *dgx, *dgh_own, *dr;
  Workspace<T> ws;
  ws.add(&xp, p.rows * C)
      .add(&dyp, a.dy ? p.rows * P : 0)
      .add(&h0s, N * P)
      .add(&c0s, lstm ? N * H : 0)
      .add(&dh, N * P)
      .add(&dc, lstm ? N * H : 0)
      .add(&dyc, pm.zoneout_y ? N * P : 0)
      .add(&dhn, N * P)
      .add(&dcn, lstm ? N * H : 0)
      .add(&dgx, p.rows * GH)
      .add(&dgh_own, split_n ? p.rows * GH : 0)
      .add(&dr, proj ? p.rows * P : 0)
      .allocate();
  T* dgh = split_n ? dgh_own : dgx;
  // One step's: the state the cell saw, its gradient, a product, h' before the projection
  // and (GRU reset before) the gradient w.r.t. r * h.
  T *seen, *dhs, *scratch, *dh_raw, *drh;
  Workspace<T> step_ws;
  step_ws.add(&seen, pm.state_mask ? N * P : 0)
      .add(&dhs, N * P)
      .add(&scratch, N * std::max(P, H))
      .add(&dh_raw, proj ? N * H : 0)
      .add(&drh, gru && !d.reset_after ? N * H : 0)
      .allocate();

  const int direct_gates = gru && !d.reset_after ? 2 : G;
  const StepWeights<T> w_hh(a.w.w_hh, H, N, P, direct_gates, rec != nullptr, false);
  Buffer<T> w_hn_hr(packed_columns_size<T>(H, H, kV) +
                    (proj ? packed_columns_size<T>(P, H, kV) : 0));
  T* at = w_hn_hr.get();
  const Packed<T> w_hn = gru && !d.reset_after
                             ? pack(a.w.w_hh + 2 * H * H, H, H, H, false, &at) : Packed<T>{};
  const Packed<T> w_hr = proj ? pack(a.w.w_hr, P, H, H, false, &at) : Packed<T>{};

  gather_rows(p, a.x, C, xp, C);
  if (a.dy) gather_output_grad(p, a.dy, P, dyp);
  gather_state(p, a.h0, P, h0s);
  if (lstm) gather_state(p, a.c0, H, c0s);
  gather_state(p, a.dhy, P, dh);
  if (lstm) gather_state(p, a.dcy, H, dc);
  if (dyc) std::fill(dyc, dyc + N * P, T(0));

  const int threads = row_threads<T>(p, H, GH * P + H * P);
  parallel_run(threads, [&](int tid, int n, Barrier&) {
    const StepSplit rows_of = n > 1 ? rows_for(p, tid, n) : StepSplit{};
    for (int64_t t = p.steps - 1; t >= 0; --t) {
      const int64_t B = p.batch[t], off = p.offset[t];
      const int64_t lo = rows_of.lo(B), hi = rows_of.hi(B), rows = hi - lo;
      const T* h_prev = t == 0 ? h0s : tr.h + p.offset[t - 1] * P;
      const T* c_prev = !lstm ? nullptr : t == 0 ? c0s : tr.c + p.offset[t - 1] * H;
      const T* hs = h_prev;
      if (pm.state_mask) {
        mask_batch(rows, P, h_prev + lo * P, pm.state_mask + lo * P, seen + lo * P);
        hs = seen;
      }
      // The gradient w.r.t. h' (dhn): from this step's output y_t (dy and, through zoneout_y,
      // the later steps' y_prev) and from the state h_t where zoneout takes h'. What zoneout
      // keeps from h_{t-1}, c_{t-1} and y_prev passes straight to them (dh, dc, dyc).
      const Vec<T> zero = {};
      for_lanes<T>(lo * P, hi * P, [&](int64_t i, auto m) {
        const int64_t at = off * P + i;
        Vec<T> from_y = dyp ? load(dyp + at, m) : zero;
        if (dyc) {
          from_y += load(dyc + i, m);
          const auto take = load(pm.zoneout_y + at, m) != T(0);
          store(dyc + i, take ? zero : from_y, m);
          from_y = take ? from_y : zero;
        }
        const Vec<T> dhv = load(dh + i, m);
        if (pm.zoneout_h) {
          const auto take = load(pm.zoneout_h + at, m) != T(0);
          store(dhn + i, from_y + (take ? dhv : zero), m);
          store(dh + i, take ? zero : dhv, m);
        } else {
          store(dhn + i, from_y + dhv, m);
          store(dh + i, zero, m);
        }
      });
      if (lstm) {
        for_lanes<T>(lo * H, hi * H, [&](int64_t i, auto m) {
          const Vec<T> dcv = load(dc + i, m);
          if (pm.zoneout_c) {
            const auto take = load(pm.zoneout_c + off * H + i, m) != T(0);
            store(dcn + i, take ? dcv : zero, m);
            store(dc + i, take ? zero : dcv, m);
          } else {
            store(dcn + i, dcv, m);
            store(dc + i, zero, m);
          }
        });
      }
      std::fill(dhs + lo * P, dhs + hi * P, T(0));
      const T* dh_cell = dhn;
      if (proj) {
        // r' = W_hr h': dh' = dr' W_hr (and dW_hr = sum over steps dr'^T h').
        std::copy(dhn + lo * P, dhn + hi * P, dr + (off + lo) * P);
        w_hr.times(rows, dhn + lo * P, P, dh_raw + lo * H, H, false);
        dh_cell = dh_raw;
      }

      for (int64_t k = lo; k < hi; ++k) {
        const int64_t r = off + k;
        T* dgxr = dgx + r * GH;
        if (lstm) {
          // As lstm.cc's backward_rows, from c' (c_new) and the zoned c_{t-1}.
          const T* act = tr.act + r * S;
          for_lanes<T>(0, H, [&](int64_t j, auto m) {
            const Vec<T> si = load(act + j, m), sf = load(act + H + j, m);
            const Vec<T> c_hat = load(act + 2 * H + j, m), so = load(act + 3 * H + j, m);
            const Vec<T> i = gate.value(si), f = gate.value(sf), o = gate.value(so);
            const Vec<T> cp = load(c_prev + k * H + j, m), dhv = load(dh_cell + k * H + j, m);
            const Vec<T> tc = vtanh(load(tr.c_new + r * H + j, m));
            Vec<T> dcv = load(dcn + k * H + j, m) + dhv * o * (T(1) - tc * tc);
            Vec<T> df = gate.times_slope(dcv * cp, sf);
            if (clip.on) {
              const Vec<T> pre = f * cp + i * c_hat;
              const auto through = (pre >= clip.lo) & (pre <= clip.hi);
              dcv = through ? dcv : Vec<T>{};
              df = through ? df : Vec<T>{};
            }
            store(dc + k * H + j, load(dc + k * H + j, m) + dcv * f, m);
            store(dgxr + j, gate.times_slope(dcv * c_hat, si), m);
            store(dgxr + H + j, df, m);
            store(dgxr + 2 * H + j, dcv * i * (T(1) - c_hat * c_hat), m);
            store(dgxr + 3 * H + j, gate.times_slope(dhv * tc, so), m);
          });
        } else if (gru) {
          // h' = (1 - z) * n + z * h, h what the cell saw:
          //   d(pre n) = dh' (1 - z)(1 - n^2),  d(pre z) = dh' (h - n) sigma'_z,  dh += dh' z;
          //   reset_after: d(pre r) = d(pre n) q sigma'_r, the recurrent n gradient d(pre n) r.
          const T* act = tr.act + r * S;
          T* dghr = dgh + r * GH;
          for_lanes<T>(0, H, [&](int64_t j, auto m) {
            const Vec<T> sr = load(act + j, m), sz = load(act + H + j, m);
            const Vec<T> z = gate.value(sz), n = load(act + 2 * H + j, m);
            const Vec<T> dhv = load(dhn + k * H + j, m);
            const Vec<T> dn = dhv * (T(1) - z) * (T(1) - n * n);
            const Vec<T> dz = gate.times_slope(dhv * (load(hs + k * H + j, m) - n), sz);
            store(dgxr + H + j, dz, m);
            store(dgxr + 2 * H + j, dn, m);
            store(dhs + k * H + j, dhv * z, m);
            if (d.reset_after) {
              const Vec<T> dr_ = gate.times_slope(dn * load(act + 3 * H + j, m), sr);
              store(dgxr + j, dr_, m);
              store(dghr + j, dr_, m);
              store(dghr + H + j, dz, m);
              store(dghr + 2 * H + j, dn * gate.value(sr), m);
            }
          });
        } else {
          const T* out = tr.out + r * P;
          for_lanes<T>(0, H, [&](int64_t j, auto m) {
            const Vec<T> h = load(out + j, m), dhv = load(dhn + k * H + j, m);
            store(dgxr + j, relu ? (h > T(0) ? dhv : Vec<T>{}) : dhv * (T(1) - h * h), m);
          });
        }
      }
      if (gru && !d.reset_after) {
        // n's recurrent term is W_hn q with q = r * h2 (h2 = h * recurrent mask of n):
        // dq = d(pre n) W_hn, d(pre r) = dq h2 sigma'_r, dh2 = dq r.
        w_hn.times(rows, dgx + (off + lo) * GH + 2 * H, GH, drh + lo * H, H, false);
        for (int64_t k = lo; k < hi; ++k) {
          const T* act = tr.act + (off + k) * S;
          for_lanes<T>(0, H, [&](int64_t j, auto m) {
            const Vec<T> sr = load(act + j, m), dq = load(drh + k * H + j, m);
            const Vec<T> mask = rec ? load(rec + 2 * N * P + k * P + j, m) : splat(T(1));
            const Vec<T> h2 = load(hs + k * H + j, m) * mask;
            store(dgx + (off + k) * GH + j, gate.times_slope(dq * h2, sr), m);
            store(dhs + k * H + j, load(dhs + k * H + j, m) + dq * gate.value(sr) * mask, m);
          });
        }
      }
      w_hh.backward(rows, dgh + (off + lo) * GH, GH, rec ? rec + lo * P : nullptr,
                    scratch + lo * P, dhs + lo * P);
      // h_{t-1} reaches the cell as h_{t-1} * state_mask.
      for (int64_t i = lo * P; i < hi * P; ++i)
        dh[i] += pm.state_mask ? dhs[i] * pm.state_mask[i] : dhs[i];
    }
  });

  // Gradients over all steps: dx = dG W_ih (per gate, masked, with input masks), dW_ih =
  // dG^T x (x masked per gate), dW_hh = dG_h^T h_seen (masked per gate), the biases the
  // column sums, dW_hr = dr^T h' before projection.
  const T* in = pm.input_gate_masks;
  if (g.dx != nullptr || (g.dw_ih != nullptr && in != nullptr) || g.dw_hh != nullptr) {
    Buffer<T> tmp(p.rows * std::max(C, P));
    if (g.dx != nullptr) {
      Buffer<T> dxp(p.rows * C);
      if (in == nullptr) {
        big_gemm<T>(false, false, p.rows, C, GH, T(1), dgx, GH, a.w.w_ih, C, T(0), dxp.get(), C);
      } else {
        std::fill(dxp.get(), dxp.get() + p.rows * C, T(0));
        for (int gi = 0; gi < G; ++gi) {
          big_gemm<T>(false, false, p.rows, C, H, T(1), dgx + gi * H, GH, a.w.w_ih + gi * H * C,
                      C, T(0), tmp.get(), C);
          for (int64_t t = 0; t < p.steps; ++t)
            for (int64_t k = 0; k < p.batch[t]; ++k) {
              const int64_t r = p.offset[t] + k;
              const T* m = in + gi * N * C + k * C;
              for (int64_t j = 0; j < C; ++j) dxp[r * C + j] += tmp[r * C + j] * m[j];
            }
        }
      }
      scatter_rows(p, dxp.get(), C, g.dx);
    }
    if (g.dw_ih != nullptr) {
      for (int gi = 0; gi < (in ? G : 1); ++gi) {
        const T* xs = xp;
        if (in) {
          mask_rows(p, xp, C, C, in + gi * N * C, tmp.get());
          xs = tmp.get();
        }
        const int64_t rows_w = in ? H : GH;
        big_gemm<T>(true, false, rows_w, C, p.rows, T(1), dgx + gi * H, GH, xs, C, T(0),
                    g.dw_ih + gi * H * C, C);
      }
    }
    if (g.dw_hh != nullptr) {
      Buffer<T> hprev(p.rows * P);
      shift_prev(p, tr.h, h0s, P, hprev.get(), P);
      if (pm.state_mask) mask_rows(p, hprev.get(), P, P, pm.state_mask, hprev.get());
      for (int gi = 0; gi < (rec ? direct_gates : 1); ++gi) {
        const T* hsrc = hprev.get();
        if (rec) {
          mask_rows(p, hprev.get(), P, P, rec + gi * N * P, tmp.get());
          hsrc = tmp.get();
        }
        const int64_t rows_w = rec ? H : direct_gates * H;
        big_gemm<T>(true, false, rows_w, P, p.rows, T(1), dgh + gi * H, GH, hsrc, P, T(0),
                    g.dw_hh + gi * H * P, P);
      }
      if (gru && !d.reset_after)
        big_gemm<T>(true, false, H, H, p.rows, T(1), dgx + 2 * H, GH, tr.act + 3 * H, S, T(0),
                    g.dw_hh + 2 * H * H, H);
    }
  }
  if (g.db_ih != nullptr) column_sums(dgx, p.rows, GH, GH, g.db_ih);
  if (g.db_hh != nullptr) column_sums(dgh, p.rows, GH, GH, g.db_hh);
  if (proj && g.dw_hr != nullptr)
    big_gemm<T>(true, false, P, H, p.rows, T(1), dr, P, tr.hraw, H, T(0), g.dw_hr, H);
  if (g.dh0 != nullptr) scatter_state(p, dh, P, g.dh0);
  if (lstm && g.dc0 != nullptr) scatter_state(p, dc, H, g.dc0);
}

template void regularised_forward<float>(const RegFwdArgs<float>&);
template void regularised_forward<double>(const RegFwdArgs<double>&);
template void regularised_backward<float>(const RegBwdArgs<float>&);
template void regularised_backward<double>(const RegBwdArgs<double>&);

}  // namespace FUSEDRNN_ISA
}  // namespace detail
}  // namespace fusedrnn
