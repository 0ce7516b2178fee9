// The per-step recurrent products, with weights packed once per call.
//
// A general GEMM repacks its weight operand on every call; a recurrence multiplies by the
// same weights at every step, so packing them once into panels and running a register-tiled
// kernel over them saves that work each step (most of a step at small batch). A panel holds
// V vectors' worth of output columns for every k, contiguous: panel[k][v][lane].
//
// The kernel hands each row's V accumulator vectors to an epilogue, so the cell's
// elementwise work runs on the product while it is still in registers. For the gate
// products the V vectors of a panel are the G gates of the same kLanes units (gate g of unit
// j is column g * H + j of the weights), so one panel yields everything a unit needs.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "common.h"
#include "machine.h"
#include "parallel.h"
#include "simd.h"

namespace fusedrnn {
namespace detail {
namespace FUSEDRNN_ISA {

#ifdef __AVX512F__
constexpr int kVectorRegisters = 32;
#else
constexpr int kVectorRegisters = 16;
#endif

// Packed weights up to this many bytes per thread take the input product into each step's
// (see lstm.cc), for steps of `rows` samples. A quarter of the core's L2 stays in cache across
// steps beside the rows, states and gates a step streams through it (measured on an Intel
// Xeon's 2 MB L2). Each step reads its weights once for all its rows, so with a few rows
// weights up to the whole L2 pay off even when they stream from L3 (measured on an AMD EPYC,
// 1 MB of L2: LSTM inference 15-20% faster at 32 and 64 rows, H = 256; at one row, 33% slower).
inline int64_t fuse_bytes(int64_t rows) {
  return l2_bytes_per_core() / 4 * std::min<int64_t>(std::max<int64_t>(rows, 1), 4);
}

// How a time loop shares each step between threads. Samples are independent within the
// recurrence, so when every core can hold all the packed weights in its cache and the batch
// is large enough, each thread runs its own samples through all steps with no barrier at
// all (by_rows). Otherwise each step is split by hidden units or columns, and the threads
// meet at a barrier between the phases of every step.
struct StepSplit {
  bool by_rows = false;
  int64_t r0 = 0, r1 = 0;  // with by_rows: this thread's rows of the packed batch
  // This thread's rows [lo, hi) of a step with B samples running.
  int64_t lo(int64_t B) const { return by_rows ? std::min(r0, B) : 0; }
  int64_t hi(int64_t B) const { return by_rows ? std::min(r1, B) : B; }
};

// Every thread reads all the weights at every step; with half the L2 they stay there, and with
// 16 rows a thread they may stream from L3 at twice the L2 (measured on the AMD EPYC: LSTM
// training at 32 rows, 2 MB of weights, 8-15% faster than split by units; at 16 rows and 4 MB
// slower).
inline bool split_by_rows(const Plan& p, int threads, int64_t weight_bytes) {
  if (threads < 2 || p.steps == 0 || p.batch[0] < 8 * threads) return false;
  const int64_t l2 = l2_bytes_per_core();
  return weight_bytes <= l2 / 2 || (p.batch[0] >= 16 * threads && weight_bytes <= 2 * l2);
}

// Rows [r0, r1) for thread tid of n, with about equal work (sum of lengths) in each.
inline StepSplit rows_for(const Plan& p, int tid, int n) {
  StepSplit s;
  s.by_rows = true;
  const auto first_row_after = [&](int64_t target) {
    int64_t k = 0, done = 0;
    while (k < p.N && done < target) done += p.len[k++];
    return k;
  };
  s.r0 = tid == 0 ? 0 : first_row_after(p.rows * tid / n);
  s.r1 = tid == n - 1 ? p.N : first_row_after(p.rows * (tid + 1) / n);
  return s;
}

// Rows per register tile for V accumulators per row: R * V accumulators, V weight vectors
// and one broadcast must fit in the vector registers.
template <int V>
constexpr int tile_rows() {
  return std::max(1, std::min(8, (kVectorRegisters - V - 1) / V));
}

// Packs the gate product of weights w [G * units, K] (row-major; rows g * units + j) into
// panels of kLanes units: panel b holds units [b * L, b * L + L) of every gate, zero-padded
// past `units`; unit_blocks(units) * K_total * G * L elements in all. Only panels [b0, b1)
// are written (each thread packs the panels it will use), at reduction rows
// [k_at, k_at + K) of K_total: two weight matrices can share panels (x and h products).
template <typename T>
void pack_gates(const T* w, int64_t units, int64_t K, int G, int64_t ldw, int64_t b0,
                int64_t b1, T* panels, int64_t k_at = 0, int64_t k_total = -1) {
  constexpr int L = kLanes<T>;
  if (k_total < 0) k_total = K;
  for (int64_t b = b0; b < b1; ++b) {
    T* out = panels + (b * k_total + k_at) * G * L;
    for (int64_t k = 0; k < K; ++k)
      for (int g = 0; g < G; ++g)
        for (int l = 0; l < L; ++l) {
          const int64_t j = b * L + l;
          *out++ = j < units ? w[(g * units + j) * ldw + k] : T(0);
        }
  }
}

// Packs w [K, N] (row-major, leading dimension ldw) for products a @ w, as panels of V
// vectors of columns, zero-padded past N; column_blocks(N, V) * K * V * L elements in all.
template <typename T>
void pack_columns(const T* w, int64_t K, int64_t N, int V, int64_t ldw, int64_t b0, int64_t b1,
                  T* panels) {
  const int64_t width = V * kLanes<T>;
  for (int64_t b = b0; b < b1; ++b) {
    T* out = panels + b * K * width;
    for (int64_t k = 0; k < K; ++k)
      for (int64_t c = 0; c < width; ++c) {
        const int64_t n = b * width + c;
        *out++ = n < N ? w[k * ldw + n] : T(0);
      }
  }
}

// Panels of kLanes units (pack_gates) and of V * kLanes columns (pack_columns).
template <typename T>
constexpr int64_t unit_blocks(int64_t units) {
  return (units + kLanes<T> - 1) / kLanes<T>;
}
template <typename T>
constexpr int64_t column_blocks(int64_t columns, int V) {
  return (columns + V * kLanes<T> - 1) / (V * kLanes<T>);
}

// Elements that pack_gates (every panel of `units`, k_total reduction rows, `gates` gates) and
// pack_columns (w [K, N] with V) write. Every buffer of packed weights, and every choice made
// on whether they fit in cache, takes its size from here rather than from its own product of
// the dimensions: the families' G is gates * H, not the gate count, and a size written out by
// hand with it was H times too large (17 GB reserved for an LSTM at H = 1024).
template <typename T>
constexpr int64_t packed_gates_size(int64_t units, int64_t k_total, int gates) {
  return unit_blocks<T>(units) * k_total * gates * kLanes<T>;
}
template <typename T>
constexpr int64_t packed_columns_size(int64_t K, int64_t N, int V) {
  return column_blocks<T>(N, V) * K * V * kLanes<T>;
}

// Calls body(m) with m = Full{} if a whole vector starting at j fits below end, else with the
// count that does.
template <typename T, typename Body>
inline void at_block(int64_t j, int64_t end, Body&& body) {
  if (j + kLanes<T> <= end) {
    body(Full{});
  } else {
    body(end - j);
  }
}

// Panels [*b0, *b1) of `panels` for thread tid of n, and the columns [*c0, *c1) they cover
// (panels of `width` columns, `columns` in all).
inline void split_panels(int64_t panels, int64_t width, int64_t columns, int tid, int n,
                         int64_t* b0, int64_t* b1, int64_t* c0, int64_t* c1) {
  split(panels, tid, n, 1, b0, b1);
  *c0 = std::min(*b0 * width, columns);
  *c1 = std::min(*b1 * width, columns);
}

// Calls f(std::integral_constant<int, V>{}) with the widest column panel (V = 4, 2 or 1
// vectors) that still gives each of `threads` threads a panel of `columns`: wider panels
// reuse each broadcast row value more, narrower ones split small products more evenly.
template <typename T, typename F>
void with_panel_width(int64_t columns, int threads, F&& f) {
  if (column_blocks<T>(columns, 4) >= threads) {
    f(std::integral_constant<int, 4>{});
  } else if (column_blocks<T>(columns, 2) >= threads) {
    f(std::integral_constant<int, 2>{});
  } else {
    f(std::integral_constant<int, 1>{});
  }
}

// The left operand of a panel product: rows lda apart, K columns; optionally followed by a
// second block of K2 columns (rows lda2 apart) that meets panel rows [K, K + K2), so
// [x | h] @ [W_ih | W_hh]^T runs as one product without copying x and h side by side.
template <typename T>
struct Rows {
  const T* a;
  int64_t lda, K;
  const T* a2 = nullptr;
  int64_t lda2 = 0, K2 = 0;
  Rows offset(int64_t r) const { return {a + r * lda, lda, K, a2 ? a2 + r * lda2 : a2, lda2, K2}; }
};

// acc[r][v] = sum_k a[r, k] * panel[k][v] for R rows of a; then epi(r, acc[r]) per row.
template <typename T, int V, int R, typename Epilogue>
inline void tile(const Rows<T>& a, const T* panel, Epilogue&& epi) {
  constexpr int L = kLanes<T>;
  Vec<T> acc[R][V];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) acc[r][v] = Vec<T>{};
  const auto run = [&](const T* x, int64_t lda, int64_t K, const T* w) {
    for (int64_t k = 0; k < K; ++k) {
      Vec<T> wv[V];
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) wv[v] = load(w + (k * V + v) * L, Full{});
      // Weights that outgrow L2 stream from L3 at every step; the hardware prefetcher alone
      // falls behind at small batch (measured: +15% at batch 16, H = 1024).
      __builtin_prefetch(w + (k + 16) * V * L, 0, 2);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const Vec<T> xv = splat(x[r * lda + k]);
#pragma GCC unroll 4
        for (int v = 0; v < V; ++v) acc[r][v] += xv * wv[v];
      }
    }
  };
  run(a.a, a.lda, a.K, panel);
  if (a.K2 > 0) run(a.a2, a.lda2, a.K2, panel + a.K * V * L);
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) epi(r, acc[r]);
}

