"""Whatever a user passes, fusedrnn answers with the right numbers or a clear Python exception
whose message names the argument; nothing crashes or hangs.

Every public entry point gets the same kinds of bad input: wrong rank, mismatched sizes,
zero-size dimensions, bad lengths (negative, too large, fractional, NaN), masks of the wrong
shape or dtype, wrong dtypes, sizes beyond the 32-bit indices of BLAS or beyond any memory.
Odd but valid input (strided arrays, NaN / Inf values, zero sizes where they are allowed) is
checked against the NumPy reference or a contiguous, finite run.

Zero-size policy (docs/implementation.md, Bad input and odd sizes): the kernels give correct
empty results for T = 0, N = 0 and C = 0 and refuse H = 0 or P = 0; the MXNet operator does the
same when MXNet runs with NumPy shape semantics (in MXNet's default semantics a 0 in a shape
means unknown, which the operator reports); the Gluon layers, cells and nd.RNN refuse zero-size
inputs.
"""
import os
import re
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest

import fusedrnn
from fusedrnn import _C, kernels, reference
from helpers import assert_results_close, backward_args, make_problem, make_upstream

f32 = np.float32


def problem32(mode="lstm", T=4, N=3, C=5, H=6, **kw):
    return make_problem(mode, T, N, C, H, dtype=f32, **kw)


def huge(shape, dtype=f32):
    """A read-only view of the given (absurd) shape that takes no memory."""
    return np.broadcast_to(np.zeros(1, dtype), shape)


def raises(error, pattern):
    return pytest.raises(error, match=pattern)


# ------------------------------------------------------------------------------------------
# fusedrnn.kernels.forward / backward
# ------------------------------------------------------------------------------------------

FORWARD_CASES = {
    # wrong type or rank
    "x_rank4": ({"x": np.zeros((4, 3, 5, 1), f32)}, ValueError, "x must have 3 dimensions"),
    "x_object": ({"x": np.zeros((4, 3, 5), object)}, TypeError, "x has dtype object"),
    "x_int64": ({"x": np.zeros((4, 3, 5), np.int64)}, TypeError, "x has dtype int64"),
    "x_float16": ({"x": np.zeros((4, 3, 5), np.float16)}, TypeError, "x has dtype float16"),
    "w_ih_list": ({"w_ih": [[0.0] * 5] * 24}, TypeError, "w_ih must be a numpy.ndarray"),
    "w_ih_none": ({"w_ih": None}, TypeError, "w_ih must be a numpy.ndarray"),
    "w_ih_rank1": ({"w_ih": np.zeros(24, f32)}, ValueError, "w_ih must have 2 dimensions"),
    "w_ih_rank3": ({"w_ih": np.zeros((24, 5, 1), f32)}, ValueError,
                   "w_ih must have 2 dimensions"),
    "w_hh_none": ({"w_hh": None}, TypeError, "w_hh must be a numpy.ndarray"),
    "b_ih_none": ({"b_ih": None}, TypeError, "b_ih must be a numpy.ndarray"),
    "h0_none": ({"h0": None}, TypeError, "h0 must be a numpy.ndarray"),
    "h0_float64": ({"h0": np.zeros((3, 6))}, TypeError, "h0 has dtype float64"),
    "c0_int": ({"c0": np.zeros((3, 6), np.int32)}, TypeError, "c0 has dtype int32"),
    "w_hr_rank1": ({"w_hr": np.zeros(6, f32)}, ValueError, "w_hr must have 2 dimensions"),
    "w_hr_list": ({"w_hr": [[0.0] * 6] * 2}, TypeError, "w_hr must be a numpy.ndarray"),
    # mismatched sizes
    "w_hh_columns": ({"w_hh": np.zeros((24, 5), f32)}, ValueError, r"w_hh has shape \(24, 5\)"),
    "b_hh_rank2": ({"b_hh": np.zeros((24, 1), f32)}, ValueError, "b_hh has shape"),
    "h0_batch": ({"h0": np.zeros((2, 6), f32)}, ValueError, r"h0 has shape \(2, 6\)"),
    "c0_hidden": ({"c0": np.zeros((3, 5), f32)}, ValueError, r"c0 has shape \(3, 5\)"),
    # zero sizes that are refused
    "H_0": ({"w_ih": np.zeros((0, 5), f32)}, ValueError, "w_ih has 0 rows"),
    "P_0": ({"w_hr": np.zeros((0, 6), f32)}, ValueError, "w_hr must have at least one row"),
    # lengths
    "lengths_negative": ({"lengths": [1, -1, 2]}, ValueError, "lengths must be >= 0"),
    "lengths_past_T": ({"lengths": [1, 5, 2]}, ValueError, r"lengths\[1\] = 5 is outside"),
    "lengths_past_int32": ({"lengths": [1, 2 ** 40, 2]}, ValueError, "lengths must be <= T"),
    "lengths_uint64_max": ({"lengths": np.array([1, 2, 2 ** 63], np.uint64)}, ValueError,
                           "lengths must be <= T"),
    "lengths_fraction": ({"lengths": [1, 1.5, 2]}, ValueError, "lengths must be whole numbers"),
    "lengths_nan": ({"lengths": [1, np.nan, 2]}, ValueError, "lengths must be whole numbers"),
    "lengths_inf": ({"lengths": [1, np.inf, 2]}, ValueError, "lengths must be whole numbers"),
    "lengths_bool": ({"lengths": np.array([True, False, True])}, TypeError,
                     "lengths must be integers; got dtype bool"),
    "lengths_complex": ({"lengths": np.ones(3, complex)}, TypeError, "lengths must be integers"),
    "lengths_object": ({"lengths": np.array([1, 2, None], object)}, TypeError,
                       "lengths must be integers"),
    "lengths_rank2": ({"lengths": np.ones((3, 1), int)}, ValueError, "lengths must have shape"),
    "lengths_scalar": ({"lengths": 2}, ValueError, "lengths must have shape"),
    # masks
    "mask_transposed": ({"mask": np.ones((3, 4), bool)}, ValueError, "mask must have shape"),
    "mask_rank1": ({"mask": np.ones(12, bool)}, ValueError, "mask must have shape"),
    "mask_half": ({"mask": np.full((4, 3), 0.5)}, ValueError, "mask must hold only 0 and 1"),
    "mask_nan": ({"mask": np.full((4, 3), np.nan)}, ValueError, "mask must hold only 0 and 1"),
    "mask_two": ({"mask": np.full((4, 3), 2)}, ValueError, "mask must hold only 0 and 1"),
    "mask_strings": ({"mask": np.full((4, 3), "a")}, TypeError, "mask must hold bools or 0/1"),
    "mask_and_lengths": ({"mask": np.ones((4, 3), bool), "lengths": [1, 2, 3]}, ValueError,
                         "give lengths or mask, not both"),
    # options
    "mode_none": ({"mode": None}, ValueError, "mode must be one of"),
    "clip_string": ({"clip_min": "a", "clip_max": 1.0}, ValueError,
                    "clip_min must be a real number"),
    "clip_max_nan": ({"clip_min": -1.0, "clip_max": np.nan}, ValueError,
                     "clip_max must be a real number"),
    # sizes past the 32-bit indices of BLAS, as views that take no memory: refused before
    # anything is copied
    "T_times_N_2^32": ({"x": huge((2 ** 16, 2 ** 16, 5)), "h0": huge((2 ** 16, 6)),
                        "c0": huge((2 ** 16, 6))}, ValueError, "sizes too large"),
    "C_2^32": ({"x": huge((1, 3, 2 ** 32)), "w_ih": huge((24, 2 ** 32))}, ValueError,
               "sizes too large"),
    "P_2^40": ({"w_hr": huge((2 ** 40, 6)), "w_hh": huge((24, 2 ** 40)),
                "h0": huge((3, 2 ** 40))}, ValueError, "sizes too large"),
}


