"""fusedrnn cells against mxnet.gluon.rnn cells (parameters moved by save/load), alone and
composed, plus Trainer steps and parameter files in both directions for the layers."""
import mxnet as mx
import numpy as np
import pytest

import fusedrnn

CELLS = {"lstm": (mx.gluon.rnn.LSTMCell, fusedrnn.LSTMCell, {}),
         "gru": (mx.gluon.rnn.GRUCell, fusedrnn.GRUCell, {}),
         "rnn_relu": (mx.gluon.rnn.RNNCell, fusedrnn.RNNCell, {"activation": "relu"}),
         "lstm_relu_fallback": (mx.gluon.rnn.LSTMCell, fusedrnn.LSTMCell,
                                {"activation": "relu"})}


def unroll_and_grads(cell, x, layout, valid_length):
    x = x.copy()
    x.attach_grad()
    with mx.autograd.record():
        out, states = cell.unroll(x.shape[layout.find("T")], x, layout=layout,
                                  merge_outputs=True, valid_length=valid_length)
        loss = (out * out).sum() + sum((s * s).sum() for s in states)
    loss.backward()
    grads = {k[len(cell.prefix):]: p.grad().asnumpy() for k, p in cell.collect_params().items()}
    return [out.asnumpy()] + [s.asnumpy() for s in states] + [x.grad.asnumpy()], grads


def twin_cells(kind, tmp_path, make):
    ref, fused = make(CELLS[kind][0]), make(CELLS[kind][1])
    ref.initialize(mx.init.Uniform(0.3))
    ref.unroll(2, mx.nd.zeros((3, 2, 4)), layout="NTC")
    ref.save_parameters(str(tmp_path / "p"))
    fused.load_parameters(str(tmp_path / "p"))
    return ref, fused


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
    x = mx.nd.array(np.random.default_rng(0).standard_normal(shape))
    valid_length = mx.nd.array([5, 2, 3]) if valid else None
    want, want_grads = unroll_and_grads(ref, x, layout, valid_length)
    got, got_grads = unroll_and_grads(fused, x, layout, valid_length)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    for name in want_grads:
        np.testing.assert_allclose(got_grads[name], want_grads[name], rtol=1e-5, atol=1e-6)


def stack(cell_cls, **kw):
    seq = mx.gluon.rnn.SequentialRNNCell()
    with seq.name_scope():
        seq.add(mx.gluon.rnn.BidirectionalCell(cell_cls(5, **kw), cell_cls(5, **kw)))
        seq.add(mx.gluon.rnn.DropoutCell(0.0))
        seq.add(mx.gluon.rnn.ResidualCell(cell_cls(10, **kw)))
    return seq


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_cells_compose_with_gluon_wrappers(kind, tmp_path):
    ref, fused = twin_cells(kind, tmp_path, lambda cls: stack(cls))
    x = mx.nd.array(np.random.default_rng(1).standard_normal((6, 3, 4)))
    want, want_grads = unroll_and_grads(ref, x, "TNC", mx.nd.array([6, 4, 1]))
    got, got_grads = unroll_and_grads(fused, x, "TNC", mx.nd.array([6, 4, 1]))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    for name in want_grads:
        np.testing.assert_allclose(got_grads[name], want_grads[name], rtol=1e-5, atol=1e-6)


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
