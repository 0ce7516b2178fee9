"""fusedrnn.kernels (the C++ kernels) against the NumPy reference, PyTorch and finite
differences, plus the variable-length semantics and the argument checks."""
import concurrent.futures
import os
import pathlib
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest

from fusedrnn import kernels, reference
from helpers import (assert_results_close, backward_args, choose_clip_bounds, fd_check,
                     make_problem, make_upstream, torch_forward_backward)

# (mode, problem options, forward/backward options)
VARIANTS = {
    "lstm": ("lstm", {}, {}),
    "lstm_proj": ("lstm", {"proj": 3}, {}),
    "lstm_clip": ("lstm", {}, {"clip": True}),
    "lstm_proj_clip_nan": ("lstm", {"proj": 2}, {"clip": True, "clip_nan": True}),
    "gru": ("gru", {}, {}),
    "gru_reset_before": ("gru", {}, {"reset_after": False}),
    "rnn_tanh": ("rnn_tanh", {}, {}),
    "rnn_relu": ("rnn_relu", {}, {}),
}
SIZES = [(1, 1, 1, 1), (2, 3, 5, 4), (7, 3, 17, 33), (7, 1, 5, 4)]


def boundary_lengths(T, N, seed):
    """Lengths that include 0 and T whenever N allows, the rest random."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, T + 1, size=N)
    lengths[0] = T
    if N > 1:
        lengths[1] = 0
    return lengths


def setup(variant, T, N, C, H, dtype, lengths, seed=0):
    mode, pkw, okw = VARIANTS[variant]
    problem = make_problem(mode, T, N, C, H, dtype=dtype, seed=seed, lengths=lengths, **pkw)
    options = {k: v for k, v in okw.items() if k != "clip"}
    if okw.get("clip"):
        try:
            lo, hi = choose_clip_bounds(problem, **options)
        except AssertionError:  # too few cells (e.g. H = 1) to clip some and not others
            lo, hi = -0.05, 0.05
        options.update(clip_min=lo, clip_max=hi)
    return mode, problem, options


def run_kernels(mode, problem, upstream, **options):
    fwd = kernels.forward(mode, **problem, **options, training=True)
    args, kwargs = backward_args(problem)
    grads = kernels.backward(mode, *args, fwd.reserve, **upstream, **kwargs, **options)
    return fwd, grads


def run_reference(mode, problem, upstream, **options):
    fwd = reference.forward(mode, **problem, **options)
    args, kwargs = backward_args(problem)
    return fwd, reference.backward(mode, *args, **upstream, **kwargs, **options)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("variable", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "T%dN%dC%dH%d" % s)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_matches_reference(variant, size, variable, reverse, dtype):
    T, N, C, H = size
    lengths = boundary_lengths(T, N, seed=sum(size)) if variable else None
    mode, problem, options = setup(variant, T, N, C, H, dtype, lengths)
    options["reverse"] = reverse
    upstream = make_upstream(mode, problem, seed=3)
    upstream = {k: None if v is None else v.astype(dtype) for k, v in upstream.items()}
    fwd, grads = run_kernels(mode, problem, upstream, **options)
    ref_fwd, ref_grads = run_reference(mode, problem, upstream, **options)
    tol = dict(rtol=1e-9, atol=1e-11) if dtype == np.float64 else dict(rtol=2e-4, atol=2e-5)
    assert fwd.y.dtype == dtype and grads.dw_hh.dtype == dtype
    assert_results_close(fwd, ref_fwd, what="forward", **tol)
    assert_results_close(grads, ref_grads, what="backward", **tol)
    inference = kernels.forward(mode, **problem, **options)
    assert inference.reserve is None
    assert_results_close(inference, fwd, what="inference vs training", rtol=0, atol=0)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("size", [(5, 64, 9, 70), (3, 20, 300, 150)],
                         ids=["small-weights", "large-weights"])
def test_threaded_time_loop_matches_reference(variant, reverse, size, two_threads):
    """Sizes large enough that each step is split across two threads (H not a multiple of
    the 16-unit slices, so one slice has a ragged end); with small weights the LSTM folds the
    input product into each step, with large ones it keeps one input product for all steps."""
    T, N, C, H = size
    lengths = boundary_lengths(T, N, seed=11)
    mode, problem, options = setup(variant, T, N, C, H, np.float64, lengths, seed=12)
    if "proj" in VARIANTS[variant][1]:
        problem = make_problem(mode, T, N, C, H, proj=H // 2 + 2, lengths=lengths, seed=12)
        if "clip_min" in options:
            options.update(zip(("clip_min", "clip_max"), choose_clip_bounds(problem)))
    options["reverse"] = reverse
    upstream = make_upstream(mode, problem, seed=13)
    fwd, grads = run_kernels(mode, problem, upstream, **options)
    ref_fwd, ref_grads = run_reference(mode, problem, upstream, **options)
    assert_results_close(fwd, ref_fwd, rtol=1e-9, atol=1e-11, what="forward")
    assert_results_close(grads, ref_grads, rtol=1e-9, atol=1e-11, what="backward")


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("variant", ["lstm", "lstm_proj", "gru", "rnn_tanh", "rnn_relu"])
def test_matches_torch(variant, reverse):
    T, N, C, H = 7, 5, 6, 9
    lengths = np.array([7, 3, 1, 7, 5])
    mode, problem, options = setup(variant, T, N, C, H, np.float64, lengths, seed=5)
    upstream = make_upstream(mode, problem, seed=8)
    fwd, grads = run_kernels(mode, problem, upstream, reverse=reverse)
    t_fwd, t_grads = torch_forward_backward(mode, problem, **upstream, reverse=reverse)
    assert_results_close(fwd, t_fwd, rtol=1e-9, atol=1e-11, what="forward")
    assert_results_close(grads, t_grads, rtol=1e-9, atol=1e-11, what="backward")


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_finite_differences(variant, reverse):
    T, N, C, H = 5, 3, 4, 5
    mode, problem, options = setup(variant, T, N, C, H, np.float64, np.array([5, 2, 4]), seed=2)
    options["reverse"] = reverse
    upstream = make_upstream(mode, problem, seed=4)
    _, grads = run_kernels(mode, problem, upstream, **options)

    def forward_fn(mode, **kw):
        return kernels.forward(mode, **kw)

    fd_check(mode, problem, grads, **upstream, forward_fn=forward_fn, n_coords=4, **options)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("variant", ["lstm_proj", "gru", "gru_reset_before", "rnn_relu"])
def test_each_sample_as_if_alone(variant, reverse):
    """A batch with lengths gives each sample exactly what running it alone, unpadded, gives."""
    T, N, C, H = 6, 4, 3, 5
    lengths = np.array([2, 6, 0, 4])
    mode, problem, options = setup(variant, T, N, C, H, np.float64, lengths, seed=7)
    options["reverse"] = reverse
    upstream = make_upstream(mode, problem, seed=9)
    fwd, grads = run_kernels(mode, problem, upstream, **options)
    for n, L in enumerate(lengths):
        alone = {k: v for k, v in problem.items() if k != "lengths"}
        alone["x"] = problem["x"][:L, n:n + 1]
        for k in ("h0", "c0"):
            if alone[k] is not None:
                alone[k] = problem[k][n:n + 1]
        up = {"dy": upstream["dy"][:L, n:n + 1], "dhy": upstream["dhy"][n:n + 1],
              "dcy": None if upstream["dcy"] is None else upstream["dcy"][n:n + 1]}
        a_fwd, a_grads = run_kernels(mode, alone, up, **options)
        np.testing.assert_allclose(fwd.y[:L, n:n + 1], a_fwd.y, rtol=1e-12, atol=1e-14)
        assert not fwd.y[L:, n].any(), "outputs past the length must be zero"
        assert not grads.dx[L:, n].any(), "gradient at padded inputs must be zero"
        np.testing.assert_allclose(fwd.hy[n:n + 1], a_fwd.hy, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(grads.dx[:L, n:n + 1], a_grads.dx, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(grads.dh0[n:n + 1], a_grads.dh0, rtol=1e-12, atol=1e-14)
        if mode == "lstm":
            np.testing.assert_allclose(fwd.cy[n:n + 1], a_fwd.cy, rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(grads.dc0[n:n + 1], a_grads.dc0, rtol=1e-12, atol=1e-14)
        if L == 0:
            np.testing.assert_array_equal(fwd.hy[n], problem["h0"][n])
            np.testing.assert_array_equal(grads.dh0[n], upstream["dhy"][n])


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh"])
def test_all_lengths_zero_and_empty_sizes(mode):
    problem = make_problem(mode, 4, 3, 2, 5, lengths=[0, 0, 0])
    upstream = make_upstream(mode, problem)
    fwd, grads = run_kernels(mode, problem, upstream)
    assert not fwd.y.any()
    np.testing.assert_array_equal(fwd.hy, problem["h0"])
    assert not grads.dx.any() and not grads.dw_ih.any() and not grads.db_hh.any()
    np.testing.assert_array_equal(grads.dh0, upstream["dhy"])
    for T, N in [(0, 3), (4, 0)]:
        empty = make_problem(mode, T, N, 2, 5)
        fwd, grads = run_kernels(mode, empty, make_upstream(mode, empty))
        assert fwd.y.shape == (T, N, 5)
        np.testing.assert_array_equal(fwd.hy, empty["h0"])
        assert grads.dx.shape == (T, N, 2) and not grads.dw_hh.any()


def test_full_lengths_equal_no_lengths():
    problem = make_problem("lstm", 5, 3, 4, 6)
    a = kernels.forward("lstm", **problem)
    b = kernels.forward("lstm", **dict(problem, lengths=np.array([5, 5, 5])))
    assert_results_close(b, a, rtol=0, atol=0)


def test_absent_upstream_gradients_are_zero():
    problem = make_problem("lstm", 5, 3, 4, 6, proj=2, lengths=[5, 1, 3])
    args, kwargs = backward_args(problem)
    fwd = kernels.forward("lstm", **problem, training=True)
    up = make_upstream("lstm", problem)
    for missing in ("dy", "dhy", "dcy"):
        given = dict(up, **{missing: None})
        zeros = dict(up, **{missing: np.zeros_like(up[missing])})
        a = kernels.backward("lstm", *args, fwd.reserve, **given, **kwargs)
        b = kernels.backward("lstm", *args, fwd.reserve, **zeros, **kwargs)
        assert_results_close(a, b, rtol=0, atol=0)


def test_strided_inputs_are_converted():
    problem = make_problem("gru", 6, 4, 5, 7, dtype=np.float32, lengths=[6, 2, 0, 3])
    strided = dict(problem)
    strided["x"] = np.asfortranarray(problem["x"])
    strided["w_hh"] = np.repeat(problem["w_hh"], 2, axis=1)[:, ::2]
    assert not strided["w_hh"].flags.c_contiguous
    assert_results_close(kernels.forward("gru", **strided), kernels.forward("gru", **problem),
                         rtol=0, atol=0)


def test_lengths_accept_integer_and_whole_float_dtypes():
    problem = make_problem("rnn_tanh", 4, 3, 2, 3)
    expect = kernels.forward("rnn_tanh", **dict(problem, lengths=np.array([4, 0, 2])))
    for lengths in ([4, 0, 2], np.array([4, 0, 2], np.uint8), np.array([4.0, 0.0, 2.0])):
        got = kernels.forward("rnn_tanh", **dict(problem, lengths=lengths))
        assert_results_close(got, expect, rtol=0, atol=0)


def test_thread_setting():
    before = kernels.get_num_threads()
    try:
        kernels.set_num_threads(3)
        assert kernels.get_num_threads() == 3
        kernels.set_num_threads(0)  # back to the default
        assert kernels.get_num_threads() >= 1
        with pytest.raises(ValueError):
            kernels.set_num_threads("two")
    finally:
        kernels.set_num_threads(before)


def test_deterministic_and_thread_count_independent():
    problem = make_problem("lstm", 20, 16, 32, 64, dtype=np.float32, lengths="random")
    upstream = {k: v.astype(np.float32) for k, v in make_upstream("lstm", problem).items()}
    before = kernels.get_num_threads()
    try:
        kernels.set_num_threads(1)
        one = run_kernels("lstm", problem, upstream)
        again = run_kernels("lstm", problem, upstream)
        kernels.set_num_threads(2)
        assert kernels.get_num_threads() == 2
        two = run_kernels("lstm", problem, upstream)
    finally:
        kernels.set_num_threads(before)
    for a, b in zip(one, again):
        assert_results_close(a, b, rtol=0, atol=0)
    for a, b in zip(one, two):
        assert_results_close(a, b, rtol=1e-5, atol=1e-6)


def test_portable_build_matches_reference():
    """The non-AVX-512 code path, forced in a subprocess, gives the reference's numbers too."""
    script = textwrap.dedent("""
        import numpy as np, sys
        sys.path.insert(0, %r)
        from fusedrnn import kernels
        from helpers import make_problem, make_upstream
        from test_kernels import run_kernels, run_reference, VARIANTS
        assert kernels.instruction_set() == "base", kernels.instruction_set()
        kernels.set_num_threads(2)
        for variant in VARIANTS:
            mode, pkw, okw = VARIANTS[variant]
            for N, H in [(3, 21), (40, 70)]:
                problem = make_problem(mode, 6, N, 5, H, dtype=np.float32, lengths="random",
                                       **pkw)
                opts = {"clip_min": -0.4, "clip_max": 0.5} if okw.get("clip") else {}
                opts["reverse"] = True
                up = {k: None if v is None else v.astype(np.float32)
                      for k, v in make_upstream(mode, problem).items()}
                for got, ref in zip(run_kernels(mode, problem, up, **opts),
                                    run_reference(mode, problem, up, **opts)):
                    for a, b in zip(got, ref):
                        if b is not None:
                            np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
        print("ok")
    """) % str(pathlib.Path(__file__).parent)
    env = dict(os.environ, FUSEDRNN_DISABLE_AVX512="1")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


