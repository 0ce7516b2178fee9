"""Keras masking (a [T, N] mask instead of lengths) in fusedrnn.reference, fusedrnn.kernels and
the `_fusedrnn_layer` operator: the semantics (states carry over masked steps, the output
repeats, 0 before the first valid step), kernels == reference, finite differences, and the
equivalence with running each sample alone on its unmasked steps."""
import mxnet as mx
import numpy as np
import pytest

import fusedrnn  # noqa: F401  (loads the operators)
from fusedrnn import kernels, reference
from helpers import (assert_results_close, backward_args, fd_check, loss_value, make_problem,
                     make_upstream)

VARIANTS = {
    "lstm": ("lstm", {}, {}),
    "lstm_proj_clip": ("lstm", {"proj": 3}, {"clip_min": -0.3, "clip_max": 0.3}),
    "gru": ("gru", {}, {}),
    "gru_reset_before": ("gru", {}, {"reset_after": False}),
    "rnn_tanh": ("rnn_tanh", {}, {}),
    "rnn_relu": ("rnn_relu", {}, {}),
}


def masks(T, N, seed=0):
    """Named [T, N] masks: post- and pre-padded, holes, all set / none set, random."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, T + 1, size=N)
    lengths[0] = T
    if N > 1:
        lengths[1] = 0
    t = np.arange(T)[:, None]
    holes = rng.random((T, N)) < 0.6
    holes[0, :] = False  # every sample starts masked: outputs there must be 0
    return {"post": t < lengths, "pre": t >= T - lengths, "holes": holes,
            "all": np.ones((T, N), bool), "none": np.zeros((T, N), bool)}


def run(impl, mode, problem, mask, upstream, **options):
    args, kwargs = backward_args(problem)
    kwargs.pop("lengths")
    if impl is kernels:
        fwd = kernels.forward(mode, *args, **kwargs, mask=mask, training=True, **options)
        grads = kernels.backward(mode, *args, fwd.reserve, **upstream, **kwargs, mask=mask,
                                 **options)
    else:
        fwd = reference.forward(mode, *args, **kwargs, mask=mask, **options)
        grads = reference.backward(mode, *args, **upstream, **kwargs, mask=mask, **options)
    return fwd, grads


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("pattern", ["post", "pre", "holes", "all", "none"])
@pytest.mark.parametrize("size", [(1, 1, 1, 1), (7, 4, 5, 6), (9, 11, 3, 33)],
                         ids=lambda s: "T%dN%dC%dH%d" % s)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_kernels_match_reference(variant, size, pattern, reverse, dtype):
    mode, pkw, options = VARIANTS[variant]
    T, N, C, H = size
    problem = make_problem(mode, T, N, C, H, dtype=dtype, seed=sum(size), **pkw)
    mask = masks(T, N, seed=T)[pattern]
    upstream = {k: None if v is None else v.astype(dtype)
                for k, v in make_upstream(mode, problem, seed=2).items()}
    fwd, grads = run(kernels, mode, problem, mask, upstream, reverse=reverse, **options)
    ref_fwd, ref_grads = run(reference, mode, problem, mask, upstream, reverse=reverse, **options)
    tol = dict(rtol=1e-9, atol=1e-11) if dtype == np.float64 else dict(rtol=2e-4, atol=2e-5)
    assert_results_close(fwd, ref_fwd, what="forward", **tol)
    assert_results_close(grads, ref_grads, what="backward", **tol)
    # Masked positions: no gradient reaches x.
    assert not grads.dx[~mask].any()


def test_kernels_match_reference_with_threads():
    """Large enough for the threaded time loop and the packed products."""
    before = kernels.get_num_threads()
    kernels.set_num_threads(2)
    try:
        for mode in ["lstm", "gru", "rnn_tanh"]:
            problem = make_problem(mode, 6, 64, 9, 70, seed=4)
            mask = masks(6, 64, seed=5)["holes"]
            upstream = make_upstream(mode, problem, seed=6)
            for reverse in [False, True]:
                got = run(kernels, mode, problem, mask, upstream, reverse=reverse)
                want = run(reference, mode, problem, mask, upstream, reverse=reverse)
                for g, w in zip(got, want):
                    assert_results_close(g, w, rtol=1e-9, atol=1e-11)
    finally:
        kernels.set_num_threads(before)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("variant", ["lstm", "lstm_proj_clip", "gru", "gru_reset_before",
                                     "rnn_tanh"])
def test_reference_gradients_match_finite_differences(variant, reverse):
    mode, pkw, options = VARIANTS[variant]
    problem = make_problem(mode, 6, 4, 3, 5, seed=9, **pkw)
    if "clip_min" in options:
        options = dict(options, clip_min=-0.8, clip_max=0.8)
    mask = masks(6, 4, seed=1)["holes"]
    upstream = make_upstream(mode, problem, seed=3)
    _, grads = run(reference, mode, problem, mask, upstream, reverse=reverse, **options)
    fd_check(mode, problem, grads, **upstream, n_coords=6, mask=mask, reverse=reverse,
             **options)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_relu"])
def test_each_sample_alone_on_its_unmasked_steps(mode, reverse):
    """Keras semantics, spelled out: sample n's states and outputs are those of a plain run over
    x[its unmasked positions]; at a masked position the output is the one of the previous step
    in visiting order (right to left when reverse), 0 before the first."""
    T, N = 8, 5
    problem = make_problem(mode, T, N, 3, 4, seed=7)
    mask = masks(T, N, seed=8)["holes"]
    mask[:, 3] = np.arange(T) >= 5  # pre-padded
    fwd = kernels.forward(mode, **{k: v for k, v in problem.items() if k != "lengths"},
                          mask=mask, reverse=reverse)
    for n in range(N):
        pos = np.nonzero(mask[:, n])[0]
        alone = reference.forward(
            mode, problem["x"][pos, n:n + 1], problem["w_ih"], problem["w_hh"],
            problem["b_ih"], problem["b_hh"], problem["h0"][n:n + 1],
            None if problem["c0"] is None else problem["c0"][n:n + 1], reverse=reverse)
        np.testing.assert_allclose(fwd.hy[n], alone.hy[0], rtol=1e-12)
        if mode == "lstm":
            np.testing.assert_allclose(fwd.cy[n], alone.cy[0], rtol=1e-12)
        expected, last = np.zeros_like(fwd.y[:, n]), np.zeros(fwd.y.shape[2])
        order = range(T - 1, -1, -1) if reverse else range(T)
        for t in order:
            if mask[t, n]:
                last = alone.y[np.searchsorted(pos, t), 0]
            expected[t] = last
        np.testing.assert_allclose(fwd.y[:, n], expected, rtol=1e-12)


def test_post_padded_mask_agrees_with_lengths_except_for_the_repeated_output():
    T, N = 6, 4
    lengths = np.array([6, 0, 3, 1])
    problem = make_problem("lstm", T, N, 3, 4, seed=3, lengths=lengths)
    by_len = reference.forward("lstm", **problem)
    args = {k: v for k, v in problem.items() if k != "lengths"}
    by_mask = reference.forward("lstm", **args, mask=np.arange(T)[:, None] < lengths)
    np.testing.assert_array_equal(by_mask.hy, by_len.hy)
    np.testing.assert_array_equal(by_mask.cy, by_len.cy)
    for n, L in enumerate(lengths):
        np.testing.assert_array_equal(by_mask.y[:L, n], by_len.y[:L, n])
        assert not by_len.y[L:, n].any()
        repeated = by_len.y[L - 1, n] if L else np.zeros(4)
        np.testing.assert_array_equal(by_mask.y[L:, n],
                                      np.broadcast_to(repeated, by_mask.y[L:, n].shape))


def test_masked_output_repeats_and_carries_gradient():
    """The loss only sees a masked position: its gradient must reach the step it repeats."""
    problem = make_problem("gru", 4, 1, 2, 3, seed=1)
    args = {k: v for k, v in problem.items() if k != "lengths"}
    mask = np.array([[0], [1], [0], [0]], bool)
    dy = np.zeros((4, 1, 3))
    dy[3] = 1.0
    fwd = kernels.forward("gru", **args, mask=mask, training=True)
    np.testing.assert_array_equal(fwd.y[3], fwd.y[1])
    np.testing.assert_array_equal(fwd.y[0], 0)
    grads = kernels.backward("gru", problem["x"], problem["w_ih"], problem["w_hh"],
                             problem["b_ih"], problem["b_hh"], problem["h0"], None, fwd.reserve,
                             dy=dy, mask=mask)
    assert grads.dx[1].any() and not grads.dx[[0, 2, 3]].any()
    assert abs(loss_value(fwd, dy, np.zeros((1, 3)))) > 0


@pytest.mark.parametrize("impl", [kernels, reference], ids=["kernels", "reference"])
@pytest.mark.parametrize("mask,error,pattern", [
    (np.ones((3, 2)), ValueError, r"mask must .*shape|mask must be \[T, N\]"),
    (np.full((2, 3), 2.0), ValueError, "mask must"),
    (np.full((2, 3), np.nan), ValueError, "mask must"),
    (np.ones((2, 3, 1)), ValueError, "mask must"),
])
def test_bad_masks(impl, mask, error, pattern):
    problem = make_problem("rnn_tanh", 2, 3, 2, 2)
    args = {k: v for k, v in problem.items() if k != "lengths"}
    with pytest.raises(error, match=pattern):
        impl.forward("rnn_tanh", **args, mask=mask)


@pytest.mark.parametrize("impl", [kernels, reference], ids=["kernels", "reference"])
def test_mask_and_lengths_together_are_refused(impl):
    problem = make_problem("rnn_tanh", 2, 3, 2, 2, lengths=[1, 2, 0])
    with pytest.raises(ValueError, match="lengths or mask"):
        impl.forward("rnn_tanh", **problem, mask=np.ones((2, 3)))


def test_kernels_refuse_string_masks():
    problem = make_problem("rnn_tanh", 2, 3, 2, 2)
    args = {k: v for k, v in problem.items() if k != "lengths"}
    with pytest.raises(TypeError, match="mask"):
        kernels.forward("rnn_tanh", **args, mask=np.full((2, 3), "1"))


# ------------------------------------------------------------------------------------------
# The operator.

def op_arrays(mode, problem, dtype):
    names = ["x", "w_ih", "w_hh", "b_ih", "b_hh", "h0"] + (["c0"] if mode == "lstm" else [])
    return names, [mx.nd.array(problem[n], dtype=dtype) for n in names]


@pytest.mark.parametrize("mask_dtype", [np.float32, np.int32, np.uint8, np.int8])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh"])
def test_operator_matches_kernels(mode, reverse, mask_dtype):
    T, N = 6, 5
    problem = make_problem(mode, T, N, 3, 4, seed=2)
    mask = masks(T, N, seed=3)["holes"]
    mask[:, 2] = np.arange(T) >= 2
    upstream = make_upstream(mode, problem, seed=4)
    names, arrays = op_arrays(mode, problem, np.float64)
    arrays.append(mx.nd.array(mask, dtype=mask_dtype))
    for a in arrays:
        a.attach_grad()
    with mx.autograd.record():
        outs = mx.nd._internal._fusedrnn_layer(*arrays, mode=mode, reverse=reverse,
                                                use_mask=True)
    heads = [mx.nd.array(upstream[k], dtype=np.float64) for k in ("dy", "dhy", "dcy")
             if upstream[k] is not None]
    mx.autograd.backward(list(outs), heads)
    args, kwargs = backward_args(problem)
    kwargs.pop("lengths")
    want = kernels.forward(mode, *args, **kwargs, mask=mask, reverse=reverse, training=True)
    grads = kernels.backward(mode, *args, want.reserve, **upstream, **kwargs, mask=mask,
                             reverse=reverse)
    for got, w in zip(outs, [want.y, want.hy, want.cy]):
        np.testing.assert_array_equal(got.asnumpy(), w)
    for name, a in zip(names, arrays):
        field = {"x": "dx", "h0": "dh0", "c0": "dc0"}.get(name, "d" + name)
        np.testing.assert_array_equal(a.grad.asnumpy(), getattr(grads, field))
    assert not arrays[-1].grad.asnumpy().astype(float).any()


@pytest.mark.parametrize("mask,attrs,pattern", [
    (np.full((2, 3), 0.5), {}, r"mask\[0, 0\] = 0.5.*only 0 and 1"),
    (np.ones((3, 2)), {}, r"mask has shape \(3, 2\); expected \(2, 3\)"),
    (np.ones((2, 3)), {"use_lengths": True}, "use_lengths and use_mask cannot both be set"),
])
def test_operator_bad_masks(mask, attrs, pattern):
    problem = make_problem("rnn_tanh", 2, 3, 2, 2)
    _, arrays = op_arrays("rnn_tanh", problem, np.float32)
    with pytest.raises(mx.base.MXNetError, match=pattern):
        mx.nd._internal._fusedrnn_layer(*arrays, mx.nd.array(mask), mode="rnn_tanh",
                                        use_mask=True, **attrs)[0].wait_to_read()
