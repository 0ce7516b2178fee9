// fusedrnn kernel API: one recurrent layer, one direction, a whole sequence per call.
//
// Plain structs and pointers only: no Python, no MXNet. All arrays are dense and row-major.
//   x   [T, N, C]      y  [T, N, P]      h0, hy [N, P]      c0, cy [N, H] (LSTM)
//   w_ih [G*H, C]  w_hh [G*H, P]  b_ih, b_hh [G*H]  w_hr [P, H] (LSTM projection)
// G is the gate count (LSTM 4: i f g o; GRU 3: r z n; RNN 1), P the projection size or H.
// Gate order and the separate input/recurrent biases follow MXNet (== PyTorch), so weights
// from either load unchanged.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>

namespace fusedrnn {

enum class Mode { kLstm, kGru, kRnnTanh, kRnnRelu };

// The activation of the sigmoid gates (LSTM i f o, GRU r z); the tanh candidate and cell
// stay tanh. kHardSigmoid is Keras' hard_sigmoid as its MXNet backend computes it:
//   y = 0.2 * v + 0.5 (a product, then a sum: two roundings, never a fused multiply-add),
//   hard_sigmoid(v) = clip(y, 0, 1),  derivative 0.2 where 0 <= y <= 1, else 0,
// the kinks (y == 0 or 1) included, as MXNet's autograd differentiates clip (the gradient
// passes where a_min <= y <= a_max).
enum class GateActivation { kSigmoid, kHardSigmoid };

int gate_count(Mode mode);

struct RnnDesc {
  Mode mode = Mode::kLstm;
  int64_t steps = 0;        // T
  int64_t batch = 0;        // N
  int64_t input_size = 0;   // C
  int64_t hidden_size = 0;  // H
  int64_t proj_size = 0;    // P; 0 means no projection (P = H). LSTM only.
  bool reverse = false;     // each sample runs right-to-left over its own valid prefix
  bool reset_after = true;  // GRU: reset gate applied after (true) or before (false) W_hn
  bool clip = false;        // LSTM cell clipping to [clip_min, clip_max]
  double clip_min = 0.0;
  double clip_max = 0.0;
  bool clip_nan = false;    // with clip: a NaN cell value becomes clip_min instead of spreading
  GateActivation gate_activation = GateActivation::kSigmoid;  // LSTM and GRU

  int64_t out_size() const { return proj_size > 0 ? proj_size : hidden_size; }
};

// Thrown for arguments the kernels cannot run on; the message names the argument.
struct InvalidArgument : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// Which time positions each sample runs. The default (all null) runs every sample over all T
// positions. Converts from a plain lengths pointer, the common case.
struct Valid {
  // [N] steps per sample, in [0, T]; null: all T.
  const int32_t* lengths = nullptr;
  // [N, T] row-major or null. Row n's first lengths[n] entries are the positions sample n
  // runs, strictly increasing in [0, T) (a Keras mask with holes, or a pre-padded batch);
  // null: positions 0 .. lengths[n]-1. Needs lengths. With reverse the sample visits them
  // right to left.
  const int32_t* positions = nullptr;
  // What y holds at the positions a sample skips: false: 0 (MXNet/cuDNN sequence_length);
  // true: the output of the sample's previous step in its visiting order, 0 before its first
  // step (Keras masking).
  bool carry = false;

