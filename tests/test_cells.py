"""fusedrnn cells against mxnet.gluon.rnn cells (parameters moved by save/load), alone and
composed, imperatively and in graphs, plus Trainer steps and parameter files in both
directions for the layers."""
import json

import mxnet as mx
import numpy as np
import pytest

import fusedrnn

CELLS = {"lstm": (mx.gluon.rnn.LSTMCell, fusedrnn.LSTMCell, {}),
         "gru": (mx.gluon.rnn.GRUCell, fusedrnn.GRUCell, {}),
         "rnn_relu": (mx.gluon.rnn.RNNCell, fusedrnn.RNNCell, {"activation": "relu"}),
         "lstm_relu_fallback": (mx.gluon.rnn.LSTMCell, fusedrnn.LSTMCell,
                                {"activation": "relu"})}
FUSED = ["lstm", "gru", "rnn_relu"]
STATES = {"lstm": 2, "gru": 1, "rnn_relu": 1, "lstm_relu_fallback": 2}


def pieces(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


def leaves(value):
    """Copies of an array or a list of arrays, recording their gradients."""
    out = [v.copy() for v in pieces(value)]
    for v in out:
        v.attach_grad()
    return out if isinstance(value, list) else out[0]


def unroll_and_grads(cell, x, layout, valid_length, begin_state=None, merge_outputs=True,
                     upstream=None):
    """unroll under autograd with an upstream gradient for every output (random unless
    given: a list for the output steps, then the states); returns the results as gluon
    returned them (outputs, states), and the gradients of the inputs, the begin states and
    the parameters."""
    x = leaves(x)
    begin_state = leaves(begin_state) if begin_state is not None else None
    length = len(x) if isinstance(x, list) else x.shape[layout.find("T")]
    rng = np.random.default_rng(7)
    with mx.autograd.record():
        out, states = cell.unroll(length, x, begin_state=begin_state, layout=layout,
                                  merge_outputs=merge_outputs, valid_length=valid_length)
        results = pieces(out) + states
        if upstream is None:
            upstream = [rng.standard_normal(r.shape) for r in results]
        loss = sum((r * mx.nd.array(u, dtype=r.dtype)).sum() for r, u in zip(results, upstream))
    loss.backward()
    grads = {"x": [v.grad.asnumpy() for v in pieces(x)]}
    if begin_state is not None:
        grads["begin_state"] = [s.grad.asnumpy() for s in begin_state]
    grads.update({k[len(cell.prefix):]: p.grad().asnumpy()
                  for k, p in cell.collect_params().items()})
    return (out, states), grads


def assert_same(got, want, rtol=1e-5, atol=1e-6):
    """Equal results with the same structure: a list of steps or one tensor, and states."""
    (got_out, got_states), got_grads = got
    (want_out, want_states), want_grads = want
    assert isinstance(got_out, list) == isinstance(want_out, list)
    assert len(pieces(got_out)) == len(pieces(want_out))
    assert len(got_states) == len(want_states)
    for g, w in zip(pieces(got_out) + got_states, pieces(want_out) + want_states):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g.asnumpy(), w.asnumpy(), rtol=rtol, atol=atol)
    assert got_grads.keys() == want_grads.keys()
    for name, want_grad in want_grads.items():
        for g, w in zip(pieces(got_grads[name]), pieces(want_grad)):
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=name)


def twin_cells(kind, tmp_path, make):
    ref, fused = make(CELLS[kind][0]), make(CELLS[kind][1])
    ref.initialize(mx.init.Uniform(0.3))
    ref.unroll(2, mx.nd.zeros((3, 2, 4)), layout="NTC")
    ref.save_parameters(str(tmp_path / "p"))
    fused.load_parameters(str(tmp_path / "p"))
    return ref, fused


def random(shape, seed, dtype="float32"):
    return mx.nd.array(np.random.default_rng(seed).standard_normal(shape), dtype=dtype)