@pytest.mark.parametrize("case", list(FORWARD_CASES))
def test_forward_refuses(case):
    changes, error, pattern = FORWARD_CASES[case]
    problem = problem32(proj=2 if "w_hr" in changes else None)
    mode = changes.pop("mode", "lstm") if "mode" in changes else "lstm"
    problem.update(changes)
    with raises(error, pattern):
        kernels.forward(mode, **problem)


@pytest.mark.parametrize("mode,problem_mode,changes,options,pattern", [
    ("gru", "gru", {"c0": np.zeros((3, 6), f32)}, {}, "c0 is only for mode 'lstm'"),
    ("rnn_tanh", "rnn_tanh", {"w_hr": np.zeros((2, 6), f32)}, {}, "w_hr"),
    ("gru", "gru", {}, {"clip_min": -1.0, "clip_max": 1.0}, "clip_min/clip_max"),
    ("gru", "lstm", {}, {}, r"w_hh has shape \(24, 6\); expected \(24, 8\)"),
])
def test_forward_refuses_options_of_another_mode(mode, problem_mode, changes, options, pattern):
    problem = problem32(problem_mode)
    problem.update(changes)
    with raises(ValueError, pattern):
        kernels.forward(mode, **problem, **options)


def test_forward_refuses_weights_beyond_memory():
    """Sizes the kernels accept but no machine holds: MemoryError naming the array, from the
    copy of a strided view or from an output allocation, never a crash."""
    x = np.zeros((1, 1, 0), f32)  # C = 0 takes no memory
    H = 2 ** 24                   # w_hh [H, H] is 1 PiB
    with raises(MemoryError, "w_hh"):
        kernels.forward("rnn_tanh", x, huge((H, 0)), huge((H, H)), huge((H,)), huge((H,)),
                        huge((1, H)))
    # y [2^30, 1, 2^20] is 4 PiB; every input is small.
    T, P = 2 ** 30, 2 ** 20
    with raises(MemoryError, "y"):
        kernels.forward("lstm", np.zeros((T, 1, 0), f32), np.zeros((4, 0), f32),
                        np.zeros((4, P), f32), np.zeros(4, f32), np.zeros(4, f32),
                        np.zeros((1, P), f32), np.zeros((1, 1), f32), w_hr=np.zeros((P, 1), f32))


def _trained(mode="lstm", **kw):
    problem = problem32(mode, **kw)
    fwd = kernels.forward(mode, **problem, training=True)
    args, kwargs = backward_args(problem)
    return problem, fwd, args, kwargs


@pytest.mark.parametrize("name,value,error,pattern", [
    ("reserve", "list", TypeError, "reserve must be a numpy.ndarray"),
    ("reserve", "float16", TypeError, "reserve has dtype float16"),
    ("reserve", "rank2", ValueError, "reserve has shape"),
    ("dy", np.zeros((12, 6), f32), ValueError, r"dy has shape \(12, 6\)"),
    ("dy", np.zeros((4, 3, 6), np.int64), TypeError, "dy has dtype int64"),
    ("dy", [0.0], TypeError, "dy must be a numpy.ndarray"),
    ("dhy", np.zeros((3, 6, 1), f32), ValueError, "dhy has shape"),
    ("dcy", np.zeros((3, 6), np.float16), TypeError, "dcy has dtype float16"),
])
def test_backward_refuses(name, value, error, pattern):
    _, fwd, args, kwargs = _trained()
    reserve = fwd.reserve
    if name == "reserve":
        value = {"list": list(reserve[:4]), "float16": reserve.astype(np.float16),
                 "rank2": reserve[None]}[value]
        reserve = value
    upstream = {} if name == "reserve" else {name: value}
    with raises(error, pattern):
        kernels.backward("lstm", *args, reserve, **upstream, **kwargs)


def test_raw_module_refuses_what_the_wrapper_never_passes():
    """fusedrnn._C checks the arrays the Python wrapper builds (int32 lengths, positions)."""
    problem = problem32()
    args = [problem[k] for k in ("x", "w_ih", "w_hh", "b_ih", "b_hh", "h0", "c0")]

    def call(lengths=None, positions=None, carry=False, clip=(None, None)):
        return _C.forward("lstm", *args, None, lengths, positions, carry, False, True, *clip,
                          False, False)

    with raises(TypeError, r"lengths has dtype int64; expected int32$"):
        call(lengths=np.array([2, 2, 2]))
    with raises(ValueError, r"lengths\[1\] = 9 is outside \[0, 4\]"):
        call(lengths=np.array([2, 9, 2], np.int32))
    with raises(ValueError, "positions need lengths"):
        call(positions=np.zeros((3, 4), np.int32))
    with raises(ValueError, r"positions\[0\] must be strictly increasing"):
        call(lengths=np.full(3, 2, np.int32), positions=np.full((3, 4), 5, np.int32), carry=True)
    with raises(ValueError, "positions has shape"):
        call(lengths=np.full(3, 2, np.int32), positions=np.zeros((4, 3), np.int32))
    with raises(TypeError, "clip_min must be a real number"):
        call(clip=("a", "b"))


@pytest.mark.parametrize("args,error,pattern", [
    (("lstm", 1, 1, -1, 2), ValueError, "input_size must be >= 0"),
    (("lstm", 1, 1, 1, 0), ValueError, "hidden_size must be >= 1"),
    (("lstm", 2 ** 30, 4, 1, 2), ValueError, "sizes too large"),
    (("lstm", 1, 1, 2 ** 31, 2), ValueError, "sizes too large"),
    (("gru", 1, 1, 1, 2 ** 30), ValueError, "sizes too large"),
    (("lstm", 2 ** 30, 1, 2 ** 30, 2 ** 29), ValueError, "sizes too large"),
    (("lstm", 1.5, 1, 1, 2), TypeError, "steps must be an integer"),
    (("lstm", 1, 1, 1, "2"), TypeError, "hidden_size must be an integer"),
    (("lstm", 2 ** 63, 1, 1, 2), ValueError, "sizes too large: steps"),
    (("rnn", 1, 1, 1, 2), ValueError, "mode must be one of"),
])
def test_reserve_size_refuses(args, error, pattern):
    with raises(error, pattern):
        kernels.reserve_size(*args)


@pytest.mark.parametrize("n,error,pattern", [
    (1025, ValueError, r"n \(threads\) must be at most 1024"),
    (10 ** 6, ValueError, r"n \(threads\) must be at most 1024"),
    ("a", ValueError, "invalid literal"),
])
def test_set_num_threads_refuses(n, error, pattern):
    before = kernels.get_num_threads()
    with raises(error, pattern):
        kernels.set_num_threads(n)
    assert kernels.get_num_threads() == before


