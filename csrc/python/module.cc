// fusedrnn._C: the kernels on NumPy arrays. Reads the sizes from x and the weights, checks
// every argument against them by name (fusedrnn/contract.h), allocates the outputs, and runs
// the kernel with the GIL released; the kernel validates the rest once. Kernel errors
// (InvalidArgument) become ValueError.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <new>
#include <cstdlib>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "block_cache.h"
#include "fusedrnn/contract.h"
#include "fusedrnn/rnn.h"
#include "mxnet/nd_step.h"

namespace py = pybind11;
using fusedrnn::Arg;
using fusedrnn::Mode;
using fusedrnn::RnnDesc;
using fusedrnn::Shape;

namespace {

const fusedrnn::ArgNames kNames;

[[noreturn]] void throw_memory_error(const std::string& message) {
  PyErr_SetString(PyExc_MemoryError, message.c_str());
  throw py::error_already_set();
}

Shape shape_of(const py::array& a) { return Shape(a.shape(), a.shape() + a.ndim()); }

py::array array_arg(const py::handle& obj, const char* name) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(std::string(name) + " must be a numpy.ndarray");
  return py::reinterpret_borrow<py::array>(obj);
}

// The array behind an argument of dtype T, refusing anything else by name.
template <typename T>
py::array array_of(const py::handle& obj, const char* name) {
  const py::array arr = array_arg(obj, name);
  const bool index = std::is_integral<T>::value;
  if (!arr.dtype().is(py::dtype::of<T>()))
    throw py::type_error(std::string(name) + " has dtype " + std::string(py::str(arr.dtype())) +
                         "; expected " + std::string(py::str(py::dtype::of<T>())) +
                         (index ? "" : " (the dtype of x)"));
  return arr;
}

// A C-contiguous array of T (copying only if strided); its shape was checked.
template <typename T>
py::array_t<T> contiguous(const py::array& arr, const char* name) {
  // Unlike ensure(), the converting constructor raises NumPy's error when the contiguous
  // copy of a strided array cannot be made; a MemoryError then gets the argument's name.
  try {
    return py::array_t<T, py::array::c_style>(arr);
  } catch (py::error_already_set& e) {
    if (!e.matches(PyExc_MemoryError)) throw;
    throw_memory_error(std::string(name) + ": no memory for a contiguous copy of this " +
                       fusedrnn::shape_str(shape_of(arr)) + " array (" + e.what() + ")");
  }
}

// Checks dtype and shape, then contiguous().
template <typename T>
py::array_t<T> expect(const py::handle& obj, const char* name, const Shape& shape) {
  const py::array arr = array_of<T>(obj, name);
  fusedrnn::check_shape(name, shape_of(arr), shape);
  return contiguous<T>(arr, name);
}

double clip_bound(const py::handle& value, const char* name) {
  if (!py::isinstance<py::float_>(value) && !py::isinstance<py::int_>(value))
    throw py::type_error(std::string(name) + " must be a real number");
  return value.cast<double>();
}

// (The sizes were validated, so the byte count cannot overflow.)
template <typename T>
py::array_t<T> new_array(const char* name, const Shape& shape) {
  size_t count = 1;
  for (int64_t n : shape) count *= static_cast<size_t>(n);
  void* block = nullptr;
  try {
    block = fusedrnn::BlockCache::instance().take(std::max<size_t>(count, 1) * sizeof(T));
  } catch (const std::bad_alloc&) {
    throw_memory_error(std::string(name) + ": no memory for an output of " +
                       std::to_string(count * sizeof(T)) + " bytes");
  }
  py::capsule owner(block, [](void* p) { fusedrnn::BlockCache::instance().give(p); });
  return py::array_t<T>(std::vector<py::ssize_t>(shape.begin(), shape.end()),
                        static_cast<T*>(block), owner);
}

template <typename T>
const T* data_or_null(const std::optional<py::array_t<T>>& a) {
  return a ? a->data() : nullptr;
}

template <typename T>
T* mutable_or_null(std::optional<py::array_t<T>>& a) {
  return a ? a->mutable_data() : nullptr;
}

int64_t reserve_elements(const RnnDesc& d, bool with_masks) {
  return static_cast<int64_t>(fusedrnn::reserve_size(d, with_masks));
}

py::object or_none(const std::optional<py::array>& a) { return a ? py::object(*a) : py::none(); }

// One call: its sizes (from x, w_ih and w_hr), options and valid positions. Every other array
// is checked against the sizes by arg() before it is read or copied.
struct Call {
  RnnDesc desc;
  std::optional<py::array_t<int32_t>> lengths, positions;
  bool carry = false;

