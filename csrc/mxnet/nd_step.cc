// A cell step straight on NDArray memory. Through MXNet, one step of a decoding loop costs
// ~100 us of operator dispatch (Python arguments, shape and type inference through lib_api,
// the engine), more than the step itself (~40 us for an LSTM at N = 1, H = 256). In inference
// nothing needs the graph or the engine's scheduling, so this reads the inputs once their
// pending writes are done and writes fresh arrays, which no other operator can see yet.
#include "nd_step.h"

#include <mxnet/c_api.h>

#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "fusedrnn/rnn.h"

namespace fusedrnn {
namespace mxnet_ops {
namespace {

struct NDArrayApi {
  decltype(&MXNDArrayWaitToRead) wait_to_read = nullptr;
  decltype(&MXNDArrayGetData) get_data = nullptr;
  decltype(&MXNDArrayGetShapeEx) get_shape = nullptr;
  decltype(&MXNDArrayGetDType) get_dtype = nullptr;
  decltype(&MXNDArrayGetContext) get_context = nullptr;
  decltype(&MXNDArrayGetStorageType) get_storage_type = nullptr;
  decltype(&MXNDArrayCreateEx) create = nullptr;
  decltype(&MXNDArrayFree) free = nullptr;
  decltype(&MXGetLastError) last_error = nullptr;
};

NDArrayApi g_api;

constexpr int kCpu = 1, kDefaultStorage = 0, kFloat32 = 0, kFloat64 = 1;

void check(int status, const char* what) {
  if (status != 0)
    throw std::runtime_error(std::string(what) + " failed: " + g_api.last_error());
}

struct Array {
  void* handle;
  const char* name;
  std::vector<int64_t> shape;
  int dtype = -1, stype = -1, dev_type = 0, dev_id = 0;
};

Array inspect(uintptr_t handle, const char* name) {
  Array a{reinterpret_cast<void*>(handle), name, {}};
  int ndim = 0;
  const int* dims = nullptr;
  check(g_api.get_storage_type(a.handle, &a.stype), "MXNDArrayGetStorageType");
  check(g_api.get_context(a.handle, &a.dev_type, &a.dev_id), "MXNDArrayGetContext");
  check(g_api.get_dtype(a.handle, &a.dtype), "MXNDArrayGetDType");
  check(g_api.get_shape(a.handle, &ndim, &dims), "MXNDArrayGetShapeEx");
  a.shape.assign(dims, dims + (ndim > 0 ? ndim : 0));
  return a;
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + (s.size() == 1 ? ",)" : ")");
}

void expect_ndim(const Array& a, size_t ndim, const char* layout) {
  if (a.shape.size() != ndim)
    throw InvalidArgument(std::string(a.name) + " must have " + std::to_string(ndim) +
                          " dimension" + (ndim == 1 ? " " : "s ") + layout + "; got shape " +
                          shape_str(a.shape));
}

void expect_shape(const Array& a, const std::vector<int64_t>& shape) {
  if (a.shape != shape)
    throw InvalidArgument(std::string(a.name) + " has shape " + shape_str(a.shape) +
                          "; expected " + shape_str(shape));
}

template <typename T>
const T* read(const Array& a) {
  check(g_api.wait_to_read(a.handle), "MXNDArrayWaitToRead");
  void* data = nullptr;
  check(g_api.get_data(a.handle, &data), "MXNDArrayGetData");
  return static_cast<const T*>(data);
}

// A new [rows, cols] CPU array on device dev_id (owned by the caller unless released) and
// its memory.
struct NewArray {
  void* handle = nullptr;
  void* data = nullptr;
  NewArray(int64_t rows, int64_t cols, int dtype, int dev_id) {
    const uint32_t shape[2] = {static_cast<uint32_t>(rows), static_cast<uint32_t>(cols)};
    check(g_api.create(shape, 2, kCpu, dev_id, 0, dtype, &handle), "MXNDArrayCreateEx");
    if (g_api.get_data(handle, &data) != 0) {
      g_api.free(handle);
      throw std::runtime_error(std::string("MXNDArrayGetData failed: ") + g_api.last_error());
    }
  }
  NewArray(const NewArray&) = delete;
  NewArray& operator=(const NewArray&) = delete;
  ~NewArray() {
    if (handle) g_api.free(handle);
  }
  uintptr_t release() { return reinterpret_cast<uintptr_t>(std::exchange(handle, nullptr)); }
};

template <typename T>
std::vector<uintptr_t> step(const RnnDesc& d, const std::vector<Array>& in, int dtype) {
  const bool lstm = d.mode == Mode::kLstm;
  const Weights<T> w{read<T>(in[0]), read<T>(in[1]), read<T>(in[2]), read<T>(in[3]), nullptr};
  const T* x = read<T>(in[4]);
  const T* h = read<T>(in[5]);
  const T* c = lstm ? read<T>(in[6]) : nullptr;
  // On the inputs' device: the next step (or layer) takes them with its parameters there.
  NewArray hy(d.batch, d.hidden_size, dtype, in[4].dev_id);
  NewArray cy(lstm ? d.batch : 0, lstm ? d.hidden_size : 0, dtype, in[4].dev_id);
  // y of a single step is hy: it goes to scratch.
  std::vector<T> y(static_cast<size_t>(d.batch * d.hidden_size));
  forward<T>(d, Valid(), x, w, h, c, y.data(), static_cast<T*>(hy.data),
             lstm ? static_cast<T*>(cy.data) : nullptr, nullptr);
  std::vector<uintptr_t> out{hy.release()};
  if (lstm) out.push_back(cy.release());
  return out;
}

}  // namespace

void set_ndarray_api(const std::map<std::string, uintptr_t>& functions) {
  NDArrayApi api;
  const auto take = [&](const char* name, auto* slot) {
    auto it = functions.find(name);
    if (it == functions.end() || it->second == 0)
      throw InvalidArgument(std::string("the MXNet C API function ") + name + " is missing");
    *slot = reinterpret_cast<std::remove_pointer_t<decltype(slot)>>(it->second);
  };
  take("MXNDArrayWaitToRead", &api.wait_to_read);
  take("MXNDArrayGetData", &api.get_data);
  take("MXNDArrayGetShapeEx", &api.get_shape);
  take("MXNDArrayGetDType", &api.get_dtype);
  take("MXNDArrayGetContext", &api.get_context);
  take("MXNDArrayGetStorageType", &api.get_storage_type);
  take("MXNDArrayCreateEx", &api.create);
  take("MXNDArrayFree", &api.free);
  take("MXGetLastError", &api.last_error);
  g_api = api;
}

std::vector<uintptr_t> nd_cell_step(const std::string& mode, bool reset_after, uintptr_t x,
                                    const std::vector<uintptr_t>& states,
                                    const std::vector<uintptr_t>& weights) {
  if (!g_api.create) throw std::logic_error("set_ndarray_api was not called");
  static const std::pair<const char*, Mode> kModes[] = {
      {"lstm", Mode::kLstm}, {"gru", Mode::kGru}, {"rnn_tanh", Mode::kRnnTanh},
      {"rnn_relu", Mode::kRnnRelu}};
  RnnDesc d;
  bool known = false;
  for (const auto& m : kModes)
    if (mode == m.first) d.mode = m.second, known = true;
  if (!known) throw InvalidArgument("mode '" + mode + "' is not a cell mode");
  const size_t n_states = d.mode == Mode::kLstm ? 2 : 1;
  if (states.size() != n_states)
    throw InvalidArgument("states must hold " + std::to_string(n_states) + " arrays; got " +
                          std::to_string(states.size()));
  if (weights.size() != 4) throw InvalidArgument("weights must hold 4 arrays");
  const char* const names[] = {"i2h_weight", "h2h_weight", "i2h_bias", "h2h_bias",
                               "inputs",     "states[0]",  "states[1]"};
  std::vector<uintptr_t> handles(weights);
  handles.push_back(x);
  handles.insert(handles.end(), states.begin(), states.end());
  std::vector<Array> in;
  for (size_t i = 0; i < handles.size(); ++i) in.push_back(inspect(handles[i], names[i]));
  // Only dense CPU arrays of one float dtype on one device; the operator takes the rest (and
  // reports a device mismatch in MXNet's words).
  const int dtype = in[4].dtype;
  for (const Array& a : in)
    if (a.stype != kDefaultStorage || a.dev_type != kCpu || a.dev_id != in[4].dev_id ||
        a.dtype != dtype || (dtype != kFloat32 && dtype != kFloat64))
      return {};

  // Every array's full shape is checked against the sizes before any memory is read.
  const int64_t G = gate_count(d.mode);
  expect_ndim(in[1], 2, "[G * hidden_size, hidden_size]");
  if (in[1].shape[0] % G != 0 || in[1].shape[0] == 0)
    throw InvalidArgument("h2h_weight has " + std::to_string(in[1].shape[0]) + " rows; "
                          "expected a positive multiple of " + std::to_string(G) +
                          " (gates) for mode '" + mode + "'");
  expect_ndim(in[0], 2, "[G * hidden_size, input_size]");
  if (in[4].shape.size() != 2 || in[4].shape[0] == 0 || in[4].shape[1] == 0)
    throw InvalidArgument("inputs of a step must have shape [N, C] (no zero-size dimension); "
                          "got " + shape_str(in[4].shape));
  d.steps = 1;
  d.batch = in[4].shape[0];
  d.input_size = in[0].shape[1];
  d.hidden_size = in[1].shape[0] / G;
  d.reset_after = reset_after;
  const int64_t N = d.batch, C = d.input_size, H = d.hidden_size;
  expect_shape(in[0], {G * H, C});
  expect_shape(in[1], {G * H, H});
  expect_shape(in[2], {G * H});
  expect_shape(in[3], {G * H});
  expect_shape(in[4], {N, C});
  for (size_t i = 5; i < in.size(); ++i) expect_shape(in[i], {N, H});
  validate(d, nullptr);
  return dtype == kFloat64 ? step<double>(d, in, dtype) : step<float>(d, in, dtype);
}

}  // namespace mxnet_ops
}  // namespace fusedrnn
