"""Property-based tests (hypothesis): random modes, options, shapes (zero sizes included),
lengths and masks, checked against the NumPy reference (kernels, the MXNet operator, the
Gluon layers) and against keras-preprocessing (pad_sequences).

Derandomized (the examples are a function of the test), so CI runs the same examples every
time; max_examples keeps the whole file to about 30 seconds here."""
import mxnet as mx
import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from keras_preprocessing.sequence import pad_sequences as keras_pad

import fusedrnn
from fusedrnn import kernels, reference
from helpers import (assert_results_close, backward_args, choose_clip_bounds, make_problem,
                     make_upstream)

SETTINGS = dict(deadline=None, derandomize=True, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

MODES = ["lstm", "gru", "rnn_tanh", "rnn_relu"]


@st.composite
def problems(draw, max_T=6, max_N=5, max_C=5, max_H=7, min_size=0):
    """(mode, problem, options, upstream): a float64 problem with random sizes (T, N, C may be
    0), optional projection, lengths or a mask, reverse, GRU variant and LSTM clipping."""
    mode = draw(st.sampled_from(MODES))
    T = draw(st.integers(min_size, max_T))
    N = draw(st.integers(min_size, max_N))
    C = draw(st.integers(min_size, max_C))
    H = draw(st.integers(1, max_H))
    proj = draw(st.one_of(st.none(), st.integers(1, H))) if mode == "lstm" else None
    problem = make_problem(mode, T, N, C, H, proj=proj, seed=draw(st.integers(0, 2 ** 16)))
    options = {"reverse": draw(st.booleans())}
    valid = draw(st.sampled_from(["none", "lengths", "mask"]))
    if valid == "lengths":
        problem["lengths"] = np.array(draw(st.lists(st.integers(0, T), min_size=N,
                                                    max_size=N)), np.int64)
    elif valid == "mask":
        options["mask"] = np.array(draw(st.lists(st.booleans(), min_size=T * N,
                                                 max_size=T * N)), bool).reshape(T, N)
    if mode == "gru":
        options["reset_after"] = draw(st.booleans())
    if mode == "lstm" and draw(st.booleans()):
        clip_nan = draw(st.booleans())
        try:  # bounds that clip some cells, with no cell near a bound (gradients are exact)
            lo, hi = choose_clip_bounds(problem, reverse=options["reverse"],
                                        mask=options.get("mask"), clip_nan=clip_nan)
        except (AssertionError, ValueError, IndexError):  # too few cells, or none at all
            lo, hi = -100.0, 100.0
        options.update(clip_min=lo, clip_max=hi, clip_nan=clip_nan)
    return mode, problem, options, make_upstream(mode, problem, seed=draw(st.integers(0, 99)))


@settings(max_examples=500, **SETTINGS)
@given(problems())
def test_kernels_match_the_reference(case):
    mode, problem, options, upstream = case
    fwd = kernels.forward(mode, **problem, **options, training=True)
    assert_results_close(fwd, reference.forward(mode, **problem, **options), rtol=1e-9,
                         atol=1e-11, what="forward")
    args, kwargs = backward_args(problem)
    grads = kernels.backward(mode, *args, fwd.reserve, **upstream, **kwargs, **options)
    assert_results_close(grads, reference.backward(mode, *args, **upstream, **kwargs, **options),
                         rtol=1e-9, atol=1e-11, what="backward")
    assert_results_close(kernels.forward(mode, **problem, **options), fwd, rtol=0, atol=0,
                         what="inference vs training")


@settings(max_examples=200, **SETTINGS)
@given(problems(max_T=9, max_N=9, max_C=9, max_H=20))
def test_float32_kernels_match_the_reference(case):
    mode, problem, options, _ = case
    problem = {k: v.astype(np.float32) if isinstance(v, np.ndarray) and v.dtype == np.float64
               else v for k, v in problem.items()}
    got = kernels.forward(mode, **problem, **options)
    want = reference.forward(mode, **{k: v.astype(np.float64) if isinstance(v, np.ndarray) and
                                      v.dtype == np.float32 else v for k, v in problem.items()},
                             **options)
    assert got.y.dtype == np.float32
    assert_results_close(got, want, rtol=2e-4, atol=2e-5)


@settings(max_examples=150, **SETTINGS)
@given(problems(min_size=1))
def test_operator_matches_the_reference(case):
    """_fusedrnn_layer through mx.nd and autograd (random upstream gradients)."""
    mode, problem, options, upstream = case
    names = ["x", "w_ih", "w_hh", "b_ih", "b_hh", "h0"] + (["c0"] if mode == "lstm" else [])
    names += ["w_hr"] if problem["w_hr"] is not None else []
    arrays = [mx.nd.array(problem[n], dtype="float64") for n in names]
    attrs = dict(mode=mode, reverse=options["reverse"], projection=problem["w_hr"] is not None,
                 reset_after=options.get("reset_after", True))
    if "clip_min" in options:
        attrs.update(clip_min=options["clip_min"], clip_max=options["clip_max"],
                     clip_nan=options["clip_nan"])
    if problem["lengths"] is not None:
        arrays.append(mx.nd.array(problem["lengths"], dtype="int32"))
        attrs["use_lengths"] = True
    elif "mask" in options:
        arrays.append(mx.nd.array(options["mask"], dtype="uint8"))
        attrs["use_mask"] = True
    for a in arrays:
        a.attach_grad()
    with mx.autograd.record():
        outs = mx.nd._internal._fusedrnn_layer(*arrays, **attrs)
    heads = [upstream["dy"], upstream["dhy"]] + ([upstream["dcy"]] if mode == "lstm" else [])
    mx.autograd.backward(list(outs), [mx.nd.array(h, dtype="float64") for h in heads])
    want = reference.forward(mode, **problem, **options)
    for got, ref in zip(outs, want[:3]):
        np.testing.assert_allclose(got.asnumpy(), ref, rtol=1e-9, atol=1e-11)
    args, kwargs = backward_args(problem)
    ref_grads = reference.backward(mode, *args, **upstream, **kwargs, **options)
    fields = {"x": "dx", "w_ih": "dw_ih", "w_hh": "dw_hh", "b_ih": "db_ih", "b_hh": "db_hh",
              "h0": "dh0", "c0": "dc0", "w_hr": "dw_hr"}
    for name, a in zip(names, arrays):
        np.testing.assert_allclose(a.grad.asnumpy(), getattr(ref_grads, fields[name]),
                                   rtol=1e-8, atol=1e-10, err_msg=name)


LAYERS = {"lstm": (fusedrnn.LSTM, {}), "gru": (fusedrnn.GRU, {}),
          "rnn_tanh": (fusedrnn.RNN, {"activation": "tanh"}),
          "rnn_relu": (fusedrnn.RNN, {"activation": "relu"})}


def reference_layer(net, mode, x, states, lengths=None, mask=None):
    """The layer with fusedrnn.reference, layer by layer, direction by direction (TNC)."""
    params = {k[len(net.prefix):]: v.data().asnumpy() for k, v in net.collect_params().items()}
    hys, cys = [], []
    for layer in range(net._num_layers):
        outs = []
        for j, d in enumerate(["l", "r"][:net._dir]):
            k = layer * net._dir + j
            w = [params[f"{d}{layer}_{name}"] for name in
                 ("i2h_weight", "h2h_weight", "i2h_bias", "h2h_bias")]
            fwd = reference.forward(mode, x, *w, states[0][k],
                                    states[1][k] if mode == "lstm" else None, lengths=lengths,
                                    mask=mask, reverse=j == 1)
            outs.append(fwd.y)
            hys.append(fwd.hy)
            cys.append(fwd.cy)
        x = np.concatenate(outs, axis=2)
    return [x, np.stack(hys)] + ([np.stack(cys)] if mode == "lstm" else [])


@settings(max_examples=100, **SETTINGS)
@given(mode=st.sampled_from(MODES), T=st.integers(1, 5), N=st.integers(1, 4),
       C=st.integers(1, 4), H=st.integers(1, 5), layers=st.integers(1, 2),
       bidirectional=st.booleans(), layout=st.sampled_from(["TNC", "NTC"]),
       unroll=st.booleans(), valid=st.sampled_from(["none", "lengths", "mask"]),
       data=st.data())
def test_layers_match_the_reference(mode, T, N, C, H, layers, bidirectional, layout, unroll,
                                    valid, data):
    cls, extra = LAYERS[mode]
    net = cls(H, num_layers=layers, bidirectional=bidirectional, layout=layout, input_size=C,
              unroll=unroll, dtype="float64", **extra)
    net.initialize(mx.init.Uniform(0.5))
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 16)))
    x = rng.standard_normal((T, N, C))
    states = [rng.standard_normal(s.shape) for s in net.begin_state(batch_size=N)]
    lengths = mask = None
    call = {}
    if valid == "lengths":
        lengths = np.array(data.draw(st.lists(st.integers(0, T), min_size=N, max_size=N)))
        call["sequence_length"] = mx.nd.array(lengths, dtype="int32")
    elif valid == "mask":
        mask = np.array(data.draw(st.lists(st.booleans(), min_size=T * N, max_size=T * N)),
                        bool).reshape(T, N)
        call["mask"] = mx.nd.array(mask if layout == "TNC" else mask.T, dtype="bool")
    xin = x if layout == "TNC" else x.transpose(1, 0, 2)
    out, new_states = net(mx.nd.array(xin, dtype="float64"),
                          [mx.nd.array(s, dtype="float64") for s in states], **call)
    want = reference_layer(net, mode, x, states, lengths=lengths, mask=mask)
    got_y = out.asnumpy() if layout == "TNC" else out.asnumpy().transpose(1, 0, 2)
    np.testing.assert_allclose(got_y, want[0], rtol=1e-9, atol=1e-11)
    for got, ref in zip(new_states, want[1:]):
        np.testing.assert_allclose(got.asnumpy(), ref, rtol=1e-9, atol=1e-11)


