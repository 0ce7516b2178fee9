// The interface between the sequence driver (driver.cc) and the cell families (lstm.cc,
// gru.cc, rnn.cc). The driver packs inputs and states into the sorted, step-major layout of
// Plan and unpacks the results; a family runs only the recurrence on packed arrays.
#pragma once

#include "common.h"
#include "parallel.h"

namespace fusedrnn {
namespace detail {

template <typename T>
struct FwdArgs {
  const RnnDesc& desc;
  const Plan& plan;
  const T* xp;      // [rows, C] packed input
  Weights<T> w;
  const T* h0;      // [N, P] sorted
  const T* c0;      // [N, H] sorted (LSTM)
  T* hp;            // [rows, P] packed outputs, written by the family
  T* cp;            // [rows, H] packed cell states (LSTM), written by the family
  T* extra;         // family_reserve_size(desc) elements, or null for inference
};

template <typename T>
struct BwdArgs {
  const RnnDesc& desc;
  const Plan& plan;
  Weights<T> w;
  const T* h0;      // [N, P] sorted
  const T* c0;      // [N, H] sorted (LSTM)
  const T* hp;      // [rows, P] packed outputs from forward
  const T* hprev;   // [rows, P] packed previous outputs (shift_prev of hp), for dw_hh
  const T* cp;      // [rows, H] packed cell states from forward (LSTM)
  const T* extra;   // what the family stored in forward
  const T* dyp;     // [rows, P] packed upstream gradient, or null
  T* dh;            // [N, P] sorted: dhy on entry, dh0 on exit
  T* dc;            // [N, H] sorted: dcy on entry, dc0 on exit (LSTM)
  T* dgx;           // [rows, G*H] gradient w.r.t. the input projection, written by the family
  T* dw_hh;         // null: not wanted, or formed by the driver (LSTM and RNN, with dw_ih)
  T* db_hh;
  T* dw_hr;         // LSTM projection, may be null
};

// A call with masks (regularised.cc): the whole call in the caller's layout, packed there.
template <typename T>
struct RegFwdArgs {
  const RnnDesc& desc;
  const Plan& plan;
  const T* x;
  Weights<T> w;
  const T* h0;
  const T* c0;
  const Masks<T>& masks;
  T* y;
  T* hy;
  T* cy;
  T* reserve;       // reserve_size(desc, true) elements, or null for inference
};

template <typename T>
struct RegBwdArgs {
  const RnnDesc& desc;
  const Plan& plan;
  const T* x;
  Weights<T> w;
  const T* h0;
  const T* c0;
  const Masks<T>& masks;
  const T* reserve;
  const T* dy;
  const T* dhy;
  const T* dcy;
  const Grads<T>& grads;
};

// Each family is compiled once per instruction set (see simd.h); the driver picks one.
#define FUSEDRNN_DECLARE_FAMILIES(isa)                                     \
  namespace isa {                                                          \
  size_t lstm_reserve_size(const RnnDesc& desc);                           \
  size_t gru_reserve_size(const RnnDesc& desc);                            \
  size_t rnn_reserve_size(const RnnDesc& desc);                            \
  template <typename T> void lstm_forward(const FwdArgs<T>& a);            \
  template <typename T> void gru_forward(const FwdArgs<T>& a);             \
  template <typename T> void rnn_forward(const FwdArgs<T>& a);             \
  template <typename T> void lstm_backward(const BwdArgs<T>& a);           \
  template <typename T> void gru_backward(const BwdArgs<T>& a);            \
  template <typename T> void rnn_backward(const BwdArgs<T>& a);            \
  size_t regularised_reserve_size(const RnnDesc& desc);                    \
  template <typename T> void regularised_forward(const RegFwdArgs<T>& a);  \
  template <typename T> void regularised_backward(const RegBwdArgs<T>& a); \
  /* dx [rows, C] = dg [rows, GH] @ w_ih [GH, C] */                        \
  template <typename T>                                                    \
  void input_gradient(int64_t rows, int64_t GH, int64_t C, const T* dg,    \
                      const T* w_ih, T* dx);                               \
  }
FUSEDRNN_DECLARE_FAMILIES(base)
FUSEDRNN_DECLARE_FAMILIES(avx512)
#undef FUSEDRNN_DECLARE_FAMILIES

}  // namespace detail
}  // namespace fusedrnn
