// MXNet operator `_fusedrnn_layer`: one recurrent layer, one direction, over a sequence
// (fusedrnn::forward / backward), registered through MXNet's external operator library
// interface (lib_api.h). The building block of fusedrnn's MXNet-level RNN.
//
// inputs:  x [T, N, C], w_ih, w_hh, b_ih, b_hh, h0 [N, P], c0 [N, H] (lstm),
//          w_hr [P, H] (projection=True), lengths [N] (use_lengths=True) or mask [T, N] of
//          0/1 (use_mask=True: Keras masking, see fusedrnn::Valid::carry)
// outputs: y [T, N, P], hy [N, P], cy [N, H] (lstm)
// attributes: mode, reverse, reset_after, clip_min, clip_max, clip_nan, projection,
//             use_lengths, use_mask, training (default true: keep what backward needs;
//             false: forward stores nothing, and a backward, should one come, runs the
//             forward again first)
//
// Every error goes back to MXNet as MX_FAIL with a message naming the argument; no C++
// exception crosses the C boundary. lib_api does not say whether gradients are written or
// added, so backward always writes them (the Python layer handles grad_req='add'), nor
// whether autograd is recording, so the caller says so with `training`.
#include <mxnet/lib_api.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <initializer_list>
#include <string>
#include <unordered_map>
#include <vector>

#include "block_cache.h"
#include "fusedrnn/rnn.h"
#include "guard.h"

using mxnet::ext::CustomStatefulOp;
using mxnet::ext::MXContext;
using mxnet::ext::MXReturnValue;
using mxnet::ext::MXTensor;
using mxnet::ext::OpResource;
using mxnet::ext::MX_FAIL;
using mxnet::ext::MX_SUCCESS;
using Attrs = std::unordered_map<std::string, std::string>;

namespace {

struct LayerAttrs {
  fusedrnn::Mode mode = fusedrnn::Mode::kLstm;
  bool reverse = false, reset_after = true, clip = false, clip_nan = false;
  bool projection = false, use_lengths = false, use_mask = false, training = true;
  double clip_min = 0, clip_max = 0;
  int num_inputs() const {
    return 6 + (mode == fusedrnn::Mode::kLstm) + projection + (use_lengths || use_mask);
  }
  int num_outputs() const { return 2 + (mode == fusedrnn::Mode::kLstm); }
};

bool parse_bool(const Attrs& attrs, const char* key, bool fallback) {
  auto it = attrs.find(key);
  if (it == attrs.end()) return fallback;
  const std::string& v = it->second;
  if (v == "1" || v == "True" || v == "true") return true;
  if (v == "0" || v == "False" || v == "false") return false;
  throw fusedrnn::InvalidArgument(std::string(key) + " must be a boolean; got '" + v + "'");
}

bool parse_optional_number(const Attrs& attrs, const char* key, double* out) {
  auto it = attrs.find(key);
  if (it == attrs.end() || it->second == "None") return false;
  try {
    size_t used = 0;
    *out = std::stod(it->second, &used);
    if (used != it->second.size()) throw std::invalid_argument("");
  } catch (const std::exception&) {
    throw fusedrnn::InvalidArgument(std::string(key) + " must be a number; got '" + it->second +
                                    "'");
  }
  return true;
}

LayerAttrs parse(const Attrs& attrs) {
  LayerAttrs a;
  auto mode = attrs.find("mode");
  const std::string m = mode == attrs.end() ? "lstm" : mode->second;
  if (m == "lstm") {
    a.mode = fusedrnn::Mode::kLstm;
  } else if (m == "gru") {
    a.mode = fusedrnn::Mode::kGru;
  } else if (m == "rnn_tanh") {
    a.mode = fusedrnn::Mode::kRnnTanh;
  } else if (m == "rnn_relu") {
    a.mode = fusedrnn::Mode::kRnnRelu;
  } else {
    throw fusedrnn::InvalidArgument("mode must be one of lstm, gru, rnn_tanh, rnn_relu; got '" +
                                    m + "'");
  }
  a.reverse = parse_bool(attrs, "reverse", false);
  a.reset_after = parse_bool(attrs, "reset_after", true);
  a.clip_nan = parse_bool(attrs, "clip_nan", false);
  a.projection = parse_bool(attrs, "projection", false);
  a.use_lengths = parse_bool(attrs, "use_lengths", false);
  a.use_mask = parse_bool(attrs, "use_mask", false);
  a.training = parse_bool(attrs, "training", true);
  if (a.use_lengths && a.use_mask)
    throw fusedrnn::InvalidArgument("use_lengths and use_mask cannot both be set");
  const bool lo = parse_optional_number(attrs, "clip_min", &a.clip_min);
  const bool hi = parse_optional_number(attrs, "clip_max", &a.clip_max);
  if (lo != hi) throw fusedrnn::InvalidArgument("clip_min and clip_max must be given together");
  a.clip = lo;
  if (a.mode != fusedrnn::Mode::kLstm && (a.clip || a.projection))
    throw fusedrnn::InvalidArgument("clipping and projection are only for mode lstm");
  return a;
}

// Input positions, given the attributes.
struct Slots {
  int x = 0, w_ih = 1, w_hh = 2, b_ih = 3, b_hh = 4, h0 = 5, c0 = -1, w_hr = -1, lengths = -1,
      mask = -1;
  explicit Slots(const LayerAttrs& a) {
    int next = 6;
    if (a.mode == fusedrnn::Mode::kLstm) c0 = next++;
    if (a.projection) w_hr = next++;
    if (a.use_lengths) lengths = next++;
    if (a.use_mask) mask = next++;
  }
  // The integer-valued input (lengths or mask), or -1.
  int valid() const { return lengths >= 0 ? lengths : mask; }
};

const char* const kNames[] = {"x", "w_ih", "w_hh", "b_ih", "b_hh", "h0"};

std::string input_name(const Slots& s, int i) {
  if (i == s.c0) return "c0";
  if (i == s.w_hr) return "w_hr";
  if (i == s.lengths) return "lengths";
  if (i == s.mask) return "mask";
  return kNames[i];
}

// What lib_api reports for a dimension shape inference does not know yet.
constexpr unsigned kUnknown = static_cast<unsigned>(-1);

std::string shape_str(const std::vector<unsigned>& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i)
    out += (i ? ", " : "") + (s[i] == kUnknown ? std::string("?") : std::to_string(s[i]));
  return out + ")";
}

