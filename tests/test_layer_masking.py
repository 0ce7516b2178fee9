"""The Gluon layers with `sequence_length` and `mask`, and their `unroll` paths: lengths
against running each sample alone, masks against the NumPy reference applied layer by layer,
pre- against post-padding, every unroll path against the others, and finite differences."""
import mxnet as mx
import numpy as np
import pytest

import fusedrnn
from fusedrnn import reference

LAYERS = {"lstm": (fusedrnn.LSTM, {}), "gru": (fusedrnn.GRU, {}),
          "rnn_tanh": (fusedrnn.RNN, {"activation": "tanh"}),
          "rnn_relu": (fusedrnn.RNN, {"activation": "relu"})}
T, N, C, H = 6, 5, 3, 4


def make_layer(mode, source=None, **kw):
    cls, extra = LAYERS[mode]
    net = cls(H, input_size=C, **extra, **kw)
    if source is None:
        net.initialize(mx.init.Uniform(0.4))
    else:
        net.load_parameters(source)
    return net


def layer_weights(net, mode, layer, d):
    p = {k[len(net.prefix):]: v.data().asnumpy().astype(np.float64)
         for k, v in net.collect_params().items()}
    pre = "{}{}_".format(d, layer)
    return [p[pre + "i2h_weight"], p[pre + "h2h_weight"], p[pre + "i2h_bias"],
            p[pre + "h2h_bias"]]


def reference_layer(net, mode, x, states, lengths=None, mask=None):
    """The layer computed with fusedrnn.reference, layer by layer and direction by direction."""
    hys, cys = [], []
    for layer in range(net._num_layers):
        outs = []
        for j, d in enumerate(["l", "r"][:net._dir]):
            k = layer * net._dir + j
            c0 = states[1][k] if mode == "lstm" else None
            fwd = reference.forward(mode, x, *layer_weights(net, mode, layer, d),
                                    states[0][k], c0, lengths=lengths, mask=mask,
                                    reverse=j == 1)
            outs.append(fwd.y)
            hys.append(fwd.hy)
            cys.append(fwd.cy)
        x = np.concatenate(outs, axis=2)
    return x, np.stack(hys), (np.stack(cys) if mode == "lstm" else None)


def random_states(net, seed=3):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s.shape) for s in net.begin_state(batch_size=N)]


def masks():
    rng = np.random.default_rng(4)
    t = np.arange(T)[:, None]
    holes = rng.random((T, N)) < 0.6
    holes[:, 0] = False
    return {"pre": t >= T - np.array([6, 0, 3, 1, 5]), "post": t < np.array([2, 6, 0, 4, 1]),
            "holes": holes}