def begin_states(kind, batch, hidden, dtype="float32"):
    return [random((batch, hidden), 10 + k, dtype) for k in range(STATES[kind])]


def fused_ops(sym):
    return sum(node["op"] == "_fusedrnn_layer" for node in json.loads(sym.tojson())["nodes"])


@pytest.mark.parametrize("hybridize", [False, True])
@pytest.mark.parametrize("layout", ["NTC", "TNC"])
@pytest.mark.parametrize("valid", [False, True])
@pytest.mark.parametrize("kind", list(CELLS))
def test_cell_matches_gluon(kind, valid, layout, hybridize, tmp_path):
    extra = CELLS[kind][2]
    ref, fused = twin_cells(kind, tmp_path, lambda cls: cls(6, **extra))
    if hybridize:
        ref.hybridize()
        fused.hybridize()
    shape = (3, 5, 4) if layout == "NTC" else (5, 3, 4)
    x = random(shape, 0)
    valid_length = mx.nd.array([5, 1, 3]) if valid else None
    want = unroll_and_grads(ref, x, layout, valid_length)
    assert_same(unroll_and_grads(fused, x, layout, valid_length), want)


@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize("valid", [False, True])
def test_unroll_is_one_operator(kind, valid):
    cell = CELLS[kind][1](6, **CELLS[kind][2])
    cell.initialize()
    x = random((3, 5, 4), 0)
    valid_length = mx.nd.array([5, 1, 3]) if valid else None
    with mx.autograd.record():
        out, states = cell.unroll(5, x, layout="NTC", merge_outputs=True,
                                  valid_length=valid_length)
        joined = mx.nd.concat(out.reshape((3, -1)), *states, dim=1)
    recorded = mx.autograd.get_symbol(joined)
    out, states = cell.unroll(5, mx.sym.var("x"), layout="NTC", merge_outputs=True,
                              valid_length=mx.sym.var("len") if valid else None)
    graph = mx.sym.Group([out] + states)
    want = 0 if kind == "lstm_relu_fallback" else 1
    assert (fused_ops(recorded), fused_ops(graph)) == (want, want)


@pytest.mark.parametrize("layout", ["NTC", "TNC"])
@pytest.mark.parametrize("valid", [False, True])
@pytest.mark.parametrize("merge_outputs", [None, True, False])
@pytest.mark.parametrize("as_list", [False, True])
def test_unroll_arguments_and_results_as_gluon(as_list, merge_outputs, valid, layout,
                                               tmp_path):
    ref, fused = twin_cells("lstm", tmp_path, lambda cls: cls(6))
    x = random((3, 4, 4) if layout == "NTC" else (4, 3, 4), 1)
    if as_list:
        x = list(mx.nd.split(x, 4, axis=layout.find("T"), squeeze_axis=True))
    valid_length = mx.nd.array([4, 1, 2]) if valid else None
    begin = begin_states("lstm", 3, 6)
    for _ in range(2):  # the second time after the cells' own step counts
        want = unroll_and_grads(ref, x, layout, valid_length, begin, merge_outputs)
        got = unroll_and_grads(fused, x, layout, valid_length, begin, merge_outputs)
        assert_same(got, want)
        assert (fused._counter, fused._init_counter) == (ref._counter, ref._init_counter)


