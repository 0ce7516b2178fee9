"""fusedrnn.ZoneoutCell and VariationalDropoutCell against gluon's, given the same masks.

gluon's cells draw their masks step by step (ZoneoutCell: [N, H] per step for the output
and each state; VariationalDropoutCell: [N, C] / [N, H] once), fusedrnn's for the whole
sequence at once ([T, N, H]; the input and output masks as Dropout over the sequence with
the time axis shared), so their random draws differ. `FixedDropout` stands in for
mx.nd.Dropout and hands both the same masks, told apart by their rate: each regulariser
gets a rate of its own.
"""
import mxnet as mx
import numpy as np
import pytest
from mxnet.gluon.contrib.rnn import VariationalDropoutCell as GluonVariationalDropoutCell
from test_cells import assert_same, fused_ops, random, unroll_and_grads

import fusedrnn

P_OUT, P_STATES, P_IN, P_VSTATES, P_VOUT = 0.3, 0.4, 0.25, 0.45, 0.35
KINDS = {"lstm": (mx.gluon.rnn.LSTMCell, fusedrnn.LSTMCell),
         "gru": (mx.gluon.rnn.GRUCell, fusedrnn.GRUCell),
         "rnn": (mx.gluon.rnn.RNNCell, fusedrnn.RNNCell)}


class FixedDropout:
    """mx.nd.Dropout with masks fixed per rate: `masks[p]` is a list of [T, N, X] arrays
    (several for one rate: drawn in turn, zoneout's h then c), or one [N, X] array for a
    mask drawn once per sequence (variational). A call with `axes` (dropout of a whole
    sequence, the time axis shared) multiplies by the [N, X] mask."""

    def __init__(self, masks, layout):
        self.masks, self.layout, self.calls = masks, layout, {}

    def __call__(self, data, p=0.5, axes=(), **kwargs):
        mask = self.masks[p]
        if axes:
            time = self.layout.find("T")
            return data * mx.nd.array(np.expand_dims(mask, time), dtype=data.dtype)
        key = (p, data.ndim)  # whole sequences and steps counted apart
        k = self.calls[key] = self.calls.get(key, -1) + 1
        if not isinstance(mask, list):
            return mx.nd.array(mask, dtype=data.dtype)
        if data.ndim == 3:  # a whole sequence's
            return mx.nd.array(mask[k % len(mask)], dtype=data.dtype)
        # gluon's step `step`; a second stacked layer starts over at step 0, as the fused
        # layers draw the same masks again
        step, which = divmod(k, len(mask))
        return mx.nd.array(mask[which][step % len(mask[which])], dtype=data.dtype)


def draw(shape, p, seed):
    keep = np.random.default_rng(seed).random(shape) >= p
    return keep / (1 - p)


def twins(kind, tmp_path, wrap_gluon, wrap_fused, hidden=6, inputs=4):
    gluon_cls, fused_cls = KINDS[kind]
    ref, fused = wrap_gluon(gluon_cls(hidden)), wrap_fused(fused_cls(hidden))
    ref.initialize(mx.init.Uniform(0.3))
    ref.unroll(2, mx.nd.zeros((3, 2, inputs)), layout="NTC")
    ref.save_parameters(str(tmp_path / "p"))
    fused.load_parameters(str(tmp_path / "p"))
    return ref, fused


def both(ref, fused, x, layout, valid_length, monkeypatch, masks, **kwargs):
    """(fused, gluon) unroll results and gradients, in training, with the given masks."""
    results = []
    for cell in (fused, ref):
        monkeypatch.setattr(mx.nd, "Dropout", FixedDropout(masks, layout))
        results.append(unroll_and_grads(cell, x, layout, valid_length, **kwargs))
    return results