# ------------------------------------------------------------------------------------------
# Valid but odd input to the kernels: the right numbers
# ------------------------------------------------------------------------------------------

def _strided(a, how):
    if a is None or a.ndim == 0:
        return a
    if how == "fortran":
        return np.asfortranarray(a)
    if how == "every_other":  # a view of every other element of a larger buffer
        big = np.repeat(a, 2, axis=-1)
        return big[..., ::2]
    if how == "reversed":  # negative strides
        return np.flip(np.flip(a).copy())
    raise ValueError(how)


@pytest.mark.parametrize("how", ["fortran", "every_other", "reversed"])
@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_strided_arrays_give_the_contiguous_result(mode, how):
    problem = problem32(mode, 5, 4, 3, 6, lengths=[5, 2, 0, 3],
                        proj=2 if mode == "lstm" else None)
    up = make_upstream(mode, problem)
    strided = {k: _strided(v, how) if isinstance(v, np.ndarray) and k != "lengths" else v
               for k, v in problem.items()}
    strided["lengths"] = _strided(problem["lengths"], "every_other")
    assert not strided["x"].flags.c_contiguous and not strided["w_hh"].flags.c_contiguous
    fwd_s = kernels.forward(mode, **strided, training=True)
    fwd_c = kernels.forward(mode, **problem, training=True)
    assert_results_close(fwd_s, fwd_c, rtol=0, atol=0)
    args_s, kw_s = backward_args(strided)
    args_c, kw_c = backward_args(problem)
    up_s = {k: _strided(v, how) for k, v in up.items()}
    reserve_s = np.repeat(fwd_s.reserve, 2)[::2]
    assert_results_close(kernels.backward(mode, *args_s, reserve_s, **up_s, **kw_s),
                         kernels.backward(mode, *args_c, fwd_c.reserve, **up, **kw_c),
                         rtol=0, atol=0)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("mode,options", [("lstm", {}), ("lstm", {"clip_min": -1.0,
                                                                  "clip_max": 1.0}),
                                          ("gru", {}), ("gru", {"reset_after": False}),
                                          ("rnn_tanh", {}), ("rnn_relu", {})])
def test_nan_and_inf_propagate_within_their_sample(mode, options, value):
    """A non-finite input gives the reference's outputs (NaN where it has NaN; an infinite
    input may legitimately saturate the gates to finite values) and spoils nothing outside
    its own sample and the shared weight gradients."""
    problem = make_problem(mode, 5, 3, 4, 6, lengths=[5, 4, 3])
    up = make_upstream(mode, problem)
    clean = kernels.forward(mode, **problem, **options, training=True)
    args, kwargs = backward_args(problem)
    clean_g = kernels.backward(mode, *args, clean.reserve, **up, **kwargs, **options)
    bad = dict(problem, x=problem["x"].copy())
    bad["x"][1, 1, 2] = value
    fwd = kernels.forward(mode, **bad, **options, training=True)
    args, kwargs = backward_args(bad)
    grads = kernels.backward(mode, *args, fwd.reserve, **up, **kwargs, **options)
    with np.errstate(invalid="ignore", over="ignore"):
        ref = reference.forward(mode, **bad, **options)
    for got, want in zip(fwd[:3], ref[:3]):
        if want is not None:
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    others = [0, 2]
    np.testing.assert_array_equal(fwd.y[:, others], clean.y[:, others])
    np.testing.assert_array_equal(fwd.hy[others], clean.hy[others])
    np.testing.assert_array_equal(grads.dx[:, others], clean_g.dx[:, others])
    np.testing.assert_array_equal(grads.dh0[others], clean_g.dh0[others])
    assert not fwd.y[4:, 1].any()  # past the sample's length: 0, as ever
    if np.isnan(value):
        assert np.isnan(fwd.y[1:4, 1]).all() and np.isnan(fwd.hy[1]).all()
        assert np.isnan(grads.dw_ih).any()


def test_nan_inf_and_strides_on_the_portable_code_path():
    """The same on the non-AVX-512 code (forced in a subprocess): the vector code is
    compiled twice, and the ReLU that swallowed NaN was in both."""
    script = ("import sys, pytest\n"
              "from fusedrnn import kernels\n"
              "assert kernels.instruction_set() == 'base', kernels.instruction_set()\n"
              "sys.exit(pytest.main([%r, '-q', '-p', 'no:cacheprovider', '-k', "
              "'nan_and_inf_propagate or strided_arrays']))" % __file__)
    env = dict(os.environ, FUSEDRNN_DISABLE_AVX512="1")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert " passed" in out.stdout and " failed" not in out.stdout, out.stdout[-3000:]


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("T,N,C", [(0, 3, 5), (4, 0, 5), (4, 3, 0), (0, 0, 0)])
def test_zero_sizes_give_the_reference_results(mode, T, N, C):
    problem = make_problem(mode, T, N, C, 6)
    up = make_upstream(mode, problem)
    fwd = kernels.forward(mode, **problem, training=True)
    ref = reference.forward(mode, **problem)
    assert_results_close(fwd, ref, rtol=1e-12, atol=1e-12)
    args, kwargs = backward_args(problem)
    assert_results_close(kernels.backward(mode, *args, fwd.reserve, **up, **kwargs),
                         reference.backward(mode, *args, **up, **kwargs),
                         rtol=1e-12, atol=1e-12)


