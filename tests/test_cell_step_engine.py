"""The cells' array step (a step outside autograd, fusedrnn._C._nd_cell_step) as one of
MXNet's engine operations: ordered with writes from other threads, on MXNet's threaded and
naive engines, on the inputs' device, and checking every argument's shape before it reads
memory."""
import json
import os
import subprocess
import sys
import threading

import mxnet as mx
import numpy as np
import pytest

import fusedrnn
from fusedrnn import reference

CELLS = {"lstm": fusedrnn.LSTMCell, "gru": fusedrnn.GRUCell, "rnn_tanh": fusedrnn.RNNCell}


def params_of(cell):
    return [getattr(cell, name).data().asnumpy().astype(np.float64)
            for name in fusedrnn.cells._PARAMS]


def reference_step(mode, x, states, params):
    """hy (and cy) of one step, by the NumPy reference in float64."""
    res = reference.forward(mode, x[None].astype(np.float64), *params,
                            *[s.astype(np.float64) for s in states] + [None] * (2 - len(states)))
    return [res.hy] + ([res.cy] if mode == "lstm" else [])


def uniform(rng, shape, scale):
    return rng.uniform(-scale, scale, shape).astype(np.float32)


@pytest.mark.parametrize("mode,writer", [("rnn_tanh", "set_data"), ("lstm", "slice"),
                                         ("gru", "set_data")])
def test_steps_see_one_weight_version_while_another_thread_writes(mode, writer):
    # Another thread flips h2h_weight between two versions while this one takes steps on the
    # same inputs: every step must have read one version whole, as an operator does (a step
    # reading memory while a write lands mixes the two).
    N, C, H = 16, 64, 256
    rng = np.random.default_rng(3)
    cell = CELLS[mode](H, input_size=C)
    cell.initialize(mx.init.Uniform(0.1))
    G = {"lstm": 4, "gru": 3, "rnn_tanh": 1}[mode]
    versions = [uniform(rng, (G * H, H), 0.1) for _ in range(2)]
    nd_versions = [mx.nd.array(v) for v in versions]
    cell.h2h_weight.set_data(nd_versions[0])
    x = mx.nd.array(uniform(rng, (N, C), 1.0))
    states = [mx.nd.array(uniform(rng, (N, H), 1.0)) for _ in cell.state_info()]
    params = params_of(cell)
    want = []
    for v in versions:
        params[1] = v.astype(np.float64)
        want.append(reference_step(mode, x.asnumpy(), [s.asnumpy() for s in states], params)[0])
    assert np.abs(want[0] - want[1]).max() > 0.1  # the versions are told apart

    weight = cell.h2h_weight.data()
    stop = threading.Event()

    def write():
        k = 0
        while not stop.is_set():
            k += 1
            if writer == "set_data":
                cell.h2h_weight.set_data(nd_versions[k % 2])
            else:
                weight[:] = nd_versions[k % 2]
            weight.wait_to_read()  # one write in flight at a time, not an ever longer queue

    thread = threading.Thread(target=write)
    thread.start()
    outs = []
    try:
        for _ in range(200):
            out, _ = cell(x, states)
            out.wait_to_read()  # as a decoding loop reads each step; lets the writer run
            outs.append(out)
    finally:
        stop.set()
        thread.join()
    seen, mixed = set(), []
    for i, out in enumerate(outs):
        got = out.asnumpy()
        match = [k for k in (0, 1) if np.allclose(got, want[k], rtol=1e-4, atol=1e-4)]
        if match:
            seen.add(match[0])
        else:
            mixed.append(i)
    assert not mixed, f"{len(mixed)} of 200 steps read neither weight version whole"
    assert seen == {0, 1}, "the writer never landed between steps: the test proves nothing"


ENGINE_SCRIPT = r"""
import gc, json
import mxnet as mx, numpy as np, fusedrnn
from fusedrnn import reference

rng = np.random.default_rng(5)
report = {}
for mode, cls in (("lstm", fusedrnn.LSTMCell), ("gru", fusedrnn.GRUCell),
                  ("rnn_relu", lambda H, **kw: fusedrnn.RNNCell(H, activation="relu", **kw))):
    N, C, H = 3, 24, 32
    cell = cls(H, input_size=C)
    cell.initialize(mx.init.Uniform(0.3))
    params = [getattr(cell, n).data().asnumpy().astype(np.float64)
              for n in fusedrnn.cells._PARAMS]
    a = mx.nd.array(rng.standard_normal((1024, 1024)))
    xs = rng.standard_normal((6, N, C))
    new = [mx.nd.array(rng.standard_normal((N, H))) for _ in cell.state_info()]
    want = [s.asnumpy().astype(np.float64) for s in new]
    worst = 0.0
    for t in range(6):
        # The inputs and states are still being written when the step is called (behind a
        # slow product), and the caller's handles to them are gone before the step may run.
        slow = mx.nd.dot(a, a)[:N] * 0
        x = slow[:, :C] + mx.nd.array(xs[t])
        states = [slow[:, :H] + s for s in new]
        out, new = cell(x, states)
        del x, states, slow
        gc.collect()
        res = reference.forward(mode, xs[t][None], *params, *want, *[None] * (2 - len(want)))
        want = [res.hy] + ([res.cy] if mode == "lstm" else [])
        assert out is new[0]
        for got, ref in zip(new, want):
            worst = max(worst, float(np.abs(got.asnumpy() - ref).max()))
    report[mode] = worst
mx.nd.waitall()
print(json.dumps(report))
"""


@pytest.mark.parametrize("engine", ["ThreadedEnginePerDevice", "NaiveEngine"])
def test_steps_on_threaded_and_naive_engine_match_the_reference(engine, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(ENGINE_SCRIPT)
    env = dict(os.environ, MXNET_ENGINE_TYPE=engine)
    res = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    worst = json.loads(res.stdout.strip().splitlines()[-1])
    assert set(worst) == {"lstm", "gru", "rnn_relu"}
    for mode, diff in worst.items():
        assert diff < 1e-5, (mode, diff)


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


def test_the_same_array_twice_and_views_of_one_array():
    # One array read through two arguments (the same handle, or two views of one buffer) is
    # two reads of one engine variable.
    rng = np.random.default_rng(8)
    cell = fusedrnn.LSTMCell(4, input_size=4)
    cell.initialize(mx.init.Uniform(0.5))
    s = mx.nd.array(rng.standard_normal((3, 2, 4)))
    for states in ([s[0], s[0]], [s[0], s[1]]):
        out, new = cell(s[2], states)
        want = reference_step("lstm", s[2].asnumpy(), [a.asnumpy() for a in states],
                              params_of(cell))
        for got, ref in zip(new, want):
            np.testing.assert_allclose(got.asnumpy(), ref, rtol=1e-5, atol=1e-6)
