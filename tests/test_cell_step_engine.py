"""The cells' array step (a step outside autograd, fusedrnn._C._nd_cell_step): on the inputs'
device, and checking every argument's shape before it reads memory."""
import mxnet as mx
import numpy as np
import pytest

import fusedrnn
from fusedrnn import reference


def reference_step(mode, x, states, params):
    """hy (and cy) of one step, by the NumPy reference in float64."""
    res = reference.forward(mode, x[None].astype(np.float64), *params,
                            *[s.astype(np.float64) for s in states] + [None] * (2 - len(states)))
    return [res.hy] + ([res.cy] if mode == "lstm" else [])


def test_steps_on_another_cpu_device_stay_there():
    cell = fusedrnn.GRUCell(6, input_size=4)
    cell.initialize(mx.init.Uniform(0.3), ctx=mx.cpu(1))
    x = mx.nd.ones((2, 4), ctx=mx.cpu(1))
    out, states = cell(x, cell.begin_state(2, ctx=mx.cpu(1)))
    assert out.context == mx.cpu(1) and states[0].context == mx.cpu(1)
    out, states = cell(out[:, :4], states)  # the next step takes the outputs where they are
    assert out.context == mx.cpu(1)


def stacked_lstm(ctx):
    seq = mx.gluon.rnn.SequentialRNNCell()
    seq.add(fusedrnn.LSTMCell(8, input_size=5))
    seq.add(fusedrnn.LSTMCell(6, input_size=8))
    seq.initialize(mx.init.Uniform(0.4), ctx=ctx)
    return seq


def test_stacked_cells_on_cpu1_equal_cpu0(tmp_path):
    on1 = stacked_lstm(mx.cpu(1))
    on1.save_parameters(str(tmp_path / "p"))
    on0 = stacked_lstm(mx.cpu(0))
    on0.load_parameters(str(tmp_path / "p"), ctx=mx.cpu(0))
    xs = np.random.default_rng(2).standard_normal((4, 3, 5)).astype(np.float32)
    results = {}
    for ctx, seq in ((mx.cpu(0), on0), (mx.cpu(1), on1)):
        states = seq.begin_state(batch_size=3, ctx=ctx)
        steps = []
        for t in range(4):
            out, states = seq(mx.nd.array(xs[t], ctx=ctx), states)
            steps.append(out)
        outs, unrolled_states = seq.unroll(4, mx.nd.array(xs, ctx=ctx), layout="TNC",
                                           merge_outputs=True)
        for a in steps + states + [outs] + unrolled_states:
            assert a.context == ctx
        results[ctx] = [a.asnumpy() for a in steps + states + [outs] + unrolled_states]
    for a, b in zip(results[mx.cpu(0)], results[mx.cpu(1)]):
        np.testing.assert_array_equal(a, b)
    # Steps and unroll agree with each other too.
    np.testing.assert_allclose(np.stack(results[mx.cpu(1)][:4]), results[mx.cpu(1)][8],
                               rtol=1e-5, atol=1e-6)


# One LSTM step's arguments (N = 2, C = 3, H = 5, G = 4) with one of them replaced.
GOOD = {"i2h_weight": (20, 3), "h2h_weight": (20, 5), "i2h_bias": (20,), "h2h_bias": (20,),
        "inputs": (2, 3), "states[0]": (2, 5), "states[1]": (2, 5)}
BAD_SHAPES = [
    ("i2h_weight", (19, 3), r"i2h_weight has shape \(19, 3\); expected \(20, 3\)"),
    ("i2h_weight", (21, 3), r"i2h_weight has shape \(21, 3\); expected \(20, 3\)"),
    ("i2h_weight", (1, 3), r"i2h_weight has shape \(1, 3\); expected \(20, 3\)"),
    ("i2h_weight", (60,), r"i2h_weight must have 2 dimensions"),
    ("h2h_weight", (20, 4), r"h2h_weight has shape \(20, 4\); expected \(20, 5\)"),
    ("h2h_weight", (20, 6), r"h2h_weight has shape \(20, 6\); expected \(20, 5\)"),
    ("h2h_weight", (18, 5), r"h2h_weight has 18 rows; expected a positive multiple of 4"),
    ("h2h_weight", (100,), r"h2h_weight must have 2 dimensions"),
    ("i2h_bias", (19,), r"i2h_bias has shape \(19,\); expected \(20,\)"),
    ("i2h_bias", (20, 1), r"i2h_bias has shape \(20, 1\); expected \(20,\)"),
    ("h2h_bias", (21,), r"h2h_bias has shape \(21,\); expected \(20,\)"),
    ("inputs", (2, 4), r"inputs has shape \(2, 4\); expected \(2, 3\)"),
    ("inputs", (2, 3, 1), r"inputs of a step must have shape \[N, C\]"),
    ("states[0]", (2, 4), r"states\[0\] has shape \(2, 4\); expected \(2, 5\)"),
    ("states[0]", (3, 5), r"states\[0\] has shape \(3, 5\); expected \(2, 5\)"),
    ("states[1]", (2, 6), r"states\[1\] has shape \(2, 6\); expected \(2, 5\)"),
    ("states[1]", (10,), r"states\[1\] has shape \(10,\); expected \(2, 5\)"),
]


def step_arrays(replace=None, shape=None, seed=0):
    rng = np.random.default_rng(seed)
    return {name: mx.nd.array(rng.uniform(-0.5, 0.5, shape if name == replace else good))
            for name, good in GOOD.items()}


def nd_step(arrays):
    a = arrays
    return fusedrnn._C._nd_cell_step(
        "lstm", True, a["inputs"].handle.value,
        [a["states[0]"].handle.value, a["states[1]"].handle.value],
        [a[n].handle.value for n in ("i2h_weight", "h2h_weight", "i2h_bias", "h2h_bias")])


def wrap(handles):
    return [mx.nd.NDArray(mx.base.NDArrayHandle(h)) for h in handles]


@pytest.mark.parametrize("name,shape,message", BAD_SHAPES)
def test_a_wrong_shape_is_refused_by_name_before_any_memory_is_read(name, shape, message):
    with pytest.raises(ValueError, match=message):
        nd_step(step_arrays(name, shape))


def test_a_refused_step_leaves_later_steps_and_the_engine_intact():
    for name, shape, _ in BAD_SHAPES:
        with pytest.raises(ValueError):
            nd_step(step_arrays(name, shape))
    arrays = step_arrays(seed=4)
    hy, cy = wrap(nd_step(arrays))
    want = reference_step("lstm", arrays["inputs"].asnumpy(),
                          [arrays["states[0]"].asnumpy(), arrays["states[1]"].asnumpy()],
                          [arrays[n].asnumpy().astype(np.float64)
                           for n in ("i2h_weight", "h2h_weight", "i2h_bias", "h2h_bias")])
    np.testing.assert_allclose(hy.asnumpy(), want[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cy.asnumpy(), want[1], rtol=1e-5, atol=1e-6)
    mx.nd.waitall()  # no error was left behind in MXNet's engine


def test_a_cell_with_a_wrong_parameter_refuses_the_step_by_name():
    # A parameter array of the wrong size (here put in place behind gluon's back) is refused
    # by the step, not read past its end.
    cell = fusedrnn.LSTMCell(5, input_size=3)
    cell.initialize()
    x, states = mx.nd.ones((2, 3)), cell.begin_state(2)
    cell(x, states)
    cell.i2h_weight._data[0] = mx.nd.ones((19, 3))
    with pytest.raises(ValueError, match=r"i2h_weight has shape \(19, 3\); expected \(20, 3\)"):
        cell(x, states)