  Valid(const int32_t* lengths_ = nullptr, const int32_t* positions_ = nullptr,
        bool carry_ = false)
      : lengths(lengths_), positions(positions_), carry(carry_) {}
};

// Checks the sizes, options and the valid positions (lengths in [0, T], positions as above).
// forward() and backward() call it; bindings read sizes through contract.h's describe().
void validate(const RnnDesc& desc, const Valid& valid);

// Elements of the dtype that a training forward stores for backward (worst case: lengths T).
// with_masks: for a call with masks (Masks::any()), which keeps more.
size_t reserve_size(const RnnDesc& desc, bool with_masks = false);

template <typename T>
struct Weights {
  const T* w_ih = nullptr;
  const T* w_hh = nullptr;
  const T* b_ih = nullptr;
  const T* b_hh = nullptr;
  const T* w_hr = nullptr;  // only with proj_size > 0
};

// Outputs of backward; any pointer may be null, and that gradient is then not computed.
template <typename T>
struct Grads {
  T* dx = nullptr;
  T* dw_ih = nullptr;
  T* dw_hh = nullptr;
  T* db_ih = nullptr;
  T* db_hh = nullptr;
  T* dw_hr = nullptr;
  T* dh0 = nullptr;
  T* dc0 = nullptr;
};

// Regularisers inside the recurrence, as masks the caller draws (so runs are reproducible);
// each may be null (off), all null is the plain layer, which then runs its usual code. Masks
// are read only where a sample runs (Valid); "step t" below is a time position, so with
// reverse a sample reads each mask at the position it is at.
//   Zoneout (gluon.rnn.ZoneoutCell): with h', c' the cell's new state and y' = h' its output,
//     h_t = zoneout_h[t] != 0 ? h' : h_{t-1}      c_t = zoneout_c[t] != 0 ? c' : c_{t-1}
//     y_t = zoneout_y[t] != 0 ? y' : y_prev       (y_prev: the sample's previous step's y_t,
//   0 before its first). Without zoneout_y, y_t = h'. Only "!= 0" counts (gluon's masks are
//   0 or 1/(1-p)).
//   state_mask (gluon.contrib.rnn.VariationalDropoutCell's drop_states): the cell sees
//     h_{t-1} * state_mask wherever it uses h_{t-1} (recurrent products, GRU's z * h); the
//     state carried on is the cell's new h; c is never masked. Zoneout keeps the unmasked
//     h_{t-1} (ZoneoutCell around VariationalDropoutCell).
//   input_gate_masks / recurrent_gate_masks (Keras' dropout / recurrent_dropout,
//     implementation=1, in this header's gate order): gate g's pre-activation terms are
//     (x_t * input_gate_masks[g]) W_ih[g]^T and (h * recurrent_gate_masks[g]) W_hh[g]^T, h
//     what the cell sees; GRU reset before: (r * h * recurrent_gate_masks[2]) W_hn^T. GRU's
//     blend z * h uses h without the gate mask.
template <typename T>
struct Masks {
  const T* zoneout_h = nullptr;             // [T, N, P]
  const T* zoneout_c = nullptr;             // [T, N, H] (LSTM)
  const T* zoneout_y = nullptr;             // [T, N, P]
  const T* state_mask = nullptr;            // [N, P]
  const T* input_gate_masks = nullptr;      // [G, N, C]
  const T* recurrent_gate_masks = nullptr;  // [G, N, P]

  bool any() const {
    return zoneout_h || zoneout_c || zoneout_y || state_mask || input_gate_masks ||
           recurrent_gate_masks;
  }
};

// valid: the positions each sample runs (see Valid). Sample n runs exactly lengths[n] steps:
// hy/cy hold the state after its last one (h0/c0 for length 0), y at the positions it skips
// is 0 or carried (Valid::carry), and no work is spent on them. reserve: reserve_size(desc)
// elements for a training forward, or null for inference. c0/cy only for LSTM.
template <typename T>
void forward(const RnnDesc& desc, const Valid& valid, const T* x, const Weights<T>& w,
             const T* h0, const T* c0, T* y, T* hy, T* cy, T* reserve);
// The same with masks; reserve then has reserve_size(desc, masks.any()) elements.
template <typename T>
void forward(const RnnDesc& desc, const Valid& valid, const T* x, const Weights<T>& w,
             const T* h0, const T* c0, T* y, T* hy, T* cy, T* reserve, const Masks<T>& masks);

// reserve: what forward(training) wrote for the same desc, valid, x, weights and states.
// dy, dhy, dcy may be null (zero). dx is 0 at skipped positions.
template <typename T>
void backward(const RnnDesc& desc, const Valid& valid, const T* x, const Weights<T>& w,
              const T* h0, const T* c0, const T* reserve, const T* dy, const T* dhy,
              const T* dcy, const Grads<T>& grads);
// The same with the masks given to forward. The masks are constants (no gradient).
template <typename T>
void backward(const RnnDesc& desc, const Valid& valid, const T* x, const Weights<T>& w,
              const T* h0, const T* c0, const T* reserve, const T* dy, const T* dhy,
              const T* dcy, const Grads<T>& grads, const Masks<T>& masks);

// Threads the kernels use (an OpenMP team, MXNet's own where MXNet is loaded; the OpenBLAS
// they call stays single-threaded).
// 0 or less restores the default: OMP_NUM_THREADS if set, else the cores this process may use.
// More than 1024 throws InvalidArgument.
void set_num_threads(int n);
int get_num_threads();

// The instruction set the elementwise code runs on: "avx512", or "base" (the build's target).
const char* instruction_set();

}  // namespace fusedrnn
