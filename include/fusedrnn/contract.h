// The shape and mode contract that every binding (csrc/python, csrc/mxnet) follows: the mode's
// name, the sizes of a call read from its arrays' shapes, the shape every other argument must
// then have, the lengths and masks that become a Valid, and how a shape is written in an error.
// A binding parses its arguments, checks them here once, and runs forward / backward. Every
// error is an InvalidArgument whose message names the argument the caller got wrong.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "fusedrnn/rnn.h"

namespace fusedrnn {

// "lstm", "gru", "rnn_tanh", "rnn_relu" (MXNet's names); anything else throws.
Mode parse_mode(const std::string& name);
const char* mode_name(Mode mode);
// "sigmoid", "hard_sigmoid" (Keras' names); anything else throws, naming gate_activation.
GateActivation parse_gate_activation(const std::string& name);
const char* gate_activation_name(GateActivation activation);

// Dimensions of an array; a negative one is unknown (MXNet's shape inference).
using Shape = std::vector<int64_t>;

// "(4, 3, 5)", unknown dimensions as "?"; a 1-d shape "(3,)", or "(3)" without numpy_1d.
std::string shape_str(const Shape& shape, bool numpy_1d = true);

// The arguments of a call, in the kernels' order. kY is the output y (and so dy); hy, dhy
// have h0's shape, cy, dcy c0's. kMask is the MXNet operator's [T, N] mask, kPositions
// Valid::positions [N, T]. The last six are rnn.h's Masks (kZoneoutC: LSTM only).
enum class Arg {
  kX, kWih, kWhh, kBih, kBhh, kH0, kC0, kWhr, kY, kLengths, kMask, kPositions,
  kZoneoutH, kZoneoutC, kZoneoutY, kStateMask, kInputGateMasks, kRecurrentGateMasks
};

// How a binding speaks of the arguments: their names (the kernels' by default), and whether a
// 1-d shape is written "(3,)" (NumPy) or "(3)" (the MXNet operator's messages, which tests
// match).
struct ArgNames {
  std::array<const char*, 18> names = {"x",  "w_ih", "w_hh", "b_ih", "b_hh",    "h0",
                                       "c0", "w_hr", "y",    "lengths", "mask", "positions",
                                       "zoneout_h", "zoneout_c", "zoneout_y", "state_mask",
                                       "input_gate_masks", "recurrent_gate_masks"};
  bool numpy_1d = true;
  const char* operator[](Arg a) const { return names[static_cast<size_t>(a)]; }
};

// The sizes of a call from x [T, N, C], w_ih [G*H, C] (H) and, for a projection, w_hr [P, H]
// (P; null: none). `options` gives the mode and the options; its sizes are replaced. Checks
// the ranks and the sizes (validate() without lengths) before any array is read or copied.
RnnDesc describe(const RnnDesc& options, const Shape& x, const Shape& w_ih, const Shape* w_hr,
                 const ArgNames& names = {});

// The shape argument a must have in a call of these sizes (any mode: c0, w_hr, zoneout_c for
// LSTM only).
Shape expected_shape(const RnnDesc& desc, Arg a);

// Throws "<name> has shape (..); expected (..)" unless got is expected_shape(desc, a). When
// w_ih differs only in its columns the message names x first: describe() took the input size
// from x, and an input of the wrong size is the likelier mistake than weights of the wrong
// size (a layer built for C = 4 called on C = 5). zoneout_c outside mode 'lstm' throws
// whatever its shape.
void check_shape(const RnnDesc& desc, Arg a, const Shape& got, const ArgNames& names = {});
void check_shape(const char* name, const Shape& got, const Shape& expected, bool numpy_1d = true);

// Throws "<name> must have <ndim> dimensions <layout>; got shape (..)" unless it has.
void check_rank(const char* name, const Shape& got, size_t ndim, const char* layout);
// H from the rows of a weight of this mode, checked against its layout ("[G*H, C]").
int64_t hidden_size_from(Mode mode, const Shape& weight, const char* name, const char* layout);

// The error for sequence length `value` of sample n outside [0, T] or not a whole number
// (validate() and the conversions below report through it).
[[noreturn]] void bad_length(int64_t n, double value, int64_t T);
// The error for a mask value other than 0 or 1 at [t, n].
[[noreturn]] void bad_mask_value(int64_t t, int64_t n, double value);

// Sequence lengths [N] given as any numbers (value(n)), as the int32 of Valid::lengths:
// refuses what is not a whole number, and what int32 cannot hold; validate() checks the rest
// of [0, T], so that each length is checked once.
template <typename Value>
std::vector<int32_t> lengths_from(int64_t N, int64_t T, Value value) {
  std::vector<int32_t> out(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n) {
    const double v = value(n);
    if (!(v >= -2147483648.0 && v <= 2147483647.0) || v != std::floor(v)) bad_length(n, v, T);
    out[n] = static_cast<int32_t>(v);
  }
  return out;
}

// A [T, N] mask of 0/1 (value(t * N + n)) as Valid's lengths [N] and positions [N, T]: sample
// n's set steps, in time order, then zeros.
template <typename Value>
void mask_to_valid(int64_t T, int64_t N, Value value, std::vector<int32_t>* lengths,
                   std::vector<int32_t>* positions) {
  lengths->assign(static_cast<size_t>(N), 0);
  positions->assign(static_cast<size_t>(T * N), 0);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t n = 0; n < N; ++n) {
      const double v = value(t * N + n);
      if (v != 0 && v != 1) bad_mask_value(t, n, v);
      if (v == 1) (*positions)[n * T + (*lengths)[n]++] = static_cast<int32_t>(t);
    }
  }
}

}  // namespace fusedrnn
