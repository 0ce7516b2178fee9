"""fusedrnn.nd.RNN against mx.nd.RNN (where MXNet is right: equal lengths) and against
running each sample alone (variable lengths, where MXNet's CPU op is wrong)."""
import mxnet as mx
import numpy as np
import pytest

from fusedrnn import nd as fnd
from fusedrnn import sym as fsym


def random_case(mode, T, N, C, H, L, bidirectional, dtype, seed=0):
    rng = np.random.default_rng(seed)
    D = 2 if bidirectional else 1
    size = fnd._flat_layout(mode, L, D, C, H, None)[2]
    arrays = [rng.standard_normal((T, N, C)), rng.standard_normal(size) * 0.3,
              rng.standard_normal((L * D, N, H))]
    if mode == "lstm":
        arrays.append(rng.standard_normal((L * D, N, H)))
    return [mx.nd.array(a, dtype=dtype) for a in arrays]


def run(fn, arrays, heads_seed=1, **kw):
    arrays = [a.copy() for a in arrays]
    for a in arrays:
        a.attach_grad()
    with mx.autograd.record():
        out = fn(*arrays, **kw)
    out = out if isinstance(out, list) else [out]
    rng = np.random.default_rng(heads_seed)
    heads = [mx.nd.array(rng.standard_normal(o.shape), dtype=o.dtype) for o in out]
    mx.autograd.backward(out, heads)
    return [o.asnumpy() for o in out], [a.grad.asnumpy() for a in arrays]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("state_outputs", [True, False])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
def test_matches_mxnet_rnn(mode, layers, bidirectional, state_outputs, dtype):
    if mode.startswith("rnn") and layers == 3:
        pytest.skip("MXNet's CPU op gets the layer-2 W_ih gradient of a 3-layer vanilla RNN "
                    "wrong; test_three_layer_rnn_gradient_by_finite_differences covers it")
    arrays = random_case(mode, 5, 3, 4, 7, layers, bidirectional, dtype)
    kw = dict(state_size=7, num_layers=layers, bidirectional=bidirectional, mode=mode,
              state_outputs=state_outputs)
    want_out, want_grad = run(mx.nd.RNN, arrays, **kw)
    got_out, got_grad = run(fnd.RNN, arrays, **kw)
    tol = dict(rtol=1e-9, atol=1e-11) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-5)
    if mode == "rnn_relu" and dtype == np.float64:
        # MXNet's float64 ReLU RNN is only float32-accurate (measured: ~1e-7 off); fusedrnn's
        # own float64 gradients are checked by finite differences in test_kernels.py.
        tol = dict(rtol=1e-6, atol=1e-6)
    assert len(got_out) == len(want_out)
    for g, w in zip(got_out + got_grad, want_out + want_grad):
        np.testing.assert_allclose(g, w, **tol)


def test_three_layer_rnn_gradient_by_finite_differences():
    """Here MXNet's own op is wrong (measured: it disagrees with finite differences on the
    second layer's input weights), so the parameter gradient is checked numerically."""
    arrays = random_case("rnn_tanh", 5, 3, 4, 7, 3, False, np.float64)
    kw = dict(state_size=7, num_layers=3, mode="rnn_tanh", state_outputs=True)
    out, grads = run(fnd.RNN, arrays, **kw)
    rng = np.random.default_rng(1)  # the heads run() used
    heads = [rng.standard_normal(o.shape) for o in out]
    params = arrays[1].asnumpy()

    def loss(p):
        res = fnd.RNN(arrays[0], mx.nd.array(p, dtype=np.float64), *arrays[2:], **kw)
        return sum(float((r.asnumpy() * h).sum()) for r, h in zip(res, heads))

    for i in list(range(0, params.size, 23)) + [77, 100, 125]:
        up, down = params.copy(), params.copy()
        up[i] += 1e-6
        down[i] -= 1e-6
        np.testing.assert_allclose(grads[1][i], (loss(up) - loss(down)) / 2e-6, rtol=1e-6,
                                   atol=1e-8)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_sequence_length_equals_each_sample_alone(mode, bidirectional):
    T, N, C, H, L = 6, 4, 3, 5, 2
    D = 2 if bidirectional else 1
    arrays = random_case(mode, T, N, C, H, L, bidirectional, np.float64, seed=3)
    lengths = [6, 2, 4, 1]
    kw = dict(state_size=H, num_layers=L, bidirectional=bidirectional, mode=mode,
              state_outputs=True)
    out = fnd.RNN(*arrays, sequence_length=mx.nd.array(lengths, dtype=np.float64),
                  use_sequence_length=True, **kw)
    for n, length in enumerate(lengths):
        alone = [arrays[0][:length, n:n + 1], arrays[1]] + [a[:, n:n + 1] for a in arrays[2:]]
        ref = fnd.RNN(*alone, **kw)
        np.testing.assert_allclose(out[0].asnumpy()[:length, n:n + 1], ref[0].asnumpy(),
                                   rtol=1e-12, atol=1e-13)
        assert not out[0].asnumpy()[length:, n].any()
        for got, want in zip(out[1:], ref[1:]):
            np.testing.assert_allclose(got.asnumpy()[:, n:n + 1], want.asnumpy(), rtol=1e-12,
                                       atol=1e-13)
        assert D * H == out[0].shape[2]