@pytest.mark.parametrize("kind", FUSED)
def test_empty_sequences_keep_their_begin_state(kind, tmp_path):
    # gluon's SequenceLast reads (and its backward writes) outside the array for a length of
    # 0, so gluon runs the other samples only, and the fused cell must not fall back to it.
    ref, fused = twin_cells(kind, tmp_path, lambda cls: cls(6, **CELLS[kind][2]))
    assert fused_ops(fused.unroll(5, mx.sym.var("x"), valid_length=mx.sym.var("len"))[0]) == 1
    lengths, empty, keep = [0, 1, 5, 0, 3], [0, 3], [1, 2, 4]
    rng = np.random.default_rng(2)
    x = mx.nd.array(rng.standard_normal((5, 5, 4)))
    begin = begin_states(kind, 5, 6)
    upstream = [rng.standard_normal((5, 5, 6))] + [rng.standard_normal((5, 6)) for _ in begin]
    (out, states), grads = unroll_and_grads(fused, x, "TNC", mx.nd.array(lengths), begin,
                                            upstream=upstream)
    (want_out, want_states), want_grads = unroll_and_grads(
        ref, x[:, keep], "TNC", mx.nd.array(lengths)[keep], [s[keep] for s in begin],
        upstream=[upstream[0][:, keep]] + [u[keep] for u in upstream[1:]])

    np.testing.assert_array_equal(out.asnumpy()[:, empty], 0)
    np.testing.assert_array_equal(grads["x"][0][:, empty], 0)
    for s, b, g, u in zip(states, begin, grads["begin_state"], upstream[1:]):
        np.testing.assert_array_equal(s.asnumpy()[empty], b.asnumpy()[empty])
        np.testing.assert_allclose(g[empty], u[empty], rtol=1e-6)
    got = ((out[:, keep], [s[keep] for s in states]),
           dict(grads, x=[grads["x"][0][:, keep]], begin_state=[g[keep] for g in
                                                                grads["begin_state"]]))
    assert_same(got, ((want_out, want_states), want_grads))


def stack(cell_cls, **kw):
    seq = mx.gluon.rnn.SequentialRNNCell()
    with seq.name_scope():
        seq.add(mx.gluon.rnn.BidirectionalCell(cell_cls(5, **kw), cell_cls(5, **kw)))
        seq.add(mx.gluon.rnn.DropoutCell(0.0))
        seq.add(mx.gluon.rnn.ResidualCell(cell_cls(10, **kw)))
        seq.add(mx.gluon.rnn.ZoneoutCell(cell_cls(10, **kw)))
    return seq


@pytest.mark.parametrize("merge_outputs", [None, True, False])
@pytest.mark.parametrize("layout", ["NTC", "TNC"])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_cells_compose_with_gluon_wrappers(kind, layout, merge_outputs, tmp_path):
    ref, fused = twin_cells(kind, tmp_path, lambda cls: stack(cls))
    x = random((6, 3, 4) if layout == "TNC" else (3, 6, 4), 1)
    # gluon's BidirectionalCell fails on NTC with valid_length (it concatenates NTC outputs
    # with TNC reversed ones).
    valid_length = mx.nd.array([6, 4, 1]) if layout == "TNC" else None
    want = unroll_and_grads(ref, x, layout, valid_length, merge_outputs=merge_outputs)
    assert_same(unroll_and_grads(fused, x, layout, valid_length, merge_outputs=merge_outputs),
                want)
    # One operator per direction for the bidirectional cell and the residual one; the
    # zoneout cell steps its cell.
    out, states = fused.unroll(6, mx.sym.var("x"), layout=layout, merge_outputs=True,
                               valid_length=mx.sym.var("len"))
    assert fused_ops(mx.sym.Group([out] + states)) == 2 + 1 + 6


class Unroll(mx.gluon.HybridBlock):
    """A parent block whose graph calls unroll."""

    def __init__(self, make_cell, length, layout, given_state):
        super().__init__()
        self._length, self._layout, self._given_state = length, layout, given_state
        with self.name_scope():
            self.cell = make_cell()

    def hybrid_forward(self, F, x, valid_length, *begin_state):
        return self.cell.unroll(self._length, x, layout=self._layout, merge_outputs=True,
                                begin_state=list(begin_state) if self._given_state else None,
                                valid_length=valid_length)