  fusedrnn::Valid valid() const {
    return fusedrnn::Valid(data_or_null(lengths), data_or_null(positions), carry);
  }
  bool lstm() const { return desc.mode == Mode::kLstm; }
  template <typename T>
  py::array_t<T> arg(Arg a, const py::handle& obj) const {
    const py::array arr = array_of<T>(obj, kNames[a]);
    fusedrnn::check_shape(desc, a, shape_of(arr));
    return contiguous<T>(arr, kNames[a]);
  }
  template <typename T>
  std::optional<py::array_t<T>> optional_arg(Arg a, const py::handle& obj) const {
    if (obj.is_none()) return std::nullopt;
    return arg<T>(a, obj);
  }
  // c0: required for LSTM, refused otherwise.
  template <typename T>
  std::optional<py::array_t<T>> c0(const py::handle& obj) const {
    if (lstm() && obj.is_none()) throw py::value_error("c0 is required for mode 'lstm'");
    if (!lstm() && !obj.is_none()) throw py::value_error("c0 is only for mode 'lstm'");
    return optional_arg<T>(Arg::kC0, obj);
  }
  // The masks given by name in `given` (None or absent: off), checked like every argument.
  template <typename T>
  fusedrnn::Masks<T> masks(const py::dict& given, std::vector<py::object>* keep) const {
    fusedrnn::Masks<T> m;
    const std::pair<Arg, const T**> slots[] = {
        {Arg::kZoneoutH, &m.zoneout_h},   {Arg::kZoneoutC, &m.zoneout_c},
        {Arg::kZoneoutY, &m.zoneout_y},   {Arg::kStateMask, &m.state_mask},
        {Arg::kInputGateMasks, &m.input_gate_masks},
        {Arg::kRecurrentGateMasks, &m.recurrent_gate_masks}};
    for (const auto& [a, ptr] : slots) {
      if (!given.contains(kNames[a]) || given[kNames[a]].is_none()) continue;
      py::array_t<T> arr = arg<T>(a, given[kNames[a]]);
      keep->push_back(arr);
      *ptr = arr.data();
    }
    return m;
  }
  template <typename T>
  fusedrnn::Weights<T> weights(const py::handle& w_ih, const py::handle& w_hh,
                               const py::handle& b_ih, const py::handle& b_hh,
                               const py::handle& w_hr, std::vector<py::object>* keep) const {
    const auto hold = [keep](py::array_t<T> a) {
      keep->push_back(a);
      return a.data();
    };
    return {hold(arg<T>(Arg::kWih, w_ih)), hold(arg<T>(Arg::kWhh, w_hh)),
            hold(arg<T>(Arg::kBih, b_ih)), hold(arg<T>(Arg::kBhh, b_hh)),
            desc.proj_size > 0 ? hold(arg<T>(Arg::kWhr, w_hr)) : nullptr};
  }
};

Call describe(const std::string& mode, const py::array& x, const py::handle& w_ih,
              const py::handle& w_hr, const py::handle& lengths, const py::handle& positions,
              bool carry, bool reverse, bool reset_after, const py::handle& clip_min,
              const py::handle& clip_max, bool clip_nan, const std::string& gate_activation) {
  RnnDesc o;
  o.mode = fusedrnn::parse_mode(mode);
  o.reverse = reverse;
  o.reset_after = reset_after;
  o.gate_activation = fusedrnn::parse_gate_activation(gate_activation);
  if (clip_min.is_none() != clip_max.is_none())
    throw py::value_error("clip_min and clip_max must be given together");
  if (!clip_min.is_none()) {
    if (o.mode != Mode::kLstm) throw py::value_error("clip_min/clip_max are only for mode 'lstm'");
    o.clip = true;
    o.clip_min = clip_bound(clip_min, "clip_min");
    o.clip_max = clip_bound(clip_max, "clip_max");
  }
  o.clip_nan = clip_nan;
  const Shape w_ih_shape = shape_of(array_arg(w_ih, "w_ih"));
  const std::optional<Shape> w_hr_shape =
      w_hr.is_none() ? std::nullopt : std::optional<Shape>(shape_of(array_arg(w_hr, "w_hr")));
  Call c;
  c.desc = fusedrnn::describe(o, shape_of(x), w_ih_shape, w_hr_shape ? &*w_hr_shape : nullptr);
  c.lengths = c.optional_arg<int32_t>(Arg::kLengths, lengths);
  if (!positions.is_none() && !c.lengths) throw py::value_error("positions need lengths");
  c.positions = c.optional_arg<int32_t>(Arg::kPositions, positions);
  c.carry = carry;
  return c;
}