fusedrnn::RnnDesc describe(const LayerAttrs& a, const std::vector<std::vector<unsigned>>& in) {
  const Slots s(a);
  for (size_t i = 0; i < in.size(); ++i)
    for (unsigned dim : in[i])
      if (dim == kUnknown)
        throw fusedrnn::InvalidArgument(
            input_name(s, static_cast<int>(i)) + " has shape " + shape_str(in[i]) +
            " with an unknown dimension (MXNet reads 0 in a shape as unknown unless "
            "mx.util.set_np_shape(True) is on)");
  fusedrnn::RnnDesc d;
  d.mode = a.mode;
  if (in[s.x].size() != 3)
    throw fusedrnn::InvalidArgument("x must have 3 dimensions [T, N, C]; got " +
                                    shape_str(in[s.x]));
  d.steps = in[s.x][0];
  d.batch = in[s.x][1];
  d.input_size = in[s.x][2];
  const int64_t G = fusedrnn::gate_count(a.mode);
  if (in[s.w_ih].size() != 2 || in[s.w_ih][0] % G != 0 || in[s.w_ih][0] == 0)
    throw fusedrnn::InvalidArgument("w_ih must be [G*H, C] with G = " + std::to_string(G) +
                                    "; got " + shape_str(in[s.w_ih]));
  d.hidden_size = in[s.w_ih][0] / G;
  if (a.projection) {
    if (in[s.w_hr].size() != 2)
      throw fusedrnn::InvalidArgument("w_hr must be [P, H]; got " + shape_str(in[s.w_hr]));
    d.proj_size = in[s.w_hr][0];
  }
  d.reverse = a.reverse;
  d.reset_after = a.reset_after;
  d.clip = a.clip;
  d.clip_min = a.clip_min;
  d.clip_max = a.clip_max;
  d.clip_nan = a.clip_nan;
  const unsigned T = d.steps, N = d.batch, C = d.input_size, H = d.hidden_size;
  const unsigned P = d.out_size(), GH = G * H;
  const std::vector<std::pair<int, std::vector<unsigned>>> expect = {
      {s.w_ih, {GH, C}}, {s.w_hh, {GH, P}}, {s.b_ih, {GH}}, {s.b_hh, {GH}}, {s.h0, {N, P}},
      {s.c0, {N, H}},    {s.w_hr, {P, H}},  {s.lengths, {N}}, {s.mask, {T, N}}};
  for (const auto& e : expect) {
    if (e.first >= 0 && in[e.first] != e.second)
      throw fusedrnn::InvalidArgument(input_name(s, e.first) + " has shape " +
                                      shape_str(in[e.first]) + "; expected " +
                                      shape_str(e.second));
  }
  fusedrnn::validate(d, nullptr);
  return d;
}

