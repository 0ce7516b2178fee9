"""The layers' inference on arrays (fusedrnn._C._nd_layer_forward): one layer, one direction,
TNC, outside autograd, pushed to MXNet's engine without an operator's dispatch. Its numbers
are the NumPy reference's, it runs only where it applies (the operator everywhere else), it
is ordered with other writes to its arrays, stays on the inputs' device, and leaves every
shape error to the operator's messages."""
import threading

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd

import fusedrnn
from fusedrnn import layers, reference

VARIANTS = {
    "lstm": (fusedrnn.LSTM, "lstm", {}),
    "lstm_proj_clip": (fusedrnn.LSTM, "lstm", {"projection_size": 5, "state_clip_min": -0.3,
                                               "state_clip_max": 0.4, "state_clip_nan": True}),
    "gru": (fusedrnn.GRU, "gru", {}),
    "gru_reset_before": (fusedrnn.GRU, "gru", {"reset_after": False}),
    "rnn_tanh": (fusedrnn.RNN, "rnn_tanh", {"activation": "tanh"}),
    "rnn_relu": (fusedrnn.RNN, "rnn_relu", {"activation": "relu"}),
}


@pytest.fixture
def direct_calls(monkeypatch):
    """How many calls went to _nd_layer_forward and came back with arrays."""
    calls = []
    real = layers._C._nd_layer_forward

    def counted(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(bool(out))
        return out

    monkeypatch.setattr(layers._C, "_nd_layer_forward", counted)
    return calls


def build(variant, dtype="float32", ctx=None, hybridize=False):
    cls, mode, kwargs = VARIANTS[variant]
    layer = cls(7, input_size=4, dtype=dtype, **kwargs)
    layer.initialize(mx.init.Uniform(0.5), ctx=ctx)
    if hybridize:
        layer.hybridize(static_alloc=True)
    return layer, mode, kwargs


def expected(layer, mode, kwargs, x, states):
    params = {name[len(layer.prefix):]: p.data().asnumpy().astype(np.float64)
              for name, p in layer.collect_params().items()}
    if states is None:  # the layer's zero states
        states = layer.begin_state(x.shape[1])
    f64 = [s.asnumpy()[0].astype(np.float64) for s in states]
    clip = {}
    if "state_clip_min" in kwargs:
        clip = dict(clip_min=kwargs["state_clip_min"], clip_max=kwargs["state_clip_max"],
                    clip_nan=kwargs["state_clip_nan"])
    return reference.forward(mode, x.asnumpy().astype(np.float64), params["l0_i2h_weight"],
                             params["l0_h2h_weight"], params["l0_i2h_bias"],
                             params["l0_h2h_bias"], *f64, w_hr=params.get("l0_h2r_weight"),
                             reset_after=kwargs.get("reset_after", True), **clip)


@pytest.mark.parametrize("hybridize", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_matches_the_reference(variant, dtype, hybridize, direct_calls):
    layer, mode, kwargs = build(variant, dtype, hybridize=hybridize)
    rng = np.random.default_rng(1)
    x = mx.nd.array(rng.standard_normal((6, 3, 4)), dtype=dtype)
    states = [mx.nd.array(0.5 * rng.standard_normal(s["shape"]), dtype=dtype)
              for s in layer.state_info(3)]
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == "float32" else dict(rtol=1e-10, atol=1e-12)
    for call in range(3):  # a hybridized layer's first call builds its graph
        y, out_states = layer(x, states)
        want = expected(layer, mode, kwargs, x, states)
        np.testing.assert_allclose(y.asnumpy(), want.y, **tol)
        np.testing.assert_allclose(out_states[0].asnumpy()[0], want.hy, **tol)
        if mode == "lstm":
            np.testing.assert_allclose(out_states[1].asnumpy()[0], want.cy, **tol)
        assert y.dtype == np.dtype(dtype) and out_states[0].shape[0] == 1
        y = layer(x)  # no states: zeros, and only the output comes back
        want = expected(layer, mode, kwargs, x, None)
        np.testing.assert_allclose(y.asnumpy(), want.y, **tol)
    assert direct_calls == [True] * (5 if hybridize else 6)


@pytest.mark.parametrize("case", ["recording", "lengths", "ntc", "two_layers",
                                  "bidirectional", "unrolled", "numpy_mode"])
def test_other_calls_go_through_the_operator(case, direct_calls):
    kwargs = {"ntc": {"layout": "NTC"}, "two_layers": {"num_layers": 2},
              "bidirectional": {"bidirectional": True}, "unrolled": {"unroll": True}}
    layer = fusedrnn.GRU(7, input_size=4, **kwargs.get(case, {}))
    layer.initialize()
    x = mx.nd.ones((5, 3, 4))
    if case == "recording":
        with autograd.record():
            layer(x)
    elif case == "lengths":
        layer(x, sequence_length=mx.nd.array([5, 2, 3]))
    elif case == "numpy_mode":
        with mx.util.np_array(True):
            layer(x.as_np_ndarray())
    else:
        layer(x)
    mx.nd.waitall()
    assert direct_calls == []


def two_weight_versions(variant, T, N, seed):
    """A layer, inputs, its h2h_weight array, two versions of that weight and the layer's
    outputs with each."""
    layer, mode, kwargs = build(variant)
    rng = np.random.default_rng(seed)
    x = mx.nd.array(rng.standard_normal((T, N, 4)))
    weight = layer.l0_h2h_weight.data()
    versions = [mx.nd.array(rng.uniform(-0.5, 0.5, weight.shape)) for _ in range(2)]
    wants = []
    for v in versions:
        weight[:] = v
        wants.append(expected(layer, mode, kwargs, x, None).y)
    return layer, x, weight, versions, wants


def test_ordered_with_writes_to_its_weights():
    """Weights rewritten through MXNet (queued writes) between calls: each call reads the
    version written just before it, whole."""
    layer, x, weight, versions, wants = two_weight_versions("lstm", 40, 8, seed=2)
    outs = []
    for k in range(10):
        weight[:] = versions[k % 2] * 1  # a write that an engine operation computes
        outs.append(layer(x))
    for k, y in enumerate(outs):
        np.testing.assert_allclose(y.asnumpy(), wants[k % 2], rtol=1e-4, atol=1e-5)


def test_one_weight_version_while_another_thread_writes():
    layer, x, weight, versions, wants = two_weight_versions("gru", 30, 16, seed=3)
    stop = threading.Event()

    def flip():
        k = 0
        while not stop.is_set():
            weight[:] = versions[k % 2]
            k += 1

    writer = threading.Thread(target=flip)
    writer.start()
    try:
        outs = [layer(x) for _ in range(30)]
        ys = [y.asnumpy() for y in outs]
    finally:
        stop.set()
        writer.join()
    for y in ys:
        assert min(np.abs(y - w).max() for w in wants) < 1e-4


def test_outputs_stay_on_the_inputs_device():
    layer, _, _ = build("lstm", ctx=mx.cpu(1))
    x = mx.nd.ones((3, 2, 4), ctx=mx.cpu(1))
    y, states = layer(x, layer.begin_state(2, ctx=mx.cpu(1)))
    assert y.context == mx.cpu(1) and all(s.context == mx.cpu(1) for s in states)
    assert layer(x).context == mx.cpu(1)


@pytest.mark.parametrize("bad", ["input_size", "state_batch"])
def test_shape_errors_are_the_operators(bad):
    """A call the array path cannot take goes to the operator, whose message names the
    argument: the same message as in training, where only the operator runs."""
    layer, _, _ = build("lstm")
    layer(mx.nd.ones((3, 2, 4)))  # the parameters' shapes are settled
    x = mx.nd.ones((3, 2, 5 if bad == "input_size" else 4))
    states = layer.begin_state(2)
    if bad == "state_batch":
        states = [s[:, :1] for s in states] + []
    messages = []
    for recording in (False, True):
        with pytest.raises(Exception) as info:
            with autograd.record(recording):
                y, _ = layer(x, states)
                y.wait_to_read()
        messages.append(str(info.value).splitlines()[0])
    assert messages[0] == messages[1]
