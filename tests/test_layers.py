"""fusedrnn.LSTM / GRU / RNN against mxnet.gluon.rnn (parameters moved by save/load_parameters)
where MXNet is right, and against running each sample alone where it is not (lengths)."""
import os
import subprocess
import sys
import textwrap

import mxnet as mx
import numpy as np
import pytest

import fusedrnn

PAIRS = {"lstm": (mx.gluon.rnn.LSTM, fusedrnn.LSTM, {}),
         "gru": (mx.gluon.rnn.GRU, fusedrnn.GRU, {}),
         "rnn_tanh": (mx.gluon.rnn.RNN, fusedrnn.RNN, {"activation": "tanh"}),
         "rnn_relu": (mx.gluon.rnn.RNN, fusedrnn.RNN, {"activation": "relu"})}


def twins(mode, tmp_path, **kw):
    gluon_cls, fused_cls, extra = PAIRS[mode]
    ref = gluon_cls(7, **extra, **{k: v for k, v in kw.items() if k != "use_sequence_length"})
    ref.initialize(mx.init.Uniform(0.3))
    shape = (5, 3, 4) if kw.get("layout", "TNC") == "TNC" else (3, 5, 4)
    ref(mx.nd.zeros(shape))
    path = str(tmp_path / "params")
    ref.save_parameters(path)
    fused = fused_cls(7, **extra, **kw)
    fused.load_parameters(path)
    return ref, fused, shape


def run(net, x, states, seed=0):
    x = x.copy()
    x.attach_grad()
    with mx.autograd.record():
        out, new_states = net(x, [s.copy() for s in states])
    rng = np.random.default_rng(seed)
    heads = [mx.nd.array(rng.standard_normal(a.shape)) for a in [out] + new_states]
    mx.autograd.backward([out] + new_states, heads)
    grads = {name[len(net.prefix):]: p.grad().asnumpy()
             for name, p in net.collect_params().items()}
    return [out.asnumpy()] + [s.asnumpy() for s in new_states] + [x.grad.asnumpy()], grads


