// MXNet operator `_fusedrnn_layer`: one recurrent layer, one direction, over a sequence
// (fusedrnn::forward / backward), registered through MXNet's external operator library
// interface (lib_api.h). The building block of fusedrnn's MXNet-level RNN.
//
// inputs:  x [T, N, C], w_ih, w_hh, b_ih, b_hh, h0 [N, P], c0 [N, H] (lstm),
//          w_hr [P, H] (projection=True), lengths [N] (use_lengths=True) or mask [T, N] of
//          0/1 (use_mask=True: Keras masking, see fusedrnn::Valid::carry), then the
//          regularisers' masks of fusedrnn::Masks that use_<name> asks for, in Masks' order:
//          zoneout_h, zoneout_c (lstm), zoneout_y [T, N, P], state_mask [N, P],
//          input_gate_masks [G, N, C], recurrent_gate_masks [G, N, P] (constants: their
//          gradient is zero)
// outputs: y [T, N, P], hy [N, P], cy [N, H] (lstm)
// attributes: mode, reverse, reset_after, clip_min, clip_max, clip_nan, projection,
//             gate_activation ('sigmoid' (default) or 'hard_sigmoid', lstm and gru),
//             use_lengths, use_mask, use_zoneout_h, use_zoneout_c, use_zoneout_y,
//             use_state_mask, use_input_gate_masks, use_recurrent_gate_masks,
//             training (default true: keep what backward needs;
//             false: forward stores nothing, and a backward, should one come, runs the
//             forward again first)
//
// Shapes, lengths and masks follow fusedrnn/contract.h. Every error goes back to MXNet as
// MX_FAIL with a message naming the argument; no C++ exception crosses the C boundary
// (guard.h). lib_api does not say whether gradients are written or added, so backward always
// writes them (the Python layer handles grad_req='add'), nor whether autograd is recording,
// so the caller says so with `training`.
#include <mxnet/lib_api.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <initializer_list>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "block_cache.h"
#include "fusedrnn/contract.h"
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

using fusedrnn::Arg;
using fusedrnn::Shape;

// The regularisers' masks, in the order of their inputs, with their attributes.
constexpr Arg kMaskArgs[] = {Arg::kZoneoutH,  Arg::kZoneoutC,       Arg::kZoneoutY,
                             Arg::kStateMask, Arg::kInputGateMasks, Arg::kRecurrentGateMasks};
constexpr const char* kMaskAttrs[] = {"use_zoneout_h",  "use_zoneout_c",
                                      "use_zoneout_y",  "use_state_mask",
                                      "use_input_gate_masks", "use_recurrent_gate_masks"};
constexpr size_t kMaskCount = sizeof(kMaskArgs) / sizeof(kMaskArgs[0]);

struct LayerAttrs {
  fusedrnn::RnnDesc options;  // mode and options; no sizes
  bool projection = false, use_lengths = false, use_mask = false, training = true;
  bool masks[kMaskCount] = {};  // which regularisers' masks are inputs
  bool lstm() const { return options.mode == fusedrnn::Mode::kLstm; }
  int num_masks() const { return static_cast<int>(std::count(masks, masks + kMaskCount, true)); }
  int num_inputs() const {
    return 6 + lstm() + projection + (use_lengths || use_mask) + num_masks();
  }
  int num_outputs() const { return 2 + lstm(); }
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
  fusedrnn::RnnDesc& o = a.options;
  auto mode = attrs.find("mode");
  o.mode = fusedrnn::parse_mode(mode == attrs.end() ? "lstm" : mode->second);
  o.reverse = parse_bool(attrs, "reverse", false);
  o.reset_after = parse_bool(attrs, "reset_after", true);
  o.clip_nan = parse_bool(attrs, "clip_nan", false);
  auto gate = attrs.find("gate_activation");
  if (gate != attrs.end()) o.gate_activation = fusedrnn::parse_gate_activation(gate->second);
  a.projection = parse_bool(attrs, "projection", false);
  a.use_lengths = parse_bool(attrs, "use_lengths", false);
  a.use_mask = parse_bool(attrs, "use_mask", false);
  a.training = parse_bool(attrs, "training", true);
  for (size_t i = 0; i < kMaskCount; ++i) a.masks[i] = parse_bool(attrs, kMaskAttrs[i], false);
  if (a.use_lengths && a.use_mask)
    throw fusedrnn::InvalidArgument("use_lengths and use_mask cannot both be set");
  const bool lo = parse_optional_number(attrs, "clip_min", &o.clip_min);
  const bool hi = parse_optional_number(attrs, "clip_max", &o.clip_max);
  if (lo != hi) throw fusedrnn::InvalidArgument("clip_min and clip_max must be given together");
  o.clip = lo;
  if (!a.lstm() && (o.clip || a.projection))
    throw fusedrnn::InvalidArgument("clipping and projection are only for mode lstm");
  return a;
}

