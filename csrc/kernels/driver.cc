// The sequence driver: validates, plans the packed schedule, packs inputs and states, calls
// the cell family, unpacks outputs, and forms the gradients that every family shares.
#include <cblas.h>

#include <cstdlib>
#include <limits>
#include <numeric>
#include <string>

#include "families.h"
#include "parallel.h"

namespace fusedrnn {

int gate_count(Mode mode) {
  switch (mode) {
    case Mode::kLstm: return 4;
    case Mode::kGru: return 3;
    default: return 1;
  }
}

namespace {

void require(bool ok, const std::string& message) {
  if (!ok) throw InvalidArgument(message);
}

}  // namespace

void validate(const RnnDesc& d, const Valid& valid) {
  const int32_t* lengths = valid.lengths;
  require(d.steps >= 0, "steps (T) must be >= 0, got " + std::to_string(d.steps));
  require(d.batch >= 0, "batch (N) must be >= 0, got " + std::to_string(d.batch));
  require(d.input_size >= 0, "input_size must be >= 0, got " + std::to_string(d.input_size));
  require(d.hidden_size >= 1, "hidden_size must be >= 1, got " + std::to_string(d.hidden_size));
  require(d.proj_size >= 0, "proj_size must be >= 0, got " + std::to_string(d.proj_size));
  require(d.proj_size == 0 || d.mode == Mode::kLstm, "proj_size is only supported for LSTM");
  require(!d.clip || d.mode == Mode::kLstm, "state clipping is only supported for LSTM");
  require(!d.clip || d.clip_min <= d.clip_max,
          "clip_min must be <= clip_max (got " + std::to_string(d.clip_min) + " > " +
              std::to_string(d.clip_max) + ")");
  // BLAS takes 32-bit sizes: every matrix dimension, the packed row count and leading
  // dimensions (up to C + P + 1 for the rows [x | h | 1]) must fit.
  const int64_t limit = std::numeric_limits<int32_t>::max();
  require(d.steps <= limit / std::max<int64_t>(d.batch, 1) &&
              d.hidden_size <= limit / gate_count(d.mode) && d.input_size <= limit &&
              d.out_size() <= limit - 1 - d.input_size,
          "sizes too large: steps * batch, gates * hidden_size and input_size + proj_size "
          "must stay below 2^31");
  // Every buffer's byte count must fit in size_t with room to spare (the bounds above still
  // allow products near 2^64); far beyond any memory, so an allocation fails cleanly first.
  const int64_t rows = d.steps * d.batch, gh = gate_count(d.mode) * d.hidden_size;
  const int64_t wide = d.input_size + d.out_size() + 1 + gh + d.hidden_size;
  const int64_t elements = int64_t{1} << 56;
  require(rows <= elements / wide && d.batch <= elements / wide && gh <= elements / wide &&
              d.out_size() <= elements / d.hidden_size,
          "sizes too large: a buffer of these sizes would exceed 2^56 elements");
  if (lengths != nullptr) {
    for (int64_t n = 0; n < d.batch; ++n) {
      require(lengths[n] >= 0 && lengths[n] <= d.steps,
              "lengths[" + std::to_string(n) + "] = " + std::to_string(lengths[n]) +
                  " is outside [0, " + std::to_string(d.steps) + "]");
    }
  }
  if (valid.positions != nullptr) {
    require(lengths != nullptr, "positions need lengths");
    for (int64_t n = 0; n < d.batch; ++n) {
      const int32_t* row = valid.positions + n * d.steps;
      for (int32_t s = 0; s < lengths[n]; ++s) {
        require(row[s] >= 0 && row[s] < d.steps && (s == 0 || row[s] > row[s - 1]),
                "positions[" + std::to_string(n) + "] must be strictly increasing in [0, " +
                    std::to_string(d.steps) + ")");
      }
    }
  }
}

size_t reserve_size(const RnnDesc& d) {
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

Plan::Plan(const RnnDesc& d, const Valid& valid)
    : T(d.steps), N(d.batch), reverse(d.reverse), carry(valid.carry),
      positions(valid.positions), order(d.batch), len(d.batch) {
  const int32_t* lengths = valid.lengths;
  std::iota(order.begin(), order.end(), int64_t{0});
  if (lengths != nullptr) {
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return lengths[a] > lengths[b]; });
  }
  for (int64_t k = 0; k < N; ++k) len[k] = lengths ? lengths[order[k]] : T;
  steps = N > 0 ? len[0] : 0;
  batch.assign(steps, 0);
  offset.assign(steps + 1, 0);
  for (int64_t t = 0; t < steps; ++t) {
    int64_t b = 0;
    while (b < N && len[b] > t) ++b;
    batch[t] = b;
    offset[t + 1] = offset[t] + b;
  }
  rows = offset[steps];
  identity = !reverse && rows == T * N;
}

