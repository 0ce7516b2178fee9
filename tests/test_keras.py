"""fusedrnn.keras against stock keras-mxnet 2.2.4.3 from the same weights.

The oracle is stock Keras with unroll=True: its unroll=False path (mx foreach) computes zeros
with MXNet 1.9.1. Each comparison builds the stock model, reads its weights, predictions and
the weights after one train_on_batch, and only then builds the fused model: keras-mxnet keeps
the weights of the model used last in sync (a module global), so another model's weights
must be read before the next one is built.
"""
import importlib.util
import re
import subprocess
import sys
import warnings
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest

# Not importorskip("keras"): on Python >= 3.10 importing keras-mxnet fails before
# fusedrnn.keras has put back the names it needs, and that failure would read as a skip.
if importlib.util.find_spec("keras") is None:
    pytest.skip("keras-mxnet (the keras extra) is not installed", allow_module_level=True)

import fusedrnn.keras as fk  # noqa: E402
import keras  # noqa: E402
from keras import backend as K  # noqa: E402
from keras.backend.mxnet_backend import KerasSymbol  # noqa: E402
from keras.layers import (Bidirectional, Dense, Embedding, Flatten, Input, Lambda,  # noqa: E402
                          Masking, concatenate)
from keras.models import Model, Sequential, load_model  # noqa: E402
from keras.optimizers import SGD  # noqa: E402

N, T, C, H = 4, 7, 3, 5  # odd sizes
LAYERS = ["LSTM", "GRU", "SimpleRNN"]


def rnn(kind, fused, units=H, **kwargs):
    """A stock (unroll=True) or fused layer; sigmoid gates unless asked (hard_sigmoid has its own tests)."""
    if kind != "SimpleRNN":
        kwargs.setdefault("recurrent_activation", "sigmoid")
    if fused:
        return getattr(fk, kind)(units, **kwargs)
    kwargs["unroll"] = True
    return getattr(keras.layers.recurrent, kind)(units, **kwargs)


def input_shape(fused, shape=(T, C)):
    """Stock keras-mxnet cannot stack RNNs unless the batch size is fixed too (the second
    layer's initial state comes out [1, N * H]); the fused layers can."""
    return dict(input_shape=shape) if fused else dict(batch_input_shape=(N,) + shape)


def run(model, inputs, target, weights=None, **compile_kwargs):
    """(predictions, weights before, weights after one train_on_batch) of a new model."""
    model.compile(SGD(lr=0.5), "mse", **compile_kwargs)
    if weights is not None:
        model.set_weights(weights)
    before = model.get_weights()
    pred = model.predict(inputs)
    model.train_on_batch(inputs, target)
    return pred, before, model.get_weights()


def compare(build, inputs, target, fused_builds=None):
    """build(fused) -> model. The fused model(s) start from the stock model's weights and
    must give its predictions and its weight updates."""
    pred, before, after = run(build(False), inputs, target)
    assert np.abs(pred).max() > 1e-3  # a real output, not stock's foreach zeros
    for fused_build in fused_builds or [lambda: build(True)]:
        model = fused_build()
        assert any(isinstance(layer, fk._FusedRNN) for layer in _all_layers(model))
        f_pred, _, f_after = run(model, inputs, target, weights=before)
        np.testing.assert_allclose(f_pred, pred, rtol=1e-5, atol=1e-6)
        for w0, ws, wf in zip(before, after, f_after):
            # The updates, not the weights: they are what a wrong gradient changes.
            np.testing.assert_allclose(wf - w0, ws - w0, rtol=1e-4, atol=1e-6)


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layer"):  # wrappers
            yield layer.layer


def data(seed=0, n=N, t=T, c=C, out=H):
    rng = np.random.RandomState(seed)
    return rng.randn(n, t, c).astype("float32"), rng.randn(n, out).astype("float32")


def variants(kind):
    # Regularisers and constraints act on the weights outside `call`: unchanged.
    weights = dict(kernel_regularizer="l2", recurrent_constraint="max_norm")
    if kind == "LSTM":
        return [{}, dict(use_bias=False), dict(unit_forget_bias=False), dict(implementation=2),
                weights]
    if kind == "GRU":
        return [{}, dict(reset_after=True), dict(use_bias=False),
                dict(use_bias=False, reset_after=True), dict(implementation=2), weights]
    return [{}, dict(activation="relu"), dict(use_bias=False), weights]