@pytest.mark.parametrize("l2", ["64K", "32M"])
def test_any_cache_size_matches_reference(l2):
    """The time loops choose from the L2 cache size (read from the system) whether the input
    product joins the recurrent one and whether threads split the batch or the units; with a
    tiny and a huge cache (FUSEDRNN_L2_BYTES, in a subprocess) every variant takes the other
    side of those choices than on most machines, and still gives the reference's numbers."""
    script = textwrap.dedent("""
        import numpy as np, sys
        sys.path.insert(0, %r)
        from fusedrnn import kernels
        from helpers import make_problem, make_upstream
        from test_kernels import run_kernels, run_reference, VARIANTS
        kernels.set_num_threads(2)
        for variant in VARIANTS:
            mode, pkw, okw = VARIANTS[variant]
            for dtype, tol in ((np.float64, 1e-9), (np.float32, 2e-4)):
                problem = make_problem(mode, 6, 40, 37, 70, dtype=dtype, lengths="random",
                                       **pkw)
                opts = {"clip_min": -0.4, "clip_max": 0.5} if okw.get("clip") else {}
                up = {k: None if v is None else v.astype(dtype)
                      for k, v in make_upstream(mode, problem).items()}
                ref = run_reference(mode, {k: v if v is None or k == "lengths"
                                           else v.astype(np.float64)
                                           for k, v in problem.items()},
                                    {k: None if v is None else v.astype(np.float64)
                                     for k, v in up.items()}, **opts)
                for got, want in zip(run_kernels(mode, problem, up, **opts), ref):
                    for a, b in zip(got, want):
                        if b is not None:
                            np.testing.assert_allclose(a, b, rtol=tol, atol=tol / 10)
        print("ok")
    """) % str(pathlib.Path(__file__).parent)
    env = dict(os.environ, FUSEDRNN_L2_BYTES=l2)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


