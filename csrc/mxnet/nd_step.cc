// A cell step on NDArrays without MXNet's operator dispatch. Through MXNet, one step of a
// decoding loop costs ~100 us of dispatch (Python arguments, shape and type inference through
// lib_api), more than the step itself (~40 us for an LSTM at N = 1, H = 256). The engine is
// still needed: it orders the step with every other read and write of its arrays (a write
// pushed from another thread must not land while the kernel reads). So the step checks its
// arguments here, allocates its outputs, and pushes the kernel to the engine with the inputs
// as read and the outputs as write dependencies, as an operator would.
#include "nd_step.h"

#include <dlpack/dlpack.h>
#include <dmlc/logging.h>
#include <mxnet/c_api.h>

#include <atomic>
#include <iterator>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <utility>
#include <vector>

#include "fusedrnn/contract.h"
#include "fusedrnn/rnn.h"

namespace fusedrnn {
namespace mxnet_ops {
namespace {

struct NDArrayApi {
  decltype(&MXNDArrayGetData) get_data = nullptr;
  decltype(&MXNDArrayToDLPack) to_dlpack = nullptr;
  decltype(&MXNDArrayGetShapeEx) get_shape = nullptr;
  decltype(&MXNDArrayGetDType) get_dtype = nullptr;
  decltype(&MXNDArrayGetContext) get_context = nullptr;
  decltype(&MXNDArrayGetStorageType) get_storage_type = nullptr;
  decltype(&MXNDArrayCreateEx) create = nullptr;
  decltype(&MXShallowCopyNDArray) shallow_copy = nullptr;
  decltype(&MXNDArrayWaitToRead) wait_to_read = nullptr;
  decltype(&MXNDArrayFree) free = nullptr;
  decltype(&MXEnginePushAsyncND) push_async = nullptr;
  decltype(&MXGetLastError) last_error = nullptr;
};

NDArrayApi g_api;

constexpr int kCpu = 1, kDefaultStorage = 0, kFloat32 = 0, kFloat64 = 1;

// mxnet::FnProperty (mxnet/engine.h). kAsync: the threaded engine runs such a function on the
// thread that pushes it when its inputs are ready by then (as in a decoding loop, whose
// previous step has run), else on a worker once they are. Pushed as a normal operation, a
// cell's step always went to MXNet's CPU worker, whose own OpenMP team then competes with the
// caller's: 3-8x slower per step with 2 kernel threads on 2 cores, no faster with 1
// (bench/bench_cell_step.py, on a shared machine). A layer's forward is the opposite case:
// its time loop shares each step between threads that meet at a barrier every step, and on
// the caller's team, next to MXNet's operators (whose team spins after each of them), LSTM
// 50,64,64,128 inference took 7.2 ms instead of 4.7 when interleaved with gluon's layer. So
// it runs where MXNet's operators run, as the operator did: a normal operation.
constexpr int kAsyncProperty = 4, kNormalProperty = 0;

// The engine's push functions take an mxnet::Context (mxnet/base.h) by address.
struct EngineContext {
  int32_t dev_type;
  int32_t dev_id;
};

// mxnet::engine::CallbackOnComplete (mxnet/engine.h), whose operator()(error) is an inline
// call of callback(engine, param, error): an asynchronous function's way to finish, and to
// hand MXNet an error, which it then raises where the outputs are read (ThreadedEngine).
// engine.h itself cannot be compiled without mshadow's BLAS configuration.
struct EngineCallback {
  void (*callback)(void* engine, void* param, const dmlc::Error* error);
  void* engine;
  void* param;
};

// Built while the library loads: reporting an error must not need memory.
const dmlc::Error kNoMemoryForError("fusedrnn forward failed: out of memory");

void check(int status, const char* what) {
  if (status != 0)
    throw std::runtime_error(std::string(what) + " failed: " + g_api.last_error());
}

struct Array {
  void* handle;
  Shape shape;
  int dtype = -1, stype = -1, dev_type = 0, dev_id = 0;
};

Array inspect(uintptr_t handle) {
  Array a{reinterpret_cast<void*>(handle), {}};
  int ndim = 0;
  const int* dims = nullptr;
  check(g_api.get_storage_type(a.handle, &a.stype), "MXNDArrayGetStorageType");
  check(g_api.get_context(a.handle, &a.dev_type, &a.dev_id), "MXNDArrayGetContext");
  check(g_api.get_dtype(a.handle, &a.dtype), "MXNDArrayGetDType");
  check(g_api.get_shape(a.handle, &ndim, &dims), "MXNDArrayGetShapeEx");
  a.shape.assign(dims, dims + (ndim > 0 ? ndim : 0));
  return a;
}

// A handle of our own to an NDArray (sharing its memory), freed with this object.
struct Handle {
  void* h = nullptr;
  Handle() = default;
  explicit Handle(void* src) { check(g_api.shallow_copy(src, &h), "MXShallowCopyNDArray"); }
  Handle(Handle&& o) noexcept : h(std::exchange(o.h, nullptr)) {}
  Handle& operator=(Handle&&) = delete;
  ~Handle() {
    if (h) g_api.free(h);
  }
  uintptr_t release() { return reinterpret_cast<uintptr_t>(std::exchange(h, nullptr)); }
};

// A new array, allocated now (not when first written, as MXNet would by default), so that
// its address is fixed before the forward is pushed.
struct NewArray {
  Handle handle;
  void* data = nullptr;
  NewArray(const Shape& dims, int dtype, const EngineContext& ctx) {
    std::vector<uint32_t> shape(dims.begin(), dims.end());
    check(g_api.create(shape.data(), static_cast<uint32_t>(shape.size()), ctx.dev_type,
                       ctx.dev_id, 0, dtype, &handle.h),
          "MXNDArrayCreateEx");
    check(g_api.get_data(handle.h, &data), "MXNDArrayGetData");
  }
};

// How the pushed step ended, for the caller when the engine ran it before the push returned
// (NaiveEngine always does, and does not keep the error it is handed).
struct Outcome {
  std::atomic<int> state{kRunning};
  std::string error;  // written before state becomes kFailed
  enum { kRunning, kDone, kFailed };
};

// The arrays of a call, in the order the callers hand them over.
enum Input { kIWih, kIWhh, kIBih, kIBhh, kIX, kIH, kIC, kIWhr };
constexpr const char* kNames[] = {"i2h_weight", "h2h_weight", "i2h_bias", "h2h_bias",
                                  "inputs",     "states[0]",  "states[1]", "h2r_weight"};

// The cell's names for the kernels' arguments.
const ArgNames kCellNames = [] {
  ArgNames names;  // the kernels' names for the rest
  const std::pair<Arg, const char*> cell_names[] = {
      {Arg::kX, "inputs"},       {Arg::kWih, "i2h_weight"}, {Arg::kWhh, "h2h_weight"},
      {Arg::kBih, "i2h_bias"},   {Arg::kBhh, "h2h_bias"},   {Arg::kH0, "states[0]"},
      {Arg::kC0, "states[1]"}};
  for (const auto& [arg, name] : cell_names) names.names[static_cast<size_t>(arg)] = name;
  return names;
}();

// What the pushed function owns: its own handles to the inputs (the caller's may be freed
// before the engine runs it) and the outputs' memory (whose handles the caller gets; MXNet
// frees the memory only after every operation queued on it has run).
struct ForwardTask {
  RnnDesc desc;
  int dtype;
  std::vector<Handle> inputs;  // in Input's order: i2h_weight ... x, h, (c), (h2r_weight)
  void* y;
  void* hy;  // null: a cell's step, whose h' is its y
  void* cy;
  std::shared_ptr<Outcome> outcome;