// The operator's inputs, in order: the arguments that the attributes ask for.
struct Slots {
  std::vector<Arg> args;
  explicit Slots(const LayerAttrs& a)
      : args{Arg::kX, Arg::kWih, Arg::kWhh, Arg::kBih, Arg::kBhh, Arg::kH0} {
    if (a.lstm()) args.push_back(Arg::kC0);
    if (a.projection) args.push_back(Arg::kWhr);
    if (a.use_lengths) args.push_back(Arg::kLengths);
    if (a.use_mask) args.push_back(Arg::kMask);
    for (size_t i = 0; i < kMaskCount; ++i)
      if (a.masks[i]) args.push_back(kMaskArgs[i]);
  }
  // The input of argument a, or -1.
  int operator[](Arg a) const {
    for (size_t i = 0; i < args.size(); ++i)
      if (args[i] == a) return static_cast<int>(i);
    return -1;
  }
  // The integer-valued input (lengths or mask), or -1.
  int valid() const { return std::max((*this)[Arg::kLengths], (*this)[Arg::kMask]); }
};

// The kernels' names, with 1-d shapes written as "(3)".
const fusedrnn::ArgNames kNames = [] {
  fusedrnn::ArgNames names;
  names.numpy_1d = false;
  return names;
}();

// What lib_api reports for a dimension shape inference does not know yet.
constexpr unsigned kUnknown = static_cast<unsigned>(-1);

Shape to_shape(const std::vector<unsigned>& dims) {
  Shape s;
  for (unsigned d : dims) s.push_back(d == kUnknown ? -1 : static_cast<int64_t>(d));
  return s;
}

std::vector<unsigned> to_dims(const Shape& shape) {
  return std::vector<unsigned>(shape.begin(), shape.end());
}

// The sizes of a call from the inputs' shapes, every input checked against them.
fusedrnn::RnnDesc describe(const LayerAttrs& a, const std::vector<Shape>& in) {
  const Slots s(a);
  for (size_t i = 0; i < in.size(); ++i)
    for (int64_t dim : in[i])
      if (dim < 0)
        throw fusedrnn::InvalidArgument(
            std::string(kNames[s.args[i]]) + " has shape " + fusedrnn::shape_str(in[i], false) +
            " with an unknown dimension (MXNet reads 0 in a shape as unknown unless "
            "mx.util.set_np_shape(True) is on)");
  const fusedrnn::RnnDesc d = fusedrnn::describe(a.options, in[s[Arg::kX]], in[s[Arg::kWih]],
                                                 a.projection ? &in[s[Arg::kWhr]] : nullptr,
                                                 kNames);
  for (size_t i = 1; i < in.size(); ++i) fusedrnn::check_shape(d, s.args[i], in[i], kNames);
  return d;
}