def test_concurrent_calls_match_serial(two_threads):
    """Calls from several Python threads at once (the GIL is released inside the kernels, and
    only one call at a time gets the thread pool) give exactly the serial results."""
    problems = [make_problem(mode, 6, 40, 9, 70, dtype=np.float32, lengths="random", seed=s)
                for s, mode in enumerate(["lstm", "gru", "rnn_tanh", "lstm"])]
    modes = ["lstm", "gru", "rnn_tanh", "lstm"]

    def run(i):
        up = {k: None if v is None else v.astype(np.float32)
              for k, v in make_upstream(modes[i], problems[i]).items()}
        return [run_kernels(modes[i], problems[i], up) for _ in range(5)]

    serial = [run(i) for i in range(4)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(run, range(4)))
    for ser, par in zip(serial, parallel):
        for (f1, g1), (f2, g2) in zip(ser, par):
            assert_results_close(f2, f1, rtol=0, atol=0)
            assert_results_close(g2, g1, rtol=0, atol=0)


def test_forked_child_runs_threaded_kernels(two_threads):
    """A process that used the thread pool and then forks (DataLoader workers) can run the
    kernels in the child: the child builds its own pool instead of waiting on threads that
    do not exist there."""
    problem = make_problem("lstm", 6, 40, 9, 70, dtype=np.float32)
    expect = kernels.forward("lstm", **problem).y
    script = textwrap.dedent("""
        import os, sys, numpy as np
        sys.path.insert(0, %r)
        from fusedrnn import kernels
        from helpers import make_problem
        kernels.set_num_threads(2)
        problem = make_problem("lstm", 6, 40, 9, 70, dtype=np.float32)
        parent = kernels.forward("lstm", **problem).y
        pid = os.fork()
        if pid == 0:
            child = kernels.forward("lstm", **problem).y
            os._exit(0 if np.array_equal(child, parent) else 3)
        _, status = os.waitpid(pid, 0)
        np.save(sys.argv[1], parent)
        sys.exit(os.waitstatus_to_exitcode(status))
    """) % str(pathlib.Path(__file__).parent)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "y.npy")
        run = subprocess.run([sys.executable, "-c", script, out], capture_output=True,
                             text=True, timeout=120)
        assert run.returncode == 0, run.stderr[-3000:]
        np.testing.assert_array_equal(np.load(out), expect)