def block_and_grads(block, x, valid_length, begin_state):
    x, begin_state = leaves(x), leaves(begin_state)
    rng = np.random.default_rng(7)
    with mx.autograd.record():
        out, states = block(x, valid_length, *begin_state)
        loss = sum((p * mx.nd.array(rng.standard_normal(p.shape), dtype=p.dtype)).sum()
                   for p in [out] + states)
    loss.backward()
    grads = {"x": x.grad.asnumpy(), "begin_state": [s.grad.asnumpy() for s in begin_state]}
    grads.update({k[len(block.prefix):]: p.grad().asnumpy()
                  for k, p in block.collect_params().items()})
    return (out, states), grads


# gluon's symbolic begin_state is float32, so float64 needs given states.
@pytest.mark.parametrize("given_state, dtype", [(False, "float32"), (True, "float32"),
                                                (True, "float64")])
@pytest.mark.parametrize("layout", ["NTC", "TNC"])
@pytest.mark.parametrize("kind", FUSED + ["stack"])
def test_unroll_in_a_hybridized_parent_with_a_deferred_input_size(kind, layout, given_state,
                                                                   dtype, tmp_path):
    def make(fused):
        if kind == "stack":
            cls = (fusedrnn if fused else mx.gluon.rnn).GRUCell
            seq = mx.gluon.rnn.HybridSequentialRNNCell()
            with seq.name_scope():
                seq.add(mx.gluon.rnn.BidirectionalCell(cls(5), cls(5)))
                seq.add(mx.gluon.rnn.ResidualCell(cls(10)))
            return seq
        return CELLS[kind][1 if fused else 0](6, **CELLS[kind][2])

    fused = Unroll(lambda: make(True), 5, layout, given_state)
    fused.initialize(mx.init.Uniform(0.3))
    fused.cast(dtype)
    fused.hybridize()
    x = random((3, 5, 4) if layout == "NTC" else (5, 3, 4), 3, dtype)
    valid_length = mx.nd.array([5, 1, 3])
    state_sizes = [5, 5, 10] if kind == "stack" else [6] * STATES[kind]
    begin = ([random((3, h), 20 + k, dtype) for k, h in enumerate(state_sizes)]
             if given_state else [])
    got = block_and_grads(fused, x, valid_length, begin)
    fused.save_parameters(str(tmp_path / "p"))
    ref = Unroll(lambda: make(False), 5, layout, given_state)
    ref.cast(dtype)
    ref.load_parameters(str(tmp_path / "p"))
    ref.hybridize()
    tol = 1e-5 if dtype == "float32" else 1e-12
    assert_same(block_and_grads(fused, x, valid_length, begin), got, tol, tol / 10)
    assert_same(got, block_and_grads(ref, x, valid_length, begin), tol, tol / 10)


@pytest.mark.parametrize("hybridize", [False, True])
@pytest.mark.parametrize("kind", FUSED)
def test_float64(kind, hybridize, tmp_path):
    ref, fused = twin_cells(kind, tmp_path, lambda cls: cls(6, **CELLS[kind][2]))
    for cell in (ref, fused):
        cell.cast("float64")
        if hybridize:
            cell.hybridize()
    x = random((3, 5, 4), 4, "float64")
    begin = begin_states(kind, 3, 6, "float64")
    valid_length = mx.nd.array([5, 1, 3])
    want = unroll_and_grads(ref, x, "NTC", valid_length, begin)
    assert_same(unroll_and_grads(fused, x, "NTC", valid_length, begin), want, rtol=1e-12,
                atol=1e-12)


@pytest.mark.parametrize("kind", list(CELLS))
def test_steps_match_gluon(kind, tmp_path):
    ref, fused = twin_cells(kind, tmp_path, lambda cls: cls(6, **CELLS[kind][2]))
    x = random((5, 3, 4), 5)
    got, want = begin_states(kind, 3, 6), begin_states(kind, 3, 6)
    for t in range(5):
        got_out, got = fused(x[t], got)
        want_out, want = ref(x[t], want)
        for g, w in zip([got_out] + got, [want_out] + want):
            np.testing.assert_allclose(g.asnumpy(), w.asnumpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make", [lambda: fusedrnn.GRUCell(6, reset_after=False),
                                  lambda: fusedrnn.RNNCell(6)], ids=["gru_reset_before", "rnn"])