template <>
void gemm<float>(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                 int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {  // OpenBLAS may return early without applying beta.
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
    return;
  }
  if (m == 1) {
    // One row (a cell at batch 1): GEMV, which streams the matrix once; OpenBLAS's GEMM
    // would pack it first. (c may hold garbage, NaN included: with beta 0, clear it rather
    // than trust 0 * NaN.)
    if (beta == 0) std::fill(c, c + n, 0);
    scipy_cblas_sgemv(CblasRowMajor, tb ? CblasNoTrans : CblasTrans, tb ? n : k, tb ? k : n,
                      alpha, b, ldb, a, ta ? lda : 1, beta, c, 1);
    return;
  }
  scipy_cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

template <>
void gemm<double>(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha,
                  const double* a, int64_t lda, const double* b, int64_t ldb, double beta,
                  double* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == 0.0 ? 0.0 : beta * c[i * ldc + j];
    return;
  }
  if (m == 1) {
    // One row (a cell at batch 1): GEMV, which streams the matrix once; OpenBLAS's GEMM
    // would pack it first. (c may hold garbage, NaN included: with beta 0, clear it rather
    // than trust 0 * NaN.)
    if (beta == 0) std::fill(c, c + n, 0);
    scipy_cblas_dgemv(CblasRowMajor, tb ? CblasNoTrans : CblasTrans, tb ? n : k, tb ? k : n,
                      alpha, b, ldb, a, ta ? lda : 1, beta, c, 1);
    return;
  }
  scipy_cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

Arena& Arena::local() {
  thread_local Arena arena;
  return arena;
}

void* Arena::take(size_t bytes) {
  constexpr size_t kAlign = 64;
  bytes = (bytes + kAlign - 1) / kAlign * kAlign + kAlign;  // room to align the start
  if (chunks_.empty() || chunks_[current_].size - chunks_[current_].used < bytes) {
    // Chunks past the current one hold no live buffer (buffers are released in order).
    const size_t next = chunks_.empty() ? 0 : current_ + 1;
    if (next < chunks_.size() && chunks_[next].size >= bytes) {
      chunks_[next].used = 0;
    } else {
      const size_t size = std::max(bytes, size_t{1} << 20);
      chunks_.resize(next);
      chunks_.push_back(Chunk{std::unique_ptr<char[]>(new char[size]), size, 0});
    }
    current_ = next;
  }
  Chunk& c = chunks_[current_];
  const uintptr_t at = reinterpret_cast<uintptr_t>(c.data.get()) + c.used;
  char* out = reinterpret_cast<char*>((at + kAlign - 1) / kAlign * kAlign);
  c.used += bytes;
  return out;
}

void Arena::release(Mark m) {
  current_ = m.chunk;
  if (!chunks_.empty()) chunks_[current_].used = m.used;
}

template <typename T>
void big_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
              int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  // Below ~4M multiply-adds (a few tens of microseconds on one core) waking the pool costs
  // more than it saves (measured on the steps of cells at batch 16, H = 256).
  const int threads = m * n * k < (int64_t{1} << 22) ? 1 : loop_threads();
  parallel_run(threads, [&](int tid, int nt, Barrier&) {
    int64_t lo, hi;
    if (m >= n) {
      split(m, tid, nt, 16, &lo, &hi);
      gemm<T>(ta, tb, hi - lo, n, k, alpha, ta ? a + lo : a + lo * lda, lda, b, ldb, beta,
              c + lo * ldc, ldc);
    } else {
      split(n, tid, nt, 16, &lo, &hi);
      gemm<T>(ta, tb, m, hi - lo, k, alpha, a, lda, tb ? b + lo * ldb : b + lo, ldb, beta, c + lo,
              ldc);
    }
  });
}