def test_reserve_size():
    problem = make_problem("lstm", 5, 3, 4, 6, proj=2)
    fwd = kernels.forward("lstm", **problem, training=True)
    assert fwd.reserve.shape == (kernels.reserve_size("lstm", 5, 3, 4, 6, 2),)
    with pytest.raises(ValueError, match="mode"):
        kernels.reserve_size("lstmx", 5, 3, 4, 6)
    with pytest.raises(ValueError, match="steps"):
        kernels.reserve_size("lstm", -1, 3, 4, 6)
    with pytest.raises(ValueError, match="hidden_size"):
        kernels.reserve_size("gru", 5, 3, 4, 0)
    with pytest.raises(ValueError, match="proj_size is only supported for LSTM"):
        kernels.reserve_size("gru", 5, 3, 4, 6, 2)
    with pytest.raises(ValueError, match="sizes too large"):
        kernels.reserve_size("lstm", 2 ** 31, 2, 4, 6)


# ------------------------------------------------------------------------------------------
# Bad input: a Python exception naming the argument, never a crash.
# ------------------------------------------------------------------------------------------

def _bad(mode="lstm", **changes):
    problem = make_problem(mode, 4, 3, 5, 6, dtype=np.float32)
    problem.update(changes)
    return problem


@pytest.mark.parametrize("name,value,error,pattern", [
    ("x", np.zeros((4, 3, 5), np.int32), TypeError, "x has dtype int32"),
    ("x", np.zeros((4, 3, 5), np.float16), TypeError, "x has dtype float16"),
    ("x", [[[0.0] * 5] * 3] * 4, TypeError, "x must be a numpy.ndarray"),
    ("x", np.zeros((4, 15), np.float32), ValueError, "x must have 3 dimensions"),
    ("w_ih", np.zeros((24, 5), np.float64), TypeError, "w_ih has dtype float64"),
    ("w_ih", np.zeros((23, 5), np.float32), ValueError, "w_ih has 23 rows"),
    ("w_ih", np.zeros((24, 4), np.float32), ValueError, r"w_ih has shape \(24, 4\)"),
    ("w_hh", np.zeros((24, 5), np.float32), ValueError, r"w_hh has shape \(24, 5\)"),
    ("b_ih", np.zeros(23, np.float32), ValueError, "b_ih has shape"),
    ("b_hh", np.zeros((24, 1), np.float32), ValueError, "b_hh has shape"),
    ("h0", np.zeros((2, 6), np.float32), ValueError, r"h0 has shape \(2, 6\)"),
    ("c0", np.zeros((3, 5), np.float32), ValueError, "c0 has shape"),
    ("c0", None, ValueError, "c0 is required"),
    ("w_hr", np.zeros((2, 5), np.float32), ValueError, "w_h"),
    ("lengths", [1, 2], ValueError, "lengths must have shape"),
    ("lengths", [1, 2, -1], ValueError, "lengths must be >= 0"),
    ("lengths", [1, 2, 5], ValueError, r"lengths\[2\] = 5 is outside \[0, 4\]"),
    ("lengths", [1, 2, 2.5], ValueError, "lengths must be whole numbers"),
    ("lengths", [1, 2, np.nan], ValueError, "lengths must be whole numbers"),
    ("lengths", np.array(["a", "b", "c"]), TypeError, "lengths must be integers"),
])
def test_bad_forward_arguments(name, value, error, pattern):
    with pytest.raises(error, match=pattern):
        kernels.forward("lstm", **_bad(**{name: value}))