template <typename T>
py::tuple forward_impl(const std::string& mode, const py::array& x_in, const py::handle& w_ih,
                       const py::handle& w_hh, const py::handle& b_ih, const py::handle& b_hh,
                       const py::handle& h0_in, const py::handle& c0_in, const py::handle& w_hr,
                       const py::handle& lengths, const py::handle& positions, bool carry,
                       bool reverse, bool reset_after, const py::handle& clip_min,
                       const py::handle& clip_max, bool clip_nan, bool training,
                       const std::string& gate_activation, const py::dict& mask_args) {
  const Call c = describe(mode, x_in, w_ih, w_hr, lengths, positions, carry, reverse,
                          reset_after, clip_min, clip_max, clip_nan, gate_activation);
  const RnnDesc& d = c.desc;
  std::vector<py::object> keep;
  auto x = c.arg<T>(Arg::kX, x_in);
  const fusedrnn::Weights<T> w = c.weights<T>(w_ih, w_hh, b_ih, b_hh, w_hr, &keep);
  auto h0 = c.arg<T>(Arg::kH0, h0_in);
  auto c0 = c.c0<T>(c0_in);
  const fusedrnn::Masks<T> masks = c.masks<T>(mask_args, &keep);

  auto y = new_array<T>("y", expected_shape(d, Arg::kY));
  auto hy = new_array<T>("hy", expected_shape(d, Arg::kH0));
  std::optional<py::array_t<T>> cy, reserve;
  if (c.lstm()) cy = new_array<T>("cy", expected_shape(d, Arg::kC0));
  if (training) reserve = new_array<T>("reserve", {reserve_elements(d, masks.any())});
  T* y_ptr = y.mutable_data();
  T* hy_ptr = hy.mutable_data();
  T* cy_ptr = mutable_or_null(cy);
  T* reserve_ptr = mutable_or_null(reserve);
  {
    py::gil_scoped_release release;
    fusedrnn::forward<T>(d, c.valid(), x.data(), w, h0.data(), data_or_null(c0), y_ptr, hy_ptr,
                         cy_ptr, reserve_ptr, masks);
  }
  return py::make_tuple(y, hy, or_none(cy), or_none(reserve));
}

template <typename T>
py::tuple backward_impl(const std::string& mode, const py::array& x_in, const py::handle& w_ih,
                        const py::handle& w_hh, const py::handle& b_ih, const py::handle& b_hh,
                        const py::handle& h0_in, const py::handle& c0_in,
                        const py::handle& reserve_in, const py::handle& dy_in,
                        const py::handle& dhy_in, const py::handle& dcy_in,
                        const py::handle& w_hr, const py::handle& lengths,
                        const py::handle& positions, bool carry, bool reverse, bool reset_after,
                        const py::handle& clip_min, const py::handle& clip_max, bool clip_nan,
                        const std::string& gate_activation, const py::dict& mask_args) {
  const Call c = describe(mode, x_in, w_ih, w_hr, lengths, positions, carry, reverse,
                          reset_after, clip_min, clip_max, clip_nan, gate_activation);
  const RnnDesc& d = c.desc;
  std::vector<py::object> keep;
  auto x = c.arg<T>(Arg::kX, x_in);
  const fusedrnn::Weights<T> w = c.weights<T>(w_ih, w_hh, b_ih, b_hh, w_hr, &keep);
  auto h0 = c.arg<T>(Arg::kH0, h0_in);
  auto c0 = c.c0<T>(c0_in);
  const fusedrnn::Masks<T> masks = c.masks<T>(mask_args, &keep);
  if (reserve_in.is_none())
    throw py::value_error("reserve is required: run forward with training=True first");
  auto reserve = expect<T>(reserve_in, "reserve", {reserve_elements(d, masks.any())});
  // The upstream gradients have the shapes of y, hy and cy.
  std::optional<py::array_t<T>> dy, dhy, dcy;
  if (!dy_in.is_none()) dy = expect<T>(dy_in, "dy", expected_shape(d, Arg::kY));
  if (!dhy_in.is_none()) dhy = expect<T>(dhy_in, "dhy", expected_shape(d, Arg::kH0));
  if (!dcy_in.is_none()) {
    if (!c.lstm()) throw py::value_error("dcy is only for mode 'lstm'");
    dcy = expect<T>(dcy_in, "dcy", expected_shape(d, Arg::kC0));
  }

  // Each gradient has the shape of what it is the gradient of.
  auto grad = [&d](const char* name, Arg a) { return new_array<T>(name, expected_shape(d, a)); };
  auto dx = grad("dx", Arg::kX), dw_ih = grad("dw_ih", Arg::kWih);
  auto dw_hh = grad("dw_hh", Arg::kWhh), db_ih = grad("db_ih", Arg::kBih);
  auto db_hh = grad("db_hh", Arg::kBhh), dh0 = grad("dh0", Arg::kH0);
  std::optional<py::array_t<T>> dc0, dw_hr;
  if (c.lstm()) dc0 = grad("dc0", Arg::kC0);
  if (d.proj_size > 0) dw_hr = grad("dw_hr", Arg::kWhr);
  fusedrnn::Grads<T> g;
  g.dx = dx.mutable_data();
  g.dw_ih = dw_ih.mutable_data();
  g.dw_hh = dw_hh.mutable_data();
  g.db_ih = db_ih.mutable_data();
  g.db_hh = db_hh.mutable_data();
  g.dh0 = dh0.mutable_data();
  g.dc0 = mutable_or_null(dc0);
  g.dw_hr = mutable_or_null(dw_hr);
  {
    py::gil_scoped_release release;
    fusedrnn::backward<T>(d, c.valid(), x.data(), w, h0.data(), data_or_null(c0), reserve.data(),
                          data_or_null(dy), data_or_null(dhy), data_or_null(dcy), g, masks);
  }
  return py::make_tuple(dx, dw_ih, dw_hh, db_ih, db_hh, dh0, or_none(dc0), or_none(dw_hr));
}

