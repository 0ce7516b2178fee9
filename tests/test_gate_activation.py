"""gate_activation='hard_sigmoid' (Keras' clip(0.2 * v + 0.5, 0, 1) on the LSTM i, f, o and
GRU r, z gates) in the kernels, the NumPy reference and the MXNet operator: against each
other, finite differences, the kinks, the formula bit for bit, and the argument checks."""
import os
import pathlib
import subprocess
import sys
import textwrap

import mxnet as mx
import numpy as np
import pytest

from fusedrnn import kernels, reference
from helpers import (assert_results_close, backward_args, choose_clip_bounds, fd_check,
                     make_problem, make_upstream)

HARD = "hard_sigmoid"
# (mode, problem options, forward/backward options)
VARIANTS = {
    "lstm": ("lstm", {}, {}),
    "lstm_proj": ("lstm", {"proj": 3}, {}),
    "lstm_clip": ("lstm", {}, {"clip": True}),
    "gru": ("gru", {}, {}),
    "gru_reset_before": ("gru", {}, {"reset_after": False}),
}
# One step (the cell path), odd sizes, and C + P large enough that the input product is not
# fused into the recurrent one.
SIZES = [(1, 3, 5, 7), (6, 4, 5, 7), (7, 3, 17, 33), (4, 3, 300, 70)]
TOL = {np.float64: dict(rtol=1e-9, atol=1e-11), np.float32: dict(rtol=2e-4, atol=2e-5)}


def gate_ys(mode, problem, **options):
    """Every y = 0.2 v + 0.5 of the reference's sigmoid gates over the run."""
    trace = reference._forward_trace(mode, **problem, **options)
    keys = ("yi", "yf", "yo") if mode == "lstm" else ("yr", "yz")
    return np.concatenate([getattr(c, k).ravel() for _, _, c in trace for k in keys] + [[]])


def hard_setup(variant, T, N, C, H, dtype, valid, reverse=False, margin=1e-4):
    """A problem whose gates reach both flat parts and the slope, with no y within margin of
    a kink (so that rounding differences and finite differences stay on one linear piece),
    and the options to run it with (valid: None, 'lengths' or 'mask')."""
    mode, pkw, okw = VARIANTS[variant]
    for seed in range(300):
        rng = np.random.default_rng(1000 + seed)
        lengths = rng.integers(0, T + 1, size=N) if valid == "lengths" else None
        problem = make_problem(mode, T, N, C, H, dtype=dtype, seed=seed, lengths=lengths,
                               scale=3.5, **pkw)
        options = dict(gate_activation=HARD, reverse=reverse)
        options.update({k: v for k, v in okw.items() if k != "clip"})
        if valid == "mask":
            options["mask"] = rng.integers(0, 2, size=(T, N)).astype(bool)
        if okw.get("clip"):
            try:
                options["clip_min"], options["clip_max"] = choose_clip_bounds(problem, **options)
            except AssertionError:
                continue
        y = gate_ys(mode, problem, **options)
        if y.size and np.min(np.minimum(np.abs(y), np.abs(y - 1))) <= margin:
            continue
        if y.size >= 30 and not ((y < 0).any() and (y > 1).any() and ((y > 0) & (y < 1)).any()):
            continue
        return mode, problem, options
    raise AssertionError("no problem away from the kinks found")


def run_kernels(mode, problem, upstream, **options):
    fwd = kernels.forward(mode, **problem, **options, training=True)
    args, kwargs = backward_args(problem)
    return fwd, kernels.backward(mode, *args, fwd.reserve, **upstream, **kwargs, **options)


def run_reference(mode, problem, upstream, **options):
    args, kwargs = backward_args(problem)
    return (reference.forward(mode, **problem, **options),
            reference.backward(mode, *args, **upstream, **kwargs, **options))