@pytest.mark.parametrize("layout", ["NTC", "TNC"])
@pytest.mark.parametrize("valid", [False, True])
@pytest.mark.parametrize("p_out,p_states", [(P_OUT, P_STATES), (P_OUT, 0), (0, P_STATES)])
@pytest.mark.parametrize("kind", list(KINDS))
def test_zoneout_matches_gluon(kind, p_out, p_states, valid, layout, monkeypatch, tmp_path):
    ref, fused = twins(kind, tmp_path,
                       lambda c: mx.gluon.rnn.ZoneoutCell(c, p_out, p_states),
                       lambda c: fusedrnn.ZoneoutCell(c, p_out, p_states))
    T, N, H = 5, 3, 6
    shape = (N, T, 4) if layout == "NTC" else (T, N, 4)
    states = 2 if kind == "lstm" else 1
    masks = {P_OUT: [draw((T, N, H), P_OUT, 1)],
             P_STATES: [draw((T, N, H), P_STATES, 2 + k) for k in range(states)]}
    valid_length = mx.nd.array([5, 1, 3]) if valid else None
    got, want = both(ref, fused, random(shape, 0), layout, valid_length, monkeypatch, masks)
    assert_same(got, want)


@pytest.mark.parametrize("layout", ["NTC", "TNC"])
@pytest.mark.parametrize("valid", [False, True])
@pytest.mark.parametrize("rates", [(P_IN, P_VSTATES, P_VOUT), (0, P_VSTATES, 0)])
@pytest.mark.parametrize("kind", list(KINDS))
def test_variational_dropout_matches_gluon(kind, rates, valid, layout, monkeypatch,
                                           tmp_path):
    ref, fused = twins(kind, tmp_path, lambda c: GluonVariationalDropoutCell(c, *rates),
                       lambda c: fusedrnn.VariationalDropoutCell(c, *rates))
    T, N, C, H = 5, 3, 4, 6
    shape = (N, T, C) if layout == "NTC" else (T, N, C)
    masks = {P_IN: draw((N, C), P_IN, 1), P_VSTATES: draw((N, H), P_VSTATES, 2),
             P_VOUT: draw((N, H), P_VOUT, 3)}
    valid_length = mx.nd.array([5, 1, 3]) if valid else None
    got, want = both(ref, fused, random(shape, 0), layout, valid_length, monkeypatch, masks)
    assert_same(got, want)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_zoneout_around_variational_dropout(kind, monkeypatch, tmp_path):
    """ZoneoutCell(VariationalDropoutCell(cell)): both inside one fused operator."""
    ref, fused = twins(
        kind, tmp_path,
        lambda c: mx.gluon.rnn.ZoneoutCell(
            GluonVariationalDropoutCell(c, P_IN, P_VSTATES, P_VOUT), P_OUT, P_STATES),
        lambda c: fusedrnn.ZoneoutCell(
            fusedrnn.VariationalDropoutCell(c, P_IN, P_VSTATES, P_VOUT), P_OUT, P_STATES))
    T, N, C, H = 6, 3, 4, 6
    states = 2 if kind == "lstm" else 1
    masks = {P_OUT: [draw((T, N, H), P_OUT, 1)],
             P_STATES: [draw((T, N, H), P_STATES, 2 + k) for k in range(states)],
             P_IN: draw((N, C), P_IN, 5), P_VSTATES: draw((N, H), P_VSTATES, 6),
             P_VOUT: draw((N, H), P_VOUT, 7)}
    got, want = both(ref, fused, random((N, T, C), 0), "NTC", None, monkeypatch, masks)
    assert_same(got, want)


def deepar_stack(cells, zoneout, order, p_outputs=0.0, hidden=5):
    """GluonTS DeepAR's RNN: two LSTMCells with state zoneout, the second residual: GluonTS
    0.14 puts its ZoneoutCell around the ResidualCell ("zoneout outside"), the issue's
    description the other way round."""
    stack = mx.gluon.rnn.HybridSequentialRNNCell()
    for k in range(2):
        cell = cells(hidden)
        if k and order == "zoneout outside":
            stack.add(zoneout(mx.gluon.rnn.ResidualCell(cell), p_outputs, 0.1))
        elif k:
            stack.add(mx.gluon.rnn.ResidualCell(zoneout(cell, p_outputs, 0.1)))
        else:
            stack.add(zoneout(cell, p_outputs, 0.1))
    return stack


@pytest.mark.parametrize("order,p_outputs,fused_layers", [
    ("zoneout outside", 0.0, 2), ("zoneout inside", 0.0, 2), ("zoneout inside", 0.2, 2),
    # the output track of a zoneout around a residual cell is not the kernels': the second
    # layer is gluon's unroll, one fused step per step (7)
    ("zoneout outside", 0.2, 1 + 7)])