std::vector<std::vector<unsigned>> shapes_of(const MXTensor* tensors, int count) {
  std::vector<std::vector<unsigned>> out;
  for (int i = 0; i < count; ++i) out.emplace_back(tensors[i].shape.begin(), tensors[i].shape.end());
  return out;
}

double value_at(const MXTensor& t, size_t i, const char* name) {
  // (MXNet 1.9.1 cannot hand a bool array to a library operator at all: the layers cast.)
  switch (t.dtype) {
    case mxnet::ext::kFloat32: return static_cast<const float*>(t.data_ptr)[i];
    case mxnet::ext::kFloat64: return static_cast<const double*>(t.data_ptr)[i];
    case mxnet::ext::kInt32: return static_cast<const int32_t*>(t.data_ptr)[i];
    case mxnet::ext::kInt64: return static_cast<double>(static_cast<const int64_t*>(t.data_ptr)[i]);
    case mxnet::ext::kUint8: return static_cast<const uint8_t*>(t.data_ptr)[i];
    case mxnet::ext::kInt8: return static_cast<const int8_t*>(t.data_ptr)[i];
    default: throw fusedrnn::InvalidArgument(std::string(name) + " has an unsupported dtype");
  }
}

// Lengths as int32, refusing values that are not whole numbers in [0, T].
std::vector<int32_t> read_lengths(const MXTensor& t, int64_t T) {
  std::vector<int32_t> out(t.size());
  for (size_t i = 0; i < out.size(); ++i) {
    const double v = value_at(t, i, "lengths");
    if (!(v >= 0 && v <= static_cast<double>(T)) || v != std::floor(v))
      throw fusedrnn::InvalidArgument("lengths[" + std::to_string(i) + "] = " +
                                      std::to_string(v) + " is not a whole number in [0, " +
                                      std::to_string(T) + "]");
    out[i] = static_cast<int32_t>(v);
  }
  return out;
}

// A [T, N] mask of 0/1 as the kernels' lengths and positions (sample n's set steps in order).
void read_mask(const MXTensor& t, int64_t T, int64_t N, std::vector<int32_t>* lengths,
               std::vector<int32_t>* positions) {
  lengths->assign(N, 0);
  positions->resize(T * N);
  for (int64_t step = 0; step < T; ++step) {
    for (int64_t n = 0; n < N; ++n) {
      const double v = value_at(t, step * N + n, "mask");
      if (v != 0 && v != 1)
        throw fusedrnn::InvalidArgument("mask[" + std::to_string(step) + ", " +
                                        std::to_string(n) + "] = " + std::to_string(v) +
                                        "; a mask holds only 0 and 1");
      if (v == 1) (*positions)[n * T + (*lengths)[n]++] = static_cast<int32_t>(step);
    }
  }
}

template <typename F>
MXReturnValue guarded(F&& f) {
  return fusedrnn::mxnet_ops::guarded("_fusedrnn_layer", f);
}

class LayerOp : public CustomStatefulOp {
 public:
  explicit LayerOp(const LayerAttrs& a) : attrs_(a) {}