def upstream_of(mode, problem, dtype):
    return {k: None if v is None else v.astype(dtype)
            for k, v in make_upstream(mode, problem, seed=3).items()}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("valid", [None, "lengths", "mask"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "T%dN%dC%dH%d" % s)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_matches_reference(variant, size, valid, reverse, dtype, margin=1e-4):
    mode, problem, options = hard_setup(variant, *size, dtype, valid, reverse, margin)
    upstream = upstream_of(mode, problem, dtype)
    fwd, grads = run_kernels(mode, problem, upstream, **options)
    ref_fwd, ref_grads = run_reference(mode, problem, upstream, **options)
    assert_results_close(fwd, ref_fwd, what="forward", **TOL[dtype])
    assert_results_close(grads, ref_grads, what="backward", **TOL[dtype])
    inference = kernels.forward(mode, **problem, **options)
    assert_results_close(inference, fwd, what="inference vs training", rtol=0, atol=0)
    # The hard gates give other numbers than the sigmoid (the option is not ignored).
    sig = kernels.forward(mode, **problem, **{**options, "gate_activation": "sigmoid"})
    assert not np.allclose(sig.hy, fwd.hy)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_two_threads(variant, reverse, two_threads):
    """Large enough for the threaded time loops; float32 keeps y 1e-5 from the kinks (a
    rounding difference crossing one would change that unit's slope)."""
    for size in [(4, 33, 5, 70), (6, 20, 3, 96)]:
        mode, problem, options = hard_setup(variant, *size, np.float32, "lengths", reverse,
                                            margin=1e-5)
        upstream = upstream_of(mode, problem, np.float32)
        fwd, grads = run_kernels(mode, problem, upstream, **options)
        ref_fwd, ref_grads = run_reference(mode, problem, upstream, **options)
        assert_results_close(fwd, ref_fwd, what="forward", **TOL[np.float32])
        assert_results_close(grads, ref_grads, what="backward", **TOL[np.float32])


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("valid", [None, "lengths", "mask"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_finite_differences(variant, valid, reverse):
    mode, problem, options = hard_setup(variant, 5, 3, 4, 5, np.float64, valid, reverse)
    upstream = make_upstream(mode, problem, seed=5)
    _, grads = run_kernels(mode, problem, upstream, **options)

    def forward_fn(mode, **kw):
        return kernels.forward(mode, **kw)

    fd_check(mode, problem, grads, **upstream, forward_fn=forward_fn, n_coords=4,
             **options)


def kink_problem(mode, dtype, pre):
    """T = N = C = 1, x = 1: sigmoid gate g's pre-activations are exactly np.roll(pre, 2 * g)
    (so that a unit's other gates do not zero its gradient), the recurrent weights of those
    gates are 0, the candidate gets some other value."""
    H = len(pre)
    G = 4 if mode == "lstm" else 3
    rng = np.random.default_rng(0)
    w_ih = np.zeros((G * H, 1))
    w_hh = np.zeros((G * H, H))
    b_hh = np.zeros(G * H)
    cand = 2  # LSTM g, GRU n
    for g in range(G):
        w_ih[g * H:(g + 1) * H, 0] = 0.3 if g == cand else np.roll(pre, 2 * g)
    w_hh[cand * H:(cand + 1) * H] = rng.uniform(-0.5, 0.5, (H, H))
    b_hh[cand * H:(cand + 1) * H] = 0.4
    problem = dict(x=np.ones((1, 1, 1)), w_ih=w_ih, w_hh=w_hh, b_ih=np.zeros(G * H), b_hh=b_hh,
                   h0=rng.uniform(-1, 1, (1, H)), c0=rng.uniform(-1, 1, (1, H)) if mode == "lstm"
                   else None, w_hr=None, lengths=None)
    return {k: None if v is None else np.asarray(v, dtype) for k, v in problem.items()}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("mode,reset_after", [("lstm", True), ("gru", True), ("gru", False)])
def test_kinks_pass_the_gradient(mode, reset_after, dtype):
    """At y = 0.2 v + 0.5 == 0 or 1 exactly (v = -2.5, 2.5) the derivative is 0.2, as MXNet's
    autograd of Keras' clip(0.2 * x + 0.5, 0, 1) gives; just outside it is 0."""
    x = mx.nd.array([-2.5, 2.5, -2.5001, 2.5001], dtype=dtype)
    x.attach_grad()
    with mx.autograd.record():
        y = mx.nd.clip(0.2 * x + 0.5, a_min=0.0, a_max=1.0)
    y.backward()
    slope = np.asarray([0.2, 0.2, 0, 0], dtype)
    np.testing.assert_array_equal(x.grad.asnumpy(), slope)

    pre = np.asarray([-2.5, 2.5, -2.5001, 2.5001, 0.3, -0.7])
    problem = kink_problem(mode, dtype, pre)
    options = dict(gate_activation=HARD, reset_after=reset_after)
    upstream = upstream_of(mode, problem, dtype)
    fwd, grads = run_kernels(mode, problem, upstream, **options)
    ref_fwd, ref_grads = run_reference(mode, problem, upstream, **options)
    assert_results_close(fwd, ref_fwd, **TOL[dtype])
    assert_results_close(grads, ref_grads, **TOL[dtype])
    # d(loss)/d(b_ih) of a sigmoid gate is its pre-activation gradient (N = 1): 0 outside,
    # upstream * 0.2 at the kinks, which the reference computes from the equations.
    H, G = len(pre), 4 if mode == "lstm" else 3
    for g in range(G):
        if g == 2:
            continue  # the candidate
        db, at = grads.db_ih[g * H:(g + 1) * H], np.roll(pre, 2 * g)
        assert (db[np.abs(at) == 2.5001] == 0).all(), (g, db)
        assert (db[np.abs(at) == 2.5] != 0).all(), (g, db)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_formula_is_keras_mxnet_bit_for_bit(dtype):
    """cy = f * c0 + i * tanh(0) = f with c0 = 1: the kernels' f must be keras-mxnet's
    clip(0.2 * v + 0.5, 0, 1) to the last bit (a product rounded, then a sum, not one fused
    multiply-add), at any vector width and in the row tails."""
    rng = np.random.default_rng(7)
    H = 1000
    v = rng.uniform(-3, 3, H).astype(dtype)
    w_ih = np.zeros((4 * H, 1), dtype)
    w_ih[H:2 * H, 0] = v
    zeros = np.zeros(4 * H, dtype)
    out = kernels.forward("lstm", np.ones((1, 1, 1), dtype), w_ih, np.zeros((4 * H, H), dtype),
                          zeros, zeros, np.zeros((1, H), dtype), np.ones((1, H), dtype),
                          gate_activation=HARD)
    want = mx.nd.clip(0.2 * mx.nd.array(v, dtype=dtype) + 0.5, a_min=0.0, a_max=1.0).asnumpy()
    np.testing.assert_array_equal(out.cy[0], want)
    np.testing.assert_array_equal(want, np.clip(v * 0.2 + 0.5, 0, 1))
    if dtype == np.float32:
        # A fused multiply-add would round differently for some of these v: the test can fail.
        fused = np.clip((v.astype(np.float64) * np.float64(np.float32(0.2)) + 0.5)
                        .astype(np.float32), 0, 1)
        assert (fused != want).any()


def test_portable_build():
    """The non-AVX-512 code path, forced in a subprocess: the reference's numbers, the
    formula bit for bit."""
    script = textwrap.dedent("""
        import sys
        sys.path.insert(0, %r)
        import numpy as np
        from fusedrnn import kernels
        import test_gate_activation as t
        assert kernels.instruction_set() == "base", kernels.instruction_set()
        for threads in (1, 2):
            kernels.set_num_threads(threads)
            for variant in t.VARIANTS:
                for size in [(1, 3, 5, 7), (6, 3, 5, 21), (4, 33, 5, 70)]:
                    for dtype in (np.float32, np.float64):
                        t.test_matches_reference(variant, size, "lengths", True, dtype,
                                                 margin=1e-5)
        for dtype in (np.float32, np.float64):
            t.test_formula_is_keras_mxnet_bit_for_bit(dtype)
            t.test_kinks_pass_the_gradient("lstm", True, dtype)
            t.test_kinks_pass_the_gradient("gru", False, dtype)
        print("ok")
    """) % str(pathlib.Path(__file__).parent)
    env = dict(os.environ, FUSEDRNN_DISABLE_AVX512="1")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


op = mx.nd._internal._fusedrnn_layer


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("variant", ["lstm", "lstm_proj", "gru", "gru_reset_before"])
def test_operator(variant, dtype):
    """_fusedrnn_layer with gate_activation='hard_sigmoid' through mx.nd and autograd: the
    kernels' numbers exactly, and the reference's."""
    mode, problem, options = hard_setup(variant, 5, 4, 3, 6, dtype, "lengths")
    upstream = upstream_of(mode, problem, dtype)
    names = ["x", "w_ih", "w_hh", "b_ih", "b_hh", "h0"] + (["c0"] if mode == "lstm" else [])
    names += ["w_hr"] if problem["w_hr"] is not None else []
    arrays = [mx.nd.array(problem[n], dtype=dtype) for n in names]
    arrays.append(mx.nd.array(problem["lengths"], dtype=np.int32))
    for a in arrays:
        a.attach_grad()
    with mx.autograd.record():
        outs = op(*arrays, mode=mode, reset_after=options.get("reset_after", True),
                  projection=problem["w_hr"] is not None, use_lengths=True,
                  gate_activation=HARD)
    heads = [mx.nd.array(upstream[k], dtype=dtype) for k in ("dy", "dhy", "dcy")
             if upstream[k] is not None]
    mx.autograd.backward(list(outs), heads)

    fwd, grads = run_kernels(mode, problem, upstream, **options)
    ref_fwd, ref_grads = run_reference(mode, problem, upstream, **options)
    field = {"x": "dx", "w_ih": "dw_ih", "w_hh": "dw_hh", "b_ih": "db_ih", "b_hh": "db_hh",
             "h0": "dh0", "c0": "dc0", "w_hr": "dw_hr"}
    for got, want, ref in zip(outs, fwd, ref_fwd):
        np.testing.assert_array_equal(got.asnumpy(), want)
        np.testing.assert_allclose(got.asnumpy(), ref, **TOL[dtype])
    for name, a in zip(names, arrays):
        np.testing.assert_array_equal(a.grad.asnumpy(), getattr(grads, field[name]))
        np.testing.assert_allclose(a.grad.asnumpy(), getattr(ref_grads, field[name]),
                                   **TOL[dtype])


def test_operator_symbolic():
    mode, problem, options = hard_setup("gru_reset_before", 4, 3, 5, 7, np.float32, None)
    names = ["x", "w_ih", "w_hh", "b_ih", "b_hh", "h0"]
    sym = mx.sym._internal._fusedrnn_layer(*[mx.sym.var(n) for n in names], mode="gru",
                                           reset_after=False, gate_activation=HARD)
    out = sym.bind(mx.cpu(), {n: mx.nd.array(problem[n]) for n in names}).forward()
    want = kernels.forward("gru", **problem, **options)
    np.testing.assert_array_equal(out[0].asnumpy(), want.y)


def test_sigmoid_is_the_default():
    for variant in VARIANTS:
        mode, problem, options = hard_setup(variant, 6, 4, 5, 7, np.float32, "lengths")
        sig = {**options, "gate_activation": "sigmoid"}
        default = {k: v for k, v in options.items() if k != "gate_activation"}
        upstream = upstream_of(mode, problem, np.float32)
        for a, b in zip(run_kernels(mode, problem, upstream, **sig),
                        run_kernels(mode, problem, upstream, **default)):
            assert_results_close(a, b, rtol=0, atol=0)


def _lstm_args(dtype=np.float32):
    p = make_problem("lstm", 2, 3, 4, 5, dtype=dtype)
    return [p[k] for k in ("x", "w_ih", "w_hh", "b_ih", "b_hh", "h0", "c0")]


@pytest.mark.parametrize("value", ["relu", "Sigmoid", "", None, 1])
@pytest.mark.parametrize("module", [kernels, reference])
def test_bad_gate_activation(module, value):
    with pytest.raises(ValueError, match="gate_activation must be one of"):
        module.forward("lstm", *_lstm_args(), gate_activation=value)


@pytest.mark.parametrize("module", [kernels, reference])
@pytest.mark.parametrize("mode", ["rnn_tanh", "rnn_relu"])
def test_hard_sigmoid_needs_gates(module, mode):
    p = make_problem(mode, 2, 3, 4, 5, dtype=np.float32)
    with pytest.raises(ValueError, match="gate_activation 'hard_sigmoid' is only for modes"):
        module.forward(mode, **p, gate_activation=HARD)


def test_bad_operator_attribute():
    arrays = [mx.nd.array(a) for a in _lstm_args()]
    with pytest.raises(mx.base.MXNetError,
                       match="gate_activation must be 'sigmoid' or 'hard_sigmoid'; got 'tanh'"):
        op(*arrays, mode="lstm", gate_activation="tanh")[0].asnumpy()
    p = make_problem("rnn_tanh", 2, 3, 4, 5, dtype=np.float32)
    arrays = [mx.nd.array(p[k]) for k in ("x", "w_ih", "w_hh", "b_ih", "b_hh", "h0")]
    with pytest.raises(mx.base.MXNetError, match="only for modes 'lstm' and 'gru'"):
        op(*arrays, mode="rnn_tanh", gate_activation=HARD)[0].asnumpy()