def test_unroll_equals_steps(make):
    cell = make()
    cell.initialize(mx.init.Uniform(0.3))
    x = random((5, 3, 4), 6)
    step_states = begin_states("gru", 3, 6)
    outputs, states = cell.unroll(5, x, begin_state=step_states, layout="TNC")
    for t in range(5):
        out, step_states = cell(x[t], step_states)
        np.testing.assert_allclose(outputs[t].asnumpy(), out.asnumpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(states[0].asnumpy(), step_states[0].asnumpy(), rtol=1e-5,
                               atol=1e-6)


def test_cell_grad_req_add_and_deferred_input_size():
    cell = fusedrnn.GRUCell(4)
    cell.initialize()
    cell.collect_params().setattr("grad_req", "add")
    x = mx.nd.ones((2, 3, 5))
    for _ in range(2):
        with mx.autograd.record():
            loss = cell.unroll(3, x, layout="NTC", merge_outputs=True)[0].sum()
        loss.backward()
    assert cell.i2h_weight.shape == (12, 5)
    twice = cell.h2h_weight.grad().asnumpy().copy()
    cell.collect_params().zero_grad()
    with mx.autograd.record():
        loss = cell.unroll(3, x, layout="NTC", merge_outputs=True)[0].sum()
    loss.backward()
    np.testing.assert_allclose(twice, 2 * cell.h2h_weight.grad().asnumpy(), rtol=1e-6)


@pytest.mark.parametrize("fused_first", [False, True])
def test_parameter_files_move_both_ways_and_trainer_steps_agree(fused_first, tmp_path):
    make = [lambda: mx.gluon.rnn.LSTM(6, num_layers=2, bidirectional=True),
            lambda: fusedrnn.LSTM(6, num_layers=2, bidirectional=True)]
    if fused_first:
        make.reverse()
    a, b = make[0](), make[1]()
    a.initialize(mx.init.Uniform(0.3))
    x = mx.nd.array(np.random.default_rng(2).standard_normal((5, 3, 4)))
    a(x)
    a.save_parameters(str(tmp_path / "p"))
    b.load_parameters(str(tmp_path / "p"))
    np.testing.assert_allclose(b(x).asnumpy(), a(x).asnumpy(), rtol=1e-5, atol=1e-6)
    for net in (a, b):
        trainer = mx.gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.5})
        for _ in range(3):
            with mx.autograd.record():
                loss = (net(x) ** 2).mean()
            loss.backward()
            trainer.step(3)
    pa, pb = a.collect_params(), b.collect_params()
    for (ka, va), (kb, vb) in zip(sorted(pa.items()), sorted(pb.items())):
        assert ka[len(a.prefix):] == kb[len(b.prefix):]
        np.testing.assert_allclose(vb.data().asnumpy(), va.data().asnumpy(), rtol=1e-4,
                                   atol=1e-5)


