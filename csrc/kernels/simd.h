// Short vectors for the fused elementwise passes (GCC/Clang vector extensions, so the same
// source serves every instruction set the build targets). Cell code is written once over
// Vec<T>; float uses a polynomial exp, double runs lane by lane on libm (it serves the float64
// gradient checks, where accuracy matters more than speed). Partial loads pad with zeros, so
// row tails run the same code as the body and every element sees identical arithmetic.
//
// The cell families are compiled once per instruction set, each in its own namespace
// FUSEDRNN_ISA (base: the build's -march; avx512: 64-byte vectors), chosen at run time.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>

#include "fusedrnn/rnn.h"

#ifndef FUSEDRNN_ISA
#error "compile with -DFUSEDRNN_ISA=<namespace>"
#endif

namespace fusedrnn {
namespace detail {
namespace FUSEDRNN_ISA {

#ifdef __AVX512F__
constexpr int kVectorBytes = 64;
#else
constexpr int kVectorBytes = 32;
#endif
typedef float vfloat __attribute__((vector_size(kVectorBytes)));
typedef double vdouble __attribute__((vector_size(kVectorBytes)));
typedef int32_t vint __attribute__((vector_size(kVectorBytes)));

template <typename T> struct VecOf;
template <> struct VecOf<float> { using type = vfloat; };
template <> struct VecOf<double> { using type = vdouble; };
template <typename T> using Vec = typename VecOf<T>::type;
template <typename T> constexpr int kLanes = sizeof(Vec<T>) / sizeof(T);

// Marks a whole vector's worth of elements, so loads and stores compile to plain moves.
struct Full {};

template <typename T>
inline Vec<T> load(const T* p, Full) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <typename T>
inline Vec<T> load(const T* p, int64_t m) {
  Vec<T> v = {};
  std::memcpy(&v, p, m * sizeof(T));
  return v;
}

template <typename T>
inline void store(T* p, Vec<T> v, Full) {
  std::memcpy(p, &v, sizeof v);
}

template <typename T>
inline void store(T* p, Vec<T> v, int64_t m) {
  std::memcpy(p, &v, m * sizeof(T));
}

// Runs body(j, m) over [begin, end) in steps of one vector; m is Full{} except in the tail,
// where it is the count of remaining elements.
template <typename T, typename Body>
inline void for_lanes(int64_t begin, int64_t end, Body&& body) {
  int64_t j = begin;
  for (; j + kLanes<T> <= end; j += kLanes<T>) body(j, Full{});
  if (j < end) body(j, end - j);
}

template <typename T, size_t... I>
inline Vec<T> splat_lanes(T x, std::index_sequence<I...>) {
  return Vec<T>{((void)I, x)...};
}

// One broadcast instruction (x + Vec{} would add 0.0 first; a lane loop becomes masked moves).
template <typename T>
inline Vec<T> splat(T x) {
  return splat_lanes(x, std::make_index_sequence<kLanes<T>>{});
}

// exp for floats: Cody-Waite range reduction and a degree-6 polynomial (~1 ulp).
inline vfloat vexp(vfloat x) {
  x = x < -87.0f ? splat(-87.0f) : x;
  x = x > 88.0f ? splat(88.0f) : x;
  // Round to nearest by adding and subtracting 1.5 * 2^23.
  const vfloat n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const vfloat r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  vfloat p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  // Multiply by 2^n by adding n to the exponent field (the clamp keeps the result normal).
  const vint e = __builtin_convertvector(n, vint) << 23;
  return (vfloat)((vint)p + e);
}

inline vdouble vexp(vdouble x) {
  for (int l = 0; l < kLanes<double>; ++l) x[l] = std::exp(x[l]);
  return x;
}

inline vfloat vsigmoid(vfloat x) { return 1.0f / (1.0f + vexp(-x)); }
inline vdouble vsigmoid(vdouble x) { return 1.0 / (1.0 + vexp(-x)); }

inline vfloat vtanh(vfloat x) {
  // tanh|x| = 1 - 2 / (exp(2|x|) + 1); below 0.25 that cancels digits, so an odd Taylor
  // polynomial takes over there.
  const vfloat ax = x < 0.0f ? -x : x;
  const vfloat big = 1.0f - 2.0f / (vexp(2.0f * ax) + 1.0f);
  const vfloat x2 = x * x;
  const vfloat small =
      ax * (1.0f + x2 * (-0.333333333f + x2 * (0.133333333f +
                                               x2 * (-0.0539682540f + x2 * 0.0218694885f))));
  const vfloat t = ax < 0.25f ? small : big;
  return x < 0.0f ? -t : t;
}

inline vdouble vtanh(vdouble x) {
  for (int l = 0; l < kLanes<double>; ++l) x[l] = std::tanh(x[l]);
  return x;
}

// The activation of the sigmoid gates (RnnDesc::gate_activation). Forward computes keep(v),
// the gate's pre-activation v made into what backward reads from the reserve: the sigmoid
// itself, or for hard_sigmoid y = 0.2 v + 0.5 before clipping, because the kinks y == 0 and
// y == 1 (derivative 0.2) cannot be told from the flat parts (derivative 0) after it. value()
// turns what was kept into the gate; times_slope(x, s) is x times the derivative there:
//   sigmoid:       x * s * (1 - s)   (this order, which the sigmoid code has always used)
//   hard_sigmoid:  x * 0.2 unless y < 0 or y > 1, else 0 (NaN passes, as in MXNet's clip)
template <typename T>
struct GateAct {
  bool hard;
  explicit GateAct(const RnnDesc& d)
      : hard(d.gate_activation == GateActivation::kHardSigmoid) {}
  Vec<T> keep(Vec<T> v) const {
    if (!hard) return vsigmoid(v);
    Vec<T> y = v * T(0.2);
    // Opaque to the optimiser, so the sum below stays a separate rounding (as in MXNet's
    // _mul_scalar then _plus_scalar) instead of contracting into a fused multiply-add.
    __asm__("" : "+v"(y));
    return y + T(0.5);
  }
  Vec<T> value(Vec<T> s) const {
    if (!hard) return s;
    s = s < T(0) ? splat(T(0)) : s;
    return s > T(1) ? splat(T(1)) : s;
  }
  Vec<T> times_slope(Vec<T> x, Vec<T> s) const {
    if (!hard) return x * s * (T(1) - s);
    return (s < T(0)) | (s > T(1)) ? Vec<T>{} : x * T(0.2);
  }
};

// LSTM cell clipping (RnnDesc::clip), for the LSTM family and the regularised path.
template <typename T>
struct Clip {
  bool on;
  T lo, hi;
  bool nan_to_lo;
  explicit Clip(const RnnDesc& d)
      : on(d.clip), lo(T(d.clip_min)), hi(T(d.clip_max)), nan_to_lo(d.clip_nan) {}
  // NaN fails both comparisons and so passes through unless nan_to_lo.
  Vec<T> apply(Vec<T> c) const {
    c = c < lo ? splat(lo) : c;
    c = c > hi ? splat(hi) : c;
    return nan_to_lo ? (c != c ? splat(lo) : c) : c;
  }
};

}  // namespace FUSEDRNN_ISA
}  // namespace detail
}  // namespace fusedrnn