template <typename T>
void gather_rows(const Plan& p, const T* src, int64_t w, T* dst, int64_t ld) {
  for (int64_t t = 0; t < p.steps; ++t)
    for (int64_t k = 0; k < p.batch[t]; ++k) {
      T* out = dst + (p.offset[t] + k) * ld;
      const T* in = src + (p.time_index(k, t) * p.N + p.order[k]) * w;
      std::copy(in, in + w, out);
    }
}

template <typename T>
void scatter_rows(const Plan& p, const T* src, int64_t w, T* dst) {
  std::fill(dst, dst + p.T * p.N * w, T(0));
  for (int64_t t = 0; t < p.steps; ++t)
    for (int64_t k = 0; k < p.batch[t]; ++k) {
      const T* in = src + (p.offset[t] + k) * w;
      std::copy(in, in + w, dst + (p.time_index(k, t) * p.N + p.order[k]) * w);
    }
}

template <typename T>
void scatter_output(const Plan& p, const T* src, int64_t w, T* dst) {
  if (!p.carry) return scatter_rows(p, src, w, dst);
  for (int64_t k = 0; k < p.N; ++k) {
    const T* last = nullptr;
    int64_t s = 0;  // the sample's next step
    for (int64_t i = 0; i < p.T; ++i) {
      const int64_t t = p.reverse ? p.T - 1 - i : i;
      T* out = dst + (t * p.N + p.order[k]) * w;
      if (s < p.len[k] && p.time_index(k, s) == t) last = src + (p.offset[s++] + k) * w;
      if (last != nullptr) {
        std::copy(last, last + w, out);
      } else {
        std::fill(out, out + w, T(0));
      }
    }
  }
}

template <typename T>
void gather_output_grad(const Plan& p, const T* src, int64_t w, T* dst) {
  if (!p.carry) return gather_rows(p, src, w, dst, w);
  for (int64_t k = 0; k < p.N; ++k) {
    T* acc = nullptr;
    int64_t s = 0;
    for (int64_t i = 0; i < p.T; ++i) {
      const int64_t t = p.reverse ? p.T - 1 - i : i;
      const T* in = src + (t * p.N + p.order[k]) * w;
      if (s < p.len[k] && p.time_index(k, s) == t) {
        acc = dst + (p.offset[s++] + k) * w;
        std::copy(in, in + w, acc);
      } else if (acc != nullptr) {
        for (int64_t j = 0; j < w; ++j) acc[j] += in[j];
      }
    }
  }
}

template <typename T>
void gather_state(const Plan& p, const T* src, int64_t w, T* dst) {
  for (int64_t k = 0; k < p.N; ++k) {
    if (src == nullptr) {
      std::fill(dst + k * w, dst + (k + 1) * w, T(0));
    } else {
      std::copy(src + p.order[k] * w, src + (p.order[k] + 1) * w, dst + k * w);
    }
  }
}

template <typename T>
void scatter_state(const Plan& p, const T* src, int64_t w, T* dst) {
  for (int64_t k = 0; k < p.N; ++k)
    std::copy(src + k * w, src + (k + 1) * w, dst + p.order[k] * w);
}