template <typename T, int V, int R, typename Epilogue>
inline void tail_tile(int64_t rows, const Rows<T>& a, const T* panel, Epilogue&& epi) {
  if constexpr (R > 0) {
    if (rows == R) {
      tile<T, V, R>(a, panel, epi);
    } else {
      tail_tile<T, V, R - 1>(rows, a, panel, epi);
    }
  }
}

// For each panel b in [b0, b1) and each row r < rows of a: epi(b, r, acc) with acc the V
// vectors of row r times panel b.
template <typename T, int V, typename Epilogue>
void panel_product(int64_t rows, const Rows<T>& a, const T* panels, int64_t b0, int64_t b1,
                   Epilogue&& epi) {
  constexpr int R = tile_rows<V>();
  const int64_t panel_size = (a.K + a.K2) * V * kLanes<T>;
  for (int64_t b = b0; b < b1; ++b) {
    const T* panel = panels + b * panel_size;
    int64_t r0 = 0;
    for (; r0 + R <= rows; r0 += R)
      tile<T, V, R>(a.offset(r0), panel, [&](int r, const Vec<T>* acc) { epi(b, r0 + r, acc); });
    if (r0 < rows)
      tail_tile<T, V, R - 1>(rows - r0, a.offset(r0), panel,
                             [&](int r, const Vec<T>* acc) { epi(b, r0 + r, acc); });
  }
}

