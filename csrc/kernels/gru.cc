// GRU (gates r z n), both variants:
//   reset_after (MXNet, cuDNN, PyTorch): n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
//   reset before (original, Keras 2):    n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)
//   h' = (1 - z) * n + z * h
// Forward stores [r, z, n, q] per row ([rows, 4H]) where q = W_hn h + b_hn (reset_after) or
// q = r * h (reset before), and r, z as GateAct::keep makes them (the sigmoid, or
// hard_sigmoid's y before clipping); the input projection is computed into the first 3H columns of
// the same rows, so training needs no other buffer.
#include <array>

#include "families.h"
#include "panel.h"
#include "skinny.h"

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
  constexpr int L = kLanes<T>;
  const int64_t C = d.input_size, H = d.hidden_size, G = 3 * H, S = 4 * H;
  const bool keep = a.extra != nullptr;
  const T* bi = a.w.b_ih;
  const T* bh = a.w.b_hh;
  const GateAct<T> gate(d);
  const int64_t panels = unit_blocks<T>(H);
  // One step (a cell): the weights are used once, so they go to the general GEMM unpacked.
  const bool direct = p.steps == 1;

  // Packed recurrent weights: reset_after, one product for r z n; reset before, r z first
  // and n (from r * h) after. Unpacked, the recurrent products of the step go to gh.
  T *w, *rows;
  Workspace<T> scratch;
  scratch.add(&w, direct ? d.batch * G : packed_gates_size<T>(H, H, 3))
      .add(&rows, keep ? 0 : p.rows * S)
      .allocate();
  T* w_rz = w;
  T* w_n = w + packed_gates_size<T>(H, H, 2);
  T* gh = w;
  if (keep) rows = a.extra;

  product_nt<T>(p.rows, G, C, a.xp, C, a.w.w_ih, C, false, rows, S);
  // The cell updates for units [j, j + m) of one row sk (input projection in, what backward
  // needs out), from the recurrent products acc of h (and, reset before, of r * h).
  const auto gate_kept = [&](const Vec<T>& acc, const T* sk, int g, int64_t j, auto m) {
    return gate.keep(acc + load(sk + g * H + j, m) + load(bi + g * H + j, m) +
                     load(bh + g * H + j, m));
  };
  const auto update_after = [&](const Vec<T>* acc, T* sk, const T* hp, T* ho, int64_t j,
                                auto m) {
    const Vec<T> sr = gate_kept(acc[0], sk, 0, j, m);
    const Vec<T> sz = gate_kept(acc[1], sk, 1, j, m);
    const Vec<T> r = gate.value(sr), z = gate.value(sz);
    const Vec<T> q = acc[2] + load(bh + 2 * H + j, m);
    const Vec<T> n = vtanh(load(sk + 2 * H + j, m) + load(bi + 2 * H + j, m) + r * q);
    store(ho + j, (T(1) - z) * n + z * load(hp + j, m), m);
    store(sk + j, sr, m);
    store(sk + H + j, sz, m);
    store(sk + 2 * H + j, n, m);
    store(sk + 3 * H + j, q, m);
  };
  const auto update_rz = [&](const Vec<T>* acc, T* sk, const T* hp, int64_t j, auto m) {
    const Vec<T> sr = gate_kept(acc[0], sk, 0, j, m);
    store(sk + j, sr, m);
    store(sk + H + j, gate_kept(acc[1], sk, 1, j, m), m);
    store(sk + 3 * H + j, gate.value(sr) * load(hp + j, m), m);
  };
  const auto update_n = [&](const Vec<T>* acc, T* sk, const T* hp, T* ho, int64_t j, auto m) {
    const Vec<T> z = gate.value(load(sk + H + j, m));
    const Vec<T> n = vtanh(acc[0] + load(sk + 2 * H + j, m) + load(bi + 2 * H + j, m) +
                           load(bh + 2 * H + j, m));
    store(ho + j, (T(1) - z) * n + z * load(hp + j, m), m);
    store(sk + 2 * H + j, n, m);
  };

  if (direct) {
    const int64_t B = p.batch[0];
    const auto products = [&](int64_t k, int64_t col, int count, int64_t j, auto m) {
      Vec<T> acc[3] = {};
      for (int g = 0; g < count; ++g) acc[g] = load(gh + k * G + col + g * H + j, m);
      return std::array<Vec<T>, 3>{acc[0], acc[1], acc[2]};
    };
    product_nt<T>(B, d.reset_after ? G : 2 * H, H, a.h0, H, a.w.w_hh, H, false, gh, G);
    for (int64_t k = 0; k < B; ++k)
      for_lanes<T>(0, H, [&](int64_t j, auto m) {
        const auto acc = products(k, 0, d.reset_after ? 3 : 2, j, m);
        if (d.reset_after) {
          update_after(acc.data(), rows + k * S, a.h0 + k * H, a.hp + k * H, j, m);
        } else {
          update_rz(acc.data(), rows + k * S, a.h0 + k * H, j, m);
        }
      });
    if (d.reset_after) return;
    product_nt<T>(B, H, H, rows + 3 * H, S, a.w.w_hh + 2 * H * H, H, false, gh + 2 * H, G);
    for (int64_t k = 0; k < B; ++k)
      for_lanes<T>(0, H, [&](int64_t j, auto m) {
        const auto acc = products(k, 2 * H, 1, j, m);
        update_n(acc.data(), rows + k * S, a.h0 + k * H, a.hp + k * H, j, m);
      });
    return;
  }

  const int threads = threads_for(p.steps ? p.batch[0] : 0, p.rows, H, G * H);
  parallel_run(threads, [&](int tid, int n, Barrier& barrier) {
    int64_t b0, b1;  // this thread's panels of L units
    split(panels, tid, n, 1, &b0, &b1);
    if (d.reset_after) {
      pack_gates(a.w.w_hh, H, H, 3, H, b0, b1, w_rz);
    } else {
      pack_gates(a.w.w_hh, H, H, 2, H, b0, b1, w_rz);
      pack_gates(a.w.w_hh + 2 * H * H, H, H, 1, H, b0, b1, w_n);
    }
    for (int64_t t = 0; t < p.steps; ++t) {
      const int64_t B = p.batch[t], off = p.offset[t];
      const T* h_prev = t == 0 ? a.h0 : a.hp + p.offset[t - 1] * H;
      T* s = rows + off * S;
      T* h_out = a.hp + off * H;
      if (d.reset_after) {
        panel_product<T, 3>(B, H, h_prev, H, w_rz, b0, b1,
                            [&](int64_t b, int64_t k, const Vec<T>* acc) {
          at_block<T>(b * L, H, [&](auto m) {
            update_after(acc, s + k * S, h_prev + k * H, h_out + k * H, b * L, m);
          });
        });
      } else {
        panel_product<T, 2>(B, H, h_prev, H, w_rz, b0, b1,
                            [&](int64_t b, int64_t k, const Vec<T>* acc) {
          at_block<T>(b * L, H, [&](auto m) {
            update_rz(acc, s + k * S, h_prev + k * H, b * L, m);
          });
        });
        barrier.wait();  // W_hn (r * h) needs every unit of r * h
        panel_product<T, 1>(B, H, s + 3 * H, S, w_n, b0, b1,
                            [&](int64_t b, int64_t k, const Vec<T>* acc) {
          at_block<T>(b * L, H, [&](auto m) {
            update_n(acc, s + k * S, h_prev + k * H, h_out + k * H, b * L, m);
          });
        });
      }
      barrier.wait();
    }
  });
}