  MXReturnValue Forward(std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                        const OpResource&) override {
    return guarded([&] {
      const bool f64 = (*inputs)[0].dtype == mxnet::ext::kFloat64;
      f64 ? run_forward<double>(*inputs, *outputs) : run_forward<float>(*inputs, *outputs);
    });
  }

  MXReturnValue Backward(std::vector<MXTensor>* inputs, std::vector<MXTensor>* outputs,
                         const OpResource&) override {
    return guarded([&] {
      const bool f64 = (*outputs)[0].dtype == mxnet::ext::kFloat64;
      f64 ? run_backward<double>(*inputs, *outputs) : run_backward<float>(*inputs, *outputs);
    });
  }

 private:
  template <typename T>
  void run_forward(std::vector<MXTensor>& in, std::vector<MXTensor>& out) {
    // An inference forward skips the gates and states a training one stores (at 50 steps,
    // batch 64, H = 512 an LSTM's reserve is 39 MB, written on every call).
    forward_into<T>(in.data(), out[0].data<T>(), out[1].data<T>(),
                    out.size() > 2 ? out[2].data<T>() : nullptr, attrs_.training);
  }

  template <typename T>
  void forward_into(MXTensor* in, T* y, T* hy, T* cy, bool keep_reserve) {
    const Slots s(attrs_);
    desc_ = describe(attrs_, shapes_of(in, attrs_.num_inputs()));
    lengths_.clear();
    positions_.clear();
    if (attrs_.use_lengths) lengths_ = read_lengths(in[s.lengths], desc_.steps);
    if (attrs_.use_mask) read_mask(in[s.mask], desc_.steps, desc_.batch, &lengths_, &positions_);
    reserve_.reset();
    if (keep_reserve)
      reserve_.reset(fusedrnn::BlockCache::instance().take(
          std::max<size_t>(fusedrnn::reserve_size(desc_), 1) * sizeof(T)));
    fusedrnn::Weights<T> w{in[s.w_ih].data<T>(), in[s.w_hh].data<T>(), in[s.b_ih].data<T>(),
                           in[s.b_hh].data<T>(), attrs_.projection ? in[s.w_hr].data<T>() : nullptr};
    fusedrnn::forward<T>(desc_, valid(), in[s.x].data<T>(), w, in[s.h0].data<T>(),
                         s.c0 >= 0 ? in[s.c0].data<T>() : nullptr, y, hy, cy,
                         static_cast<T*>(reserve_.get()));
  }

  // inputs: the output gradients, then the forward inputs, then the forward outputs.
  template <typename T>
  void run_backward(std::vector<MXTensor>& in, std::vector<MXTensor>& out) {
    const Slots s(attrs_);
    const int n_out = attrs_.num_outputs();
    MXTensor* fwd_in = in.data() + n_out;
    if (!reserve_) {
      // The forward ran as inference (training=false, e.g. a graph cached outside autograd
      // and then exported): run it again, keeping what backward needs. Its outputs are
      // the ones MXNet already holds, so they go to scratch.
      const MXTensor* fwd_out = fwd_in + attrs_.num_inputs();
      std::vector<T> y(fwd_out[0].size()), hy(fwd_out[1].size()),
          cy(n_out > 2 ? fwd_out[2].size() : 0);
      forward_into<T>(fwd_in, y.data(), hy.data(), n_out > 2 ? cy.data() : nullptr, true);
    }
    fusedrnn::Weights<T> w{fwd_in[s.w_ih].data<T>(), fwd_in[s.w_hh].data<T>(),
                           fwd_in[s.b_ih].data<T>(), fwd_in[s.b_hh].data<T>(),
                           attrs_.projection ? fwd_in[s.w_hr].data<T>() : nullptr};
    fusedrnn::Grads<T> g;
    g.dx = out[s.x].data<T>();
    g.dw_ih = out[s.w_ih].data<T>();
    g.dw_hh = out[s.w_hh].data<T>();
    g.db_ih = out[s.b_ih].data<T>();
    g.db_hh = out[s.b_hh].data<T>();
    g.dh0 = out[s.h0].data<T>();
    if (s.c0 >= 0) g.dc0 = out[s.c0].data<T>();
    if (s.w_hr >= 0) g.dw_hr = out[s.w_hr].data<T>();
    if (s.valid() >= 0) {
      // Lengths and masks are integers: their gradient is zero.
      MXTensor& dl = out[s.valid()];
      size_t bytes = 4;
      if (dl.dtype == mxnet::ext::kFloat64 || dl.dtype == mxnet::ext::kInt64) bytes = 8;
      if (dl.dtype == mxnet::ext::kUint8 || dl.dtype == mxnet::ext::kInt8) bytes = 1;
      std::memset(dl.data_ptr, 0, dl.size() * bytes);
    }
    fusedrnn::backward<T>(desc_, valid(), fwd_in[s.x].data<T>(), w, fwd_in[s.h0].data<T>(),
                          s.c0 >= 0 ? fwd_in[s.c0].data<T>() : nullptr,
                          static_cast<const T*>(reserve_.get()), in[0].data<T>(),
                          in[1].data<T>(), n_out > 2 ? in[2].data<T>() : nullptr, g);
  }