@pytest.mark.parametrize("kind,kwargs", [(k, v) for k in LAYERS[:2] for v in variants(k)])
def test_hard_sigmoid_gates(kind, kwargs):
    """Keras 2.2.4's default gate activation (the operator's gate_activation attribute):
    fused, without a warning."""
    x, y = data(18)
    x *= 4  # both of hard_sigmoid's flat parts are reached

    def build(fused):
        return Sequential([rnn(kind, fused, input_shape=(T, C),
                               recurrent_activation="hard_sigmoid", **kwargs)])

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.filterwarnings("ignore", "Optimizer created manually")
        warnings.filterwarnings("ignore", "MXNet backend does not support constraints")
        compare(build, x, y)


@pytest.mark.parametrize("kind", LAYERS[:2])
def test_keras_defaults_run_fused(kind):
    """A layer built with Keras' defaults only (hard_sigmoid gates) is fused, not Keras' path."""
    x, y = data(19)

    def build(fused):
        layer = getattr(fk if fused else keras.layers.recurrent, kind)
        return Sequential([layer(H, input_shape=(T, C), **({} if fused else {"unroll": True}))])

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.filterwarnings("ignore", "Optimizer created manually")
        compare(build, x, y)


@pytest.mark.parametrize("kind,kwargs", [(k, v) for k in LAYERS for v in variants(k)])
@pytest.mark.parametrize("unroll", [False, True])
def test_constructor_arguments(kind, kwargs, unroll):
    x, y = data()

    def build(fused):
        extra = dict(unroll=unroll) if fused else {}
        return Sequential([rnn(kind, fused, input_shape=(T, C), **kwargs, **extra)])

    compare(build, x, y)


@pytest.fixture
def fixed_dropout(monkeypatch):
    """K.dropout drawing fixed masks: the i-th mask a model draws is the i-th of a seeded
    sequence (set `period` to the masks per model), so stock Keras and the fused layers,
    which draw their masks in the same order, get the same masks in training (MXNet's
    Dropout would draw them in graph order), and none in predict, as MXNet's Dropout.

    Stock Keras cannot run dropout on MXNet at all: its cells draw the masks inside K.rnn's
    training pass and reuse them in its inference pass, where they have no symbol (an
    AssertionError with unroll=True; unroll=False computes zeros). These masks have symbols
    for both passes."""
    class Drawn(list):
        period = None

    drawn = Drawn()

    def dropout(x, level, noise_shape=None, seed=None):
        # Made of x's element indices alone, not of a variable: keras-mxnet binds no values
        # for variables made inside a cell's step.
        which = len(drawn) % drawn.period
        drawn.append(which)
        index = mx.sym.contrib.arange_like(x.symbol)
        keep = (((index * 37 + 11 * which) % 17) >= 17 * level) / (1 - level)
        out = KerasSymbol(x.symbol * keep, neighbors=[x])
        out._train_sym, out._pred_sym = x.symbol * keep, x.symbol
        return out

    monkeypatch.setattr(K, "dropout", dropout)
    return drawn


def dropout_variants(kind):
    if kind == "LSTM":
        return [{}, dict(implementation=2)]
    if kind == "GRU":
        return [{}, dict(reset_after=True), dict(implementation=2)]
    return [{}]


DROPOUTS = {"dropout": dict(dropout=0.4), "recurrent_dropout": dict(recurrent_dropout=0.3),
            "both": dict(dropout=0.4, recurrent_dropout=0.3)}


