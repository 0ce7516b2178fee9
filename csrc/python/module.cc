// fusedrnn._C: the kernels on NumPy arrays. Checks every argument by name, allocates the
// outputs, and runs the kernel with the GIL released. Kernel errors become ValueError.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <new>
#include <cstdlib>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "block_cache.h"
#include "fusedrnn/rnn.h"
#include "mxnet/nd_step.h"

namespace py = pybind11;
using fusedrnn::Mode;
using fusedrnn::RnnDesc;

namespace {

Mode parse_mode(const std::string& mode) {
  if (mode == "lstm") return Mode::kLstm;
  if (mode == "gru") return Mode::kGru;
  if (mode == "rnn_tanh") return Mode::kRnnTanh;
  if (mode == "rnn_relu") return Mode::kRnnRelu;
  throw py::value_error("mode must be one of 'lstm', 'gru', 'rnn_tanh', 'rnn_relu'; got '" +
                        mode + "'");
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + (s.size() == 1 ? ",)" : ")");
}

[[noreturn]] void throw_memory_error(const std::string& message) {
  PyErr_SetString(PyExc_MemoryError, message.c_str());
  throw py::error_already_set();
}

std::vector<int64_t> shape_of(const py::array& a) {
  return std::vector<int64_t>(a.shape(), a.shape() + a.ndim());
}

// Checks dtype and shape, and returns a C-contiguous array of T (copying only if strided).
template <typename T>
py::array_t<T> expect(const py::handle& obj, const char* name, std::vector<int64_t> shape) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(std::string(name) + " must be a numpy.ndarray");
  auto arr = py::reinterpret_borrow<py::array>(obj);
  const bool index = std::is_integral<T>::value;
  if (!arr.dtype().is(py::dtype::of<T>()))
    throw py::type_error(std::string(name) + " has dtype " + std::string(py::str(arr.dtype())) +
                         "; expected " + std::string(py::str(py::dtype::of<T>())) +
                         (index ? "" : " (the dtype of x)"));
  if (shape_of(arr) != shape)
    throw py::value_error(std::string(name) + " has shape " + shape_str(shape_of(arr)) +
                          "; expected " + shape_str(shape));
  // Unlike ensure(), the converting constructor raises NumPy's error when the contiguous
  // copy of a strided array cannot be made; a MemoryError then gets the argument's name.
  try {
    return py::array_t<T, py::array::c_style>(arr);
  } catch (py::error_already_set& e) {
    if (!e.matches(PyExc_MemoryError)) throw;
    throw_memory_error(std::string(name) + ": no memory for a contiguous copy of this " +
                       shape_str(shape_of(arr)) + " array (" + e.what() + ")");
  }
}

// The shape of an array argument, before any conversion (sizes are validated first, so that
// a broadcast view of absurd size is refused instead of copied).
std::vector<int64_t> dims_of(const py::handle& obj, const char* name, size_t ndim,
                             const char* layout) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(std::string(name) + " must be a numpy.ndarray " + layout);
  auto arr = py::reinterpret_borrow<py::array>(obj);
  if (static_cast<size_t>(arr.ndim()) != ndim)
    throw py::value_error(std::string(name) + " must have " + std::to_string(ndim) +
                          " dimensions " + layout + "; got shape " + shape_str(shape_of(arr)));
  return shape_of(arr);
}

double clip_bound(const py::handle& value, const char* name) {
  if (!py::isinstance<py::float_>(value) && !py::isinstance<py::int_>(value))
    throw py::type_error(std::string(name) + " must be a real number");
  return value.cast<double>();
}

// (The sizes were validated, so the byte count cannot overflow.)
template <typename T>
py::array_t<T> new_array(const char* name, std::vector<py::ssize_t> shape) {
  size_t count = 1;
  for (py::ssize_t n : shape) count *= static_cast<size_t>(n);
  void* block = nullptr;
  try {
    block = fusedrnn::BlockCache::instance().take(std::max<size_t>(count, 1) * sizeof(T));
  } catch (const std::bad_alloc&) {
    throw_memory_error(std::string(name) + ": no memory for an output of " +
                       std::to_string(count * sizeof(T)) + " bytes");
  }
  py::capsule owner(block, [](void* p) { fusedrnn::BlockCache::instance().give(p); });
  return py::array_t<T>(shape, static_cast<T*>(block), owner);
}

template <typename T>
const T* data_or_null(const std::optional<py::array_t<T>>& a) {
  return a ? a->data() : nullptr;
}

struct Common {
  RnnDesc desc;
  std::optional<py::array_t<int32_t>> lengths, positions;
  bool carry = false;

  fusedrnn::Valid valid() const {
    return fusedrnn::Valid(data_or_null(lengths), data_or_null(positions), carry);
  }
};