// Sequence lengths given as any numbers [N], as int32 (fusedrnn/contract.h's check).
using Doubles = py::array_t<double, py::array::c_style | py::array::forcecast>;

py::array_t<int32_t> lengths_as_int32(const Doubles& values, int64_t T) {
  if (values.ndim() != 1) throw py::value_error("lengths must have 1 dimension");
  const double* v = values.data();
  const std::vector<int32_t> out =
      fusedrnn::lengths_from(values.shape(0), T, [v](int64_t n) { return v[n]; });
  return py::array_t<int32_t>(static_cast<py::ssize_t>(out.size()), out.data());
}

// A [T, N] mask of 0/1 as (lengths [N], positions [N, T]) (fusedrnn/contract.h).
py::tuple mask_as_valid(const Doubles& mask) {
  if (mask.ndim() != 2) throw py::value_error("mask must have 2 dimensions [T, N]");
  const int64_t T = mask.shape(0), N = mask.shape(1);
  const double* v = mask.data();
  std::vector<int32_t> lengths, positions;
  fusedrnn::mask_to_valid(T, N, [v](int64_t i) { return v[i]; }, &lengths, &positions);
  return py::make_tuple(py::array_t<int32_t>(static_cast<py::ssize_t>(N), lengths.data()),
                        py::array_t<int32_t>({static_cast<py::ssize_t>(N),
                                              static_cast<py::ssize_t>(T)},
                                             positions.data()));
}

py::array as_array(const py::handle& x) {
  if (!py::isinstance<py::array>(x)) throw py::type_error("x must be a numpy.ndarray");
  return py::reinterpret_borrow<py::array>(x);
}