@pytest.mark.parametrize("kind,kwargs", [(k, v) for k in LAYERS for v in dropout_variants(k)])
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("which", list(DROPOUTS))
def test_dropout(kind, kwargs, go_backwards, which, fixed_dropout):
    """Keras' dropout and recurrent_dropout (a mask per sample and feature, the same at every
    step; one per gate with implementation=1) run fused, with stock's numbers given the same
    masks."""
    x, y = data(21)
    gates = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}[kind]
    fixed_dropout.period = gates * len(DROPOUTS[which])

    def build(fused, **dropouts):
        return Sequential([rnn(kind, fused, batch_input_shape=(N, T, C),
                               go_backwards=go_backwards, **dropouts, **kwargs)])

    _, before, plain_after = run(build(False), x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.filterwarnings("ignore", "Optimizer created manually")
        compare(lambda fused: build(fused, **DROPOUTS[which]), x, y)
    assert len(fixed_dropout) == 2 * fixed_dropout.period  # stock's masks, then fused's
    _, _, after = run(build(True, **DROPOUTS[which]), x, y, weights=before)
    assert not np.allclose(after[1], plain_after[1], atol=1e-6)  # the masks acted


@pytest.mark.parametrize("kind,kwargs", [(k, v) for k in LAYERS for v in dropout_variants(k)])
def test_operator_inputs_have_known_ranks(kind, kwargs, monkeypatch):
    """keras-mxnet infers shapes with the batch size unknown; an input of unknown rank makes
    MXNet 1.9.1's bridge to library operators overflow its shape buffer (heap corruption)."""
    ranks = []

    def spy(F, x, weights, states, w_hr=None, valid=None, masks=None, **attrs):
        for s in [x, *weights, *states, *(masks or {}).values()]:
            ranks.append(len(s.infer_shape_partial()[1][0]))
        return fused_layer(F, x, weights, states, w_hr, valid, masks, **attrs)

    fused_layer = fk.fused_layer
    monkeypatch.setattr(fk, "fused_layer", spy)
    Sequential([rnn(kind, True, input_shape=(T, C), dropout=0.3, recurrent_dropout=0.3,
                    **kwargs)])
    assert ranks and 0 not in ranks


@pytest.mark.parametrize("kind", LAYERS)
def test_dropout_only_in_training(kind):
    """With MXNet's own Dropout, predict runs without masks (stock's numbers) and training
    with them: a fused layer with dropout predicts as one without."""
    x, y = data(22)
    stock = Sequential([rnn(kind, False, input_shape=(T, C))])
    pred, before, _ = run(stock, x, y)
    fused = Sequential([rnn(kind, True, input_shape=(T, C), dropout=0.5,
                            recurrent_dropout=0.5)])
    f_pred, _, f_after = run(fused, x, y, weights=before)
    np.testing.assert_allclose(f_pred, pred, rtol=1e-5, atol=1e-6)
    plain = Sequential([rnn(kind, True, input_shape=(T, C))])
    _, _, p_after = run(plain, x, y, weights=before)
    assert not np.allclose(f_after[0], p_after[0], atol=1e-6)


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_direction_and_sequences(kind, go_backwards, return_sequences):
    x, _ = data(1)
    y = np.random.RandomState(2).randn(N, T * H if return_sequences else H).astype("float32")

    def build(fused):
        model = Sequential([rnn(kind, fused, input_shape=(T, C), go_backwards=go_backwards,
                                return_sequences=return_sequences)])
        if return_sequences:
            model.add(keras.layers.Flatten())
        return model

    compare(build, x, y)


@pytest.mark.parametrize("kind", LAYERS)
def test_return_state_and_initial_state(kind):
    x, _ = data(3)
    n_states = 2 if kind == "LSTM" else 1
    rng = np.random.RandomState(4)
    states = [rng.randn(N, H).astype("float32") for _ in range(n_states)]
    y = rng.randn(N, H * (1 + n_states)).astype("float32")

    def build(fused):
        inp = Input((T, C))
        init = [Input((H,)) for _ in range(n_states)]
        outs = rnn(kind, fused, return_state=True)(inp, initial_state=init)
        assert len(outs) == 1 + n_states
        return Model([inp] + init, concatenate(outs))

    compare(build, [x] + states, y)


def padded_tokens(pre, seed=5, vocab=11):
    """[N, T] token ids with 0 as padding, lengths from 0 to T (one sample empty)."""
    rng = np.random.RandomState(seed)
    tokens = rng.randint(1, vocab, size=(N, T))
    for n, length in enumerate([T, 3, 0, 5]):
        if pre:
            tokens[n, :T - length] = 0
        else:
            tokens[n, length:] = 0
    return tokens.astype("float32")


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("pre", [False, True], ids=["post", "pre"])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_embedding_mask(kind, pre, go_backwards):
    tokens = padded_tokens(pre)
    y = np.random.RandomState(6).randn(N, 4).astype("float32")

    def build(fused):
        # The first layer returns sequences, so the mask reaches the second one too.
        return Sequential([Embedding(11, C, mask_zero=True, **input_shape(fused, (T,))),
                           rnn(kind, fused, return_sequences=True, go_backwards=go_backwards),
                           rnn(kind, fused, units=4)])

    compare(build, tokens, y)


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("pre", [False, True], ids=["post", "pre"])
def test_masking_layer_with_holes(kind, pre):
    x, y = data(7)
    x[:, 2] = 0  # a masked step inside every sample
    if pre:
        x[1, :3] = 0
    else:
        x[1, T - 3:] = 0
    x[2] = 0  # a sample with no step: Keras' last output is 0

    def build(fused):
        return Sequential([Masking(0.0, input_shape=(T, C)), rnn(kind, fused)])

    compare(build, x, y)


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("unroll", [False, True])
def test_variable_time_length(kind, unroll):
    """One fused model with input_shape=(None, C) against stock models of fixed lengths,
    trained one batch each in turn."""
    expected, weights = [], None
    for t, seed in ((T, 8), (2, 9), (11, 10)):
        x, y = data(seed, t=t)
        model = Sequential([rnn(kind, False, input_shape=(t, C))])
        expected.append((x, y) + run(model, x, y, weights=weights))
        weights = expected[-1][-1]
    fused = Sequential([rnn(kind, True, input_shape=(None, C), unroll=unroll)])
    fused.compile(SGD(lr=0.5), "mse")
    fused.set_weights(expected[0][3])
    for x, y, pred, before, after in expected:
        np.testing.assert_allclose(fused.predict(x), pred, rtol=1e-5, atol=1e-6)
        fused.train_on_batch(x, y)
        for w0, ws, wf in zip(before, after, fused.get_weights()):
            np.testing.assert_allclose(wf - w0, ws - w0, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("merge_mode", ["sum", "ave", "mul", None, "concat"])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_bidirectional(kind, merge_mode, return_sequences):
    """Against stock Bidirectional of the same merge mode; concat against stock's
    merge_mode=None: stock concatenates a layer's outputs on the batch axis (keras-mxnet's
    K.concatenate takes axis -1 as 0 when it cannot tell the rank). Half of each stock
    output's loss is the concatenated output's loss."""
    x, _ = data(15)
    width = 2 * H if merge_mode == "concat" else H
    y = np.random.RandomState(16).randn(N, T if return_sequences else 1, width)
    y = y.astype("float32")

    def build(fused, mode=merge_mode):
        inp = Input((T, C))
        outs = Bidirectional(rnn(kind, fused, return_sequences=return_sequences),
                             merge_mode=mode)(inp)
        if return_sequences:
            outs = [Flatten()(out) for out in outs] if mode is None else Flatten()(outs)
        return Model(inp, outs)

    def flat(a):
        return a.reshape(N, -1)

    if merge_mode == "concat":
        targets = [flat(y[..., :H]), flat(y[..., H:])]
        pred, before, after = run(build(False, None), x, targets, loss_weights=[0.5, 0.5])
        pred = flat(np.concatenate([p.reshape(y[..., :H].shape) for p in pred], axis=-1))
    else:
        targets = [flat(y)] * 2 if merge_mode is None else flat(y)
        pred, before, after = run(build(False), x, targets)
    model = build(True)
    assert all(isinstance(layer, fk._FusedRNN)
               for layer in (model.layers[1].forward_layer, model.layers[1].backward_layer))
    f_pred, _, f_after = run(model, x, flat(y) if merge_mode == "concat" else targets,
                             weights=before)
    np.testing.assert_allclose(f_pred, pred, rtol=1e-5, atol=1e-6)
    for w0, ws, wf in zip(before, after, f_after):
        np.testing.assert_allclose(wf - w0, ws - w0, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("pre", [False, True], ids=["post", "pre"])
def test_bidirectional_with_mask(kind, pre):
    tokens = padded_tokens(pre, seed=19)
    y = np.random.RandomState(20).randn(N, H).astype("float32")

    def build(fused):
        return Sequential([Embedding(11, C, mask_zero=True, input_shape=(T,)),
                           Bidirectional(rnn(kind, fused), merge_mode="sum")])

    compare(build, tokens, y)


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("return_sequences", [False, True])
def test_stateful(kind, return_sequences):
    """States carried from batch to batch in predict and train_on_batch, and reset_states().
    Stock keras-mxnet's stateful layer without return_sequences cannot predict (its output
    and its new state are one symbol, grouped twice): that oracle is the last step of
    return_sequences."""
    rng = np.random.RandomState(17)
    xs = [rng.randn(N, T, C).astype("float32") for _ in range(3)]
    y = rng.randn(N, H).astype("float32")

    def run_stateful(model, weights=None):
        model.compile(SGD(lr=0.5), "mse")
        if weights is not None:
            model.set_weights(weights)
        before = model.get_weights()
        outs = [model.predict(x, batch_size=N) for x in xs[:2]]
        model.train_on_batch(xs[2], y)
        outs.append(model.predict(xs[0], batch_size=N))
        model.reset_states()
        outs.append(model.predict(xs[0], batch_size=N))
        return outs, before, model.get_weights()

    shape = dict(batch_input_shape=(N, T, C), stateful=True)
    stock = Sequential([rnn(kind, False, return_sequences=True, **shape),
                        Lambda(lambda seq: seq[:, -1], output_shape=(H,))])
    outs, before, after = run_stateful(stock)
    assert not np.allclose(outs[2], outs[3])  # the state carried over does change outputs
    fused = Sequential([rnn(kind, True, return_sequences=return_sequences, **shape)])
    if return_sequences:
        fused.add(Lambda(lambda seq: seq[:, -1], output_shape=(H,)))
    f_outs, _, f_after = run_stateful(fused, before)
    np.testing.assert_allclose(f_outs, outs, rtol=1e-5, atol=1e-6)
    for w0, ws, wf in zip(before, after, f_after):
        np.testing.assert_allclose(wf - w0, ws - w0, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", LAYERS)
def test_config_round_trip_both_ways(kind):
    """The saved-model format: the JSON config and the weights."""
    x, _ = data(11)

    def build(fused):
        return Sequential([rnn(kind, fused, return_sequences=True, **input_shape(fused)),
                           rnn(kind, fused), Dense(2)])

    stock = build(False)
    config, weights, expect = stock.to_json(), stock.get_weights(), stock.predict(x)
    fused = keras.models.model_from_json(config, custom_objects=fk.custom_objects())
    assert [type(layer) for layer in fused.layers[:2]] == [getattr(fk, kind)] * 2
    fused.set_weights(weights)
    np.testing.assert_allclose(fused.predict(x), expect, rtol=1e-5, atol=1e-6)
    assert fused.to_json() == config

    back = keras.models.model_from_json(fused.to_json())
    assert not any(isinstance(layer, fk._FusedRNN) for layer in back.layers)
    back.set_weights(fused.get_weights())
    np.testing.assert_allclose(back.predict(x), expect, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", LAYERS)
def test_save_load_both_ways(kind, tmp_path):
    x, _ = data(11)

    def build(fused):
        model = Sequential([rnn(kind, fused, return_sequences=True, **input_shape(fused)),
                            rnn(kind, fused), Dense(2)])
        model.compile("rmsprop", "mse")
        return model

    stock = build(False)
    stock.save(str(tmp_path / "stock.h5"))
    expect = stock.predict(x)
    fused = load_model(str(tmp_path / "stock.h5"), custom_objects=fk.custom_objects())
    assert [type(layer) for layer in fused.layers[:2]] == [getattr(fk, kind)] * 2
    np.testing.assert_allclose(fused.predict(x), expect, rtol=1e-5, atol=1e-6)

    fused.save(str(tmp_path / "fused.h5"))
    back = load_model(str(tmp_path / "fused.h5"))
    assert not any(isinstance(layer, fk._FusedRNN) for layer in back.layers)
    np.testing.assert_allclose(back.predict(x), expect, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", LAYERS)
def test_save_weights_load_weights_both_ways(kind, tmp_path):
    x, y = data(24)

    def build(fused):
        return Sequential([rnn(kind, fused, input_shape=(T, C)), Dense(2)])

    stock = build(False)
    stock.save_weights(str(tmp_path / "stock.h5"))
    expect = stock.predict(x)
    fused = build(True)
    fused.load_weights(str(tmp_path / "stock.h5"))
    np.testing.assert_allclose(fused.predict(x), expect, rtol=1e-5, atol=1e-6)
    fused.compile(SGD(lr=0.5), "mse")
    fused.train_on_batch(x, y[:, :2])
    fused.save_weights(str(tmp_path / "fused.h5"))
    trained, expect = fused.get_weights(), fused.predict(x)
    back = build(False)
    back.load_weights(str(tmp_path / "fused.h5"))
    for got, want in zip(back.get_weights(), trained):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(back.predict(x), expect, rtol=1e-5, atol=1e-6)


def test_hdf5_strings_read_as_before_outside_keras(tmp_path):
    """The h5py 3 shim only changes what Keras' own modules read."""
    h5py = pytest.importorskip("h5py")
    Sequential([fk.LSTM(H, input_shape=(T, C))]).save(str(tmp_path / "m.h5"))
    with h5py.File(str(tmp_path / "m.h5"), "r") as f:
        assert isinstance(f.attrs["model_config"], str)
        assert f["model_weights"].attrs["layer_names"].dtype == object


def test_patch_and_unpatch():
    stock_classes = {name: getattr(keras.layers, name) for name in LAYERS}
    fk.patch()
    try:
        for name in LAYERS:
            assert getattr(keras.layers, name) is getattr(fk, name)
            assert getattr(keras.layers.recurrent, name) is getattr(fk, name)
            # Keras' own classes stay usable (their methods name them in that module).
            stock = stock_classes[name](H, return_sequences=True)
            assert type(stock) is stock_classes[name]
            assert stock.get_config()["return_sequences"]
        stock_model = Sequential([stock_classes["LSTM"](H, input_shape=(T, C), unroll=True)])
        stock_model.predict(data()[0])
        from keras.layers.recurrent import SimpleRNN
        assert SimpleRNN is fk.SimpleRNN
        model = Sequential([keras.layers.GRU(H, input_shape=(T, C), return_sequences=True),
                            keras.layers.LSTM(H)])
        assert [type(layer) for layer in model.layers] == [fk.GRU, fk.LSTM]
        config = model.to_json()
        assert isinstance(keras.models.model_from_json(config).layers[0], fk.GRU)
        model.predict(data()[0])
    finally:
        fk.unpatch()
    for name in LAYERS:
        assert getattr(keras.layers, name) is stock_classes[name]
        assert getattr(keras.layers.recurrent, name) is stock_classes[name]
    assert type(keras.models.model_from_json(config).layers[0]) is stock_classes["GRU"]


@pytest.mark.parametrize("kwargs,reason", [
    (dict(recurrent_activation="tanh"), "recurrent_activation='tanh'"),
    (dict(activation="relu"), "activation='relu'"),
    (dict(activation="relu", recurrent_dropout=0.3), "activation='relu'"),
    (dict(activation="relu", recurrent_dropout=0.3, dropout=0.2), "activation='relu'"),
])
def test_falls_back_to_keras_with_one_warning(kwargs, reason, fixed_dropout):
    """What the kernels lack runs Keras' own code (unrolled: its foreach path gives zeros)."""
    x, y = data(12)
    fk._warned.clear()
    fixed_dropout.period = 4 * sum(1 for k in kwargs if k.endswith("dropout"))

    def build(fused):
        return Sequential([rnn("LSTM", fused, input_shape=(T, C), **kwargs)])

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compare(build, x, y, fused_builds=[lambda: build(True), lambda: build(True)])
    ours = [w for w in caught if "fusedrnn.keras" in str(w.message)]
    assert len(ours) == 1 and reason in str(ours[0].message)


def test_dropout_on_keras_path_runs():
    """Keras' own path (a layer the kernels cannot run) with MXNet's Dropout, where stock
    keras-mxnet fails (unroll=True) or computes zeros (unroll=False): predict without masks,
    training with them."""
    x, y = data(23)
    kwargs = dict(input_shape=(T, C), activation="relu")
    pred, before, plain_after = run(Sequential([rnn("LSTM", False, **kwargs)]), x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layer = rnn("LSTM", True, recurrent_dropout=0.5, dropout=0.5, **kwargs)
        f_pred, _, f_after = run(Sequential([layer]), x, y, weights=before)
    np.testing.assert_allclose(f_pred, pred, rtol=1e-5, atol=1e-6)
    assert not np.allclose(f_after[1], plain_after[1], atol=1e-6)


def test_stacked_fallback_layers_with_unknown_batch():
    """Layers on Keras' own path stack with the batch size left open (stock keras-mxnet
    cannot: see input_shape)."""
    x, _ = data(13)
    y = np.random.RandomState(14).randn(N, 4).astype("float32")

    def build(fused):
        return Sequential([rnn("LSTM", fused, recurrent_activation="tanh",
                               return_sequences=True, **input_shape(fused)),
                           rnn("GRU", fused, units=4, recurrent_activation="tanh")])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compare(build, x, y)


def test_text_generation_example_matches_stock():
    """examples/keras_text_generation.py, tiny: fused and stock (--compare) train from the same
    weights on the same batches to the same loss, and both sample."""
    example = Path(__file__).resolve().parent.parent / "examples" / "keras_text_generation.py"
    run = subprocess.run([sys.executable, str(example), "--compare", "--corpus-chars", "1500",
                          "--max-line", "30", "--hidden", "16", "--batch-size", "64",
                          "--sample-length", "10"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    losses = dict(re.findall(r"^  (fused|stock): loss ([0-9.]+),", run.stdout, re.M))
    assert set(losses) == {"fused", "stock"} and losses["fused"] == losses["stock"], run.stdout
    assert run.stdout.count("Samples (") == 2