template <typename T>
void gather_final(const Plan& p, const T* packed, const T* init, int64_t w, T* dst) {
  for (int64_t k = 0; k < p.N; ++k) {
    const T* in = p.len[k] > 0 ? packed + (p.offset[p.len[k] - 1] + k) * w : init + k * w;
    std::copy(in, in + w, dst + p.order[k] * w);
  }
}

template <typename T>
void shift_prev(const Plan& p, const T* packed, const T* init, int64_t w, T* prev, int64_t ld) {
  for (int64_t t = 0; t < p.steps; ++t) {
    const T* from = t == 0 ? init : packed + p.offset[t - 1] * w;
    for (int64_t k = 0; k < p.batch[t]; ++k)
      std::copy(from + k * w, from + (k + 1) * w, prev + (p.offset[t] + k) * ld);
  }
}

template <typename T>
void column_sums(const T* g, int64_t rows, int64_t ld, int64_t width, T* out) {
  std::fill(out, out + width, T(0));
  for (int64_t r = 0; r < rows; ++r) {
    const T* row = g + r * ld;
    for (int64_t j = 0; j < width; ++j) out[j] += row[j];
  }
}

#define FUSEDRNN_INSTANTIATE(T)                                                          \
  template void big_gemm<T>(bool, bool, int64_t, int64_t, int64_t, T, const T*, int64_t,   \
                            const T*, int64_t, T, T*, int64_t);                            \
  template void gather_rows<T>(const Plan&, const T*, int64_t, T*, int64_t);             \
  template void scatter_rows<T>(const Plan&, const T*, int64_t, T*);                     \
  template void scatter_output<T>(const Plan&, const T*, int64_t, T*);                   \
  template void gather_output_grad<T>(const Plan&, const T*, int64_t, T*);               \
  template void gather_state<T>(const Plan&, const T*, int64_t, T*);                     \
  template void scatter_state<T>(const Plan&, const T*, int64_t, T*);                    \
  template void gather_final<T>(const Plan&, const T*, const T*, int64_t, T*);           \
  template void shift_prev<T>(const Plan&, const T*, const T*, int64_t, T*, int64_t);    \
  template void column_sums<T>(const T*, int64_t, int64_t, int64_t, T*);