@pytest.mark.parametrize("hybridize", [False, True])
@pytest.mark.parametrize("layout", ["TNC", "NTC"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("mode", list(PAIRS))
def test_matches_gluon_rnn(mode, bidirectional, layout, hybridize, tmp_path):
    ref, fused, shape = twins(mode, tmp_path, num_layers=2, bidirectional=bidirectional,
                              layout=layout)
    if hybridize:
        ref.hybridize()
        fused.hybridize()
    x = mx.nd.array(np.random.default_rng(1).standard_normal(shape))
    states = [mx.nd.array(np.random.default_rng(2).standard_normal(s.shape))
              for s in ref.begin_state(batch_size=3)]
    want, want_grads = run(ref, x, states)
    got, got_grads = run(fused, x, states)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    assert got_grads.keys() == want_grads.keys()
    for name in want_grads:
        np.testing.assert_allclose(got_grads[name], want_grads[name], rtol=1e-4, atol=1e-5,
                                   err_msg=name)


@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_sequence_length_equals_each_sample_alone(mode, tmp_path):
    _, fused, _ = twins(mode, tmp_path, num_layers=2, bidirectional=True, layout="NTC",
                        use_sequence_length=True)
    alone = PAIRS[mode][1](7, num_layers=2, bidirectional=True, layout="NTC",
                           **PAIRS[mode][2])
    alone.load_parameters(str(tmp_path / "params"))
    x = mx.nd.array(np.random.default_rng(3).standard_normal((4, 6, 4)))
    lengths = [6, 1, 3, 5]
    out, states = fused(x, fused.begin_state(batch_size=4),
                        sequence_length=mx.nd.array(lengths))
    for n, length in enumerate(lengths):
        o, s = alone(x[n:n + 1, :length], alone.begin_state(batch_size=1))
        np.testing.assert_allclose(out[n:n + 1, :length].asnumpy(), o.asnumpy(), rtol=1e-5,
                                   atol=1e-6)
        assert not out.asnumpy()[n, length:].any()
        for got, want in zip(states, s):
            np.testing.assert_allclose(got[:, n:n + 1].asnumpy(), want.asnumpy(), rtol=1e-5,
                                       atol=1e-6)


def test_grad_req_add_accumulates(tmp_path):
    _, fused, shape = twins("lstm", tmp_path, num_layers=2)
    fused.collect_params().setattr("grad_req", "add")
    fused.collect_params().zero_grad()
    x = mx.nd.ones(shape)
    for _ in range(2):
        with mx.autograd.record():
            loss = fused(x).sum()
        loss.backward()
    twice = {k: p.grad().asnumpy().copy() for k, p in fused.collect_params().items()}
    fused.collect_params().zero_grad()
    with mx.autograd.record():
        loss = fused(x).sum()
    loss.backward()
    for k, p in fused.collect_params().items():
        np.testing.assert_allclose(twice[k], 2 * p.grad().asnumpy(), rtol=1e-6, atol=1e-7)


def test_deferred_input_size_and_reset_after():
    net = fusedrnn.GRU(5, num_layers=2)
    net.initialize()
    out = net(mx.nd.ones((3, 2, 6)))
    assert out.shape == (3, 2, 5) and net.l0_i2h_weight.shape == (15, 6)
    original = fusedrnn.GRU(5, num_layers=2, reset_after=False)
    original.initialize()
    original(mx.nd.ones((3, 2, 6)))
    for name, p in net.collect_params().items():
        original.collect_params()[name.replace(net.prefix, original.prefix)].set_data(p.data())
    assert not np.allclose(original(mx.nd.ones((3, 2, 6))).asnumpy(), out.asnumpy())


def test_export_and_import_in_a_fresh_process(tmp_path):
    net = fusedrnn.LSTM(6, num_layers=2, bidirectional=True)
    net.initialize()
    net.hybridize()
    x = mx.nd.array(np.random.default_rng(4).standard_normal((5, 3, 4)))
    h, c = [mx.nd.array(np.random.default_rng(5).standard_normal(s.shape))
            for s in net.begin_state(batch_size=3)]
    want = net(x, [h, c])[0].asnumpy()
    net.export(str(tmp_path / "model"))
    for name, a in (("x", x), ("h", h), ("c", c)):
        np.save(tmp_path / (name + ".npy"), a.asnumpy())
    script = textwrap.dedent("""
        import sys, numpy as np, mxnet as mx
        import fusedrnn  # registers the operators the exported graph uses
        d = sys.argv[1]
        net = mx.gluon.SymbolBlock.imports(d + "/model-symbol.json",
                                           ["data0", "data1", "data2"],
                                           d + "/model-0000.params")
        x, h, c = (mx.nd.array(np.load(d + "/" + n + ".npy")) for n in "xhc")
        np.save(d + "/y.npy", net(x, h, c)[0].asnumpy())
    """)
    run_ = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ))
    assert run_.returncode == 0, run_.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_variable_lengths_match_pytorch_packed_sequences(mode):
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    T, N, C, H = 6, 4, 3, 5
    lengths = [6, 2, 5, 3]
    layer = {"lstm": fusedrnn.LSTM, "gru": fusedrnn.GRU}[mode](
        H, num_layers=2, bidirectional=True, use_sequence_length=True)
    layer.initialize(mx.init.Uniform(0.4))
    x = np.random.default_rng(6).standard_normal((T, N, C)).astype(np.float32)
    states = layer.begin_state(batch_size=N)
    out, new_states = layer(mx.nd.array(x), states, sequence_length=mx.nd.array(lengths))

    ref = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[mode](C, H, num_layers=2,
                                                             bidirectional=True)
    with torch.no_grad():
        for layer_i in range(2):
            for d, suffix in (("l", ""), ("r", "_reverse")):
                for g, t in (("i2h_weight", "weight_ih"), ("h2h_weight", "weight_hh"),
                             ("i2h_bias", "bias_ih"), ("h2h_bias", "bias_hh")):
                    value = getattr(layer, f"{d}{layer_i}_{g}").data().asnumpy()
                    getattr(ref, f"{t}_l{layer_i}{suffix}").copy_(torch.tensor(value))
        packed = pack_padded_sequence(torch.tensor(x), torch.tensor(lengths),
                                      enforce_sorted=False)
        t_out, t_states = ref(packed)
        t_out = pad_packed_sequence(t_out, total_length=T)[0].numpy()
    np.testing.assert_allclose(out.asnumpy(), t_out, rtol=1e-5, atol=1e-6)
    t_states = t_states if isinstance(t_states, tuple) else (t_states,)
    for got, want in zip(new_states, t_states):
        np.testing.assert_allclose(got.asnumpy(), want.numpy(), rtol=1e-5, atol=1e-6)


def test_static_alloc_and_static_shape(tmp_path):
    ref, fused, shape = twins("lstm", tmp_path, num_layers=2, bidirectional=True)
    ref.hybridize(static_alloc=True, static_shape=True)
    fused.hybridize(static_alloc=True, static_shape=True)
    for seed in range(2):  # the second call reuses the static graph
        x = mx.nd.array(np.random.default_rng(seed).standard_normal(shape))
        states = ref.begin_state(batch_size=3)
        want, want_grads = run(ref, x, states, seed)
        got, got_grads = run(fused, x, states, seed)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
        for name in want_grads:
            np.testing.assert_allclose(got_grads[name], want_grads[name], rtol=1e-4, atol=1e-5)