def test_deepar_stack_matches_gluon(order, p_outputs, fused_layers, monkeypatch, tmp_path):
    T, N, C, H = 7, 4, 5, 5
    ref = deepar_stack(mx.gluon.rnn.LSTMCell, mx.gluon.rnn.ZoneoutCell, order, p_outputs)
    fused = deepar_stack(fusedrnn.LSTMCell, fusedrnn.ZoneoutCell, order, p_outputs)
    ref.initialize(mx.init.Uniform(0.3))
    ref.unroll(2, mx.nd.zeros((N, 2, C)), layout="NTC")
    ref.save_parameters(str(tmp_path / "p"))
    fused.load_parameters(str(tmp_path / "p"))
    # each layer draws its states' masks (h, c) at rate 0.1, and its output's at p_outputs
    masks = {0.1: [draw((T, N, H), 0.1, k) for k in range(2)],
             p_outputs: [draw((T, N, H), p_outputs, 5)]}
    got, want = both(ref, fused, random((N, T, C), 0), "NTC", mx.nd.array([7, 2, 5, 1]),
                     monkeypatch, masks)
    assert_same(got, want)
    out, _ = fused.unroll(T, mx.sym.var("x"), layout="NTC", merge_outputs=True)
    assert fused_ops(out) == fused_layers


@pytest.mark.parametrize("make", [
    lambda c: fusedrnn.ZoneoutCell(c, 0.2, 0.3),
    lambda c: fusedrnn.VariationalDropoutCell(c, 0.2, 0.3, 0.4),
    lambda c: fusedrnn.ZoneoutCell(fusedrnn.VariationalDropoutCell(c, 0.2, 0.3, 0.4), 0.2, 0.3),
    lambda c: fusedrnn.VariationalDropoutCell(mx.gluon.rnn.ResidualCell(c), 0.2, 0.3, 0.4),
])
def test_unroll_is_one_operator(make):
    cell = make(fusedrnn.LSTMCell(4))
    out, states = cell.unroll(6, mx.sym.var("x"), layout="NTC", merge_outputs=True)
    assert fused_ops(mx.sym.Group([out] + states)) == 1


@pytest.mark.parametrize("make", [
    lambda c: fusedrnn.ZoneoutCell(c, 0, 0),
    lambda c: fusedrnn.VariationalDropoutCell(c, 0, 0, 0),
    lambda c: fusedrnn.ZoneoutCell(c, 0.5, 0.5),
    lambda c: fusedrnn.VariationalDropoutCell(c, 0.5, 0.5, 0.5),
])
@pytest.mark.parametrize("hybridize", [False, True])
def test_rates_zero_and_inference_are_the_plain_cell(make, hybridize):
    """Rates 0, or any rates outside training: the plain cell's numbers."""
    plain = fusedrnn.LSTMCell(6)
    plain.initialize(mx.init.Uniform(0.3))
    plain.unroll(2, mx.nd.zeros((3, 2, 4)), layout="NTC")
    cell = make(fusedrnn.LSTMCell(6, params=plain.params))
    x = random((3, 5, 4), 1)
    want, want_states = plain.unroll(5, x, layout="NTC", merge_outputs=True)
    net = CellNet(cell)
    if hybridize:
        net.hybridize()
    got, got_states = net(x)
    np.testing.assert_allclose(got.asnumpy(), want.asnumpy(), rtol=1e-6, atol=1e-7)
    for g, w in zip(got_states, want_states):
        np.testing.assert_allclose(g.asnumpy(), w.asnumpy(), rtol=1e-6, atol=1e-7)


class CellNet(mx.gluon.HybridBlock):
    def __init__(self, cell, length=5):
        super().__init__()
        self.cell, self.length = cell, length

    def hybrid_forward(self, F, x):
        out, states = self.cell.unroll(self.length, x, layout="NTC", merge_outputs=True)
        return out, states


def recorded_masks(monkeypatch):
    """The masks each fused operator gets, recorded."""
    seen = []
    original = fusedrnn.cells.fused_layer

    def spy(F, *args, **kwargs):
        masks = args[5] if len(args) > 5 else kwargs.get("masks")
        if F is mx.nd:
            seen.append({k: v.asnumpy() for k, v in (masks or {}).items()})
        return original(F, *args, **kwargs)

    monkeypatch.setattr(fusedrnn.cells, "fused_layer", spy)
    return seen