class _Decoder(mx.gluon.HybridBlock):
    """Steps a cell (wrapped in a ZoneoutCell) from gluon's begin_state inside a graph, where
    the states' batch size is left to shape inference."""

    def __init__(self, cell_cls, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.cell = mx.gluon.rnn.ZoneoutCell(cell_cls(6), zoneout_states=0.0)

    def hybrid_forward(self, F, x):
        states = self.cell.begin_state(batch_size=0, func=F.zeros)
        outs = []
        for t in range(3):
            out, states = self.cell(F.squeeze(F.slice_axis(x, axis=1, begin=t, end=t + 1),
                                              axis=1), states)
            outs.append(out)
        return F.stack(*outs, axis=1)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_steps_inside_hybridized_parent(kind, tmp_path):
    gluon_cls, fused_cls = CELLS[kind][0], CELLS[kind][1]
    ref = _Decoder(gluon_cls, prefix="dec_")
    ref.initialize(mx.init.Uniform(0.3))
    ref.hybridize()  # a batch size of 0 only works in a graph
    x = random((2, 3, 4), 7)
    want = ref(x)
    ref.save_parameters(str(tmp_path / "p"))
    fused = _Decoder(fused_cls, prefix="dec_")
    fused.load_parameters(str(tmp_path / "p"))
    fused.hybridize()
    np.testing.assert_allclose(fused(x).asnumpy(), want.asnumpy(), rtol=1e-5, atol=1e-6)


ARRAY_STEP_CELLS = {"lstm": lambda: fusedrnn.LSTMCell(7),
                    "gru": lambda: fusedrnn.GRUCell(7),
                    "gru_reset_before": lambda: fusedrnn.GRUCell(7, reset_after=False),
                    "rnn_tanh": lambda: fusedrnn.RNNCell(7),
                    "rnn_relu": lambda: fusedrnn.RNNCell(7, activation="relu")}


def counting_array_steps(monkeypatch):
    calls = []
    real = fusedrnn.cells._C._nd_cell_step

    def counted(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(bool(out))
        return out

    monkeypatch.setattr(fusedrnn.cells._C, "_nd_cell_step", counted)
    return calls


@pytest.mark.parametrize("hybridize", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("kind", list(ARRAY_STEP_CELLS))
def test_inference_steps_run_on_the_arrays(kind, batch, dtype, hybridize, monkeypatch):
    # Outside autograd a step skips the operator; it must equal the operator's step (under
    # autograd) and the NumPy reference, step after step, and leave the step count as gluon's.
    cell = ARRAY_STEP_CELLS[kind]()
    cell.initialize(mx.init.Uniform(0.4))
    cell.cast(dtype)
    if hybridize:
        cell.hybridize()
    mode = "gru" if kind.startswith("gru") else kind
    n_states = 2 if kind == "lstm" else 1
    x = random((4, batch, 3), 21, dtype)
    cell(x[0], begin_states("lstm", batch, 7, dtype)[:n_states])  # finishes deferred init
    cell.reset()
    calls = counting_array_steps(monkeypatch)
    params = {name: getattr(cell, name).data().asnumpy() for name in fusedrnn.cells._PARAMS}
    states = [random((batch, 7), 30 + k, dtype) for k in range(n_states)]
    want = [s.asnumpy() for s in states]
    recorded = states
    for t in range(4):
        out, states = cell(x[t], states)
        with mx.autograd.record():
            rec_out, recorded = cell(x[t], recorded)
        ref = fusedrnn.reference.forward(
            mode, x[t:t + 1].asnumpy(), params["i2h_weight"], params["h2h_weight"],
            params["i2h_bias"], params["h2h_bias"], want[0], want[1] if n_states == 2 else None,
            reset_after=kind != "gru_reset_before")
        want = [ref.hy] + ([ref.cy] if n_states == 2 else [])
        assert out is states[0] and out.dtype == np.dtype(dtype) and len(states) == n_states
        tol = dict(rtol=1e-5, atol=1e-6) if dtype == "float32" else dict(rtol=1e-12, atol=1e-13)
        for got, rec, ref_state in zip(states, recorded, want):
            np.testing.assert_allclose(got.asnumpy(), rec.asnumpy(), **tol)
            np.testing.assert_allclose(got.asnumpy(), ref_state, **tol)
    assert calls == [True] * 4
    assert cell._counter == 7  # gluon's count after reset() and 8 steps


def test_hybridized_cell_exports_after_inference_steps(tmp_path, monkeypatch):
    # The first call of a hybridized cell builds its graph (export needs it); the steps after
    # it run on the arrays. The exported graph computes the same step.
    cell = fusedrnn.GRUCell(6, input_size=4)
    cell.initialize(mx.init.Uniform(0.3))
    cell.hybridize()
    calls = counting_array_steps(monkeypatch)
    x, h = random((3, 4), 40), random((3, 6), 41)
    first, _ = cell(x, [h])
    second, _ = cell(x, [h])
    assert calls == [True]
    np.testing.assert_allclose(second.asnumpy(), first.asnumpy(), rtol=1e-6, atol=1e-7)
    cell.export(str(tmp_path / "cell"))
    names = [v for v in json.loads(open(tmp_path / "cell-symbol.json").read())["nodes"]
             if v["op"] == "null" and "weight" not in v["name"] and "bias" not in v["name"]]
    block = mx.gluon.SymbolBlock.imports(str(tmp_path / "cell-symbol.json"),
                                         [n["name"] for n in names],
                                         str(tmp_path / "cell-0000.params"))
    out = block(x, h)
    out = out[0] if isinstance(out, (list, tuple)) else out
    np.testing.assert_allclose(out.asnumpy(), first.asnumpy(), rtol=1e-6, atol=1e-7)


def test_inference_step_checks_arguments_by_name():
    cell = fusedrnn.LSTMCell(5, input_size=4)
    cell.initialize()
    x, h, c = mx.nd.ones((3, 4)), mx.nd.ones((3, 5)), mx.nd.zeros((3, 5))
    cases = [((x, [mx.nd.ones((3, 6)), c]), "states\\[0\\] has shape \\(3, 6\\)"),
             ((x, [h, mx.nd.ones((2, 5))]), "states\\[1\\] has shape \\(2, 5\\)"),
             ((x, [h]), "states must hold 2 arrays"),
             ((mx.nd.ones((3, 4, 1)), [h, c]), "inputs of a step must have shape \\[N, C\\]"),
             ((mx.nd.ones((3, 7)), [h, c]), "inputs has shape \\(3, 7\\); expected \\(3, 4\\)")]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            cell(*args)
    # Arrays the step cannot read directly go the operator's way, which refuses float16.
    with pytest.raises(TypeError, match="inputs must be float32 or float64"):
        cell(x.astype("float16"), [h, c])


def test_inference_steps_see_trainer_updates_and_pending_writes(tmp_path):
    # The step reads the parameters' memory as it is after the optimizer's update, and waits
    # for writes still queued on MXNet's threaded engine (run in a process that uses it).
    script = tmp_path / "run.py"
    script.write_text(
        "import mxnet as mx, numpy as np, fusedrnn\n"
        "cell = fusedrnn.GRUCell(64, input_size=32)\n"
        "cell.initialize(mx.init.Uniform(0.2))\n"
        "trainer = mx.gluon.Trainer(cell.collect_params(), 'sgd', {'learning_rate': 0.5})\n"
        "x, h = mx.nd.ones((4, 32)), mx.nd.zeros((4, 64))\n"
        "for _ in range(3):\n"
        "    with mx.autograd.record():\n"
        "        loss = cell(x, [h])[0].sum()\n"
        "    loss.backward()\n"
        "    trainer.step(1)\n"
        "    a = mx.nd.random.uniform(shape=(512, 512))\n"
        "    pending = mx.nd.dot(mx.nd.dot(a, a), mx.nd.ones((512, 32)))[:4] * 1e-6\n"
        "    got = cell(pending, [h])[0].asnumpy()\n"
        "    with mx.autograd.record():\n"
        "        want = cell(pending, [h])[0].asnumpy()\n"
        "    assert np.array_equal(got, want), abs(got - want).max()\n"
        "print('ok', mx.engine.__name__)\n")
    import os
    import subprocess
    import sys
    env = dict(os.environ, MXNET_ENGINE_TYPE="ThreadedEnginePerDevice")
    res = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-2000:]
