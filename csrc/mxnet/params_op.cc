// MXNet operator `_fusedrnn_params`: the weights and biases of one layer and direction, cut
// out of MXNet's flat RNN parameter vector. The flat layout (all weights per layer, direction:
// i2h, h2h, h2r; then all biases per layer, direction: i2h, h2h) depends on the input size,
// which a symbolic graph only knows at shape inference, so the cutting is an operator that
// sees `data` too. Backward scatters the pieces' gradients into a zero gradient of the flat
// vector (MXNet sums the contributions of the layers); `data` gets a zero gradient.
//
// inputs: data [T, N, C], parameters [S]; outputs: w_ih, w_hh, b_ih, b_hh, (w_hr)
// attributes: mode, state_size, num_layers, bidirectional, projection_size, layer, direction
#include <mxnet/lib_api.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <string>
#include <unordered_map>
#include <vector>

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

// The pieces of (layer, direction) and the total size, for input size C. Closed form: a
// loop over the layers would let a huge num_layers hang shape inference.
std::vector<Piece> layout(const Attrs& attrs, int64_t C, int64_t* total) {
  auto m = attrs.find("mode");
  const std::string mode = m == attrs.end() ? "" : m->second;
  const int64_t G = mode == "lstm" ? 4 : mode == "gru" ? 3 : mode.rfind("rnn_", 0) == 0 ? 1 : 0;
  if (G == 0) throw fusedrnn::InvalidArgument("mode must be one of lstm, gru, rnn_tanh, rnn_relu");
  const int64_t H = int_attr(attrs, "state_size", 0), L = int_attr(attrs, "num_layers", 1);
  const int64_t D = int_attr(attrs, "bidirectional", 0) ? 2 : 1;
  const int64_t Pr = int_attr(attrs, "projection_size", 0), P = Pr > 0 ? Pr : H;
  const int64_t layer = int_attr(attrs, "layer", 0), dir = int_attr(attrs, "direction", 0);
  if (H < 1 || L < 1 || Pr < 0 || layer < 0 || layer >= L || dir < 0 || dir >= D)
    throw fusedrnn::InvalidArgument("state_size, num_layers, projection_size, layer or "
                                    "direction out of range");
  // MXNet 1.9 (without large-tensor support) holds at most 2^31 - 1 elements in an array.
  const int64_t limit = (int64_t{1} << 31) - 1;
  const auto too_large = [] {
    return fusedrnn::InvalidArgument("the parameters of this RNN would exceed MXNet's limit "
                                     "of 2^31 - 1 elements (state_size, num_layers, "
                                     "projection_size or the input size too large)");
  };
  if (H > limit / G || P > limit || C > limit || L > limit) throw too_large();
  using Wide = __int128;  // products of up to three factors below 2^32 cannot overflow it
  const int64_t GH = G * H;
  const Wide pr_size = Pr > 0 ? Wide(P) * H : 0;
  const Wide first = Wide(GH) * C + Wide(GH) * P + pr_size;       // layer 0, one direction
  const Wide rest = Wide(GH) * (D * P) + Wide(GH) * P + pr_size;  // later layers, one direction
  const int64_t biases = 2 * GH;
  const Wide all = D * first + Wide(L - 1) * D * rest + Wide(L) * D * biases;
  if (first > limit || rest > limit || all > limit) throw too_large();
  const int64_t bias_base = static_cast<int64_t>(D * first + Wide(L - 1) * D * rest);
  *total = static_cast<int64_t>(all);
  const unsigned in = layer == 0 ? C : D * P;
  int64_t offset = static_cast<int64_t>(layer == 0 ? dir * first
                                                 : D * first + Wide((layer - 1) * D + dir) * rest);
  std::vector<Piece> pieces;
  std::vector<std::vector<unsigned>> shapes = {{unsigned(GH), in}, {unsigned(GH), unsigned(P)}};
  if (Pr > 0) shapes.push_back({unsigned(P), unsigned(H)});
  for (const auto& s : shapes) {
    pieces.push_back(Piece{offset, s});
    offset += pieces.back().size();
  }
  const int64_t b = bias_base + (layer * D + dir) * biases;
  // Output order: w_ih, w_hh, b_ih, b_hh, (w_hr).
  std::vector<Piece> out = {pieces[0], pieces[1], Piece{b, {unsigned(GH)}},
                            Piece{b + GH, {unsigned(GH)}}};
  if (Pr > 0) out.push_back(pieces[2]);
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

size_t elem_bytes(const MXTensor& t) { return t.dtype == mxnet::ext::kFloat64 ? 8 : 4; }

MXReturnValue forward(const Attrs& attrs, std::vector<MXTensor>* in, std::vector<MXTensor>* out,
                      const OpResource&) {
  return guarded([&] {
    const MXTensor& params = (*in)[1];
    const std::vector<Piece> pieces = checked_layout(
        attrs, {(*in)[0].shape.begin(), (*in)[0].shape.end()},
        {params.shape.begin(), params.shape.end()});
    const size_t b = elem_bytes(params);
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
    std::memset(d_data.data_ptr, 0, d_data.size() * elem_bytes(d_data));
    const size_t b = elem_bytes(d_params);
    std::memset(d_params.data_ptr, 0, d_params.size() * b);
    for (size_t i = 0; i < pieces.size(); ++i)
      std::memcpy(static_cast<char*>(d_params.data_ptr) + pieces[i].offset * b, (*in)[i].data_ptr,
                  pieces[i].size() * b);
  });
}

MXReturnValue parse_attrs(const Attrs& attrs, int* num_in, int* num_out) {
  return guarded([&] {
    *num_in = 2;
    *num_out = int_attr(attrs, "projection_size", 0) > 0 ? 5 : 4;
  });
}

MXReturnValue infer_type(const Attrs&, std::vector<int>* in, std::vector<int>* out) {
  return guarded([&] {
    if ((*in)[1] != mxnet::ext::kFloat32 && (*in)[1] != mxnet::ext::kFloat64)
      throw fusedrnn::InvalidArgument("parameters must be float32 or float64");
    for (int& t : *out) t = (*in)[1];
  });
}

MXReturnValue infer_shape(const Attrs& attrs, std::vector<std::vector<unsigned>>* in,
                          std::vector<std::vector<unsigned>>* out) {
  return guarded([&] {
    // Like MXNet's RNN op, infer the size of `parameters` from data when the graph leaves it
    // open (lib_api copies changed input shapes back).
    std::vector<unsigned>& params = (*in)[1];
    const bool unknown = params.empty() || (params.size() == 1 && (params[0] == 0 ||
                                                                  params[0] == ~0u));
    if (unknown && (*in)[0].size() == 3) {
      int64_t total = 0;
      layout(attrs, (*in)[0][2], &total);
      params = {static_cast<unsigned>(total)};
    }
    const std::vector<Piece> pieces = checked_layout(attrs, (*in)[0], params);
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