@pytest.mark.parametrize("hybridize", [False, True])
def test_drawn_masks_have_the_rates_and_follow_the_seed(hybridize, monkeypatch):
    cell = fusedrnn.ZoneoutCell(fusedrnn.VariationalDropoutCell(
        fusedrnn.LSTMCell(64), drop_states=0.3), zoneout_outputs=0.2, zoneout_states=0.6)
    cell.initialize()
    x = random((16, 50, 8), 2)
    seen = recorded_masks(monkeypatch)

    def train():
        mx.random.seed(11)
        with mx.autograd.record():
            out, _ = net(x)
        return out.asnumpy()

    net = CellNet(cell, length=50)
    net(x)  # the deferred initialisation, which draws too
    if hybridize:
        net.hybridize()
        first, second = train(), train()
        np.testing.assert_array_equal(first, second)
        return  # the graph's masks are not Python-visible; the rates are checked imperatively
    first = train()
    masks = seen[-1]
    assert set(masks) == {"zoneout_y", "zoneout_h", "zoneout_c", "state_mask"}
    assert masks["zoneout_h"].shape == (50, 16, 64) and masks["state_mask"].shape == (16, 64)
    for name, p in [("zoneout_y", 0.2), ("zoneout_h", 0.6), ("zoneout_c", 0.6),
                    ("state_mask", 0.3)]:
        dropped = (masks[name] == 0).mean()
        assert abs(dropped - p) < 0.02 if name != "state_mask" else abs(dropped - p) < 0.05
        np.testing.assert_allclose(masks[name][masks[name] != 0], 1 / (1 - p), rtol=1e-6)
    # h and c draw masks of their own
    assert not np.array_equal(masks["zoneout_h"], masks["zoneout_c"])
    np.testing.assert_array_equal(train(), first)


def test_steps_after_unroll_are_gluons(tmp_path):
    """Decoding: steps of the fused ZoneoutCell are gluon's (here outside training)."""
    ref, fused = twins("lstm", tmp_path, lambda c: mx.gluon.rnn.ZoneoutCell(c, 0.3, 0.3),
                       lambda c: fusedrnn.ZoneoutCell(c, 0.3, 0.3))
    x = random((3, 5, 4), 3)
    for cell in (ref, fused):
        _, states = cell.unroll(5, x, layout="NTC", merge_outputs=True)
        out, states = cell(random((3, 4), 4), states)
        cell.result = out.asnumpy()
    np.testing.assert_allclose(fused.result, ref.result, rtol=1e-6, atol=1e-7)


def test_around_an_unfused_cell_it_is_gluons(monkeypatch, tmp_path):
    """LSTMCell(activation='relu') has no fused operator: gluon's own zoneout steps."""
    ref, fused = twins("lstm", tmp_path, lambda c: mx.gluon.rnn.ZoneoutCell(c, P_OUT, 0),
                       lambda c: fusedrnn.ZoneoutCell(c, P_OUT, 0))
    fused.base_cell._activation = "relu"
    ref.base_cell._activation = "relu"
    masks = {P_OUT: [draw((5, 3, 6), P_OUT, 1)]}
    got, want = both(ref, fused, random((3, 5, 4), 0), "NTC", None, monkeypatch, masks)
    assert_same(got, want)


@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_operator_masks_that_change_nothing(mode):
    """The operator drops masks that change nothing (zoneout masks without a 0, multiplying
    masks of ones: Dropout's masks outside training) and keeps the others, forward and
    backward alike."""
    from fusedrnn._op import fused_layer
    T, N, C, H = 5, 3, 4, 6
    G = 4 if mode == "lstm" else 3
    x, w_ih, w_hh = random((T, N, C), 1), random((G * H, C), 2), random((G * H, H), 3)
    b_ih, b_hh = random((G * H,), 4), random((G * H,), 5)
    states = [random((N, H), 6 + k) for k in range(2 if mode == "lstm" else 1)]

    def run(masks):
        args = [a.copy() for a in [x, w_ih, w_hh, b_ih, b_hh, *states]]
        for a in args:
            a.attach_grad()
        with mx.autograd.record():
            out = fused_layer(mx.nd, args[0], args[1:5], args[5:], masks=masks, mode=mode)
            loss = (out[0] * random(out[0].shape, 9)).sum() + out[1].sum()
        loss.backward()
        return [out[0].asnumpy()] + [a.grad.asnumpy() for a in args]

    plain = run(None)
    twos = mx.nd.full((T, N, H), 2.0)
    for same in [{"zoneout_h": twos, "zoneout_y": twos},
                 {"state_mask": mx.nd.ones((N, H)),
                  "recurrent_gate_masks": mx.nd.ones((G, N, H))}]:
        for got, want in zip(run(same), plain):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    scaled = run({"state_mask": mx.nd.full((N, H), 2.0)})
    assert not np.allclose(scaled[0], plain[0])