template <typename T, int V>
void gru_backward_panels(const BwdArgs<T>& a) {
  const RnnDesc& d = a.desc;
  const Plan& p = a.plan;
  const int64_t W = V * kLanes<T>;
  const int64_t H = d.hidden_size, G = 3 * H, S = 4 * H;
  const T* stored = a.extra;
  T* dgx = a.dgx;
  const int64_t panels = column_blocks<T>(H, V);

  // reset_after: the recurrent pre-activation gradient differs from dgx in the n block
  // (scaled by r), so it gets its own packed buffer. Reset before: they are equal, and one
  // step needs dL/d(r*h). Packed weights: W_hh whole (reset_after), or W_hn and W_h{r,z}.
  T *w_all, *grads;
  Workspace<T> scratch;
  scratch.add(&w_all, packed_columns_size<T>(G, H, V))
      .add(&grads, d.reset_after ? p.rows * G : d.batch * H)
      .allocate();
  T* w_n = w_all;
  T* w_rz = w_all + packed_columns_size<T>(H, H, V);
  T* dgh = d.reset_after ? grads : dgx;
  T* drh = grads;
  const Vec<T> zero = {};
  const GateAct<T> gate(d);

  // With h' = (1 - z) * n + z * h and n = tanh(x_n + b_in + r * q) (reset_after):
  //   d sigmoid(v) = sigmoid(v) * (1 - sigmoid(v)),  d tanh(v) = 1 - tanh(v)^2
  //   (hard_sigmoid: 0.2 or 0, see GateAct; sigma' below is the gate activation's derivative)
  //   d(pre n) = dh' * (1 - z) * (1 - n^2)    (for W_in and, scaled by r, for W_hn: dq)
  //   d(pre z) = dh' * (h - n) * sigma'_z
  //   d(pre r) = d(pre n) * q * sigma'_r
  //   dh = dh' * z + [d(pre r), d(pre z), d(pre n) * r] @ W_hh
  // Reset before (n = tanh(x_n + b_in + W_hn (r * h) + b_hn)), with d(r*h) = d(pre n) @ W_hn:
  //   d(pre r) = d(r*h) * h * sigma'_r
  //   dh = dh' * z + d(r*h) * r + [d(pre r), d(pre z)] @ W_h{r,z}
  const int threads = threads_for(p.steps ? p.batch[0] : 0, p.rows, H, G * H);
  parallel_run(threads, [&](int tid, int n, Barrier& barrier) {
    // Each thread's units are also its columns of dh (P == H): the recurrent product it
    // writes is what its own elementwise pass reads next step.
    int64_t b0, b1, u0, u1;
    split_panels(panels, W, H, tid, n, &b0, &b1, &u0, &u1);
    if (d.reset_after) {
      pack_columns(a.w.w_hh, G, H, V, H, b0, b1, w_all);
    } else {
      pack_columns(a.w.w_hh + 2 * H * H, H, H, V, H, b0, b1, w_n);
      pack_columns(a.w.w_hh, 2 * H, H, V, H, b0, b1, w_rz);
    }
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
          const Vec<T> sr = load(sk + j, m), sz = load(sk + H + j, m);
          const Vec<T> r = gate.value(sr), z = gate.value(sz);
          const Vec<T> n = load(sk + 2 * H + j, m), q = load(sk + 3 * H + j, m);
          const Vec<T> dhv = load(dh + j, m) + (dy ? load(dy + j, m) : zero);
          const Vec<T> dn = dhv * (T(1) - z) * (T(1) - n * n);
          const Vec<T> dz = gate.times_slope(dhv * (load(h_prev + k * H + j, m) - n), sz);
          store(gxk + H + j, dz, m);
          store(gxk + 2 * H + j, dn, m);
          store(dh + j, dhv * z, m);
          if (d.reset_after) {
            const Vec<T> dr = gate.times_slope(dn * q, sr);
            store(gxk + j, dr, m);
            store(ghk + j, dr, m);
            store(ghk + H + j, dz, m);
            store(ghk + 2 * H + j, dn * r, m);
          }
        });
      }
      barrier.wait();
      if (d.reset_after) {
        packed_gemm<T, V>(B, G, H, dgh + off * G, G, w_all, b0, b1, a.dh, H, true);
        continue;
      }
      packed_gemm<T, V>(B, H, H, gx + 2 * H, G, w_n, b0, b1, drh, H, false);
      for (int64_t k = 0; k < B; ++k) {
        const T* sk = s + k * S;
        for_lanes<T>(u0, u1, [&](int64_t j, auto m) {
          const Vec<T> sr = load(sk + j, m), dq = load(drh + k * H + j, m);
          const Vec<T> r = gate.value(sr);
          store(gx + k * G + j, gate.times_slope(dq * load(h_prev + k * H + j, m), sr), m);
          store(a.dh + k * H + j, load(a.dh + k * H + j, m) + dq * r, m);
        });
      }
      barrier.wait();  // the r block of dgx, all units
      packed_gemm<T, V>(B, 2 * H, H, gx, G, w_rz, b0, b1, a.dh, H, true);
    }
  });

  if (a.dw_hh) {
    if (d.reset_after) {
      big_gemm<T>(true, false, G, H, p.rows, T(1), dgh, G, a.hprev, H, T(0), a.dw_hh, H);
    } else {
      big_gemm<T>(true, false, 2 * H, H, p.rows, T(1), dgx, G, a.hprev, H, T(0), a.dw_hh, H);
      big_gemm<T>(true, false, H, H, p.rows, T(1), dgx + 2 * H, G, stored + 3 * H, S, T(0),
              a.dw_hh + 2 * H * H, H);
    }
  }
  if (a.db_hh) column_sums(dgh, p.rows, G, G, a.db_hh);
}

template <typename T>
void gru_backward(const BwdArgs<T>& a) {
  with_panel_width<T>(a.desc.hidden_size, loop_threads(), [&](auto v) {
    gru_backward_panels<T, decltype(v)::value>(a);
  });
}

template void gru_forward<float>(const FwdArgs<float>&);
template void gru_forward<double>(const FwdArgs<double>&);
template void gru_backward<float>(const BwdArgs<float>&);
template void gru_backward<double>(const BwdArgs<double>&);

}  // namespace FUSEDRNN_ISA
}  // namespace detail
}  // namespace fusedrnn