CELLS = {"lstm": (fusedrnn.LSTMCell, {}), "gru": (fusedrnn.GRUCell, {}),
         "rnn_tanh": (fusedrnn.RNNCell, {"activation": "tanh"}),
         "rnn_relu": (fusedrnn.RNNCell, {"activation": "relu"})}


@settings(max_examples=60, **SETTINGS)
@given(mode=st.sampled_from(MODES), T=st.integers(1, 5), N=st.integers(1, 4),
       C=st.integers(1, 4), H=st.integers(1, 5), layout=st.sampled_from(["TNC", "NTC"]),
       with_lengths=st.booleans(), data=st.data())
def test_cells_match_the_reference(mode, T, N, C, H, layout, with_lengths, data):
    """unroll (with valid_length: zeros past each length, states from the last valid step)
    and a single step."""
    cls, extra = CELLS[mode]
    cell = cls(H, input_size=C, **extra)
    cell.initialize(mx.init.Uniform(0.5))
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 16)))
    x = rng.standard_normal((T, N, C)).astype(np.float32)
    states = [rng.standard_normal((N, H)).astype(np.float32) for _ in cell.state_info()]
    lengths = np.array(data.draw(st.lists(st.integers(0, T), min_size=N, max_size=N))) \
        if with_lengths else None
    p = {k[len(cell.prefix):]: v.data().asnumpy() for k, v in cell.collect_params().items()}
    w = [p[n] for n in ("i2h_weight", "h2h_weight", "i2h_bias", "h2h_bias")]
    want = reference.forward(mode, x, *w, states[0], states[1] if mode == "lstm" else None,
                             lengths=lengths)
    xin = x if layout == "TNC" else x.transpose(1, 0, 2)
    out, new_states = cell.unroll(T, mx.nd.array(xin), [mx.nd.array(s) for s in states],
                                  layout=layout, merge_outputs=True,
                                  valid_length=None if lengths is None else mx.nd.array(lengths))
    got = out.asnumpy() if layout == "TNC" else out.asnumpy().transpose(1, 0, 2)
    tol = dict(rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(got, want.y, **tol)
    for g, r in zip(new_states, [want.hy, want.cy]):
        np.testing.assert_allclose(g.asnumpy(), r, **tol)
    step_out, step_states = cell(mx.nd.array(x[0]), [mx.nd.array(s) for s in states])
    one = reference.forward(mode, x[:1], *w, states[0], states[1] if mode == "lstm" else None)
    np.testing.assert_allclose(step_out.asnumpy(), one.y[0], **tol)
    for g, r in zip(step_states, [one.hy, one.cy]):
        np.testing.assert_allclose(g.asnumpy(), r, **tol)


@settings(max_examples=100, **SETTINGS)
@given(seqs=st.lists(st.lists(st.integers(-9, 9), max_size=6), max_size=5),
       maxlen=st.one_of(st.none(), st.integers(0, 7)),
       padding=st.sampled_from(["pre", "post"]), truncating=st.sampled_from(["pre", "post"]))
def test_pad_sequences_matches_keras(seqs, maxlen, padding, truncating):
    assume(seqs or maxlen is not None)  # Keras takes np.max of no lengths (NumPy's error)
    kw = dict(maxlen=maxlen, padding=padding, truncating=truncating)
    try:
        want = keras_pad(seqs, **kw)
    except ValueError:  # maxlen = 0 with 'pre' truncation: Keras keeps everything and fails
        try:
            fusedrnn.pad_sequences(seqs, **kw)
        except ValueError:
            return
        raise AssertionError("Keras raised ValueError, fusedrnn did not")
    padded = fusedrnn.pad_sequences(seqs, **kw, return_lengths=True)
    np.testing.assert_array_equal(padded.array, want)
    kept = [min(len(s), len(s) if maxlen is None else maxlen) for s in seqs]
    np.testing.assert_array_equal(padded.lengths, kept)
    # The mask marks exactly the kept entries, on the side the data sits.
    width = want.shape[1] if want.ndim == 2 else 0
    for row, n in zip(padded.mask, kept):
        expect = np.arange(width) >= width - n if padding == "pre" else np.arange(width) < n
        np.testing.assert_array_equal(row, expect)


@settings(max_examples=100, **SETTINGS)
@given(lengths=st.lists(st.integers(0, 50), max_size=40), batch_size=st.integers(1, 9),
       last_batch=st.sampled_from(["keep", "discard"]), shuffle=st.booleans(),
       num_buckets=st.one_of(st.none(), st.integers(1, 5)), seed=st.integers(0, 9))
def test_bucket_sampler_covers_every_sample_once(lengths, batch_size, last_batch, shuffle,
                                                 num_buckets, seed):
    sampler = fusedrnn.BucketSampler(lengths, batch_size, shuffle=shuffle,
                                     last_batch=last_batch, seed=seed, num_buckets=num_buckets)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    seen = [i for b in batches for i in b]
    assert len(seen) == len(set(seen))
    full = len(lengths) // batch_size * batch_size
    assert len(seen) == (len(lengths) if last_batch == "keep" else full)
    assert all(1 <= len(b) <= batch_size for b in batches)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    real = sum(lengths[i] for i in seen)
    assert np.isclose(sampler.padding_fraction, 1 - real / padded if padded else 0.0)
    if not shuffle:  # sorted by length: no batch's range overlaps the next one's
        spans = [(min(lengths[i] for i in b), max(lengths[i] for i in b)) for b in batches]
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