  fusedrnn::Valid valid() const {
    return fusedrnn::Valid(lengths_.empty() ? nullptr : lengths_.data(),
                           positions_.empty() ? nullptr : positions_.data(), attrs_.use_mask);
  }

  LayerAttrs attrs_;
  fusedrnn::RnnDesc desc_;
  std::vector<int32_t> lengths_, positions_;
  fusedrnn::CachedBlock reserve_;  // what a training forward keeps for backward
};

MXReturnValue parse_attrs(const Attrs& attrs, int* num_in, int* num_out) {
  return guarded([&] {
    const LayerAttrs a = parse(attrs);
    *num_in = a.num_inputs();
    *num_out = a.num_outputs();
  });
}

MXReturnValue infer_type(const Attrs& attrs, std::vector<int>* in, std::vector<int>* out) {
  return guarded([&] {
    const LayerAttrs a = parse(attrs);
    const Slots s(a);
    // x's dtype, or the first known one of the others (then x's too), as MXNet's RNN op
    // infers the parameters' and states' dtypes.
    int dtype = (*in)[0];
    for (int i = 1; dtype < 0 && i < static_cast<int>(in->size()); ++i)
      if (i != s.valid()) dtype = (*in)[i];
    if (dtype < 0) return;  // nothing known yet
    if (dtype != mxnet::ext::kFloat32 && dtype != mxnet::ext::kFloat64)
      throw fusedrnn::InvalidArgument("x must be float32 or float64");
    for (int i = 0; i < static_cast<int>(in->size()); ++i) {
      if (i != s.valid() && (*in)[i] < 0) (*in)[i] = dtype;
    }
    for (int i = 1; i < static_cast<int>(in->size()); ++i) {
      if (i == s.valid()) {
        const int t = (*in)[i];
        if (t < 0) continue;  // not known yet
        if (t != mxnet::ext::kFloat32 && t != mxnet::ext::kFloat64 && t != mxnet::ext::kInt32 &&
            t != mxnet::ext::kInt64 && t != mxnet::ext::kUint8 && t != mxnet::ext::kInt8)
          throw fusedrnn::InvalidArgument(
              input_name(s, i) + " must be int32, int64, uint8, int8, float32 or float64 " +
              "(MXNet 1.9 cannot pass bool or float16 arrays to a library operator); got dtype "
              "flag " + std::to_string(t));
        continue;
      }
      if ((*in)[i] != dtype)
        throw fusedrnn::InvalidArgument(input_name(s, i) + " must have the dtype of x");
    }
    for (int& t : *out) t = dtype;
  });
}

