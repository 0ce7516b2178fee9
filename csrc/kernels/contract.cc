// The shape and mode contract (fusedrnn/contract.h) and the checks of rnn.h's validate().
#include "fusedrnn/contract.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <initializer_list>
#include <limits>

namespace fusedrnn {

int gate_count(Mode mode) {
  switch (mode) {
    case Mode::kLstm: return 4;
    case Mode::kGru: return 3;
    default: return 1;
  }
}

namespace {

constexpr Mode kModes[] = {Mode::kLstm, Mode::kGru, Mode::kRnnTanh, Mode::kRnnRelu};

void require(bool ok, const std::string& message) {
  if (!ok) throw InvalidArgument(message);
}

std::string str(int64_t n) { return std::to_string(n); }

// Whole numbers as integers ("5", not "5.000000"), others as printf's %g ("1.5", "nan").
std::string number(double v) {
  char buf[32];
  if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 9.2e18) {
    std::snprintf(buf, sizeof buf, "%" PRId64, static_cast<int64_t>(v));
  } else {
    std::snprintf(buf, sizeof buf, "%g", v);
  }
  return buf;
}

}  // namespace

Mode parse_mode(const std::string& name) {
  for (Mode m : kModes)
    if (name == mode_name(m)) return m;
  throw InvalidArgument("mode must be one of 'lstm', 'gru', 'rnn_tanh', 'rnn_relu'; got '" +
                        name + "'");
}

const char* mode_name(Mode mode) {
  switch (mode) {
    case Mode::kLstm: return "lstm";
    case Mode::kGru: return "gru";
    case Mode::kRnnTanh: return "rnn_tanh";
    default: return "rnn_relu";
  }
}

GateActivation parse_gate_activation(const std::string& name) {
  for (GateActivation a : {GateActivation::kSigmoid, GateActivation::kHardSigmoid})
    if (name == gate_activation_name(a)) return a;
  throw InvalidArgument("gate_activation must be 'sigmoid' or 'hard_sigmoid'; got '" + name +
                        "'");
}

const char* gate_activation_name(GateActivation activation) {
  return activation == GateActivation::kHardSigmoid ? "hard_sigmoid" : "sigmoid";
}

std::string shape_str(const Shape& s, bool numpy_1d) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + (s[i] < 0 ? "?" : str(s[i]));
  return out + (s.size() == 1 && numpy_1d ? ",)" : ")");
}

void check_rank(const char* name, const Shape& got, size_t ndim, const char* layout) {
  require(got.size() == ndim, std::string(name) + " must have " + str(ndim) + " dimension" +
                                  (ndim == 1 ? " " : "s ") + layout + "; got shape " +
                                  shape_str(got));
}

int64_t hidden_size_from(Mode mode, const Shape& w, const char* name, const char* layout) {
  check_rank(name, w, 2, layout);
  const int64_t G = gate_count(mode);
  require(w[0] > 0 && w[0] % G == 0,
          std::string(name) + " has " + str(w[0]) + " rows; expected a positive multiple of " +
              str(G) + " (gates) for mode '" + mode_name(mode) + "': " + name + " must be " +
              layout + " with G = " + str(G) + "; got " + shape_str(w));
  return w[0] / G;
}

RnnDesc describe(const RnnDesc& options, const Shape& x, const Shape& w_ih, const Shape* w_hr,
                 const ArgNames& names) {
  RnnDesc d = options;
  check_rank(names[Arg::kX], x, 3, "[T, N, C]");
  d.steps = x[0];
  d.batch = x[1];
  d.input_size = x[2];
  d.hidden_size = hidden_size_from(d.mode, w_ih, names[Arg::kWih], "[G*H, C]");
  d.proj_size = 0;
  if (w_hr != nullptr) {
    const std::string name = names[Arg::kWhr];
    require(d.mode == Mode::kLstm, name + " (projection) is only for mode 'lstm'");
    check_rank(names[Arg::kWhr], *w_hr, 2, "[P, H]");
    require((*w_hr)[0] >= 1, name + " must have at least one row");
    d.proj_size = (*w_hr)[0];
  }
  validate(d, nullptr);
  return d;
}