  // The inputs' memory is looked up here, when the engine has finished their writers: an
  // array that an operation still queued will write may not be allocated yet (MXNet
  // allocates an operator's outputs when it runs). Not with MXNDArrayGetData, which on an
  // array in a oneDNN layout waits for a reorder queued behind this very step (a deadlock):
  // MXNDArrayToDLPack refuses such an array instead.
  const void* data(size_t i) const {
    DLManagedTensorHandle dl = nullptr;
    if (g_api.to_dlpack(inputs[i].h, &dl) != 0)
      throw std::runtime_error(std::string("cannot read ") + kNames[i] + ": " +
                               g_api.last_error());
    auto* t = static_cast<DLManagedTensor*>(dl);
    const void* p = static_cast<const char*>(t->dl_tensor.data) + t->dl_tensor.byte_offset;
    t->deleter(t);
    return p;
  }

  template <typename T>
  void run() const {
    const bool lstm = desc.mode == Mode::kLstm;
    const auto in = [&](size_t i) {
      return static_cast<const T*>(inputs[i].h ? data(i) : nullptr);  // no state: zeros
    };
    const Weights<T> w{in(kIWih), in(kIWhh), in(kIBih), in(kIBhh),
                       desc.proj_size > 0 ? in(kIWhr) : nullptr};
    forward<T>(desc, Valid(), in(kIX), w, in(kIH), lstm ? in(kIC) : nullptr,
               static_cast<T*>(y), static_cast<T*>(hy), lstm ? static_cast<T*>(cy) : nullptr,
               nullptr);
  }
};

void record_failure(Outcome& outcome, std::unique_ptr<dmlc::Error>& error,
                    const char* message) noexcept {
  try {
    outcome.error = std::string("fusedrnn forward failed: ") + message;
    error.reset(new dmlc::Error(outcome.error));
  } catch (...) {  // no memory for the message: kNoMemoryForError stands in
  }
}

// Runs on an engine thread (or inline in the push with NaiveEngine). Nothing may escape it:
// the arguments were checked before the push, so only an allocation (kernel scratch) or an
// input in a oneDNN layout can fail here; the error goes to MXNet, and to the caller.
void run_forward(void* /*run_context*/, void* on_complete, void* param) noexcept {
  auto* task = static_cast<ForwardTask*>(param);
  Outcome& outcome = *task->outcome;
  bool failed = false;
  std::unique_ptr<dmlc::Error> error;
  try {
    task->dtype == kFloat64 ? task->run<double>() : task->run<float>();
  } catch (const std::bad_alloc&) {
    failed = true;
    record_failure(outcome, error, "out of memory");
  } catch (const std::exception& e) {
    failed = true;
    record_failure(outcome, error, e.what());
  } catch (...) {
    failed = true;
    record_failure(outcome, error, "unknown exception");
  }
  outcome.state.store(failed ? Outcome::kFailed : Outcome::kDone, std::memory_order_release);
  const auto* cb = static_cast<const EngineCallback*>(on_complete);
  cb->callback(cb->engine, cb->param,
               failed ? (error ? error.get() : &kNoMemoryForError) : nullptr);
}

void delete_task(void* param) noexcept { delete static_cast<ForwardTask*>(param); }

}  // namespace

void set_ndarray_api(const std::map<std::string, uintptr_t>& functions) {
  NDArrayApi api;
  const auto take = [&](const char* name, auto* slot) {
    auto it = functions.find(name);
    if (it == functions.end() || it->second == 0)
      throw InvalidArgument(std::string("the MXNet C API function ") + name + " is missing");
    *slot = reinterpret_cast<std::remove_pointer_t<decltype(slot)>>(it->second);
  };
  take("MXNDArrayGetData", &api.get_data);
  take("MXNDArrayToDLPack", &api.to_dlpack);
  take("MXNDArrayGetShapeEx", &api.get_shape);
  take("MXNDArrayGetDType", &api.get_dtype);
  take("MXNDArrayGetContext", &api.get_context);
  take("MXNDArrayGetStorageType", &api.get_storage_type);
  take("MXNDArrayCreateEx", &api.create);
  take("MXShallowCopyNDArray", &api.shallow_copy);
  take("MXNDArrayWaitToRead", &api.wait_to_read);
  take("MXNDArrayFree", &api.free);
  take("MXEnginePushAsyncND", &api.push_async);
  take("MXGetLastError", &api.last_error);
  g_api = api;
}

namespace {

// The arrays behind the handles (0: an argument the call does not have, left empty), or
// none unless all are dense CPU arrays of one float dtype on one device (the caller then goes
// through the operator, which reports a device mismatch in MXNet's words).
std::vector<Array> inspect_all(const std::vector<uintptr_t>& handles) {
  std::vector<Array> in;
  for (uintptr_t h : handles) in.push_back(h ? inspect(h) : Array{nullptr, {}});
  const Array& xa = in[kIX];
  for (const Array& a : in)
    if (a.handle && (a.stype != kDefaultStorage || a.dev_type != kCpu ||
                     a.dev_id != xa.dev_id || a.dtype != xa.dtype ||
                     (xa.dtype != kFloat32 && xa.dtype != kFloat64)))
      return {};
  return in;
}

// Pushes the inference forward of `desc` over the checked arrays `in` (Input's order) to the
// engine: the inputs as reads, new arrays of the shapes `out` (y, then hy and cy unless a
// cell's step, whose y is its h') as writes. Returns their handles.
std::vector<uintptr_t> push_forward(const RnnDesc& desc, const std::vector<Array>& in,
                                    const std::vector<Shape>& out, bool step) {
  const Array& xa = in[kIX];
  const EngineContext ctx{xa.dev_type, xa.dev_id};
  std::vector<std::unique_ptr<NewArray>> arrays;
  for (const Shape& shape : out) arrays.emplace_back(new NewArray(shape, xa.dtype, ctx));
  const bool lstm = desc.mode == Mode::kLstm;
  const auto data = [&](size_t i) { return i < arrays.size() ? arrays[i]->data : nullptr; };
  std::unique_ptr<ForwardTask> task(new ForwardTask{
      desc, xa.dtype, {}, data(0), step ? nullptr : data(1),
      lstm ? data(step ? 1 : 2) : nullptr, std::make_shared<Outcome>()});
  for (const Array& a : in) {
    if (a.handle) {
      task->inputs.emplace_back(a.handle);
    } else {
      task->inputs.emplace_back();  // an argument the call does not have
    }
  }
  std::vector<void*> reads, writes;
  for (const Handle& h : task->inputs)
    if (h.h) reads.push_back(h.h);
  for (const auto& a : arrays) writes.push_back(a->handle.h);
  const std::shared_ptr<Outcome> outcome = task->outcome;
  // From here MXNet owns the task: it calls delete_task once the forward has run, or when a
  // failed push unwinds (a push failing before MXNet has wrapped it, which only an allocation
  // failure can, leaks it).
  check(g_api.push_async(run_forward, task.release(), delete_task, &ctx, reads.data(),
                         static_cast<int>(reads.size()), writes.data(),
                         static_cast<int>(writes.size()),
                         step ? &kAsyncProperty : &kNormalProperty, 0,
                         "fusedrnn_forward", false),
        "MXEnginePushAsyncND");
  if (outcome->state.load(std::memory_order_acquire) == Outcome::kFailed) {
    // It already ran and failed. A threaded engine kept the error on the outputs as well:
    // reading them takes it back, so that it is not raised a second time later.
    g_api.wait_to_read(arrays[0]->handle.h);
    throw std::runtime_error(outcome->error.empty() ? kNoMemoryForError.what()
                                                    : outcome->error);
  }
  std::vector<uintptr_t> handles;
  for (auto& a : arrays) handles.push_back(a->handle.release());
  return handles;
}

// The handles in Input's order, 0 for what the call does not have; no states (where
// `stateless`) stand for zeros.
std::vector<uintptr_t> handles_of(uintptr_t x, const std::vector<uintptr_t>& states,
                                  const std::vector<uintptr_t>& weights, size_t n_states,
                                  bool stateless = false) {
  if (states.size() != n_states && !(stateless && states.empty()))
    throw InvalidArgument("states must hold " + std::to_string(n_states) + " arrays; got " +
                          std::to_string(states.size()));
  std::vector<uintptr_t> handles(weights.begin(), weights.begin() + 4);
  handles.push_back(x);
  handles.insert(handles.end(), states.begin(), states.end());
  handles.resize(kIWhr, 0);
  handles.push_back(weights.size() > 4 ? weights[4] : 0);
  return handles;
}

}  // namespace

std::vector<uintptr_t> nd_cell_step(const std::string& mode, bool reset_after, uintptr_t x,
                                    const std::vector<uintptr_t>& states,
                                    const std::vector<uintptr_t>& weights) {
  if (!g_api.create) throw std::logic_error("set_ndarray_api was not called");
  RnnDesc d;
  d.mode = parse_mode(mode);
  const bool lstm = d.mode == Mode::kLstm;
  if (weights.size() != 4) throw InvalidArgument("weights must hold 4 arrays");
  const std::vector<Array> in = inspect_all(handles_of(x, states, weights, lstm ? 2 : 1));
  if (in.empty()) return {};

  // Every array's full shape is checked against the sizes before any memory is read. A
  // cell's weights fix its sizes (H from h2h_weight, C from i2h_weight), the inputs the batch.
  const Array& xa = in[kIX];
  d.hidden_size = hidden_size_from(d.mode, in[kIWhh].shape, kNames[kIWhh],
                                   "[G * hidden_size, hidden_size]");
  check_rank(kNames[kIWih], in[kIWih].shape, 2, "[G * hidden_size, input_size]");
  if (xa.shape.size() != 2 || xa.shape[0] == 0 || xa.shape[1] == 0)
    throw InvalidArgument("inputs of a step must have shape [N, C] (no zero-size dimension); "
                          "got " + shape_str(xa.shape));
  d.steps = 1;
  d.batch = xa.shape[0];
  d.input_size = in[kIWih].shape[1];
  d.reset_after = reset_after;
  const Arg order[] = {Arg::kWih, Arg::kWhh, Arg::kBih, Arg::kBhh, Arg::kX, Arg::kH0, Arg::kC0};
  for (size_t i = 0; i < std::size(order); ++i) {
    if (!in[i].handle) continue;
    // (A step's inputs are x without its time axis.)
    if (order[i] == Arg::kX) {
      check_shape(kCellNames[Arg::kX], xa.shape, {d.batch, d.input_size});
    } else {
      check_shape(d, order[i], in[i].shape, kCellNames);
    }
  }
  validate(d, nullptr);
  const Shape state{d.batch, d.hidden_size};
  return push_forward(d, in, lstm ? std::vector<Shape>{state, state} : std::vector<Shape>{state},
                      true);
}

std::vector<uintptr_t> nd_layer_forward(const RnnDesc& options, bool projection, uintptr_t x,
                                        const std::vector<uintptr_t>& states,
                                        const std::vector<uintptr_t>& weights) {
  if (!g_api.create) throw std::logic_error("set_ndarray_api was not called");
  const bool lstm = options.mode == Mode::kLstm;
  if (weights.size() != 4u + projection)
    throw InvalidArgument("weights must hold the layer's 4 arrays (5 with a projection)");
  const std::vector<Array> in =
      inspect_all(handles_of(x, states, weights, lstm ? 2 : 1, /*stateless=*/true));
  if (in.empty()) return {};
  // Anything off goes through the operator, whose messages name the layer's arguments.
  RnnDesc d;
  try {
    const Shape* w_hr = projection ? &in[kIWhr].shape : nullptr;
    d = describe(options, in[kIX].shape, in[kIWih].shape, w_hr);
  } catch (const InvalidArgument&) {
    return {};
  }
  const auto fits = [&](Arg a, const Array& got, bool layer_axis) {
    Shape want = expected_shape(d, a);
    if (layer_axis) want.insert(want.begin(), 1);
    return !got.handle || got.shape == want;
  };
  if (d.steps == 0 || d.batch == 0 || !fits(Arg::kWih, in[kIWih], false) ||
      !fits(Arg::kWhh, in[kIWhh], false) || (projection && !fits(Arg::kWhr, in[kIWhr], false)) ||
      !fits(Arg::kBih, in[kIBih], false) || !fits(Arg::kBhh, in[kIBhh], false) ||
      !fits(Arg::kH0, in[kIH], true) || (lstm && !fits(Arg::kC0, in[kIC], true)))
    return {};
  const int64_t P = d.out_size();
  std::vector<Shape> out{{d.steps, d.batch, P}, {1, d.batch, P}};
  if (lstm) out.push_back({1, d.batch, d.hidden_size});
  return push_forward(d, in, out, false);
}

}  // namespace mxnet_ops
}  // namespace fusedrnn