@pytest.mark.parametrize("unroll", [False, True])
@pytest.mark.parametrize("layout", ["TNC", "NTC"])
@pytest.mark.parametrize("pattern", ["pre", "post", "holes"])
@pytest.mark.parametrize("mode", list(LAYERS))
def test_mask_matches_reference(mode, pattern, layout, unroll):
    """Keras semantics layer by layer, both directions of a 2-layer bidirectional layer."""
    net = make_layer(mode, num_layers=2, bidirectional=True, layout=layout, dtype="float64",
                     unroll=unroll)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((T, N, C))
    mask = masks()[pattern]
    states = random_states(net)
    want_y, want_h, want_c = reference_layer(net, mode, x, states, mask=mask)
    xin, min_ = (x, mask) if layout == "TNC" else (x.swapaxes(0, 1), mask.T)
    out, new = net(mx.nd.array(xin, dtype="float64"), [mx.nd.array(s, dtype="float64")
                                                      for s in states],
                   mask=mx.nd.array(min_))
    got_y = out.asnumpy() if layout == "TNC" else out.asnumpy().swapaxes(0, 1)
    np.testing.assert_allclose(got_y, want_y, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(new[0].asnumpy(), want_h, rtol=1e-10, atol=1e-12)
    if mode == "lstm":
        np.testing.assert_allclose(new[1].asnumpy(), want_c, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_relu"])
def test_sequence_length_matches_each_sample_alone(mode, bidirectional):
    net = make_layer(mode, num_layers=2, bidirectional=bidirectional, use_sequence_length=True)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((T, N, C)).astype(np.float32)
    lengths = np.array([6, 0, 3, 1, 5])
    states = random_states(net)
    out, new = net(mx.nd.array(x), [mx.nd.array(s) for s in states],
                   sequence_length=mx.nd.array(lengths))
    out = out.asnumpy()
    alone_net = make_layer(mode, num_layers=2, bidirectional=bidirectional)
    for name, p in alone_net.collect_params().items():
        p.set_data(net.collect_params()[net.prefix + name[len(alone_net.prefix):]].data())
    for n, L in enumerate(lengths):
        if L == 0:
            assert not out[:, n].any()
            for s, s0 in zip(new, states):
                np.testing.assert_array_equal(s.asnumpy()[:, n], s0[:, n].astype(np.float32))
            continue
        a_out, a_new = alone_net(mx.nd.array(x[:L, n:n + 1]),
                                 [mx.nd.array(s[:, n:n + 1]) for s in states])
        np.testing.assert_allclose(out[:L, n], a_out.asnumpy()[:, 0], rtol=1e-5, atol=1e-6)
        assert not out[L:, n].any()
        for s, a in zip(new, a_new):
            np.testing.assert_allclose(s.asnumpy()[:, n], a.asnumpy()[:, 0], rtol=1e-5,
                                       atol=1e-6)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_pre_padded_mask_equals_post_padded_lengths(mode, bidirectional):
    """The same sequences pre-padded with a mask and post-padded with lengths: the same states
    and, at the valid positions, the same outputs."""
    net = make_layer(mode, bidirectional=bidirectional)
    rng = np.random.default_rng(7)
    lengths = np.array([6, 0, 3, 1, 5])
    post = rng.standard_normal((T, N, C)).astype(np.float32)
    pre = np.zeros_like(post)
    for n, L in enumerate(lengths):
        pre[T - L:, n] = post[:L, n]
    mask = np.arange(T)[:, None] >= T - lengths
    out_pre, st_pre = net(mx.nd.array(pre), net.begin_state(N), mask=mx.nd.array(mask))
    out_post, st_post = net(mx.nd.array(post), net.begin_state(N),
                            sequence_length=mx.nd.array(lengths))
    for a, b in zip(st_pre, st_post):
        np.testing.assert_allclose(a.asnumpy(), b.asnumpy(), rtol=1e-6, atol=1e-7)
    out_pre, out_post = out_pre.asnumpy(), out_post.asnumpy()
    for n, L in enumerate(lengths):
        np.testing.assert_allclose(out_pre[T - L:, n], out_post[:L, n], rtol=1e-6, atol=1e-7)
        # Before the first valid step a Keras mask gives 0 forward; the reverse direction's
        # output there repeats its output at the first valid step.
        assert not out_pre[:T - L, n, :H].any()
        if bidirectional and L:
            np.testing.assert_array_equal(out_pre[:T - L, n, H:],
                                          np.broadcast_to(out_pre[T - L, n, H:], (T - L, H)))


def run_with_grads(net, x, states, extra, seed=8):
    x = x.copy()
    x.attach_grad()
    with mx.autograd.record():
        out, new = net(x, [s.copy() for s in states], **extra)
    rng = np.random.default_rng(seed)
    heads = [mx.nd.array(rng.standard_normal(a.shape), dtype=a.dtype) for a in [out] + new]
    mx.autograd.backward([out] + new, heads)
    grads = [p.grad().asnumpy() for p in net.collect_params().values()]
    return [out.asnumpy(), x.grad.asnumpy()] + [s.asnumpy() for s in new] + grads


@pytest.mark.parametrize("hybridize", [False, True])
@pytest.mark.parametrize("layout", ["TNC", "NTC"])
@pytest.mark.parametrize("kind", [None, "lengths", "mask"])
@pytest.mark.parametrize("mode", list(LAYERS))
def test_unroll_paths_agree(mode, kind, layout, hybridize, tmp_path):
    first = make_layer(mode, num_layers=2, bidirectional=True, layout=layout)
    first.save_parameters(str(tmp_path / "p"))
    rng = np.random.default_rng(9)
    shape = (T, N, C) if layout == "TNC" else (N, T, C)
    x = mx.nd.array(rng.standard_normal(shape))
    states = [mx.nd.array(s) for s in random_states(first)]
    mask = masks()["holes"]
    extra = {None: {}, "lengths": {"sequence_length": mx.nd.array([6, 0, 3, 1, 5])},
             "mask": {"mask": mx.nd.array(mask if layout == "TNC" else mask.T)}}[kind]
    results = []
    for unroll in [False, True, "auto"]:
        net = make_layer(mode, source=str(tmp_path / "p"), num_layers=2, bidirectional=True,
                         layout=layout, unroll=unroll)
        if hybridize:
            net.hybridize()
        results.append(run_with_grads(net, x, states, extra))
    for other in results[1:]:
        for a, b in zip(other, results[0]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_unrolled_graph_has_one_operator_per_step(tmp_path):
    for unroll, count in [(True, T), (False, 1)]:
        net = make_layer("gru", unroll=unroll)
        net.hybridize()
        net(mx.nd.ones((T, 2, C)))
        assert fused_operator_count(net, tmp_path) == count


def test_hybridized_layer_follows_changes_of_length_and_valid_input():
    """A hybridized layer rebuilds its graph when T changes (unrolled) or when it switches
    between no lengths, sequence_length and mask; the answers match a non-hybridized twin."""
    net = make_layer("lstm", unroll=True)
    plain = make_layer("lstm", unroll=True)
    for name, p in plain.collect_params().items():
        p.set_data(net.collect_params()[net.prefix + name[len(plain.prefix):]].data())
    net.hybridize()
    rng = np.random.default_rng(10)
    for steps, kind in [(3, None), (5, None), (5, "lengths"), (5, "mask"), (2, "mask"),
                        (4, None)]:
        x = mx.nd.array(rng.standard_normal((steps, N, C)))
        extra = {}
        if kind == "lengths":
            extra = {"sequence_length": mx.nd.array(rng.integers(0, steps + 1, N))}
        elif kind == "mask":
            extra = {"mask": mx.nd.array(rng.random((steps, N)) < 0.5)}
        got = net(x, **extra)[0].asnumpy()
        want = plain(x, **extra)[0].asnumpy()
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_bool_and_integer_masks():
    net = make_layer("gru")
    x = mx.nd.array(np.random.default_rng(11).standard_normal((T, N, C)))
    mask = masks()["holes"]
    want = net(x, mask=mx.nd.array(mask))[0].asnumpy()
    for dtype in ["bool", "int32", "uint8", "float64"]:
        got = net(x, mask=mx.nd.array(mask, dtype=dtype))[0].asnumpy()
        np.testing.assert_array_equal(got, want)


def test_mask_gradients_match_finite_differences():
    net = make_layer("lstm", bidirectional=True, dtype="float64")
    rng = np.random.default_rng(12)
    x = mx.nd.array(rng.standard_normal((T, N, C)), dtype="float64")
    mask = mx.nd.array(masks()["holes"])
    w = mx.nd.array(rng.standard_normal((T, N, 2 * H)), dtype="float64")

    def loss():
        out, states = net(x, net.begin_state(N, dtype="float64"), mask=mask)
        return (out * w).sum() + (states[0] * states[1]).sum()

    x.attach_grad()
    with mx.autograd.record():
        value = loss()
    value.backward()
    params = list(net.collect_params().values())
    eps = 1e-6
    for target, grad in [(x, x.grad)] + [(p.data(), p.grad()) for p in params]:
        flat = target.reshape((-1,))
        for i in rng.choice(flat.size, size=3, replace=False):
            old = flat[i].asscalar()
            flat[i] = old + eps
            up = loss().asscalar()
            flat[i] = old - eps
            down = loss().asscalar()
            flat[i] = old
            np.testing.assert_allclose(grad.reshape((-1,))[i].asscalar(), (up - down) / (2 * eps),
                                       rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("call,error,pattern", [
    (lambda net, x: net(x, sequence_length=mx.nd.ones(N), mask=mx.nd.ones((T, N))),
     ValueError, "sequence_length or mask"),
    (lambda net, x: net(x, mask=mx.nd.ones((N, T))), ValueError,
     r"mask must have shape \(6, 5\) for layout TNC"),
    (lambda net, x: net(x, sequence_length=mx.nd.ones(N + 1)), ValueError,
     r"sequence_length must have shape \(5,\)"),
    (lambda net, x: net(x, mask=mx.nd.full((T, N), 2)), ValueError,
     "mask must hold only 0 and 1"),
    (lambda net, x: net(x.reshape((-1, C))), ValueError, "inputs must have 3 dimensions"),
])
def test_bad_calls(call, error, pattern):
    net = make_layer("gru")
    with pytest.raises(error, match=pattern):
        call(net, mx.nd.ones((T, N, C)))[0].wait_to_read()


def test_bad_construction_and_missing_lengths():
    with pytest.raises(ValueError, match="unroll must be False, True or 'auto'"):
        fusedrnn.LSTM(4, unroll="yes")
    net = make_layer("lstm", use_sequence_length=True)
    with pytest.raises(ValueError, match="sequence_length is required"):
        net(mx.nd.ones((T, N, C)))
    with pytest.raises(ValueError, match="unroll=True needs the sequence length"):
        make_layer("lstm", unroll=True)(mx.sym.var("x"))


def fused_operator_count(net, tmp_path):
    """The number of _fusedrnn_layer operators in a hybridized layer's last graph."""
    net.export(str(tmp_path / "net"))
    sym = mx.sym.load(str(tmp_path / "net-symbol.json"))
    ops = [n for n in sym.get_internals().list_outputs() if "_fusedrnn_layer" in n]
    return len({o.rsplit("_output", 1)[0] for o in ops})


def test_choose_unroll_rule():
    # Where bench/results/unroll.json has the per-step graph ahead ...
    assert fusedrnn.choose_unroll("lstm", 3, 1, 1024, training=False)
    assert fusedrnn.choose_unroll("gru", 4, 1, 256, training=False)
    assert fusedrnn.choose_unroll("rnn_tanh", 2, 1, 256, training=False)
    # ... and where it is not.
    assert not fusedrnn.choose_unroll("lstm", 3, 1, 1024, training=True)
    assert not fusedrnn.choose_unroll("lstm", 8, 1, 1024, training=False)
    assert not fusedrnn.choose_unroll("lstm", 3, 8, 1024, training=False)
    assert not fusedrnn.choose_unroll("lstm", 3, 1, 64, training=False)
    assert not fusedrnn.choose_unroll("rnn_tanh", 3, 1, 1024, training=False)
    with pytest.raises(ValueError, match="mode must be one of"):
        fusedrnn.choose_unroll("lstmp", 3, 1, 256, training=False)
    with pytest.raises(ValueError, match="batch must be a non-negative integer"):
        fusedrnn.choose_unroll("lstm", 3, -1, 256, training=False)


def test_auto_unrolls_per_call_and_gives_the_same_numbers(tmp_path):
    """A hybridized 'auto' layer runs a single sequence of 3 steps as per-step operators in
    inference and as one fused operator in training, with the same numbers either way."""
    net = fusedrnn.LSTM(256, input_size=C)
    net.initialize(mx.init.Uniform(0.1))
    net.hybridize()
    x = mx.nd.array(np.random.default_rng(13).standard_normal((3, 1, C)))
    mask = mx.nd.array([[1], [0], [1]])
    infer = net(x, mask=mask).asnumpy()
    assert fused_operator_count(net, tmp_path) == 3
    with mx.autograd.record():
        train = net(x, mask=mask).asnumpy()
    assert fused_operator_count(net, tmp_path) == 1
    np.testing.assert_allclose(train, infer, rtol=1e-6, atol=1e-7)