@pytest.mark.parametrize("make,name", [
    (lambda c: fusedrnn.ZoneoutCell(c, zoneout_outputs=1.5), "zoneout_outputs"),
    (lambda c: fusedrnn.ZoneoutCell(c, zoneout_states=-0.1), "zoneout_states"),
    (lambda c: fusedrnn.VariationalDropoutCell(c, drop_inputs="0.2"), "drop_inputs"),
    (lambda c: fusedrnn.VariationalDropoutCell(c, drop_states=2), "drop_states"),
    (lambda c: fusedrnn.VariationalDropoutCell(c, drop_outputs=-1), "drop_outputs"),
])
def test_bad_rates_are_refused_by_name(make, name):
    with pytest.raises(ValueError, match=name):
        make(fusedrnn.LSTMCell(4))


@pytest.mark.parametrize("mode,name,shape,message", [
    ("lstm", "zoneout_h", (5, 3, 5), r"zoneout_h has shape \(5, 3, 5\); expected \(5, 3, 6\)"),
    ("lstm", "state_mask", (3, 5), r"state_mask has shape \(3, 5\); expected \(3, 6\)"),
    ("gru", "input_gate_masks", (4, 3, 4), r"input_gate_masks has shape \(4, 3, 4\); expected \(3, 3, 4\)"),
    ("gru", "zoneout_c", (5, 3, 6), r"zoneout_c is only for mode 'lstm'"),
])
def test_operator_refuses_bad_masks_by_name(mode, name, shape, message):
    """The operator's mask inputs go through the kernels' contract: a clear MXNetError."""
    from fusedrnn._op import fused_layer
    T, N, C, H = 5, 3, 4, 6
    G = 4 if mode == "lstm" else 3
    states = [mx.nd.zeros((N, H)) for _ in range(2 if mode == "lstm" else 1)]
    weights = [random((G * H, C), 1), random((G * H, H), 2), random((G * H,), 3),
               random((G * H,), 4)]
    with pytest.raises(mx.base.MXNetError, match=message):
        fused_layer(mx.nd, random((T, N, C), 0), weights, states,
                    masks={name: mx.nd.ones(shape)}, mode=mode)[0].wait_to_read()


@pytest.mark.parametrize("order", ["zoneout outside", "zoneout inside"])
def test_deepar_stack_grad_req_add_in_static_graph(order):
    """grad_req='add' in a static_alloc graph: two backward passes add up to twice one pass
    with grad_req='write' (the same masks: the same seed before each forward). lib_api never
    tells an operator to add."""
    T, N, C = 9, 4, 5
    net = CellNet(deepar_stack(fusedrnn.LSTMCell, fusedrnn.ZoneoutCell, order), length=T)
    net.initialize(mx.init.Uniform(0.3))
    x = random((N, T, C), 0)
    net(x)
    net.hybridize(static_alloc=True, static_shape=True)
    params = list(net.collect_params().values())

    def backward(times, req):
        for p in params:
            p.grad_req = req
            p.zero_grad()
        for _ in range(times):
            mx.random.seed(3)
            with mx.autograd.record():
                out, _ = net(x)
                loss = (out * random(out.shape, 1)).sum()
            loss.backward()
        return [p.grad().asnumpy() for p in params]

    once = backward(1, "write")
    assert any(np.abs(g).max() > 0 for g in once)
    for got, want in zip(backward(2, "add"), once):
        np.testing.assert_allclose(got, 2 * want, rtol=1e-5, atol=1e-6)