def test_dropout_between_layers_follows_mx_random_seed():
    arrays = random_case("gru", 5, 3, 4, 6, 2, False, np.float32)
    kw = dict(state_size=6, num_layers=2, mode="gru", p=0.5)

    def train_step(seed):
        mx.random.seed(seed)
        with mx.autograd.record(train_mode=True):
            return fnd.RNN(*arrays, **kw).asnumpy()

    np.testing.assert_array_equal(train_step(7), train_step(7))
    assert not np.array_equal(train_step(7), train_step(8))
    # Outside training, no dropout: the same as p = 0.
    np.testing.assert_array_equal(fnd.RNN(*arrays, **kw).asnumpy(),
                                  fnd.RNN(*arrays, **dict(kw, p=0.0)).asnumpy())


def test_bad_arguments():
    arrays = random_case("lstm", 3, 2, 4, 5, 1, False, np.float32)
    kw = dict(state_size=5, mode="lstm")
    with pytest.raises(ValueError, match="mode must be one of"):
        fnd.RNN(*arrays, **dict(kw, mode="lstmp"))
    with pytest.raises(ValueError, match=r"parameters has shape"):
        fnd.RNN(arrays[0], arrays[1][:-1], *arrays[2:], **kw)
    with pytest.raises(TypeError, match="state_cell must be an NDArray"):
        fnd.RNN(*arrays[:3], **kw)
    with pytest.raises(TypeError, match="sequence_length must be an NDArray"):
        fnd.RNN(*arrays, use_sequence_length=True, **kw)
    with pytest.raises(ValueError, match="state_size must be a positive integer"):
        fnd.RNN(*arrays, **dict(kw, state_size=0))
    with pytest.raises(TypeError, match="unexpected arguments"):
        fnd.RNN(*arrays, layout="NTC", **kw)


@pytest.mark.parametrize("state_outputs", [True, False])
@pytest.mark.parametrize("mode,layers,bidirectional", [("lstm", 2, True), ("gru", 1, False),
                                                       ("rnn_tanh", 2, False)])
def test_sym_rnn_matches_mxnet(mode, layers, bidirectional, state_outputs):
    arrays = random_case(mode, 5, 3, 4, 7, layers, bidirectional, np.float64)
    names = ["data", "parameters", "state"] + (["state_cell"] if mode == "lstm" else [])
    kw = dict(state_size=7, num_layers=layers, bidirectional=bidirectional, mode=mode,
              state_outputs=state_outputs)
    results = []
    for fn in (mx.sym.RNN, fsym.RNN):
        net = fn(*[mx.sym.var(n) for n in names], **kw)
        args = {n: a.copy() for n, a in zip(names, arrays)}
        grads = {n: mx.nd.zeros_like(a) for n, a in zip(names, arrays)}
        exe = net.bind(mx.cpu(), args, args_grad=grads)
        outs = exe.forward(is_train=True)
        exe.backward([mx.nd.ones_like(o) * 0.3 for o in outs])
        results.append([o.asnumpy() for o in outs] + [grads[n].asnumpy() for n in names])
    assert len(results[0]) == len(results[1])
    for got, want in zip(results[1], results[0]):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, True)])
def test_parameters_accumulate_with_grad_req_add(layers, bidirectional):
    arrays = random_case("gru", 4, 2, 3, 5, layers, bidirectional, np.float64)
    params = arrays[1]
    params.attach_grad(grad_req="add")
    kw = dict(state_size=5, mode="gru", num_layers=layers, bidirectional=bidirectional,
              name="rnn")
    for _ in range(2):
        with mx.autograd.record():
            loss = fnd.RNN(arrays[0], params, arrays[2], **kw).sum()
        loss.backward()
    twice = params.grad.asnumpy().copy()
    params.grad[:] = 0
    with mx.autograd.record():
        loss = fnd.RNN(arrays[0], params, arrays[2], **kw).sum()
    loss.backward()
    np.testing.assert_allclose(twice, 2 * params.grad.asnumpy(), rtol=1e-12)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_sym_rnn_infers_the_parameter_size_like_mxnet(bidirectional):
    """Like mx.sym.RNN, the flat parameter vector's size follows from data (and the states'
    shapes), so simple_bind needs no parameter shape."""
    args = [mx.sym.var(n) for n in ("data", "params", "state", "state_cell")]
    kw = dict(mode="lstm", state_size=8, num_layers=2, bidirectional=bidirectional,
              state_outputs=True)
    dirs = 2 if bidirectional else 1
    shapes = dict(data=(5, 3, 4), state=(2 * dirs, 3, 8), state_cell=(2 * dirs, 3, 8))
    want = mx.sym.RNN(*args, **kw).infer_shape(**shapes)
    got = fsym.RNN(*args, **kw).infer_shape(**shapes)
    assert got == want
