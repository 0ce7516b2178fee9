// MXNet operator `_fusedrnn_params`: the weights and biases of every layer and direction,
// cut out of MXNet's flat RNN parameter vector. The flat layout (all weights per layer,
// direction: i2h, h2h, h2r; then all biases per layer, direction: i2h, h2h) depends on the
// input size, which a symbolic graph only knows at shape inference, so the cutting is an
// operator that sees `data` too. One operator for all layers, so that `parameters` has one
// consumer and its gradient is scattered once; `data` gets a zero gradient.
//
// inputs: data [T, N, C], parameters [S]
// outputs: per layer, per direction: w_ih, w_hh, b_ih, b_hh, (w_hr)
// attributes: mode, state_size, num_layers, bidirectional, projection_size
#include <mxnet/lib_api.h>

#include <cstring>
#include <exception>
#include <string>
#include <unordered_map>
#include <vector>

#include "fusedrnn/contract.h"
#include "fusedrnn/rnn.h"
#include "guard.h"

using mxnet::ext::MXReturnValue;
using mxnet::ext::MXTensor;
using mxnet::ext::OpResource;
using mxnet::ext::MX_FAIL;
using mxnet::ext::MX_SUCCESS;
using Attrs = std::unordered_map<std::string, std::string>;

namespace {

struct Piece {
  int64_t offset;
  std::vector<unsigned> shape;
  int64_t size() const {
    int64_t n = 1;
    for (unsigned s : shape) n *= s;
    return n;
  }
};

int64_t int_attr(const Attrs& attrs, const char* key, int64_t fallback) {
  auto it = attrs.find(key);
  if (it == attrs.end() || it->second == "None") return fallback;
  if (it->second == "True" || it->second == "true") return 1;
  if (it->second == "False" || it->second == "false") return 0;
  try {
    return std::stoll(it->second);
  } catch (const std::exception&) {
    throw fusedrnn::InvalidArgument(std::string(key) + " must be an integer; got '" +
                                    it->second + "'");
  }
}

struct Sizes {
  int64_t G, H, L, D, Pr, P;
  int64_t pieces_per_layer() const { return Pr > 0 ? 5 : 4; }
};

Sizes sizes(const Attrs& attrs) {
  auto m = attrs.find("mode");
  Sizes z;
  z.G = fusedrnn::gate_count(fusedrnn::parse_mode(m == attrs.end() ? "" : m->second));
  z.H = int_attr(attrs, "state_size", 0);
  z.L = int_attr(attrs, "num_layers", 1);
  z.D = int_attr(attrs, "bidirectional", 0) ? 2 : 1;
  z.Pr = int_attr(attrs, "projection_size", 0);
  z.P = z.Pr > 0 ? z.Pr : z.H;
  if (z.H < 1 || z.L < 1 || z.Pr < 0)
    throw fusedrnn::InvalidArgument("state_size, num_layers or projection_size out of range");
  if (z.Pr > 0 && z.G != 4)
    throw fusedrnn::InvalidArgument("projection_size is only for mode lstm");
  // One output per piece: an RNN of more layers than this is no use and would make MXNet
  // allocate millions of outputs.
  if (z.L > 4096)
    throw fusedrnn::InvalidArgument("num_layers must be at most 4096; got " +
                                    std::to_string(z.L));
  return z;
}

// Every piece, in output order, and the total size, for input size C.
std::vector<Piece> layout(const Attrs& attrs, int64_t C, int64_t* total) {
  const Sizes z = sizes(attrs);
  const int64_t G = z.G, H = z.H, L = z.L, D = z.D, Pr = z.Pr, P = z.P;
  // MXNet 1.9 (without large-tensor support) holds at most 2^31 - 1 elements in an array.
  const int64_t limit = (int64_t{1} << 31) - 1;
  const auto too_large = [] {
    return fusedrnn::InvalidArgument("the parameters of this RNN would exceed MXNet's limit "
                                     "of 2^31 - 1 elements (state_size, num_layers, "
                                     "projection_size or the input size too large)");
  };
  if (H > limit / G || P > limit || C > limit) throw too_large();
  using Wide = __int128;  // products of up to three factors below 2^32 cannot overflow it
  const int64_t GH = G * H;
  const Wide pr_size = Pr > 0 ? Wide(P) * H : 0;
  const Wide first = Wide(GH) * C + Wide(GH) * P + pr_size;       // layer 0, one direction
  const Wide rest = Wide(GH) * (D * P) + Wide(GH) * P + pr_size;  // later layers, one direction
  const Wide all = D * first + Wide(L - 1) * D * rest + Wide(L) * D * 2 * GH;
  if (first > limit || rest > limit || all > limit) throw too_large();
  *total = static_cast<int64_t>(all);
  std::vector<Piece> out;
  int64_t offset = 0, bias = static_cast<int64_t>(D * first + Wide(L - 1) * D * rest);
  for (int64_t layer = 0; layer < L; ++layer) {
    const unsigned in = layer == 0 ? C : D * P;
    for (int64_t dir = 0; dir < D; ++dir) {
      const Piece w_ih{offset, {unsigned(GH), in}};
      const Piece w_hh{w_ih.offset + w_ih.size(), {unsigned(GH), unsigned(P)}};
      const Piece w_hr{w_hh.offset + w_hh.size(), {unsigned(P), unsigned(H)}};
      offset = w_hr.offset + (Pr > 0 ? w_hr.size() : 0);
      out.insert(out.end(), {w_ih, w_hh, Piece{bias, {unsigned(GH)}},
                             Piece{bias + GH, {unsigned(GH)}}});
      if (Pr > 0) out.push_back(w_hr);
      bias += 2 * GH;
    }
  }
  return out;
}

template <typename F>
MXReturnValue guarded(F&& f) {
  return fusedrnn::mxnet_ops::guarded("_fusedrnn_params", f);
}

std::vector<Piece> checked_layout(const Attrs& attrs, const std::vector<unsigned>& data,
                                  const std::vector<unsigned>& params) {
  if (data.size() != 3) throw fusedrnn::InvalidArgument("data must be [T, N, C]");
  int64_t total = 0;
  std::vector<Piece> pieces = layout(attrs, data[2], &total);
  if (params.size() != 1 || params[0] != total)
    throw fusedrnn::InvalidArgument("parameters has " +
                                    std::to_string(params.empty() ? 0 : params[0]) +
                                    " elements; the RNN needs " + std::to_string(total));
  return pieces;
}

size_t elem_bytes(int dtype) {
  switch (dtype) {
    case mxnet::ext::kFloat64: case mxnet::ext::kInt64: return 8;
    case mxnet::ext::kFloat16: return 2;
    case mxnet::ext::kUint8: case mxnet::ext::kInt8: return 1;
    default: return 4;
  }
}

MXReturnValue forward(const Attrs& attrs, std::vector<MXTensor>* in, std::vector<MXTensor>* out,
                      const OpResource&) {
  return guarded([&] {
    const MXTensor& params = (*in)[1];
    const std::vector<Piece> pieces = checked_layout(
        attrs, {(*in)[0].shape.begin(), (*in)[0].shape.end()},
        {params.shape.begin(), params.shape.end()});
    const size_t b = elem_bytes(params.dtype);
    for (size_t i = 0; i < pieces.size(); ++i)
      std::memcpy((*out)[i].data_ptr, static_cast<const char*>(params.data_ptr) + pieces[i].offset * b,
                  pieces[i].size() * b);
  });
}

// inputs: the pieces' gradients, data, parameters, the pieces; outputs: d data, d parameters.
MXReturnValue backward(const Attrs& attrs, std::vector<MXTensor>* in,
                       std::vector<MXTensor>* out, const OpResource&) {
  return guarded([&] {
    const size_t n = (in->size() - 2) / 2;
    const MXTensor& data = (*in)[n];
    const MXTensor& params = (*in)[n + 1];
    const std::vector<Piece> pieces = checked_layout(
        attrs, {data.shape.begin(), data.shape.end()}, {params.shape.begin(), params.shape.end()});
    MXTensor& d_data = (*out)[0];
    MXTensor& d_params = (*out)[1];
    std::memset(d_data.data_ptr, 0, d_data.size() * elem_bytes(d_data.dtype));
    // The pieces tile the vector: every element is written once.
    const size_t b = elem_bytes(d_params.dtype);
    for (size_t i = 0; i < pieces.size(); ++i)
      std::memcpy(static_cast<char*>(d_params.data_ptr) + pieces[i].offset * b, (*in)[i].data_ptr,
                  pieces[i].size() * b);
  });
}

MXReturnValue parse_attrs(const Attrs& attrs, int* num_in, int* num_out) {
  return guarded([&] {
    const Sizes z = sizes(attrs);
    *num_in = 2;
    *num_out = static_cast<int>(z.L * z.D * z.pieces_per_layer());
  });
}

// The parameters take the dtype of data (as with MXNet's RNN op), or the other way round
// when only they are known.
MXReturnValue infer_type(const Attrs&, std::vector<int>* in, std::vector<int>* out) {
  return guarded([&] {
    int& data = (*in)[0];
    int& params = (*in)[1];
    if (params < 0) params = data;
    if (data < 0) data = params;
    if (params < 0) return;  // neither known yet
    if (params != mxnet::ext::kFloat32 && params != mxnet::ext::kFloat64)
      throw fusedrnn::InvalidArgument("parameters must be float32 or float64");
    if (data != params)
      throw fusedrnn::InvalidArgument("data and parameters must have the same dtype");
    for (int& t : *out) t = params;
  });
}

MXReturnValue infer_shape(const Attrs& attrs, std::vector<std::vector<unsigned>>* in,
                          std::vector<std::vector<unsigned>>* out) {
  return guarded([&] {
    // Partial inference (infer_shape_partial, or a graph whose data shape comes later)
    // leaves the outputs open until the input size is known.
    const std::vector<unsigned>& data = (*in)[0];
    if (data.empty() || (data.size() == 3 && data[2] == ~0u)) return;
    // Like MXNet's RNN op, infer the size of `parameters` from data when the graph leaves it
    // open (lib_api copies changed input shapes back).
    std::vector<unsigned>& params = (*in)[1];
    if (params.empty() || (params.size() == 1 && (params[0] == 0 || params[0] == ~0u))) {
      int64_t total = 0;
      if (data.size() == 3) layout(attrs, data[2], &total);
      params = {static_cast<unsigned>(total)};
    }
    const std::vector<Piece> pieces = checked_layout(attrs, data, params);
    for (size_t i = 0; i < pieces.size(); ++i) (*out)[i] = pieces[i].shape;
  });
}

}  // namespace

REGISTER_OP(_fusedrnn_params)
    .setForward(forward, "cpu")
    .setBackward(backward, "cpu")
    .setParseAttrs(parse_attrs)
    .setInferType(infer_type)
    .setInferShape(infer_shape);