// Reads sizes from x and the weights, then checks everything else against them.
template <typename T>
Common describe(const std::string& mode, const py::array& x, const py::handle& w_ih,
                const py::handle& w_hh, const py::handle& w_hr, const py::handle& lengths,
                const py::handle& positions, bool carry, bool reverse, bool reset_after,
                const py::handle& clip_min, const py::handle& clip_max, bool clip_nan) {
  Common c;
  RnnDesc& d = c.desc;
  d.mode = parse_mode(mode);
  if (x.ndim() != 3)
    throw py::value_error("x must have 3 dimensions [T, N, C]; got shape " +
                          shape_str(shape_of(x)));
  d.steps = x.shape(0);
  d.batch = x.shape(1);
  d.input_size = x.shape(2);
  const int64_t G = fusedrnn::gate_count(d.mode);
  const int64_t rows = dims_of(w_ih, "w_ih", 2, "[G*H, C]")[0];
  if (rows % G != 0 || rows == 0)
    throw py::value_error("w_ih has " + std::to_string(rows) + " rows; expected a positive "
                          "multiple of " + std::to_string(G) + " (gates) for mode '" + mode +
                          "'");
  d.hidden_size = rows / G;
  if (!w_hr.is_none()) {
    if (d.mode != Mode::kLstm) throw py::value_error("w_hr (projection) is only for mode 'lstm'");
    d.proj_size = dims_of(w_hr, "w_hr", 2, "[P, H]")[0];
    if (d.proj_size < 1) throw py::value_error("w_hr must have at least one row");
  }
  d.reverse = reverse;
  d.reset_after = reset_after;
  if (clip_min.is_none() != clip_max.is_none())
    throw py::value_error("clip_min and clip_max must be given together");
  if (!clip_min.is_none()) {
    if (d.mode != Mode::kLstm) throw py::value_error("clip_min/clip_max are only for mode 'lstm'");
    d.clip = true;
    d.clip_min = clip_bound(clip_min, "clip_min");
    d.clip_max = clip_bound(clip_max, "clip_max");
    if (!(d.clip_min <= d.clip_max))
      throw py::value_error("clip_min must be <= clip_max");
  }
  d.clip_nan = clip_nan;
  // The other arrays' shapes follow from these sizes, and expect() checks them before it
  // copies anything.
  fusedrnn::validate(d, nullptr);
  if (!lengths.is_none()) c.lengths = expect<int32_t>(lengths, "lengths", {d.batch});
  if (!positions.is_none()) {
    if (!c.lengths) throw py::value_error("positions need lengths");
    c.positions = expect<int32_t>(positions, "positions", {d.batch, d.steps});
  }
  c.carry = carry;
  return c;
}

template <typename T>
py::tuple forward_impl(const std::string& mode, const py::array& x_in, const py::handle& w_ih_in,
                       const py::handle& w_hh_in, const py::handle& b_ih_in,
                       const py::handle& b_hh_in, const py::handle& h0_in,
                       const py::handle& c0_in, const py::handle& w_hr_in,
                       const py::handle& lengths_in, const py::handle& positions_in,
                       bool carry, bool reverse, bool reset_after, const py::handle& clip_min,
                       const py::handle& clip_max, bool clip_nan, bool training) {
  Common c = describe<T>(mode, x_in, w_ih_in, w_hh_in, w_hr_in, lengths_in, positions_in, carry,
                         reverse, reset_after, clip_min, clip_max, clip_nan);
  const RnnDesc& d = c.desc;
  const int64_t T_ = d.steps, N = d.batch, C = d.input_size, H = d.hidden_size;
  const int64_t P = d.out_size(), GH = fusedrnn::gate_count(d.mode) * H;
  const bool lstm = d.mode == Mode::kLstm;
  auto x = expect<T>(x_in, "x", {T_, N, C});
  auto w_ih = expect<T>(w_ih_in, "w_ih", {GH, C});
  auto w_hh = expect<T>(w_hh_in, "w_hh", {GH, P});
  auto b_ih = expect<T>(b_ih_in, "b_ih", {GH});
  auto b_hh = expect<T>(b_hh_in, "b_hh", {GH});
  auto h0 = expect<T>(h0_in, "h0", {N, P});
  std::optional<py::array_t<T>> c0, w_hr;
  if (lstm) {
    if (c0_in.is_none()) throw py::value_error("c0 is required for mode 'lstm'");
    c0 = expect<T>(c0_in, "c0", {N, H});
  } else if (!c0_in.is_none()) {
    throw py::value_error("c0 is only for mode 'lstm'");
  }
  if (d.proj_size > 0) w_hr = expect<T>(w_hr_in, "w_hr", {P, H});
  fusedrnn::validate(d, c.valid());

  py::array_t<T> y = new_array<T>("y", {T_, N, P}), hy = new_array<T>("hy", {N, P});
  std::optional<py::array_t<T>> cy, reserve;
  if (lstm) cy = new_array<T>("cy", {N, H});
  if (training)
    reserve = new_array<T>("reserve", {static_cast<py::ssize_t>(fusedrnn::reserve_size(d))});
  fusedrnn::Weights<T> w{w_ih.data(), w_hh.data(), b_ih.data(), b_hh.data(),
                         data_or_null(w_hr)};
  T* y_ptr = y.mutable_data();
  T* hy_ptr = hy.mutable_data();
  T* cy_ptr = cy ? cy->mutable_data() : nullptr;
  T* reserve_ptr = reserve ? reserve->mutable_data() : nullptr;
  {
    py::gil_scoped_release release;
    fusedrnn::forward<T>(d, c.valid(), x.data(), w, h0.data(), data_or_null(c0),
                         y_ptr, hy_ptr, cy_ptr, reserve_ptr);
  }
  return py::make_tuple(y, hy, cy ? py::object(*cy) : py::none(),
                        reserve ? py::object(*reserve) : py::none());
}