std::vector<Shape> shapes_of(const MXTensor* tensors, int count) {
  std::vector<Shape> out;
  for (int i = 0; i < count; ++i)
    out.emplace_back(tensors[i].shape.begin(), tensors[i].shape.end());
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

template <typename F>
MXReturnValue guarded(F&& f) {
  return fusedrnn::mxnet_ops::guarded("_fusedrnn_layer", f);
}

class LayerOp : public CustomStatefulOp {
 public:
  explicit LayerOp(const LayerAttrs& a) : attrs_(a), slots_(a) {}

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
    const Slots& s = slots_;
    reserve_.reset();  // kept only from a forward that succeeds
    desc_ = describe(attrs_, shapes_of(in, attrs_.num_inputs()));
    lengths_.clear();
    positions_.clear();
    if (attrs_.use_lengths) {
      const MXTensor& t = in[s[Arg::kLengths]];
      lengths_ = fusedrnn::lengths_from(desc_.batch, desc_.steps,
                                        [&](int64_t n) { return value_at(t, n, "lengths"); });
    }
    if (attrs_.use_mask) {
      const MXTensor& t = in[s[Arg::kMask]];
      fusedrnn::mask_to_valid(desc_.steps, desc_.batch,
                              [&](int64_t i) { return value_at(t, i, "mask"); }, &lengths_,
                              &positions_);
    }
    const fusedrnn::Masks<T> m = masks<T>(in, /*from_forward_inputs=*/true);
    fusedrnn::CachedBlock reserve;
    if (keep_reserve)
      reserve.reset(fusedrnn::BlockCache::instance().take(
          std::max<size_t>(fusedrnn::reserve_size(desc_, m.any()), 1) * sizeof(T)));
    fusedrnn::forward<T>(desc_, valid(), in[s[Arg::kX]].data<T>(), weights<T>(in),
                         in[s[Arg::kH0]].data<T>(), data<T>(in, Arg::kC0), y, hy, cy,
                         static_cast<T*>(reserve.get()), m);
    reserve_ = std::move(reserve);
  }

  // inputs: the output gradients, then the forward inputs, then the forward outputs.
  template <typename T>
  void run_backward(std::vector<MXTensor>& in, std::vector<MXTensor>& out) {
    const Slots& s = slots_;
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
    // outputs: the inputs' gradients, in the inputs' order.
    fusedrnn::Grads<T> g;
    g.dx = data<T>(out.data(), Arg::kX);
    g.dw_ih = data<T>(out.data(), Arg::kWih);
    g.dw_hh = data<T>(out.data(), Arg::kWhh);
    g.db_ih = data<T>(out.data(), Arg::kBih);
    g.db_hh = data<T>(out.data(), Arg::kBhh);
    g.dh0 = data<T>(out.data(), Arg::kH0);
    g.dc0 = data<T>(out.data(), Arg::kC0);
    g.dw_hr = data<T>(out.data(), Arg::kWhr);
    if (s.valid() >= 0) {
      // Lengths and masks are integers: their gradient is zero.
      MXTensor& dl = out[s.valid()];
      size_t bytes = 4;
      if (dl.dtype == mxnet::ext::kFloat64 || dl.dtype == mxnet::ext::kInt64) bytes = 8;
      if (dl.dtype == mxnet::ext::kUint8 || dl.dtype == mxnet::ext::kInt8) bytes = 1;
      std::memset(dl.data_ptr, 0, dl.size() * bytes);
    }
    for (Arg a : kMaskArgs) {
      T* dm = data<T>(out.data(), a);
      if (dm) std::fill(dm, dm + out[slots_[a]].size(), T(0));
    }
    fusedrnn::backward<T>(desc_, valid(), fwd_in[s[Arg::kX]].data<T>(), weights<T>(fwd_in),
                          fwd_in[s[Arg::kH0]].data<T>(), data<T>(fwd_in, Arg::kC0),
                          static_cast<const T*>(reserve_.get()), in[0].data<T>(),
                          in[1].data<T>(), n_out > 2 ? in[2].data<T>() : nullptr, g,
                          masks<T>(fwd_in));
  }

  // The data of argument a among the inputs (or their gradients), or null if it has none.
  template <typename T>
  T* data(MXTensor* tensors, Arg a) const {
    const int i = slots_[a];
    return i >= 0 ? tensors[i].data<T>() : nullptr;
  }

  template <typename T>
  fusedrnn::Weights<T> weights(MXTensor* in) const {
    return {data<T>(in, Arg::kWih), data<T>(in, Arg::kWhh), data<T>(in, Arg::kBih),
            data<T>(in, Arg::kBhh), data<T>(in, Arg::kWhr)};
  }

  // The masks among the forward inputs `in`, less those that change nothing: in a graph run
  // for inference MXNet's Dropout hands its masks over as ones, and the plain path is then
  // the faster one. A forward decides (from_forward_inputs); its backward takes the same.
  template <typename T>
  fusedrnn::Masks<T> masks(MXTensor* in, bool from_forward_inputs = false) {
    fusedrnn::Masks<T> m;
    const T** ptrs[kMaskCount] = {&m.zoneout_h, &m.zoneout_c, &m.zoneout_y, &m.state_mask,
                                  &m.input_gate_masks, &m.recurrent_gate_masks};
    for (size_t k = 0; k < kMaskCount; ++k) {
      const int i = slots_[kMaskArgs[k]];
      if (i < 0) continue;
      const T* v = in[i].data<T>();
      if (from_forward_inputs) {
        // zoneout keeps the new value wherever its mask is not 0; the others multiply
        const bool zoneout = k < 3;
        const size_t n = in[i].size();
        size_t j = 0;
        while (j < n && (zoneout ? v[j] != T(0) : v[j] == T(1))) ++j;
        mask_used_[k] = j < n;
      }
      if (mask_used_[k]) *ptrs[k] = v;
    }
    return m;
  }

  fusedrnn::Valid valid() const {
    return fusedrnn::Valid(lengths_.empty() ? nullptr : lengths_.data(),
                           positions_.empty() ? nullptr : positions_.data(), attrs_.use_mask);
  }

  const LayerAttrs attrs_;
  const Slots slots_;
  fusedrnn::RnnDesc desc_;
  std::vector<int32_t> lengths_, positions_;
  fusedrnn::CachedBlock reserve_;  // what a training forward keeps for backward
  bool mask_used_[kMaskCount] = {};  // the masks the last forward passed on
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
              std::string(kNames[s.args[i]]) +
              " must be int32, int64, uint8, int8, float32 or float64 " +
              "(MXNet 1.9 cannot pass bool or float16 arrays to a library operator); got dtype "
              "flag " + std::to_string(t));
        continue;
      }
      if ((*in)[i] != dtype)
        throw fusedrnn::InvalidArgument(std::string(kNames[s.args[i]]) +
                                        " must have the dtype of x");
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
  auto dim = [&](Arg arg, size_t k) {
    const int i = s[arg];
    return i >= 0 && k < v[i].size() ? v[i][k] : kUnknown;
  };
  auto first_known = [](std::initializer_list<unsigned> dims) {
    for (unsigned d : dims)
      if (d != kUnknown) return d;
    return kUnknown;
  };
  const std::vector<unsigned>& x = v[s[Arg::kX]];
  if (x.size() != 3 || std::count(x.begin(), x.end(), kUnknown) > 0) return;
  const unsigned G = fusedrnn::gate_count(a.options.mode);
  auto per_gate = [G](unsigned d) { return d == kUnknown || d % G ? kUnknown : d / G; };
  const unsigned H = first_known({per_gate(dim(Arg::kWih, 0)), per_gate(dim(Arg::kWhh, 0)),
                                  per_gate(dim(Arg::kBih, 0)), per_gate(dim(Arg::kBhh, 0)),
                                  dim(Arg::kC0, 1), dim(Arg::kWhr, 1)});
  if (H == kUnknown || H == 0) return;
  const unsigned P = a.projection ? first_known({dim(Arg::kWhr, 0), dim(Arg::kH0, 1),
                                                 dim(Arg::kWhh, 1)})
                                  : H;
  if (P == kUnknown) return;
  fusedrnn::RnnDesc sizes = a.options;
  sizes.steps = x[0];
  sizes.batch = x[1];
  sizes.input_size = x[2];
  sizes.hidden_size = H;
  sizes.proj_size = a.projection ? P : 0;
  for (size_t i = 1; i < v.size(); ++i) {
    const std::vector<unsigned> want = to_dims(fusedrnn::expected_shape(sizes, s.args[i]));
    std::vector<unsigned>& shape = v[i];
    bool fits = shape.empty() || shape.size() == want.size();
    for (size_t k = 0; fits && k < shape.size(); ++k)
      fits = shape[k] == kUnknown || shape[k] == want[k];
    if (fits) shape = want;
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
    std::vector<Shape> shapes;
    for (const std::vector<unsigned>& dims : *in) shapes.push_back(to_shape(dims));
    const fusedrnn::RnnDesc d = describe(a, shapes);
    (*out)[0] = to_dims(fusedrnn::expected_shape(d, Arg::kY));
    (*out)[1] = to_dims(fusedrnn::expected_shape(d, Arg::kH0));
    if (out->size() > 2) (*out)[2] = to_dims(fusedrnn::expected_shape(d, Arg::kC0));
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