def test_masks_and_lengths_in_other_containers_and_dtypes():
    problem = problem32("gru", lengths=[4, 1, 0])
    expect = kernels.forward("gru", **problem)
    mask = (np.arange(4)[:, None] < problem["lengths"][None, :])
    for m in (mask, mask.tolist(), mask.astype(np.float64), mask.astype(np.int8)):
        got = kernels.forward("gru", **dict(problem, lengths=None, mask=m))
        np.testing.assert_array_equal(got.hy, expect.hy)
    for lengths in ([4, 1, 0], (4, 1, 0), np.array([4, 1, 0], np.int8),
                    np.array([4.0, 1.0, 0.0], np.float16)):
        got = kernels.forward("gru", **dict(problem, lengths=lengths))
        assert_results_close(got, expect, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------
# The operators _fusedrnn_layer and _fusedrnn_params
# ------------------------------------------------------------------------------------------

layer_op = mx.nd._internal._fusedrnn_layer
params_op = mx.nd._internal._fusedrnn_params


def _op(changes=None, extra=(), mode="lstm", op_mode=None, **attrs):
    problem = problem32(mode)
    problem.update(changes or {})
    names = ["x", "w_ih", "w_hh", "b_ih", "b_hh", "h0"] + (["c0"] if mode == "lstm" else [])
    arrays = [problem[n] if isinstance(problem[n], mx.nd.NDArray) else
              mx.nd.array(problem[n], dtype=problem[n].dtype) for n in names]
    outs = layer_op(*arrays, *extra, mode=op_mode or mode, **attrs)
    return [o.asnumpy() for o in outs]


def _nd(values, dtype):
    return mx.nd.array(np.asarray(values), dtype=dtype)


OP_CASES = {
    "x_rank2": (dict(changes={"x": np.zeros((4, 15), f32)}), "x must have 3 dimensions"),
    "x_float16": (dict(changes={"x": np.zeros((4, 3, 5), np.float16)}),
                  "x must be float32 or float64"),
    "x_int32": (dict(changes={"x": np.zeros((4, 3, 5), np.int32)}),
                "x must be float32 or float64"),
    "h0_float64": (dict(changes={"h0": np.zeros((3, 6))}), "h0 must have the dtype of x"),
    "w_hh_columns": (dict(changes={"w_hh": np.zeros((24, 5), f32)}), r"w_hh has shape \(24, 5\)"),
    "w_ih_rows": (dict(changes={"w_ih": np.zeros((23, 5), f32)}), "w_ih must be"),
    "b_ih_rank2": (dict(changes={"b_ih": np.zeros((24, 1), f32)}), "b_ih has shape"),
    # (MXNet's default shape semantics: a 0 in a shape means unknown)
    "x_zero_T": (dict(changes={"x": np.zeros((0, 3, 5), f32)}),
                 r"x has shape \(\?, 3, 5\) with an unknown dimension"),
    "lengths_negative": (dict(extra=[_nd([1, -1, 2], "int32")], use_lengths=True),
                         r"lengths\[1\] = -1"),
    "lengths_past_T": (dict(extra=[_nd([1, 5, 2], "int32")], use_lengths=True),
                       r"lengths\[1\] = 5"),
    "lengths_fraction": (dict(extra=[_nd([1, 1.5, 2], "float32")], use_lengths=True),
                         r"lengths\[1\] = 1.5"),
    "lengths_nan": (dict(extra=[_nd([1, np.nan, 2], "float64")], use_lengths=True),
                    r"lengths\[1\] = nan"),
    "lengths_2^40": (dict(extra=[_nd([1, 2 ** 40, 2], "int64")], use_lengths=True),
                     r"lengths\[1\] = 1099511627776"),
    "lengths_float16": (dict(extra=[_nd([1, 1, 2], "float16")], use_lengths=True),
                        "lengths must be int32, int64"),
    "lengths_bool": (dict(extra=[_nd([1, 1, 1], "bool")], use_lengths=True),
                     "lengths must be int32, int64"),
    "lengths_short": (dict(extra=[_nd([1, 1], "int32")], use_lengths=True), "lengths has shape"),
    "lengths_rank2": (dict(extra=[_nd([[1], [1], [1]], "int32")], use_lengths=True),
                      "lengths has shape"),
    "mask_transposed": (dict(extra=[_nd(np.ones((3, 4)), "uint8")], use_mask=True),
                        "mask has shape"),
    "mask_half": (dict(extra=[_nd(np.full((4, 3), 0.5), "float32")], use_mask=True),
                  r"mask\[0, 0\] = 0.5"),
    "mask_bool": (dict(extra=[_nd(np.ones((4, 3)), "bool")], use_mask=True),
                  "mask must be int32, int64"),
    "mask_float16": (dict(extra=[_nd(np.ones((4, 3)), "float16")], use_mask=True),
                     "mask must be int32, int64"),
    "mask_and_lengths": (dict(extra=[_nd(np.ones((4, 3)), "uint8")], use_mask=True,
                              use_lengths=True), "use_lengths and use_mask"),
    "reverse_word": (dict(reverse="maybe"), "reverse must be a boolean"),
    "mode_unknown": (dict(op_mode="lstmp"), "mode must be one of"),
    "clip_word": (dict(clip_min="a", clip_max="1"), "clip_min must be a number"),
    "clip_reversed": (dict(clip_min="1", clip_max="-1"), "clip_min must be <= clip_max"),
    "clip_nan": (dict(clip_min="nan", clip_max="1"), "clip_min must be <= clip_max"),
    "clip_one": (dict(clip_min="-1"), "clip_min and clip_max must be given together"),
    "projection_gru": (dict(mode="gru", projection=True), "projection are only for mode lstm"),
}


@pytest.mark.parametrize("case", list(OP_CASES))
def test_layer_operator_refuses(case):
    kw, pattern = OP_CASES[case]
    with pytest.raises(mx.base.MXNetError) as info:
        _op(**kw)
    assert re.search(r"_fusedrnn_layer: .*" + pattern, str(info.value)), str(info.value)


def test_layer_operator_refuses_huge_shapes_at_inference():
    names = "x w_ih w_hh b_ih b_hh h0".split()
    sym = mx.sym._internal._fusedrnn_layer(*[mx.sym.var(n) for n in names], mode="rnn_tanh")
    with pytest.raises(mx.base.MXNetError, match="sizes too large"):
        sym.infer_shape(x=(2 ** 16, 2 ** 16, 1), w_ih=(1, 1), w_hh=(1, 1), b_ih=(1,),
                        b_hh=(1,), h0=(2 ** 16, 1))


@pytest.mark.parametrize("use_lengths", [False, True])
def test_layer_operator_backward_of_an_inference_graph(use_lengths):
    """A forward with training=False stores nothing for backward (e.g. a graph cached for
    inference, then exported and trained): backward runs the forward again first and gives
    the gradients of a training forward."""
    problem = problem32()
    names = ("x", "w_ih", "w_hh", "b_ih", "b_hh", "h0", "c0")
    extra = [_nd([4, 1, 0], "int32")] if use_lengths else []
    head = mx.nd.array(np.random.RandomState(3).randn(4, 3, 6))
    grads = {}
    for training in (True, False):
        arrays = [mx.nd.array(problem[n]) for n in names]
        for a in arrays:
            a.attach_grad()
        with mx.autograd.record():
            out = layer_op(*arrays, *extra, mode="lstm", training=training,
                           use_lengths=use_lengths)
        out[0].backward(head)
        grads[training] = [a.grad.asnumpy() for a in arrays]
    for got, want in zip(grads[False], grads[True]):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("T,N,C", [(0, 3, 5), (4, 0, 5), (4, 3, 0)])
def test_layer_operator_zero_sizes_with_numpy_shapes(T, N, C):
    """With NumPy shape semantics MXNet has real zero-size arrays; the operator then gives
    the kernels' (the reference's) results, gradients included."""
    problem = make_problem("lstm", T, N, C, 6, dtype=f32)
    names = ("x", "w_ih", "w_hh", "b_ih", "b_hh", "h0", "c0")
    with mx.util.np_shape(True):
        arrays = [mx.nd.array(problem[n], dtype=f32) for n in names]
        for a in arrays:
            a.attach_grad()
        with mx.autograd.record():
            y, hy, cy = layer_op(*arrays, mode="lstm")
            loss = (hy * hy).sum() + (cy * 2).sum()
        loss.backward()
        got_hy, grads = hy.asnumpy(), [a.grad.asnumpy() for a in arrays]
    ref = reference.forward("lstm", **problem)
    assert y.shape == (T, N, 6)
    np.testing.assert_allclose(got_hy, ref.hy, rtol=1e-5, atol=1e-6)
    args, kwargs = backward_args(problem)
    ref_g = reference.backward("lstm", *args, dhy=2 * ref.hy, dcy=np.full_like(ref.cy, 2),
                               **kwargs)
    for got, want in zip(grads, ref_g[:7]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


PARAMS_CASES = {
    "size": (dict(mode="lstm", state_size=6), 7, "parameters has 7 elements; the RNN needs 312"),
    "mode": (dict(mode="x", state_size=6), 7, "mode must be one of"),
    "num_layers_4097": (dict(mode="lstm", state_size=6, num_layers=4097), 7,
                        "num_layers must be at most 4096"),
    "projection_gru": (dict(mode="gru", state_size=6, projection_size=2), 7,
                       "projection_size is only for mode lstm"),
    "projection_negative": (dict(mode="lstm", state_size=6, projection_size=-2), 7,
                            "out of range"),
    "state_size_word": (dict(mode="lstm", state_size="a"), 7, "state_size must be an integer"),
    "state_size_2^33": (dict(mode="lstm", state_size=2 ** 33), 7, "limit of 2\\^31 - 1"),
    "state_size_2^29": (dict(mode="lstm", state_size=2 ** 29), 7, "limit of 2\\^31 - 1"),
    # One output per piece: a huge num_layers is refused before MXNet sizes the outputs.
    "num_layers_2^40": (dict(mode="lstm", state_size=6, num_layers=2 ** 40), 7,
                        "num_layers must be at most 4096"),
    "num_layers_4096_huge": (dict(mode="lstm", state_size=2 ** 14, num_layers=4096), 7,
                             "limit of 2\\^31 - 1"),
}


@pytest.mark.parametrize("case", list(PARAMS_CASES))
def test_params_operator_refuses(case):
    attrs, size, pattern = PARAMS_CASES[case]
    with pytest.raises(mx.base.MXNetError, match="_fusedrnn_params: .*" + pattern):
        params_op(mx.nd.zeros((4, 3, 5)), mx.nd.zeros(size), **attrs)[0].asnumpy()


def test_params_operator_refuses_integer_parameters_and_rank2_data():
    with pytest.raises(mx.base.MXNetError, match="parameters must be float32 or float64"):
        params_op(mx.nd.zeros((4, 3, 5)), mx.nd.zeros(312, dtype="int32"), mode="lstm",
                  state_size=6)[0].asnumpy()
    with pytest.raises(mx.base.MXNetError, match=r"data must be \[T, N, C\]"):
        params_op(mx.nd.zeros((4, 5)), mx.nd.zeros(312), mode="lstm", state_size=6)[0].asnumpy()


@pytest.mark.parametrize("layers,dirs,proj", [(1, 1, None), (3, 2, None), (2, 2, 3)])
def test_params_operator_cuts_what_the_python_layout_says(layers, dirs, proj):
    """The closed-form layout in C++ (no loop over layers) against nd._flat_layout."""
    C, H = 5, 4
    weights, biases, total = fusedrnn.nd._flat_layout("lstm", layers, dirs, C, H, proj)
    flat = np.arange(total, dtype=np.float64)
    pieces = params_op(mx.nd.zeros((2, 1, C), dtype="float64"), mx.nd.array(flat,
                       dtype="float64"), mode="lstm", state_size=H, num_layers=layers,
                       bidirectional=dirs == 2, projection_size=proj or 0)
    want = [piece for k in range(layers * dirs)
            for piece in weights[k][:2] + biases[k] + weights[k][2:]]
    assert len(pieces) == len(want)
    for got, (offset, shape) in zip(pieces, want):
        n = int(np.prod(shape))
        np.testing.assert_array_equal(got.asnumpy(), flat[offset:offset + n].reshape(shape))


# ------------------------------------------------------------------------------------------
# fusedrnn.nd.RNN / fusedrnn.sym.RNN
# ------------------------------------------------------------------------------------------

def _nd_rnn(num_layers=1, state=(1, 3, 6), cell=(1, 3, 6), seq=None, data=(4, 3, 5), **kw):
    mode = kw.setdefault("mode", "lstm")
    kw.setdefault("state_size", 6)
    try:  # the right size where there is one
        size = max(int(fusedrnn.nd._flat_layout(mode, num_layers, 1, data[2], 6, None)[2]), 1)
    except (IndexError, KeyError):
        size = 10
    args = [mx.nd.zeros(data), mx.nd.zeros(size), mx.nd.zeros(state), mx.nd.zeros(cell)]
    if seq is not None:
        args.append(mx.nd.array(seq))
        kw["use_sequence_length"] = True
    return fusedrnn.nd.RNN(*args, num_layers=num_layers, **kw).asnumpy()


@pytest.mark.parametrize("kw,error,pattern", [
    (dict(state=(3, 6)), ValueError, r"state must have shape \(1, 3, 6\); got \(3, 6\)"),
    (dict(state=(2, 3, 6)), ValueError, "state must have shape"),
    (dict(num_layers=2, state=(3, 3, 6), cell=(2, 3, 6)), ValueError,
     r"state must have shape \(2, 3, 6\)"),
    (dict(cell=(1, 3, 5)), ValueError, "state_cell must have shape"),
    (dict(seq=[1, 2]), ValueError, r"sequence_length must have shape \(3,\)"),
    (dict(seq=[1, -1, 2]), mx.base.MXNetError, r"lengths\[1\] = -1"),
    (dict(state_size=6.5), ValueError, "state_size must be a positive integer"),
    (dict(state_size="x"), ValueError, "state_size must be a positive integer"),
    (dict(num_layers=0), ValueError, "num_layers must be a positive integer"),
    (dict(projection_size=-1), ValueError, "projection_size must be None or a positive"),
    (dict(projection_size=2, mode="gru"), ValueError, "projection_size is only for mode"),
    (dict(p=1.5), ValueError, r"p \(dropout\) must be a number in \[0, 1\]"),
    (dict(mode="lstmp"), ValueError, "mode must be one of"),
    (dict(data=(4, 5)), ValueError, r"data must be \[T, N, C\]"),
    (dict(bogus=1), TypeError, "unexpected arguments"),
])
def test_nd_rnn_refuses(kw, error, pattern):
    with raises(error, pattern):
        _nd_rnn(**kw)


def test_nd_rnn_refuses_other_containers_and_dtypes():
    with raises(TypeError, "data must be an NDArray"):
        fusedrnn.nd.RNN(np.zeros((4, 3, 5)), mx.nd.zeros(10), mx.nd.zeros((1, 3, 6)),
                        mx.nd.zeros((1, 3, 6)), state_size=6, mode="lstm")
    with raises(TypeError, "state_cell must be an NDArray"):
        fusedrnn.nd.RNN(mx.nd.zeros((4, 3, 5)), mx.nd.zeros(10), mx.nd.zeros((1, 3, 6)),
                        state_size=6, mode="lstm")
    size = fusedrnn.nd._flat_layout("gru", 1, 1, 5, 6, None)[2]
    with pytest.raises(mx.base.MXNetError, match="parameters must be float32 or float64"):
        fusedrnn.nd.RNN(mx.nd.zeros((4, 3, 5), dtype="float16"), mx.nd.zeros(size, dtype="float16"),
                        mx.nd.zeros((1, 3, 6), dtype="float16"), state_size=6,
                        mode="gru").asnumpy()
    with raises(ValueError, "data must not have a zero-size dimension"):
        fusedrnn.nd.RNN(mx.nd.array(np.zeros((0, 3, 5))), mx.nd.zeros(size),
                        mx.nd.zeros((1, 3, 6)), state_size=6, mode="gru")


def test_sym_rnn_refuses_at_shape_inference():
    names = ("data", "p", "h", "c", "l")
    v = {n: mx.sym.var(n) for n in names}
    sym = fusedrnn.sym.RNN(v["data"], v["p"], v["h"], v["c"], v["l"], state_size=6,
                           mode="lstm", use_sequence_length=True)
    # (MXNet's own check, in the node that ties the state's shape to data's)
    with pytest.raises(mx.base.MXNetError, match=r"state_shape_from_data.*expected \[1,2,6\], "
                                                 r"got \[1,3,6\]"):
        sym.infer_shape(data=(4, 3, 5), h=(1, 2, 6), c=(1, 3, 6), l=(3,))
    with pytest.raises(mx.base.MXNetError, match=r"lengths has shape \(2\); expected \(3\)"):
        sym.infer_shape(data=(4, 3, 5), h=(1, 3, 6), c=(1, 3, 6), l=(2,))
    with raises(ValueError, "state_size must be a positive integer"):
        fusedrnn.sym.RNN(v["data"], v["p"], v["h"], v["c"], state_size=0, mode="lstm")
    with raises(TypeError, "data must be a Symbol"):
        fusedrnn.sym.RNN(mx.nd.zeros((4, 3, 5)), v["p"], v["h"], v["c"], state_size=6,
                         mode="lstm")


# ------------------------------------------------------------------------------------------
# Gluon layers
# ------------------------------------------------------------------------------------------

def _layer_call(cls=fusedrnn.LSTM, layout="TNC", x=None, ctor=None, hybridize=False,
                **call):
    layer = cls(6, layout=layout, **(ctor or {}))
    layer.initialize()
    if hybridize:
        layer.hybridize()
    if x is None:
        x = mx.nd.ones((4, 3, 5) if layout == "TNC" else (3, 4, 5))
    out = layer(x, **call)
    mx.nd.waitall()
    return out


def _nds(*shapes, dtype="float32"):
    return [mx.nd.zeros(s, dtype=dtype) for s in shapes]


LAYER_CASES = {
    "inputs_rank2": (dict(x=mx.nd.zeros((4, 5))), ValueError, "inputs must have 3 dimensions"),
    "inputs_rank4": (dict(x=mx.nd.zeros((4, 3, 5, 1))), ValueError,
                     "inputs must have 3 dimensions"),
    "inputs_numpy": (dict(x=np.zeros((4, 3, 5), f32)), TypeError,
                     "inputs must be an NDArray or a Symbol"),
    "inputs_float16": (dict(x=mx.nd.zeros((4, 3, 5), dtype="float16")), TypeError,
                       "inputs must be float32 or float64"),
    "inputs_int32": (dict(x=mx.nd.zeros((4, 3, 5), dtype="int32")), TypeError,
                     "inputs must be float32 or float64"),
    "inputs_float64": (dict(x=mx.nd.zeros((4, 3, 5), dtype="float64")), TypeError,
                       "inputs has dtype float64 but the layer's parameters are float32"),
    "inputs_zero_T": (dict(x=mx.nd.array(np.zeros((0, 3, 5)))), ValueError,
                      "inputs must not have a zero-size dimension"),
    "inputs_zero_N": (dict(x=mx.nd.array(np.zeros((4, 0, 5)))), ValueError,
                      "inputs must not have a zero-size dimension"),
    "inputs_zero_C": (dict(x=mx.nd.array(np.zeros((4, 3, 0)))), ValueError,
                      "inputs must not have a zero-size dimension"),
    "hidden_size_0": (dict(ctor={"num_layers": 1}, cls=lambda *a, **k: fusedrnn.LSTM(0)),
                      ValueError, "hidden_size must be a positive integer"),
    "num_layers_0": (dict(ctor={"num_layers": 0}), ValueError,
                     "num_layers must be a positive integer"),
    "unroll_word": (dict(ctor={"unroll": "yes"}), ValueError, "unroll must be False, True"),
    "lengths_negative": (dict(sequence_length=mx.nd.array([1, -1, 2])), ValueError,
                         r"sequence_length must hold whole numbers in \[0, 4\]"),
    "lengths_past_T": (dict(sequence_length=mx.nd.array([1, 5, 2])), ValueError,
                       "sequence_length must hold whole numbers"),
    "lengths_fraction": (dict(sequence_length=mx.nd.array([1, 1.5, 2])), ValueError,
                         "sequence_length must hold whole numbers"),
    "lengths_nan": (dict(sequence_length=mx.nd.array([1, np.nan, 2])), ValueError,
                    "sequence_length must hold whole numbers"),
    "lengths_short": (dict(sequence_length=mx.nd.array([1, 2])), ValueError,
                      r"sequence_length must have shape \(3,\)"),
    "lengths_numpy": (dict(sequence_length=np.array([1, 2, 3])), TypeError,
                      "sequence_length must be NDArray"),
    "lengths_list": (dict(sequence_length=[1, 2, 3]), TypeError,
                     "sequence_length must be NDArray"),
    "lengths_float16": (dict(sequence_length=mx.nd.array([1, 2, 3], dtype="float16")),
                        TypeError, "sequence_length must be int32"),
    "lengths_bool": (dict(sequence_length=mx.nd.array([1, 1, 1], dtype="bool")), TypeError,
                     "sequence_length must be int32"),
    "lengths_and_mask": (dict(sequence_length=mx.nd.array([1, 1, 1]), mask=mx.nd.ones((4, 3))),
                         ValueError, "give sequence_length or mask, not both"),
    "lengths_required": (dict(ctor={"use_sequence_length": True}), ValueError,
                         "sequence_length is required"),
    "mask_transposed": (dict(mask=mx.nd.ones((3, 4))), ValueError,
                        r"mask must have shape \(4, 3\) for layout TNC"),
    "mask_ntc_given_tnc": (dict(layout="NTC", mask=mx.nd.ones((4, 3))), ValueError,
                           r"mask must have shape \(3, 4\) for layout NTC"),
    "mask_half": (dict(mask=mx.nd.ones((4, 3)) * 0.5), ValueError, "mask must hold only 0 and 1"),
    "mask_float16": (dict(mask=mx.nd.ones((4, 3), dtype="float16")), TypeError, "mask must be"),
    "mask_numpy": (dict(mask=np.ones((4, 3), bool)), TypeError, "mask must be NDArray"),
    "states_batch": (dict(states=_nds((1, 2, 6), (1, 3, 6))), ValueError,
                     r"states\[0\] must have shape \(1, 3, 6\); got \(1, 2, 6\)"),
    "states_rank": (dict(states=_nds((3, 6), (3, 6))), ValueError, r"states\[0\] must have shape"),
    "states_cell": (dict(states=_nds((1, 3, 6), (1, 3, 5))), ValueError,
                    r"states\[1\] must have shape"),
    "states_one": (dict(states=_nds((1, 3, 6))), ValueError, "states must be a list of 2"),
    "states_three": (dict(states=_nds((1, 3, 6), (1, 3, 6), (1, 3, 6))), ValueError,
                     "states must be a list of 2"),
    "states_numpy": (dict(states=[np.zeros((1, 3, 6), f32)] * 2), TypeError,
                     r"states\[0\] must be an NDArray"),
    "states_float64": (dict(states=_nds((1, 3, 6), (1, 3, 6), dtype="float64")), TypeError,
                       r"states\[0\] has dtype float64"),
}


@pytest.mark.parametrize("unroll", [False, True])
@pytest.mark.parametrize("case", list(LAYER_CASES))
def test_layer_refuses(case, unroll):
    """The fused and the per-step path refuse the same input with the same message (the
    per-step path used to accept lengths outside [0, T] and return wrong numbers)."""
    kw, error, pattern = LAYER_CASES[case]
    kw = dict(kw)
    kw["ctor"] = dict(kw.get("ctor", {}))
    kw["ctor"].setdefault("unroll", unroll)
    if "cls" in kw:
        with raises(error, pattern):
            kw["cls"]()
        return
    with raises(error, pattern):
        _layer_call(**kw)


@pytest.mark.parametrize("cls", [fusedrnn.GRU, fusedrnn.RNN])
def test_layer_states_count_follows_the_mode(cls):
    with raises(ValueError, "states must be a list of 1"):
        _layer_call(cls, states=_nds((1, 3, 6), (1, 3, 6)))
    _layer_call(cls, states=mx.nd.zeros((1, 3, 6)))  # a single NDArray is fine


def test_hybridized_layer_refuses_like_the_imperative_one():
    with raises(ValueError, "sequence_length must hold whole numbers"):
        _layer_call(hybridize=True, sequence_length=mx.nd.array([1, 9, 2]))
    with raises(ValueError, r"states\[0\] must have shape"):
        _layer_call(hybridize=True, states=_nds((1, 2, 6), (1, 3, 6)))


def test_layer_input_size_change_names_the_weight():
    layer = fusedrnn.LSTM(6)
    layer.initialize()
    layer(mx.nd.zeros((4, 3, 5)))
    with pytest.raises(mx.base.MXNetError, match=r"w_ih has shape \(24, 5\); expected \(24, 7\)"):
        layer(mx.nd.zeros((4, 3, 7)))
        mx.nd.waitall()


@pytest.mark.parametrize("unroll", [False, True])
def test_layer_nan_stays_in_its_sample(unroll):
    layer = fusedrnn.GRU(6, num_layers=2, unroll=unroll)
    layer.initialize(mx.init.Xavier())
    x = np.random.default_rng(0).standard_normal((4, 3, 5)).astype(f32)
    clean = layer(mx.nd.array(x), sequence_length=mx.nd.array([4, 2, 3])).asnumpy()
    x[1, 1, 0] = np.nan
    bad = layer(mx.nd.array(x), sequence_length=mx.nd.array([4, 2, 3])).asnumpy()
    np.testing.assert_array_equal(bad[:, [0, 2]], clean[:, [0, 2]])
    np.testing.assert_array_equal(bad[0, 1], clean[0, 1])
    assert np.isnan(bad[1, 1]).all()
    assert not bad[2:, 1].any()  # past its length: 0, as ever


def test_layer_accepts_lengths_and_masks_of_every_integer_dtype():
    layer = fusedrnn.LSTM(6)
    layer.initialize()
    x = mx.nd.array(np.random.default_rng(1).standard_normal((4, 3, 5)))
    want = layer(x, sequence_length=mx.nd.array([4, 1, 2])).asnumpy()
    for dtype in ("int32", "int64", "uint8", "int8", "float64"):
        got = layer(x, sequence_length=mx.nd.array([4, 1, 2], dtype=dtype)).asnumpy()
        np.testing.assert_array_equal(got, want)
    mask = (np.arange(4)[:, None] < np.array([4, 1, 2])[None, :])
    by_mask = [layer(x, mask=mx.nd.array(mask, dtype=d)).asnumpy()
               for d in ("bool", "uint8", "float32")]
    for got in by_mask[1:]:
        np.testing.assert_array_equal(got, by_mask[0])


# ------------------------------------------------------------------------------------------
# Gluon cells
# ------------------------------------------------------------------------------------------

def _cell(cls=fusedrnn.LSTMCell):
    cell = cls(6)
    cell.initialize()
    return cell


CELL_STEP_CASES = {
    "inputs_rank3": (lambda c: c(mx.nd.zeros((1, 3, 5)), c.begin_state(3)), ValueError,
                     r"inputs of a step must have shape \[N, C\]"),
    "inputs_rank1": (lambda c: c(mx.nd.zeros((5,)), c.begin_state(3)), ValueError,
                     r"inputs of a step must have shape \[N, C\]"),
    "inputs_zero_N": (lambda c: c(mx.nd.array(np.zeros((0, 5))), c.begin_state(3)), ValueError,
                      "no zero-size dimension"),
    "inputs_float16": (lambda c: c(mx.nd.zeros((3, 5), dtype="float16"), c.begin_state(3)),
                       TypeError, "inputs must be float32 or float64"),
    "inputs_int32": (lambda c: c(mx.nd.zeros((3, 5), dtype="int32"), c.begin_state(3)),
                     TypeError, "inputs must be float32 or float64"),
    "states_batch": (lambda c: c(mx.nd.zeros((3, 5)), c.begin_state(2)), ValueError,
                     r"states\[0\] must have shape \(3, 6\); got \(2, 6\)"),
    "states_count": (lambda c: c(mx.nd.zeros((3, 5)), c.begin_state(3)[:1]), ValueError,
                     "states must be a list of 2"),
    "states_numpy": (lambda c: c(mx.nd.zeros((3, 5)), [np.zeros((3, 6), f32)] * 2), TypeError,
                     r"states\[0\] must be an NDArray"),
    "states_float64": (lambda c: c(mx.nd.zeros((3, 5)), c.begin_state(3, dtype="float64")),
                       TypeError, r"states\[0\] has dtype float64"),
}


@pytest.mark.parametrize("case", list(CELL_STEP_CASES))
def test_cell_step_refuses(case):
    call, error, pattern = CELL_STEP_CASES[case]
    with raises(error, pattern):
        call(_cell())
        mx.nd.waitall()


def _unroll(length=4, x=None, layout="NTC", **kw):
    cell = _cell()
    x = mx.nd.zeros((3, 4, 5)) if x is None else x
    out = cell.unroll(length, x, layout=layout, merge_outputs=True, **kw)
    mx.nd.waitall()
    return out


UNROLL_CASES = {
    "length_mismatch": (dict(length=5), ValueError, "length is 5 but inputs has 4 steps"),
    "inputs_rank2": (dict(x=mx.nd.zeros((4, 5))), ValueError, "inputs must have 3 dimensions"),
    "inputs_zero_T": (dict(length=0, x=mx.nd.array(np.zeros((3, 0, 5)))), ValueError,
                      "inputs must not have a zero-size dimension"),
    "inputs_float16": (dict(x=mx.nd.zeros((3, 4, 5), dtype="float16")), TypeError,
                       "inputs must be float32 or float64"),
    "layout": (dict(layout="XYZ"), ValueError, "layout must be 'NTC' or 'TNC'"),
    "valid_length_negative": (dict(valid_length=mx.nd.array([1, -1, 2])), ValueError,
                              r"valid_length must hold whole numbers in \[0, 4\]"),
    "valid_length_past_T": (dict(valid_length=mx.nd.array([1, 9, 2])), ValueError,
                            "valid_length must hold whole numbers"),
    "valid_length_fraction": (dict(valid_length=mx.nd.array([1, 1.5, 2])), ValueError,
                              "valid_length must hold whole numbers"),
    "valid_length_nan": (dict(valid_length=mx.nd.array([1, np.nan, 2])), ValueError,
                         "valid_length must hold whole numbers"),
    "valid_length_short": (dict(valid_length=mx.nd.array([1, 2])), ValueError,
                           r"valid_length must have shape \(3,\)"),
    "valid_length_numpy": (dict(valid_length=np.array([1, 2, 3])), TypeError,
                           "valid_length must be an NDArray"),
    "valid_length_float16": (dict(valid_length=mx.nd.array([1, 2, 3], dtype="float16")),
                             TypeError, "valid_length must be int32"),
    "begin_state_batch": (dict(begin_state=[mx.nd.zeros((2, 6))] * 2), ValueError,
                          r"states\[0\] must have shape \(3, 6\)"),
}


@pytest.mark.parametrize("case", list(UNROLL_CASES))
def test_cell_unroll_refuses(case):
    kw, error, pattern = UNROLL_CASES[case]
    with raises(error, pattern):
        _unroll(**kw)


# ------------------------------------------------------------------------------------------
# Padding, bucketing, choose_unroll
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args,kw,error,pattern", [
    (([[1, 2], [3]],), dict(maxlen=-1), ValueError, "maxlen must be None or a non-negative"),
    (([[1, 2], [3]],), dict(maxlen=1.5), TypeError, "maxlen must be None or a non-negative"),
    (([[1, 2], [3]],), dict(maxlen=float("nan")), TypeError, "maxlen must be None"),
    (([[1, 2], [3]],), dict(maxlen="2"), TypeError, "maxlen must be None"),
    (([[1, 2], [3]],), dict(maxlen=2 ** 40), MemoryError, "Unable to allocate"),
    ((None,), {}, ValueError, "`sequences` must be iterable"),
    ((iter([[1], [2]]),), {}, ValueError, "`sequences` must be iterable"),
    (([1, 2],), {}, ValueError, "`sequences` must be a list of iterables"),
    (([[[1, 2]], [[3]]],), {}, ValueError, "Shape of sample"),
    (([[1], [2, 3]],), dict(dtype="foo"), TypeError, "data type 'foo' not understood"),
])
def test_pad_sequences_refuses(args, kw, error, pattern):
    with raises(error, pattern):
        fusedrnn.pad_sequences(*args, **kw)