template <typename T>
py::tuple backward_impl(const std::string& mode, const py::array& x_in, const py::handle& w_ih_in,
                        const py::handle& w_hh_in, const py::handle& b_ih_in,
                        const py::handle& b_hh_in, const py::handle& h0_in,
                        const py::handle& c0_in, const py::handle& reserve_in,
                        const py::handle& dy_in, const py::handle& dhy_in,
                        const py::handle& dcy_in, const py::handle& w_hr_in,
                        const py::handle& lengths_in, const py::handle& positions_in,
                        bool carry, bool reverse, bool reset_after, const py::handle& clip_min,
                        const py::handle& clip_max, bool clip_nan) {
  Common c = describe<T>(mode, x_in, w_ih_in, w_hh_in, w_hr_in, lengths_in, positions_in, carry,
                         reverse, reset_after, clip_min, clip_max, clip_nan);
  const RnnDesc& d = c.desc;
  const int64_t T_ = d.steps, N = d.batch, C = d.input_size, H = d.hidden_size;
  const int64_t P = d.out_size(), GH = fusedrnn::gate_count(d.mode) * H;
  const bool lstm = d.mode == Mode::kLstm;
  auto x = expect<T>(x_in, "x", {T_, N, C});
  auto w_ih = expect<T>(w_ih_in, "w_ih", {GH, C});
  auto w_hh = expect<T>(w_hh_in, "w_hh", {GH, P});
  auto b_ih = expect<T>(b_ih_in, "b_ih", {GH});
  auto b_hh = expect<T>(b_hh_in, "b_hh", {GH});
  auto h0 = expect<T>(h0_in, "h0", {N, P});
  std::optional<py::array_t<T>> c0, w_hr, dy, dhy, dcy;
  if (lstm) {
    if (c0_in.is_none()) throw py::value_error("c0 is required for mode 'lstm'");
    c0 = expect<T>(c0_in, "c0", {N, H});
  } else if (!c0_in.is_none()) {
    throw py::value_error("c0 is only for mode 'lstm'");
  }
  if (d.proj_size > 0) w_hr = expect<T>(w_hr_in, "w_hr", {P, H});
  if (reserve_in.is_none())
    throw py::value_error("reserve is required: run forward with training=True first");
  auto reserve = expect<T>(reserve_in, "reserve",
                           {static_cast<int64_t>(fusedrnn::reserve_size(d))});
  if (!dy_in.is_none()) dy = expect<T>(dy_in, "dy", {T_, N, P});
  if (!dhy_in.is_none()) dhy = expect<T>(dhy_in, "dhy", {N, P});
  if (!dcy_in.is_none()) {
    if (!lstm) throw py::value_error("dcy is only for mode 'lstm'");
    dcy = expect<T>(dcy_in, "dcy", {N, H});
  }
  fusedrnn::validate(d, c.valid());

  py::array_t<T> dx = new_array<T>("dx", {T_, N, C}), dw_ih = new_array<T>("dw_ih", {GH, C}),
                 dw_hh = new_array<T>("dw_hh", {GH, P}), db_ih = new_array<T>("db_ih", {GH}),
                 db_hh = new_array<T>("db_hh", {GH}), dh0 = new_array<T>("dh0", {N, P});
  std::optional<py::array_t<T>> dc0, dw_hr;
  if (lstm) dc0 = new_array<T>("dc0", {N, H});
  if (d.proj_size > 0) dw_hr = new_array<T>("dw_hr", {P, H});
  fusedrnn::Grads<T> g;
  g.dx = dx.mutable_data();
  g.dw_ih = dw_ih.mutable_data();
  g.dw_hh = dw_hh.mutable_data();
  g.db_ih = db_ih.mutable_data();
  g.db_hh = db_hh.mutable_data();
  g.dh0 = dh0.mutable_data();
  g.dc0 = dc0 ? dc0->mutable_data() : nullptr;
  g.dw_hr = dw_hr ? dw_hr->mutable_data() : nullptr;
  fusedrnn::Weights<T> w{w_ih.data(), w_hh.data(), b_ih.data(), b_hh.data(),
                         data_or_null(w_hr)};
  {
    py::gil_scoped_release release;
    fusedrnn::backward<T>(d, c.valid(), x.data(), w, h0.data(), data_or_null(c0),
                          reserve.data(), data_or_null(dy), data_or_null(dhy), data_or_null(dcy),
                          g);
  }
  auto opt = [](const std::optional<py::array_t<T>>& a) { return a ? py::object(*a) : py::none(); };
  return py::make_tuple(dx, dw_ih, dw_hh, db_ih, db_hh, dh0, opt(dc0), opt(dw_hr));
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
         bool training) {
        const py::array xa = as_array(x);
        auto f = is_float64(xa) ? forward_impl<double> : forward_impl<float>;
        return f(mode, xa, w_ih, w_hh, b_ih, b_hh, h0, c0, w_hr, lengths, positions, carry,
                 reverse, reset_after, clip_min, clip_max, clip_nan, training);
      },
      py::arg("mode"), py::arg("x"), py::arg("w_ih"), py::arg("w_hh"), py::arg("b_ih"),
      py::arg("b_hh"), py::arg("h0"), py::arg("c0"), py::arg("w_hr"), py::arg("lengths"),
      py::arg("positions"), py::arg("carry"), py::arg("reverse"), py::arg("reset_after"), py::arg("clip_min"), py::arg("clip_max"),
      py::arg("clip_nan"), py::arg("training"));

  m.def(
      "backward",
      [](const std::string& mode, const py::handle& x, const py::handle& w_ih,
         const py::handle& w_hh, const py::handle& b_ih, const py::handle& b_hh,
         const py::handle& h0, const py::handle& c0, const py::handle& reserve,
         const py::handle& dy, const py::handle& dhy, const py::handle& dcy,
         const py::handle& w_hr, const py::handle& lengths, const py::handle& positions,
         bool carry, bool reverse, bool reset_after, const py::handle& clip_min,
         const py::handle& clip_max, bool clip_nan) {
        const py::array xa = as_array(x);
        auto f = is_float64(xa) ? backward_impl<double> : backward_impl<float>;
        return f(mode, xa, w_ih, w_hh, b_ih, b_hh, h0, c0, reserve, dy, dhy, dcy, w_hr, lengths,
                 positions, carry, reverse, reset_after, clip_min, clip_max, clip_nan);
      },
      py::arg("mode"), py::arg("x"), py::arg("w_ih"), py::arg("w_hh"), py::arg("b_ih"),
      py::arg("b_hh"), py::arg("h0"), py::arg("c0"), py::arg("reserve"), py::arg("dy"),
      py::arg("dhy"), py::arg("dcy"), py::arg("w_hr"), py::arg("lengths"),
      py::arg("positions"), py::arg("carry"), py::arg("reverse"),
      py::arg("reset_after"), py::arg("clip_min"), py::arg("clip_max"), py::arg("clip_nan"));

  m.def("reserve_size", [](const std::string& mode, int64_t T, int64_t N, int64_t C, int64_t H,
                           int64_t P) {
    RnnDesc d;
    d.mode = parse_mode(mode);
    d.steps = T; d.batch = N; d.input_size = C; d.hidden_size = H; d.proj_size = P;
    fusedrnn::validate(d, nullptr);
    return fusedrnn::reserve_size(d);
  }, py::arg("mode"), py::arg("T"), py::arg("N"), py::arg("C"), py::arg("H"), py::arg("P") = 0);
  m.def("set_num_threads", &fusedrnn::set_num_threads, py::arg("n"));
  m.def("get_num_threads", &fusedrnn::get_num_threads);
  m.def("instruction_set", &fusedrnn::instruction_set);

  // The cells' inference step on NDArray handles (see csrc/mxnet/nd_step.h).
  m.def("_set_ndarray_api", &fusedrnn::mxnet_ops::set_ndarray_api, py::arg("functions"));
  m.def("_nd_cell_step", &fusedrnn::mxnet_ops::nd_cell_step, py::arg("mode"),
        py::arg("reset_after"), py::arg("x"), py::arg("states"), py::arg("weights"),
        py::call_guard<py::gil_scoped_release>());
}