Shape expected_shape(const RnnDesc& d, Arg a) {
  const int64_t T = d.steps, N = d.batch, C = d.input_size, H = d.hidden_size;
  const int64_t P = d.out_size(), GH = gate_count(d.mode) * H;
  switch (a) {
    case Arg::kX: return {T, N, C};
    case Arg::kWih: return {GH, C};
    case Arg::kWhh: return {GH, P};
    case Arg::kBih: case Arg::kBhh: return {GH};
    case Arg::kH0: return {N, P};
    case Arg::kC0: return {N, H};
    case Arg::kWhr: return {P, H};
    case Arg::kY: return {T, N, P};
    case Arg::kLengths: return {N};
    case Arg::kMask: return {T, N};
    case Arg::kPositions: return {N, T};
    case Arg::kZoneoutH: case Arg::kZoneoutY: return {T, N, P};
    case Arg::kZoneoutC: return {T, N, H};
    case Arg::kStateMask: return {N, P};
    case Arg::kInputGateMasks: return {gate_count(d.mode), N, C};
    default: return {gate_count(d.mode), N, P};  // kRecurrentGateMasks
  }
}

void check_shape(const char* name, const Shape& got, const Shape& expected, bool numpy_1d) {
  require(got == expected, std::string(name) + " has shape " + shape_str(got, numpy_1d) +
                               "; expected " + shape_str(expected, numpy_1d));
}

void check_shape(const RnnDesc& d, Arg a, const Shape& got, const ArgNames& names) {
  require(a != Arg::kZoneoutC || d.mode == Mode::kLstm,
          std::string(names[a]) + " is only for mode 'lstm' (the other modes have no cell "
                                  "state)");
  const Shape want = expected_shape(d, a);
  if (a == Arg::kWih && got.size() == 2 && got[0] == want[0] && got[1] != want[1]) {
    throw InvalidArgument(std::string(names[Arg::kX]) + " has " + str(d.input_size) +
                          " features (shape " + shape_str(expected_shape(d, Arg::kX)) +
                          ") but the weights expect input_size " + str(got[1]) + " (" +
                          names[Arg::kWih] + " has shape " + shape_str(got) + "; expected " +
                          shape_str(want) + ")");
  }
  check_shape(names[a], got, want, names.numpy_1d);
}

void bad_length(int64_t n, double v, int64_t T) {
  const std::string at = "lengths[" + str(n) + "] = " + number(v);
  const std::string range = "[0, " + str(T) + "]";
  if (!std::isfinite(v) || v != std::floor(v))
    throw InvalidArgument(at + " is not a whole number: lengths must be whole numbers in " +
                          range);
  throw InvalidArgument(at + " is outside " + range + ": lengths must be " +
                        (v < 0 ? ">= 0" : "<= T") + " (whole numbers in " + range + ")");
}

void bad_mask_value(int64_t t, int64_t n, double v) {
  throw InvalidArgument("mask[" + str(t) + ", " + str(n) + "] = " + number(v) +
                        ": mask must hold only 0 and 1");
}

void validate(const RnnDesc& d, const Valid& valid) {
  const int32_t* lengths = valid.lengths;
  require(d.steps >= 0, "steps (T) must be >= 0, got " + str(d.steps));
  require(d.batch >= 0, "batch (N) must be >= 0, got " + str(d.batch));
  require(d.input_size >= 0, "input_size must be >= 0, got " + str(d.input_size));
  require(d.hidden_size >= 1, "hidden_size must be >= 1, got " + str(d.hidden_size));
  require(d.proj_size >= 0, "proj_size must be >= 0, got " + str(d.proj_size));
  require(d.proj_size == 0 || d.mode == Mode::kLstm, "proj_size is only supported for LSTM");
  require(!d.clip || d.mode == Mode::kLstm, "state clipping is only supported for LSTM");
  require(d.gate_activation == GateActivation::kSigmoid || d.mode == Mode::kLstm ||
              d.mode == Mode::kGru,
          "gate_activation 'hard_sigmoid' is only for modes 'lstm' and 'gru' (the other modes "
          "have no gates)");
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
    for (int64_t n = 0; n < d.batch; ++n)
      if (lengths[n] < 0 || lengths[n] > d.steps) bad_length(n, lengths[n], d.steps);
  }
  if (valid.positions != nullptr) {
    require(lengths != nullptr, "positions need lengths");
    for (int64_t n = 0; n < d.batch; ++n) {
      const int32_t* row = valid.positions + n * d.steps;
      for (int32_t s = 0; s < lengths[n]; ++s) {
        require(row[s] >= 0 && row[s] < d.steps && (s == 0 || row[s] > row[s - 1]),
                "positions[" + str(n) + "] must be strictly increasing in [0, " +
                    str(d.steps) + ")");
      }
    }
  }
}

}  // namespace fusedrnn