def test_pad_sequences_odd_values():
    got = fusedrnn.pad_sequences([[1.0], [2.0, np.inf]], dtype="float32", value=np.nan)
    np.testing.assert_array_equal(got, np.array([[np.nan, 1.0], [2.0, np.inf]], f32))
    assert fusedrnn.pad_sequences([]).shape == (0, 0)
    assert fusedrnn.pad_sequences([[], []], return_lengths=True).mask.shape == (2, 0)
    np.testing.assert_array_equal(fusedrnn.pad_sequences([[1, 2]], maxlen=np.int64(1)), [[2]])


@pytest.mark.parametrize("padded,pattern", [
    (fusedrnn.Padded(np.zeros((2, 3)), [1, 5], "post"),
     r"lengths must hold one length in \[0, 3\]"),
    (fusedrnn.Padded(np.zeros((2, 3)), [1, -1], "pre"), "lengths must hold one length"),
    (fusedrnn.Padded(np.zeros((2, 3)), [1, 2, 3], "pre"), "lengths must hold one length"),
    (fusedrnn.Padded(np.zeros((2, 3)), [1, 2], "mid"), "padding must be 'pre' or 'post'"),
])
def test_padded_mask_refuses(padded, pattern):
    with raises(ValueError, pattern):
        padded.mask