@pytest.mark.parametrize("mode,changes,options,pattern", [
    ("lstmp", {}, {}, "mode must be one of"),
    ("gru", {"c0": np.zeros((3, 6), np.float32)}, {}, "c0 is only for mode 'lstm'"),
    ("gru", {"w_hr": np.zeros((2, 6), np.float32)}, {}, "w_hr"),
    ("gru", {}, {"clip_min": -1.0, "clip_max": 1.0}, "only for mode 'lstm'"),
    ("lstm", {}, {"clip_min": -1.0}, "clip_min and clip_max must be given together"),
    ("lstm", {}, {"clip_min": 1.0, "clip_max": -1.0}, "clip_min must be <= clip_max"),
    ("lstm", {}, {"clip_min": float("nan"), "clip_max": 1.0}, "clip_min must be a real number"),
])
def test_bad_options(mode, changes, options, pattern):
    problem = _bad("gru" if mode == "gru" else "lstm", **changes)
    with pytest.raises(ValueError, match=pattern):
        kernels.forward(mode, **problem, **options)


def test_bad_backward_arguments():
    problem = _bad()
    fwd = kernels.forward("lstm", **problem, training=True)
    args, kwargs = backward_args(problem)
    with pytest.raises(ValueError, match="reserve is required"):
        kernels.backward("lstm", *args, None, **kwargs)
    with pytest.raises(ValueError, match="reserve has shape"):
        kernels.backward("lstm", *args, fwd.reserve[:-1], **kwargs)
    with pytest.raises(TypeError, match="reserve has dtype float64"):
        kernels.backward("lstm", *args, fwd.reserve.astype(np.float64), **kwargs)
    with pytest.raises(ValueError, match=r"dy has shape \(4, 3, 5\)"):
        kernels.backward("lstm", *args, fwd.reserve, dy=np.zeros((4, 3, 5), np.float32), **kwargs)
    with pytest.raises(ValueError, match="dhy has shape"):
        kernels.backward("lstm", *args, fwd.reserve, dhy=np.zeros((3, 5), np.float32), **kwargs)
    with pytest.raises(TypeError, match="dcy has dtype float64"):
        kernels.backward("lstm", *args, fwd.reserve, dcy=np.zeros((3, 6)), **kwargs)