bool is_float64(const py::array& x) {
  if (x.dtype().is(py::dtype::of<double>())) return true;
  if (x.dtype().is(py::dtype::of<float>())) return false;
  throw py::type_error("x has dtype " + std::string(py::str(x.dtype())) +
                       "; expected float32 or float64");
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fusedrnn kernels on NumPy arrays (use fusedrnn.kernels, which documents them)";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const fusedrnn::InvalidArgument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });

  m.def(
      "forward",
      [](const std::string& mode, const py::handle& x, const py::handle& w_ih,
         const py::handle& w_hh, const py::handle& b_ih, const py::handle& b_hh,
         const py::handle& h0, const py::handle& c0, const py::handle& w_hr,
         const py::handle& lengths, const py::handle& positions, bool carry, bool reverse,
         bool reset_after, const py::handle& clip_min, const py::handle& clip_max, bool clip_nan,
         bool training, const std::string& gate_activation, const py::dict& masks) {
        const py::array xa = as_array(x);
        auto f = is_float64(xa) ? forward_impl<double> : forward_impl<float>;
        return f(mode, xa, w_ih, w_hh, b_ih, b_hh, h0, c0, w_hr, lengths, positions, carry,
                 reverse, reset_after, clip_min, clip_max, clip_nan, training, gate_activation,
                 masks);
      },
      py::arg("mode"), py::arg("x"), py::arg("w_ih"), py::arg("w_hh"), py::arg("b_ih"),
      py::arg("b_hh"), py::arg("h0"), py::arg("c0"), py::arg("w_hr"), py::arg("lengths"),
      py::arg("positions"), py::arg("carry"), py::arg("reverse"), py::arg("reset_after"), py::arg("clip_min"), py::arg("clip_max"),
      py::arg("clip_nan"), py::arg("training"), py::arg("gate_activation") = "sigmoid",
      py::arg("masks") = py::dict());

  m.def(
      "backward",
      [](const std::string& mode, const py::handle& x, const py::handle& w_ih,
         const py::handle& w_hh, const py::handle& b_ih, const py::handle& b_hh,
         const py::handle& h0, const py::handle& c0, const py::handle& reserve,
         const py::handle& dy, const py::handle& dhy, const py::handle& dcy,
         const py::handle& w_hr, const py::handle& lengths, const py::handle& positions,
         bool carry, bool reverse, bool reset_after, const py::handle& clip_min,
         const py::handle& clip_max, bool clip_nan, const std::string& gate_activation,
         const py::dict& masks) {
        const py::array xa = as_array(x);
        auto f = is_float64(xa) ? backward_impl<double> : backward_impl<float>;
        return f(mode, xa, w_ih, w_hh, b_ih, b_hh, h0, c0, reserve, dy, dhy, dcy, w_hr, lengths,
                 positions, carry, reverse, reset_after, clip_min, clip_max, clip_nan,
                 gate_activation, masks);
      },
      py::arg("mode"), py::arg("x"), py::arg("w_ih"), py::arg("w_hh"), py::arg("b_ih"),
      py::arg("b_hh"), py::arg("h0"), py::arg("c0"), py::arg("reserve"), py::arg("dy"),
      py::arg("dhy"), py::arg("dcy"), py::arg("w_hr"), py::arg("lengths"),
      py::arg("positions"), py::arg("carry"), py::arg("reverse"),
      py::arg("reset_after"), py::arg("clip_min"), py::arg("clip_max"), py::arg("clip_nan"),
      py::arg("gate_activation") = "sigmoid", py::arg("masks") = py::dict());

  m.def("reserve_size", [](const std::string& mode, int64_t T, int64_t N, int64_t C, int64_t H,
                           int64_t P, bool with_masks) {
    RnnDesc d;
    d.mode = fusedrnn::parse_mode(mode);
    d.steps = T; d.batch = N; d.input_size = C; d.hidden_size = H; d.proj_size = P;
    fusedrnn::validate(d, nullptr);
    return fusedrnn::reserve_size(d, with_masks);
  }, py::arg("mode"), py::arg("T"), py::arg("N"), py::arg("C"), py::arg("H"), py::arg("P") = 0,
     py::arg("with_masks") = false);
  m.def("_lengths_as_int32", &lengths_as_int32, py::arg("values"), py::arg("T"));
  m.def("_mask_as_valid", &mask_as_valid, py::arg("mask"));
  m.def("set_num_threads", &fusedrnn::set_num_threads, py::arg("n"));
  m.def("get_num_threads", &fusedrnn::get_num_threads);
  m.def("instruction_set", &fusedrnn::instruction_set);

  // The cells' inference step on NDArray handles (see csrc/mxnet/nd_step.h).
  m.def("_set_ndarray_api", &fusedrnn::mxnet_ops::set_ndarray_api, py::arg("functions"));
  m.def("_nd_cell_step", &fusedrnn::mxnet_ops::nd_cell_step, py::arg("mode"),
        py::arg("reset_after"), py::arg("x"), py::arg("states"), py::arg("weights"),
        py::call_guard<py::gil_scoped_release>());
  // The layers' inference forward on NDArray handles (the same).
  m.def("_nd_layer_forward",
        [](const std::string& mode, bool reset_after, std::optional<double> clip_min,
           std::optional<double> clip_max, bool clip_nan, bool projection, uintptr_t x,
           const std::vector<uintptr_t>& states, const std::vector<uintptr_t>& weights) {
          RnnDesc o;
          o.mode = fusedrnn::parse_mode(mode);
          o.reset_after = reset_after;
          o.clip = clip_min.has_value() && clip_max.has_value();
          o.clip_min = clip_min.value_or(0.0);
          o.clip_max = clip_max.value_or(0.0);
          o.clip_nan = clip_nan;
          py::gil_scoped_release release;
          return fusedrnn::mxnet_ops::nd_layer_forward(o, projection, x, states, weights);
        },
        py::arg("mode"), py::arg("reset_after"), py::arg("clip_min"), py::arg("clip_max"),
        py::arg("clip_nan"), py::arg("projection"), py::arg("x"), py::arg("states"),
        py::arg("weights"));
}