// Single-block form: a [rows, K], rows lda apart.
template <typename T, int V, typename Epilogue>
void panel_product(int64_t rows, int64_t K, const T* a, int64_t lda, const T* panels,
                   int64_t b0, int64_t b1, Epilogue&& epi) {
  panel_product<T, V>(rows, Rows<T>{a, lda, K}, panels, b0, b1, epi);
}

// c[rows, N] (=, or += with accumulate) a[rows, K] @ w, w packed by pack_columns with V,
// for the column panels [b0, b1).
template <typename T, int V>
void packed_gemm(int64_t rows, int64_t K, int64_t N, const T* a, int64_t lda, const T* panels,
                 int64_t b0, int64_t b1, T* c, int64_t ldc, bool accumulate) {
  constexpr int L = kLanes<T>;
  panel_product<T, V>(rows, K, a, lda, panels, b0, b1,
                      [&](int64_t b, int64_t r, const Vec<T>* acc) {
    T* out = c + r * ldc + b * V * L;
    for (int v = 0; v < V; ++v) {
      const int64_t n0 = b * V * L + v * L;
      if (n0 >= N) break;
      const auto put = [&](auto m) {
        store(out + v * L, accumulate ? acc[v] + load(out + v * L, m) : acc[v], m);
      };
      if (n0 + L <= N) {
        put(Full{});
      } else {
        put(N - n0);
      }
    }
  });
}

}  // namespace FUSEDRNN_ISA
}  // namespace detail
}  // namespace fusedrnn
