"""The MXNet operator `_fusedrnn_layer` (one layer, one direction) against fusedrnn.kernels,
through mx.nd with autograd and through mx.sym, and its errors as MXNetError."""
import mxnet as mx
import numpy as np
import pytest

import fusedrnn
from fusedrnn import kernels
from helpers import make_problem, make_upstream

op = mx.nd._internal._fusedrnn_layer


def op_inputs(mode, problem, dtype):
    names = ["x", "w_ih", "w_hh", "b_ih", "b_hh", "h0"]
    names += ["c0"] if mode == "lstm" else []
    names += ["w_hr"] if problem["w_hr"] is not None else []
    arrays = [mx.nd.array(problem[n], dtype=dtype) for n in names]
    return names, arrays


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("lengths_dtype", [None, np.float32, np.int32])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("variant", [("lstm", {}), ("lstm", {"proj": 3}), ("gru", {}),
                                     ("rnn_relu", {})], ids=lambda v: v[0] + str(v[1]))
def test_matches_kernels(variant, reverse, lengths_dtype, dtype):
    mode, pkw = variant
    lengths = None if lengths_dtype is None else [5, 2, 0, 4]
    problem = make_problem(mode, 5, 4, 3, 6, dtype=dtype, lengths=lengths, seed=3, **pkw)
    upstream = {k: None if v is None else v.astype(dtype)
                for k, v in make_upstream(mode, problem, seed=4).items()}
    names, arrays = op_inputs(mode, problem, dtype)
    if lengths is not None:
        arrays.append(mx.nd.array(lengths, dtype=lengths_dtype))
    for a in arrays:
        a.attach_grad()
    with mx.autograd.record():
        outs = op(*arrays, mode=mode, reverse=reverse, projection=problem["w_hr"] is not None,
                  use_lengths=lengths is not None)
    heads = [mx.nd.array(upstream[k], dtype=dtype) for k in ("dy", "dhy", "dcy")
             if upstream[k] is not None]
    mx.autograd.backward(list(outs), heads)

    ref = kernels.forward(mode, **problem, reverse=reverse, training=True)
    grads = kernels.backward(mode, problem["x"], problem["w_ih"], problem["w_hh"],
                             problem["b_ih"], problem["b_hh"], problem["h0"], problem["c0"],
                             ref.reserve, **upstream, w_hr=problem["w_hr"],
                             lengths=problem["lengths"], reverse=reverse)
    for got, want in zip(outs, [ref.y, ref.hy, ref.cy]):
        np.testing.assert_array_equal(got.asnumpy(), want)
    field = {"x": "dx", "w_ih": "dw_ih", "w_hh": "dw_hh", "b_ih": "db_ih", "b_hh": "db_hh",
             "h0": "dh0", "c0": "dc0", "w_hr": "dw_hr"}
    for name, a in zip(names, arrays):
        np.testing.assert_array_equal(a.grad.asnumpy(), getattr(grads, field[name]))
    if lengths is not None:
        assert not arrays[-1].grad.asnumpy().any()


def test_symbolic_graph():
    problem = make_problem("gru", 4, 3, 5, 7, dtype=np.float32, lengths=[4, 1, 3])
    names = ["x", "w_ih", "w_hh", "b_ih", "b_hh", "h0", "lengths"]
    sym = mx.sym._internal._fusedrnn_layer(*[mx.sym.var(n) for n in names], mode="gru",
                                           use_lengths=True)
    args = {n: mx.nd.array(problem[n], dtype=np.float32) for n in names}
    out = sym.bind(mx.cpu(), args).forward()
    ref = kernels.forward("gru", **problem)
    np.testing.assert_array_equal(out[0].asnumpy(), ref.y)
    np.testing.assert_array_equal(out[1].asnumpy(), ref.hy)


def _lstm_arrays(**changes):
    shapes = {"x": (2, 3, 4), "w_ih": (8, 4), "w_hh": (8, 2), "b_ih": (8,), "b_hh": (8,),
              "h0": (3, 2), "c0": (3, 2)}
    shapes.update(changes)
    return [mx.nd.zeros(s) for s in shapes.values()]


@pytest.mark.parametrize("changes,attrs,pattern", [
    ({"w_ih": (9, 4)}, {}, r"w_ih must be \[G\*H, C\] with G = 4; got \(9, 4\)"),
    ({"h0": (2, 2)}, {}, r"h0 has shape \(2, 2\); expected \(3, 2\)"),
    ({"x": (2, 12)}, {}, "x must have 3 dimensions"),
    ({}, {"mode": "lstmp"}, "mode must be one of"),
    ({}, {"clip_min": -1}, "clip_min and clip_max must be given together"),
    ({}, {"reverse": "maybe"}, "reverse must be a boolean"),
])
def test_bad_arguments_raise_mxnet_error(changes, attrs, pattern):
    with pytest.raises(mx.base.MXNetError, match=pattern):
        outs = op(*_lstm_arrays(**changes), **dict({"mode": "lstm"}, **attrs))
        outs[0].wait_to_read()


def test_bad_lengths_raise_at_run_time():
    arrays = _lstm_arrays() + [mx.nd.array([1, 2.5, 0])]
    with pytest.raises(mx.base.MXNetError, match=r"lengths\[1\] = 2.5.* is not a whole number"):
        op(*arrays, mode="lstm", use_lengths=True)[0].wait_to_read()
    arrays = _lstm_arrays() + [mx.nd.array([1, 3, 0])]
    with pytest.raises(mx.base.MXNetError, match=r"lengths\[1\] = 3.* in \[0, 2\]"):
        op(*arrays, mode="lstm", use_lengths=True)[0].wait_to_read()


def test_inference_only_operator():
    """training=False stores nothing for backward and gives the same outputs (test_bad_input
    checks that a backward through it still gives the right gradients)."""
    problem = make_problem("lstm", 5, 4, 3, 6, dtype=np.float32, seed=5)
    _, arrays = op_inputs("lstm", problem, np.float32)
    want = op(*arrays, mode="lstm")
    got = op(*arrays, mode="lstm", training=False)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.asnumpy(), w.asnumpy())


def test_hybridized_layer_switches_between_inference_and_training():
    """Inference calls build an inference-only graph; a recorded call after them gets a graph
    that keeps what backward needs, and the gradients are right."""
    layer = fusedrnn.GRU(6, input_size=3)
    layer.initialize()
    plain = fusedrnn.GRU(6, input_size=3, params=layer.collect_params())
    layer.hybridize()
    x = mx.nd.array(np.random.default_rng(0).standard_normal((4, 2, 3)))
    grads = []
    for net in (layer, plain):
        net(x)  # inference first
        with mx.autograd.record():
            loss = (net(x) ** 2).sum()
        loss.backward()
        grads.append(net.l0_h2h_weight.grad().asnumpy().copy())
        net(x)  # and inference again
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-6)
    assert np.abs(grads[0]).sum() > 0