def test_denormal_flushing_stays_inside_the_call():
    """The kernels flush denormals to zero while they run (speed), and leave the caller's
    floating-point mode as it was: NumPy still produces denormals afterwards."""
    problem = make_problem("lstm", 3, 2, 4, 5, dtype=np.float32)
    fwd = kernels.forward("lstm", **problem, training=True)
    args, kwargs = backward_args(problem)
    kernels.backward("lstm", *args, fwd.reserve, dy=np.ones_like(fwd.y), **kwargs)
    tiny = np.float32(1e-39)  # below float32's smallest normal number, 1.18e-38
    assert tiny * np.float32(1.0) == tiny and tiny / np.float32(2) > 0


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("T,N,C,H", [(1, 1, 37, 19), (1, 5, 3, 40), (1, 16, 128, 512),
                                     (2, 33, 9, 6), (3, 7, 130, 17), (1, 32, 5, 3)])
@pytest.mark.parametrize("variant", ["lstm", "lstm_proj", "gru", "gru_reset_before",
                                     "rnn_relu"])
def test_few_rows_products_match_reference(variant, T, N, C, H, threads):
    """Few rows (a cell's step, short sequences at small batch) take the in-place product on
    unpacked weights (blocks of 4 x 4 with k, row and column tails); with two threads and a
    large enough product it is split by columns."""
    before = kernels.get_num_threads()
    kernels.set_num_threads(threads)
    try:
        mode, problem, options = setup(variant, T, N, C, H, np.float64, None, seed=N + C)
        upstream = make_upstream(mode, problem, seed=2)
        fwd, grads = run_kernels(mode, problem, upstream, **options)
        ref_fwd, ref_grads = run_reference(mode, problem, upstream, **options)
        assert_results_close(fwd, ref_fwd, rtol=1e-9, atol=1e-11, what="forward")
        assert_results_close(grads, ref_grads, rtol=1e-9, atol=1e-11, what="backward")
        f32 = {k: None if v is None or k == "lengths" else v.astype(np.float32)
               for k, v in problem.items()}
        np.testing.assert_allclose(kernels.forward(mode, **f32, **options).y, ref_fwd.y,
                                   rtol=2e-4, atol=2e-5)
    finally:
        kernels.set_num_threads(before)
