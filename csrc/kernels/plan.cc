// The packed time schedule (Plan) and the moves between the caller's [T, N] layout and it.
#include <algorithm>
#include <numeric>

#include "common.h"

namespace fusedrnn {
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

}  // namespace detail
}  // namespace fusedrnn
