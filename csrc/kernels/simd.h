// Short vectors for the fused elementwise passes (GCC/Clang vector extensions, so the same
// source serves any x86-64 level the build targets). Cell code is written once over Vec<T>;
// float runs 8 lanes with a polynomial exp, double 4 lanes on libm (it serves the float64
// gradient checks, where accuracy matters more than speed). Partial loads pad with zeros, so
// row tails run the same code as the body and every element sees identical arithmetic.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace fusedrnn {
namespace detail {

typedef float f8 __attribute__((vector_size(32)));
typedef double d4 __attribute__((vector_size(32)));
typedef int32_t i8 __attribute__((vector_size(32)));

template <typename T> struct VecOf;
template <> struct VecOf<float> { using type = f8; };
template <> struct VecOf<double> { using type = d4; };
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

template <typename T>
inline Vec<T> splat(T x) {
  return Vec<T>{} + x;
}

// exp for 8 floats: Cody-Waite range reduction and a degree-6 polynomial (~1 ulp).
inline f8 vexp(f8 x) {
  x = x < -87.0f ? splat(-87.0f) : x;
  x = x > 88.0f ? splat(88.0f) : x;
  // Round to nearest by adding and subtracting 1.5 * 2^23.
  const f8 n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const f8 r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  f8 p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  // Multiply by 2^n by adding n to the exponent field (the clamp keeps the result normal).
  const i8 e = __builtin_convertvector(n, i8) << 23;
  return (f8)((i8)p + e);
}

inline d4 vexp(d4 x) {
  for (int l = 0; l < 4; ++l) x[l] = std::exp(x[l]);
  return x;
}

inline f8 vsigmoid(f8 x) { return 1.0f / (1.0f + vexp(-x)); }
inline d4 vsigmoid(d4 x) { return 1.0 / (1.0 + vexp(-x)); }

inline f8 vtanh(f8 x) {
  // tanh|x| = 1 - 2 / (exp(2|x|) + 1); below 0.25 that cancels digits, so an odd Taylor
  // polynomial takes over there.
  const f8 ax = x < 0.0f ? -x : x;
  const f8 big = 1.0f - 2.0f / (vexp(2.0f * ax) + 1.0f);
  const f8 x2 = x * x;
  const f8 small =
      ax * (1.0f + x2 * (-0.333333333f + x2 * (0.133333333f +
                                               x2 * (-0.0539682540f + x2 * 0.0218694885f))));
  const f8 t = ax < 0.25f ? small : big;
  return x < 0.0f ? -t : t;
}

inline d4 vtanh(d4 x) {
  for (int l = 0; l < 4; ++l) x[l] = std::tanh(x[l]);
  return x;
}

}  // namespace detail
}  // namespace fusedrnn