@pytest.mark.parametrize("args,kw,pattern", [
    (([3, -1], 2), {}, "lengths must be a 1-D sequence of non-negative integers"),
    (([3.5, 1], 2), {}, "lengths must be a 1-D sequence"),
    (([np.nan, 1], 2), {}, "lengths must be a 1-D sequence"),
    (([[1, 2]], 2), {}, "lengths must be a 1-D sequence"),
    (("abc", 2), {}, "lengths must be a 1-D sequence"),
    ((5, 2), {}, "lengths must be a 1-D sequence"),
    (([1, 2], 0), {}, "batch_size must be a positive integer; got 0"),
    (([1, 2], 1.5), {}, "batch_size must be a positive integer; got 1.5"),
    (([1, 2], "a"), {}, "batch_size must be a positive integer"),
    (([1, 2], None), {}, "batch_size must be a positive integer"),
    (([1, 2], True), {}, "batch_size must be a positive integer"),
    (([1, 2], 2), dict(num_buckets=0), "num_buckets must be None or a positive integer"),
    (([1, 2], 2), dict(num_buckets=-2), "num_buckets must be None"),
    (([1, 2], 2), dict(num_buckets=1.5), "num_buckets must be None"),
    (([1, 2], 2), dict(num_buckets="a"), "num_buckets must be None"),
    (([1, 2], 2), dict(last_batch="rollover"), "last_batch must be 'keep' or 'discard'"),
])
def test_bucket_sampler_refuses(args, kw, pattern):
    with raises(ValueError, pattern):
        fusedrnn.BucketSampler(*args, **kw)