FUSEDRNN_INSTANTIATE(float)
FUSEDRNN_INSTANTIATE(double)
#undef FUSEDRNN_INSTANTIATE

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
  const detail::FlushDenormals flush;
  const Plan plan(d, valid);
  const int64_t C = d.input_size, H = d.hidden_size, P = d.out_size(), TN = d.steps * d.batch;
  const bool lstm = d.mode == Mode::kLstm;

  // Workspace: packed input, sorted initial states, and (inference) packed outputs.
  const bool own_out = reserve == nullptr && !plan.identity;
  const size_t ws_size = (plan.identity ? 0 : plan.rows * C) + d.batch * (P + H) +
                         (own_out ? plan.rows * P : 0) + (reserve ? 0 : (lstm ? plan.rows * H : 0));
  detail::Buffer<T> ws(ws_size);
  T* cur = ws.get();
  auto take = [&cur](size_t n) { T* p = cur; cur += n; return p; };
  const T* xp = x;
  if (!plan.identity) {
    T* packed = take(plan.rows * C);
    detail::gather_rows(plan, x, C, packed, C);
    xp = packed;
  }
  T* h0s = take(d.batch * P);
  detail::gather_state(plan, h0, P, h0s);
  T* c0s = take(d.batch * H);
  if (lstm) detail::gather_state(plan, c0, H, c0s);

  T* hp;
  T* cp = nullptr;
  T* extra = nullptr;
  if (reserve != nullptr) {
    hp = reserve;
    cp = reserve + TN * P;
    extra = cp + (lstm ? TN * H : 0);
  } else {
    hp = own_out ? take(plan.rows * P) : y;
    if (lstm) cp = take(plan.rows * H);
  }

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
  const detail::FlushDenormals flush;
  const Plan plan(d, valid);
  const int64_t C = d.input_size, H = d.hidden_size, P = d.out_size(), TN = d.steps * d.batch;
  const int64_t GH = gate_count(d.mode) * H;
  const bool lstm = d.mode == Mode::kLstm;
  const T* hp = reserve;
  const T* cp = reserve + TN * P;
  const T* extra = cp + (lstm ? TN * H : 0);

  // LSTM and RNN share one gate gradient for both weights, so dW_ih, dW_hh and the bias
  // gradient come from one product of it with rows [x | h_prev | 1].
  const bool merged = d.mode != Mode::kGru && g.dw_ih != nullptr && g.dw_hh != nullptr;
  const int64_t XH = C + P + 1;
  const bool pack = !plan.identity;
  const size_t ws_size = (merged ? plan.rows * XH + GH * XH : (pack ? plan.rows * C : 0) +
                                                                  plan.rows * P) +
                         (pack && dy ? plan.rows * P : 0) + d.batch * (2 * P + 2 * H) +
                         plan.rows * GH + (pack && g.dx ? plan.rows * C : 0);
  detail::Buffer<T> ws(ws_size);
  T* cur = ws.get();
  auto take = [&cur](size_t n) { T* p = cur; cur += n; return p; };
  T* h0s = take(d.batch * P);
  detail::gather_state(plan, h0, P, h0s);
  const T* xp = x;
  int64_t ld_x = C;
  T* hprev;
  int64_t ld_h = P;
  if (merged) {
    T* xh = take(plan.rows * XH);
    if (pack) {
      detail::gather_rows(plan, x, C, xh, XH);
    } else {
      for (int64_t r = 0; r < plan.rows; ++r) std::copy(x + r * C, x + (r + 1) * C, xh + r * XH);
    }
    for (int64_t r = 0; r < plan.rows; ++r) xh[r * XH + C + P] = T(1);
    xp = xh;
    ld_x = ld_h = XH;
    hprev = xh + C;
  } else {
    if (pack) {
      T* packed = take(plan.rows * C);
      detail::gather_rows(plan, x, C, packed, C);
      xp = packed;
    }
    hprev = take(plan.rows * P);
  }
  detail::shift_prev(plan, hp, h0s, P, hprev, ld_h);
  const T* dyp = dy;
  if (pack && dy != nullptr) {
    T* dpacked = take(plan.rows * P);
    detail::gather_output_grad(plan, dy, P, dpacked);
    dyp = dpacked;
  }
  T* c0s = take(d.batch * H);
  if (lstm) detail::gather_state(plan, c0, H, c0s);
  T* dh = take(d.batch * P);
  detail::gather_state(plan, dhy, P, dh);
  T* dc = take(d.batch * H);
  if (lstm) detail::gather_state(plan, dcy, H, dc);
  T* dgx = take(plan.rows * GH);

  const detail::BwdArgs<T> args{d,     plan,  w,     h0s,    c0s,   hp,
                                hprev, cp,    extra, dyp,    dh,    dc,
                                dgx,   merged ? nullptr : g.dw_hh,  merged ? nullptr : g.db_hh,
                                g.dw_hr};
  detail::run_backward(args);

  if (g.dx != nullptr) {
    T* dxp = pack ? take(plan.rows * C) : g.dx;
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
    T* dw = take(GH * XH);
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

#define FUSEDRNN_INSTANTIATE(T)                                                              \
  template void forward<T>(const RnnDesc&, const Valid&, const T*, const Weights<T>&,        \
                           const T*, const T*, T*, T*, T*, T*);                              \
  template void backward<T>(const RnnDesc&, const Valid&, const T*, const Weights<T>&,       \
                            const T*, const T*, const T*, const T*, const T*, const T*,      \
                            const Grads<T>&);
FUSEDRNN_INSTANTIATE(float)
FUSEDRNN_INSTANTIATE(double)
#undef FUSEDRNN_INSTANTIATE

}  // namespace fusedrnn