def test_projection_matches_pytorch_and_clipping_matches_kernels():
    torch = pytest.importorskip("torch")
    T, N, C, H, P = 5, 3, 4, 6, 3
    layer = fusedrnn.LSTM(H, projection_size=P, use_sequence_length=True)
    layer.initialize(mx.init.Uniform(0.4))
    x = np.random.default_rng(7).standard_normal((T, N, C)).astype(np.float32)
    lengths = [5, 2, 4]
    out, (h, c) = layer(mx.nd.array(x), layer.begin_state(batch_size=N),
                        sequence_length=mx.nd.array(lengths))
    ref = torch.nn.LSTM(C, H, proj_size=P)
    with torch.no_grad():
        for g, t in (("i2h_weight", "weight_ih_l0"), ("h2h_weight", "weight_hh_l0"),
                     ("i2h_bias", "bias_ih_l0"), ("h2h_bias", "bias_hh_l0"),
                     ("h2r_weight", "weight_hr_l0")):
            getattr(ref, t).copy_(torch.tensor(getattr(layer, "l0_" + g).data().asnumpy()))
        packed = torch.nn.utils.rnn.pack_padded_sequence(torch.tensor(x), torch.tensor(lengths),
                                                         enforce_sorted=False)
        t_out, (t_h, t_c) = ref(packed)
        t_out = torch.nn.utils.rnn.pad_packed_sequence(t_out, total_length=T)[0]
    np.testing.assert_allclose(out.asnumpy(), t_out.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h.asnumpy(), t_h.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c.asnumpy(), t_c.numpy(), rtol=1e-5, atol=1e-6)

    clipped = fusedrnn.LSTM(H, state_clip_min=-0.1, state_clip_max=0.1, state_clip_nan=True)
    clipped.initialize(mx.init.Uniform(0.4))
    out, (h, c) = clipped(mx.nd.array(x), clipped.begin_state(batch_size=N))
    w = {g: getattr(clipped, "l0_" + g).data().asnumpy()
         for g in ("i2h_weight", "h2h_weight", "i2h_bias", "h2h_bias")}
    zeros = np.zeros((N, H), np.float32)
    want = fusedrnn.kernels.forward("lstm", x, w["i2h_weight"], w["h2h_weight"], w["i2h_bias"],
                                    w["h2h_bias"], zeros, zeros, clip_min=-0.1, clip_max=0.1,
                                    clip_nan=True)
    np.testing.assert_array_equal(out.asnumpy(), want.y)
    np.testing.assert_array_equal(c.asnumpy()[0], want.cy)
    assert np.abs(c.asnumpy()).max() <= np.float32(0.1)


class _Tagger(mx.gluon.HybridBlock):
    """A fused layer inside a parent block, its states left to gluon's begin_state (which in
    a graph leaves the batch size to shape inference), optionally with a mask."""

    def __init__(self, layer, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.rnn = layer
            self.out = mx.gluon.nn.Dense(3, flatten=False)

    def hybrid_forward(self, F, x, mask=None):
        return self.out(self.rnn(x) if mask is None else self.rnn(x, mask=mask))


@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_layer_inside_hybridized_parent(mode, use_mask, tmp_path):
    cls = {"lstm": fusedrnn.LSTM, "gru": fusedrnn.GRU}[mode]
    make = lambda: _Tagger(cls(7, num_layers=2, bidirectional=True, layout="NTC"),  # noqa: E731
                           prefix="tagger_")
    plain, hybrid = make(), make()
    plain.initialize(mx.init.Uniform(0.3))
    x = mx.nd.array(np.random.default_rng(3).standard_normal((3, 5, 4)))
    args = [x]
    if use_mask:
        args.append(mx.nd.array(np.random.default_rng(4).random((3, 5)) < 0.7))
    want = plain(*args)
    plain.save_parameters(str(tmp_path / "p"))
    hybrid.load_parameters(str(tmp_path / "p"))
    hybrid.hybridize()
    got = hybrid(*args)
    np.testing.assert_allclose(got.asnumpy(), want.asnumpy(), rtol=1e-5, atol=1e-6)
    # Deferred input size inside the parent, too.
    fresh = make()
    fresh.initialize()
    fresh.hybridize()
    assert fresh(*args).shape == (3, 5, 3)