def test_bucket_sampler_odd_but_valid():
    assert list(fusedrnn.BucketSampler([], 2)) == []
    sampler = fusedrnn.BucketSampler(np.array([0, 0, 3], np.uint8), 2, seed=0, num_buckets=1)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == [0, 1, 2]


@pytest.mark.parametrize("samples,error,pattern", [
    ([], ValueError, "pad_collate got an empty batch"),
    ([(np.zeros((2, 3)), 1), (np.zeros((1, 3)),)], ValueError,
     "samples must all be sequences, or all tuples"),
    ([(np.zeros((2, 3)), 1), np.zeros((1, 3))], ValueError, "samples must all be sequences"),
    ([np.zeros((2, 3)), np.zeros((1, 4))], ValueError, "Shape of sample"),
    ([1, 2], ValueError, "`sequences` must be a list of iterables"),
])
def test_pad_collate_refuses(samples, error, pattern):
    with raises(error, pattern):
        fusedrnn.pad_collate(samples)


def test_pad_collate_empty_sequences():
    batch, lengths = fusedrnn.pad_collate([np.zeros((0, 3)), np.zeros((0, 3))])
    assert batch.shape == (2, 0) and lengths.asnumpy().tolist() == [0, 0]


@pytest.mark.parametrize("args,pattern", [
    (("x", 1, 1, 1, False), "mode must be one of"),
    (("lstm", -1, 1, 1, False), "steps must be a non-negative integer"),
    (("lstm", 1.5, 1, 1, False), "steps must be a non-negative integer"),
    (("lstm", True, 1, 256, False), "steps must be a non-negative integer"),
    (("lstm", 2, -1, 256, False), "batch must be a non-negative integer"),
    (("lstm", 2, 1, "256", False), "hidden_size must be a non-negative integer"),
])
def test_choose_unroll_refuses(args, pattern):
    with raises(ValueError, pattern):
        fusedrnn.choose_unroll(*args)
    assert fusedrnn.choose_unroll("lstm", np.int64(2), np.int32(1), 256, False)