// Fills the unknown dimensions of the inputs from x and the known ones, as MXNet's own RNN op
// does: a deferred input size leaves w_ih's columns open, and inside a graph gluon's
// begin_state leaves the batch size to shape inference. (lib_api copies changed input shapes
// back to MXNet.)
void complete_inputs(const LayerAttrs& a, std::vector<std::vector<unsigned>>* in) {
  const Slots s(a);
  std::vector<std::vector<unsigned>>& v = *in;
  auto dim = [&](int slot, size_t k) {
    return slot >= 0 && k < v[slot].size() ? v[slot][k] : kUnknown;
  };
  auto first_known = [](std::initializer_list<unsigned> dims) {
    for (unsigned d : dims)
      if (d != kUnknown) return d;
    return kUnknown;
  };
  if (v[s.x].size() != 3) return;
  for (unsigned d : v[s.x])
    if (d == kUnknown) return;
  const unsigned T = v[s.x][0], N = v[s.x][1], C = v[s.x][2];
  const unsigned G = fusedrnn::gate_count(a.mode);
  auto per_gate = [G](unsigned d) { return d == kUnknown || d % G ? kUnknown : d / G; };
  const unsigned H = first_known({per_gate(dim(s.w_ih, 0)), per_gate(dim(s.w_hh, 0)),
                                  per_gate(dim(s.b_ih, 0)), per_gate(dim(s.b_hh, 0)),
                                  dim(s.c0, 1), dim(s.w_hr, 1)});
  if (H == kUnknown || H == 0) return;
  const unsigned P = a.projection ? first_known({dim(s.w_hr, 0), dim(s.h0, 1), dim(s.w_hh, 1)})
                                  : H;
  if (P == kUnknown) return;
  const std::vector<std::pair<int, std::vector<unsigned>>> expect = {
      {s.w_ih, {G * H, C}}, {s.w_hh, {G * H, P}}, {s.b_ih, {G * H}}, {s.b_hh, {G * H}},
      {s.h0, {N, P}},       {s.c0, {N, H}},       {s.w_hr, {P, H}},  {s.lengths, {N}},
      {s.mask, {T, N}}};
  for (const auto& e : expect) {
    if (e.first < 0) continue;
    std::vector<unsigned>& shape = v[e.first];
    bool fits = shape.empty() || shape.size() == e.second.size();
    for (size_t k = 0; fits && k < shape.size(); ++k)
      fits = shape[k] == kUnknown || shape[k] == e.second[k];
    if (fits) shape = e.second;
  }
}

bool fully_known(const std::vector<std::vector<unsigned>>& shapes) {
  return std::none_of(shapes.begin(), shapes.end(), [](const auto& s) {
    return s.empty() || std::count(s.begin(), s.end(), kUnknown) > 0;
  });
}

MXReturnValue infer_shape(const Attrs& attrs, std::vector<std::vector<unsigned>>* in,
                          std::vector<std::vector<unsigned>>* out) {
  return guarded([&] {
    const LayerAttrs a = parse(attrs);
    complete_inputs(a, in);
    // Partial inference (infer_shape_partial, or a pass of MXNet's before the other shapes
    // are known) leaves the outputs open; MXNet itself names an input that stays unknown.
    // When only x is unknown nothing else can fill it in: an imperative call with a zero in
    // x's shape (MXNet's unknown), which describe() refuses by name.
    if (!fully_known({in->begin() + 1, in->end()})) return;
    const fusedrnn::RnnDesc d = describe(a, *in);
    const unsigned T = d.steps, N = d.batch, P = d.out_size(), H = d.hidden_size;
    (*out)[0] = {T, N, P};
    (*out)[1] = {N, P};
    if (out->size() > 2) (*out)[2] = {N, H};
  });
}

MXReturnValue create_state(const Attrs& attrs, const MXContext& ctx,
                           const std::vector<std::vector<unsigned>>&, const std::vector<int>,
                           CustomStatefulOp** state) {
  return guarded([&] {
    if (ctx.dev_type != "cpu") throw fusedrnn::InvalidArgument("only the CPU is supported");
    *state = CustomStatefulOp::create<LayerOp>(parse(attrs));
  });
}

}  // namespace

REGISTER_OP(_fusedrnn_layer)
    .setParseAttrs(parse_attrs)
    .setInferType(infer_type)
    .setInferShape(infer_shape)
    .setCreateOpState(create_state, "cpu");

MXReturnValue initialize(int version) {
  // lib_api ties a library to the MXNet it was built against (1.9.x).
  if (version < 10900 || version >= 11000) {
    MX_ERROR_MSG << "fusedrnn's operators need MXNet 1.9.x; this is " << version;
    return MX_FAIL;
  }
  return MX_SUCCESS;
}
