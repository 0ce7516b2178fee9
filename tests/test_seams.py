"""Where fusedrnn meets MXNet: gradients that MXNet sums (grad_req='add', inputs used 8 or
more times in a static_alloc graph, where MXNet adds in place), graphs built and cached once
and used otherwise later, symbolic shape and type inference, numpy mode, sparse states.
Every result is compared with mxnet.gluon.rnn / mx.sym.RNN from the same weights."""
import json
import os
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon
from mxnet.gluon import contrib

import fusedrnn

CELLS = {"lstm": (gluon.rnn.LSTMCell, fusedrnn.LSTMCell),
         "gru": (gluon.rnn.GRUCell, fusedrnn.GRUCell),
         "rnn": (gluon.rnn.RNNCell, fusedrnn.RNNCell)}
LAYERS = {"lstm": (gluon.rnn.LSTM, fusedrnn.LSTM), "gru": (gluon.rnn.GRU, fusedrnn.GRU),
          "rnn": (gluon.rnn.RNN, fusedrnn.RNN)}


def assert_grads_equal(got, want, rtol=1e-4, atol=1e-5):
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=rtol, atol=atol, err_msg=name)


def twins(build, ref_cls, fused_cls, tmp_path, init_args):
    """The same network on gluon's class and on fusedrnn's, with the same parameters."""
    ref, fused = build(ref_cls), build(fused_cls)
    ref.initialize(mx.init.Uniform(0.3))
    ref(*init_args)
    ref.save_parameters(str(tmp_path / "twin.params"))
    fused.load_parameters(str(tmp_path / "twin.params"))
    return ref, fused


def train_grads(net, x, seed=0, passes=1, params=None):
    """Parameter and input gradients of `passes` backward passes with one random upstream
    gradient (the same draws for every net and every pass)."""
    params = params if params is not None else net.collect_params()
    prefix = getattr(net, "prefix", "")
    x = x.copy()
    x.attach_grad()
    head = None
    for _ in range(passes):
        mx.random.seed(seed)
        with autograd.record():
            y = net(x)
        if head is None:
            head = mx.nd.array(np.random.default_rng(seed).standard_normal(y.shape))
        y.backward(head)
    grads = {name[len(prefix):]: p.grad().asnumpy()
             for name, p in params.items() if p.grad_req != "null"}
    grads["x"] = x.grad.asnumpy()
    return grads


# ------------------------------------------------------------------------------------------
# Gradients that MXNet sums in place
# ------------------------------------------------------------------------------------------

class Stepper(gluon.HybridBlock):
    """A cell stepped `steps` times (each step's weights are one more use of each weight)."""

    def __init__(self, make_cell, steps, **kwargs):
        super().__init__(**kwargs)
        self.steps = steps
        with self.name_scope():
            self.cell = make_cell()

    def hybrid_forward(self, F, x):
        # (a graph infers the batch size; arrays need it)
        batch = x.shape[0] if F is mx.nd else 0
        states = self.cell.begin_state(batch_size=batch, func=F.zeros)
        outs = []
        for t in range(self.steps):
            step = F.squeeze(F.slice_axis(x, axis=1, begin=t, end=t + 1), axis=1)
            out, states = self.cell(step, states)
            outs.append(out)
        return F.stack(*outs, axis=1)


@pytest.mark.parametrize("steps", [7, 8, 9, 20])
@pytest.mark.parametrize("mode", list(CELLS))
def test_cell_stepped_in_a_static_alloc_graph(mode, steps, tmp_path):
    """MXNet sums the gradients of an input used MXNET_EXEC_INPLACE_GRAD_SUM_CAP (8) or more
    times in place, asking the last operators to add: the fused cell's weights must still
    get the sum (their h2h gradient used to come out as the first step's only)."""
    def build(cls):
        net = Stepper(lambda: cls(6, input_size=5, prefix="cell_"), steps, prefix="net_")
        net.hybridize(static_alloc=True, static_shape=True)
        return net

    x = mx.nd.array(np.random.default_rng(1).standard_normal((3, steps, 5)))
    ref, fused = twins(build, *CELLS[mode], tmp_path, [x])
    assert_grads_equal(train_grads(fused, x), train_grads(ref, x))


@pytest.mark.parametrize("cap", [1, 3])
def test_cell_stepped_with_another_inplace_sum_cap(cap):
    """fusedrnn shares one identity among fewer uses than MXNet's cap: with the cap set
    lower (MXNet reads it once per process, hence a new process) the sums stay right."""
    env = dict(os.environ, MXNET_EXEC_INPLACE_GRAD_SUM_CAP=str(cap))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
           "-k", "test_cell_stepped_in_a_static_alloc_graph and (lstm or gru)"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:]


class DeepARStack(gluon.HybridBlock):
    """GluonTS DeepAR's default stack: 2 LSTMCells in a HybridSequentialRNNCell, ZoneoutCell
    on both, ResidualCell on the second, unrolled by the cells' own step loop."""

    def __init__(self, cell_cls, steps, wrap="zoneout", **kwargs):
        super().__init__(**kwargs)
        self.steps = steps
        with self.name_scope():
            self.rnn = gluon.rnn.HybridSequentialRNNCell()
            for k in range(2):
                cell = cell_cls(8, input_size=5 if k == 0 else 8, prefix=f"lstm{k}_")
                if k == 1:
                    cell = gluon.rnn.ResidualCell(cell)
                if wrap == "zoneout":
                    cell = gluon.rnn.ZoneoutCell(cell, zoneout_states=0.1)
                elif wrap == "variational":
                    cell = contrib.rnn.VariationalDropoutCell(cell, drop_inputs=0.2,
                                                              drop_states=0.2,
                                                              drop_outputs=0.1)
                self.rnn.add(cell)

    def hybrid_forward(self, F, x):
        out, _ = self.rnn.unroll(self.steps, x, layout="NTC", merge_outputs=True)
        return out


@pytest.mark.parametrize("wrap", ["zoneout", "variational"])
@pytest.mark.parametrize("steps", [8, 20])
def test_deepar_stack_in_a_static_alloc_graph(wrap, steps, tmp_path):
    """ZoneoutCell / VariationalDropoutCell around fusedrnn cells and a ResidualCell,
    hybridized with static_alloc and static_shape as GluonTS does: the same gradients as
    with gluon's cells, random masks included (drawn from the same seed)."""
    def build(cls):
        net = DeepARStack(cls, steps, wrap, prefix="deepar_")
        net.hybridize(static_alloc=True, static_shape=True)
        return net

    x = mx.nd.array(np.random.default_rng(2).standard_normal((4, steps, 5)))
    ref, fused = twins(build, gluon.rnn.LSTMCell, fusedrnn.LSTMCell, tmp_path, [x])
    assert_grads_equal(train_grads(fused, x, seed=3), train_grads(ref, x, seed=3))


class Repeated(gluon.HybridBlock):
    """A layer applied to `uses` slices of the input (each application reuses its weights)."""

    def __init__(self, make_layer, uses, **kwargs):
        super().__init__(**kwargs)
        self.uses = uses
        with self.name_scope():
            self.rnn = make_layer()

    def hybrid_forward(self, F, x):
        return F.concat(*[self.rnn(F.slice_axis(x, axis=0, begin=2 * k, end=2 * k + 2))
                          for k in range(self.uses)], dim=0)


@pytest.mark.parametrize("uses", [8, 11])
@pytest.mark.parametrize("mode", list(LAYERS))
def test_layer_applied_many_times_in_a_static_alloc_graph(mode, uses, tmp_path):
    def build(cls):
        net = Repeated(lambda: cls(6, num_layers=2, input_size=5, prefix="rnn_"), uses,
                       prefix="net_")
        net.hybridize(static_alloc=True, static_shape=True)
        return net

    x = mx.nd.array(np.random.default_rng(4).standard_normal((2 * uses, 3, 5)))
    ref, fused = twins(build, *LAYERS[mode], tmp_path, [x])
    assert_grads_equal(train_grads(fused, x), train_grads(ref, x))


def add_after_write(ref, fused, x, once):
    """Sets grad_req='add' on both nets' parameters (after `once`, fused's gradients of one
    pass under 'write', cached its graph) and checks that fused's two passes give twice
    `once`; returns their gradients."""
    for net in (ref, fused):
        net.collect_params().setattr("grad_req", "add")
        net.collect_params().zero_grad()
    twice = train_grads(fused, x, passes=2)
    for name in once:
        if name != "x":
            np.testing.assert_allclose(twice[name], 2 * once[name], rtol=1e-5, atol=1e-6,
                                       err_msg=name)
    return twice


@pytest.mark.parametrize("hybridize", [None, "plain", "static"])
def test_grad_req_add_two_passes_are_twice_one(hybridize, tmp_path):
    """grad_req='add' on the parameters, set after the graph was built and cached under
    'write' (a cache must not freeze grad_req), and on the input."""
    def build(cls):
        net = Stepper(lambda: cls(6, input_size=5, prefix="cell_"), 9, prefix="net_")
        if hybridize:
            net.hybridize(static_alloc=hybridize == "static",
                          static_shape=hybridize == "static")
        return net

    x = mx.nd.array(np.random.default_rng(5).standard_normal((3, 9, 5)))
    ref, fused = twins(build, gluon.rnn.GRUCell, fusedrnn.GRUCell, tmp_path, [x])
    once = train_grads(fused, x)  # builds and caches the graph under 'write'
    twice = add_after_write(ref, fused, x, once)
    want = train_grads(ref, x, passes=2)
    want.pop("x"), twice.pop("x")
    assert_grads_equal(twice, want)


@pytest.mark.parametrize("hybridize", [None, "plain", "static"])
@pytest.mark.parametrize("mode", list(LAYERS))
def test_layer_grad_req_write_then_add(mode, hybridize, tmp_path):
    """A layer's own graph (and its imperative call) passes weights whose gradients MXNet
    only writes straight to the operator; set to 'add' after that graph was cached, two
    passes must give twice one, as gluon's layer does."""
    def build(cls):
        layer = cls(6, num_layers=2, bidirectional=True, input_size=5, prefix="rnn_")
        if hybridize:
            layer.hybridize(static_alloc=hybridize == "static",
                            static_shape=hybridize == "static")
        return layer

    x = mx.nd.array(np.random.default_rng(8).standard_normal((4, 3, 5)))
    ref, fused = twins(build, *LAYERS[mode], tmp_path, [x])
    once = train_grads(fused, x)
    assert_grads_equal(once, train_grads(ref, x))
    add_after_write(ref, fused, x, once)


def _add_twice(run, arrays):
    """Gradients of two backward passes into arrays marked grad_req='add', and of one."""
    grads = []
    for passes in (1, 2):
        leaves = [a.copy() for a in arrays]
        for a in leaves:
            a.attach_grad(grad_req="add")
        for _ in range(passes):
            with autograd.record():
                out = run(*leaves)
            out.backward(mx.nd.array(np.random.default_rng(6).standard_normal(out.shape)))
        grads.append([a.grad.asnumpy() for a in leaves])
    return grads


@pytest.mark.parametrize("what", ["layer_tnc", "layer_states", "cell_step_states",
                                  "cell_unroll_tnc", "nd_rnn"])
def test_grad_req_add_on_arrays_that_feed_the_operator(what):
    """Arrays that reach a fusedrnn operator directly (TNC data, states) with
    grad_req='add': the second backward adds to the first."""
    rng = np.random.default_rng(7)
    x = mx.nd.array(rng.standard_normal((4, 3, 5)))
    h = mx.nd.array(rng.standard_normal((1, 3, 6)))
    c = mx.nd.array(rng.standard_normal((1, 3, 6)))
    if what.startswith("layer"):
        layer = fusedrnn.LSTM(6, input_size=5)
        layer.initialize()
        if what == "layer_tnc":
            run, arrays = (lambda x: layer(x)), [x]
        else:
            run, arrays = (lambda x, h, c: layer(x, [h, c])[0]), [x, h, c]
    elif what.startswith("cell"):
        cell = fusedrnn.LSTMCell(6, input_size=5)
        cell.initialize()
        if what == "cell_step_states":
            run, arrays = (lambda x, h, c: cell(x, [h, c])[0]), [x[0], h[0], c[0]]
        else:
            run = lambda x, h, c: cell.unroll(4, x, [h, c], layout="TNC",  # noqa: E731
                                              merge_outputs=True)[0]
            arrays = [x, h[0], c[0]]
    else:
        size = 4 * 6 * (5 + 6 + 2)
        params = mx.nd.array(rng.standard_normal(size) * 0.3)
        run = lambda x, p, h, c: fusedrnn.nd.RNN(x, p, h, c, state_size=6,  # noqa: E731
                                                 mode="lstm")
        arrays = [x, params, h, c]
    once, twice = _add_twice(run, arrays)
    for k, (a, b) in enumerate(zip(once, twice)):
        assert np.abs(a).max() > 0
        np.testing.assert_allclose(b, 2 * a, rtol=1e-5, atol=1e-6, err_msg=f"array {k}")


@pytest.mark.parametrize("grad_req", ["write", "add"])
def test_symbolic_executor_over_a_fused_unroll(grad_req):
    """mx.sym code: a fused cell's unroll graph bound by the executor, every argument with
    grad_req 'add' (two backward passes) or 'write', against gluon's cell."""
    grads = {}
    for cls in (gluon.rnn.LSTMCell, fusedrnn.LSTMCell):
        cell = cls(6, prefix="lstm_")
        out, _ = cell.unroll(5, mx.sym.var("data"), layout="NTC", merge_outputs=True)
        exe = out.simple_bind(mx.cpu(), data=(3, 5, 4), grad_req=grad_req)
        rng = np.random.default_rng(8)
        for name in sorted(exe.arg_dict):
            exe.arg_dict[name][:] = rng.standard_normal(exe.arg_dict[name].shape) * 0.3
        head = mx.nd.array(rng.standard_normal((3, 5, 6)))
        for _ in range(2 if grad_req == "add" else 1):
            exe.forward(is_train=True)
            exe.backward(head)
        grads[cls] = {k: v.asnumpy() for k, v in exe.grad_dict.items()}
    assert_grads_equal(grads[fusedrnn.LSTMCell], grads[gluon.rnn.LSTMCell])


# ------------------------------------------------------------------------------------------
# Graphs, shapes and types
# ------------------------------------------------------------------------------------------

def sym_rnn(impl, mode, **kw):
    args = [mx.sym.var(n) for n in ("data", "parameters", "state")]
    if mode == "lstm":
        args.append(mx.sym.var("state_cell"))
    return impl(*args, mode=mode, **kw)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("mode,layers,bidirectional", [("lstm", 2, True), ("gru", 1, False),
                                                       ("rnn_tanh", 3, False)])
def test_sym_rnn_infers_shapes_and_types_from_data(mode, layers, bidirectional, dtype):
    """simple_bind(data=...) with the parameters and states left as plain Variables, as
    with mx.sym.RNN: the same argument shapes and dtypes, and the same outputs."""
    kw = dict(state_size=7, num_layers=layers, bidirectional=bidirectional,
              state_outputs=True)
    binds = {}
    for impl in (mx.sym.RNN, fusedrnn.sym.RNN):
        binds[impl] = sym_rnn(impl, mode, **kw).simple_bind(
            mx.cpu(), data=(5, 3, 4), type_dict={"data": dtype}, grad_req="null")
    want, got = binds[mx.sym.RNN], binds[fusedrnn.sym.RNN]
    assert {k: (v.shape, v.dtype) for k, v in got.arg_dict.items()} == \
        {k: (v.shape, v.dtype) for k, v in want.arg_dict.items()}
    rng = np.random.default_rng(9)
    for name in sorted(want.arg_dict):
        value = rng.standard_normal(want.arg_dict[name].shape) * 0.3
        want.arg_dict[name][:] = value
        got.arg_dict[name][:] = value
    for w, g in zip(want.forward(), got.forward()):
        np.testing.assert_allclose(g.asnumpy(), w.asnumpy(), rtol=1e-5, atol=1e-6)


def test_sym_rnn_partial_inference_and_names():
    """Inputs left out become Variables named as mx.sym.RNN names them; infer_shape_partial
    from data alone fills in what mx.sym.RNN's fills in."""
    for kw in (dict(name="rnn"), dict(name="enc", use_sequence_length=True)):
        want = mx.sym.RNN(state_size=6, num_layers=2, mode="lstm", **kw)
        got = fusedrnn.sym.RNN(state_size=6, num_layers=2, mode="lstm", **kw)
        assert got.list_arguments() == want.list_arguments()
        assert got.list_outputs() == want.list_outputs()
    want = mx.sym.RNN(state_size=6, num_layers=1, mode="gru", name="rnn", state_outputs=True)
    got = fusedrnn.sym.RNN(state_size=6, num_layers=1, mode="gru", name="rnn",
                           state_outputs=True)
    assert got.list_outputs() == want.list_outputs() == ["rnn_output", "rnn_state_output"]
    want = sym_rnn(mx.sym.RNN, "lstm", state_size=6, num_layers=2)
    got = sym_rnn(fusedrnn.sym.RNN, "lstm", state_size=6, num_layers=2)
    assert got.infer_shape_partial(data=(5, 3, 4)) == want.infer_shape_partial(data=(5, 3, 4))


def test_module_with_fused_rnn_cell(monkeypatch):
    """mx.rnn.FusedRNNCell + Module (symbolic training code) on fusedrnn.sym.RNN: binds with
    the parameters' shapes and dtypes inferred, and one SGD step gives MXNet's parameters."""
    def run():
        cell = mx.rnn.FusedRNNCell(6, num_layers=2, mode="gru", prefix="rnn_")
        out, _ = cell.unroll(5, mx.sym.var("data"), layout="NTC", merge_outputs=True)
        loss = mx.sym.MakeLoss(mx.sym.sum(out * mx.sym.var("w")))
        mod = mx.mod.Module(loss, data_names=["data", "w"], label_names=None)
        mod.bind(data_shapes=[("data", (3, 5, 4)), ("w", (3, 5, 6))], for_training=True)
        mx.random.seed(10)
        mod.init_params(mx.init.Uniform(0.2))
        mod.init_optimizer(optimizer="sgd", optimizer_params={"learning_rate": 0.1})
        rng = np.random.default_rng(11)
        batch = mx.io.DataBatch([mx.nd.array(rng.standard_normal((3, 5, 4))),
                                 mx.nd.array(rng.standard_normal((3, 5, 6)))])
        mod.forward_backward(batch)
        mod.update()
        return {k: v.asnumpy() for k, v in mod.get_params()[0].items()}

    want = run()
    monkeypatch.setattr(mx.sym, "RNN", fusedrnn.sym.RNN)
    monkeypatch.setattr(mx.symbol, "RNN", fusedrnn.sym.RNN)
    got = run()
    assert_grads_equal(got, want, rtol=1e-5, atol=1e-6)


def test_hybrid_block_infer_shape_on_a_layer():
    layer = fusedrnn.LSTM(6, num_layers=2, bidirectional=True)
    layer.initialize()
    x = mx.nd.ones((5, 3, 4))
    layer.infer_shape(x, layer.begin_state(3))
    assert layer.l0_i2h_weight.shape == (24, 4) and layer.r1_i2h_weight.shape == (24, 12)


@pytest.mark.parametrize("mode", list(CELLS))
def test_unroll_on_symbols_names_outputs_as_gluon(mode):
    names = {}
    for cls in CELLS[mode]:
        outs, _ = cls(6, prefix="c_").unroll(3, mx.sym.var("data"), merge_outputs=False)
        names[cls] = [o.list_outputs() for o in outs]
    assert names[CELLS[mode][1]] == names[CELLS[mode][0]] == \
        [["c_t0_out_output"], ["c_t1_out_output"], ["c_t2_out_output"]]


def test_inference_graph_has_no_identities():
    """A hybridized layer called outside autograd caches a graph without the identities that
    guard gradient sums (they copy every weight on each call, and nothing there has a
    gradient); called in training it caches one with them, and gives gluon's gradients."""
    def ops(layer):
        return [n["op"] for n in json.loads(layer._cached_graph[1].tojson())["nodes"]]

    x = mx.nd.array(np.random.default_rng(3).standard_normal((4, 2, 3)))
    layer = fusedrnn.LSTM(5, input_size=3)
    layer.initialize()
    layer.hybridize(static_alloc=True)
    layer(x)
    assert "_copy" not in ops(layer)  # identity is _copy
    with autograd.record():
        layer(x)
    assert "_copy" in ops(layer)


@pytest.mark.parametrize("grad_req", ["write", "add"])
def test_export_after_inference_still_trains(grad_req, tmp_path):
    """A layer hybridized and called for inference caches an inference graph (which has no
    use for the identities that keep MXNet's gradient sums right); once exported and imported
    it must still train, with gluon's gradients, and with grad_req='add' two passes give
    twice one pass."""
    x = mx.nd.array(np.random.default_rng(12).standard_normal((5, 3, 4)))
    grads = {}
    for cls in (gluon.rnn.GRU, fusedrnn.GRU):
        layer = cls(6, num_layers=2, input_size=4, prefix="gru_")
        layer.initialize(mx.init.Uniform(0.3))
        if cls is fusedrnn.GRU:
            layer.load_parameters(str(tmp_path / "gru.params"))
        else:
            layer.save_parameters(str(tmp_path / "gru.params"))
        layer.hybridize()
        layer(x)
        stem = str(tmp_path / cls.__module__.split(".")[0])
        layer.export(stem)
        nodes = json.load(open(stem + "-symbol.json"))["nodes"]
        inputs = [n["name"] for n in nodes if n["op"] == "null" and
                  not n["name"].startswith("gru_")]
        assert len(inputs) == 2  # x and the state that __call__ made
        block = gluon.SymbolBlock.imports(stem + "-symbol.json", inputs, stem + "-0000.params")
        block.collect_params().setattr("grad_req", grad_req)
        h = layer.begin_state(3)[0]
        grads[cls] = train_grads(lambda x: block(x, h)[0], x, params=block.collect_params(),
                                 passes=2 if grad_req == "add" else 1)
        if grad_req == "add":
            block.collect_params().zero_grad()
            once = train_grads(lambda x: block(x, h)[0], x, params=block.collect_params())
            for name in once:
                if name != "x":
                    np.testing.assert_allclose(grads[cls][name], 2 * once[name], rtol=1e-5,
                                               atol=1e-6, err_msg=name)
    want, got = grads[gluon.rnn.GRU], grads[fusedrnn.GRU]
    assert_grads_equal(got, want)


@pytest.mark.parametrize("hybridize", [False, True])
@pytest.mark.parametrize("mode,layout", [("lstm", "TNC"), ("gru", "NTC"), ("rnn", "NTC")])
def test_layers_in_numpy_mode(mode, layout, hybridize, tmp_path):
    """npx.set_np() (d2l, DeepNumpy models): numpy-mode arrays in and out, gluon's numbers
    and gradients."""
    from mxnet import np as mnp
    from mxnet import npx
    npx.set_np()
    try:
        results = {}
        for cls in LAYERS[mode]:
            layer = cls(6, num_layers=2, layout=layout, input_size=4, prefix="rnn_")
            layer.initialize(mx.init.Uniform(0.3))
            if cls is LAYERS[mode][1]:
                layer.load_parameters(str(tmp_path / "np.params"))
            else:
                layer.save_parameters(str(tmp_path / "np.params"))
            if hybridize:
                layer.hybridize()
            x = mnp.array(np.random.default_rng(13).standard_normal((3, 5, 4)),
                          dtype="float32")
            x.attach_grad()
            states = layer.begin_state(5 if layout == "TNC" else 3)
            with autograd.record():
                out, new_states = layer(x, states)
                loss = (out * out).sum() + (new_states[0] * 2).sum()
            loss.backward()
            assert isinstance(out, mnp.ndarray) and isinstance(new_states[0], mnp.ndarray)
            results[cls] = [out.asnumpy(), new_states[0].asnumpy(), x.grad.asnumpy(),
                            layer.l1_h2h_weight.grad().asnumpy()]
    finally:
        npx.reset_np()
    for got, want in zip(results[LAYERS[mode][1]], results[LAYERS[mode][0]]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------
# Memory and safety
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", list(CELLS))
def test_row_sparse_states(mode):
    """gluon's cells take row_sparse states; fusedrnn's densify them (step and unroll,
    inference and autograd)."""
    ref_cls, fused_cls = CELLS[mode]
    fused = fused_cls(6, input_size=4)
    fused.initialize(mx.init.Uniform(0.3))
    ref = ref_cls(6, input_size=4, params=fused.collect_params())
    x = mx.nd.array(np.random.default_rng(14).standard_normal((3, 4)))
    dense = [mx.nd.array(np.random.default_rng(15 + k).standard_normal((3, 6)))
             for k in range(len(ref.state_info()))]
    sparse = [s.tostype("row_sparse") for s in dense]
    want, _ = ref(x, dense)
    got, _ = fused(x, sparse)
    np.testing.assert_allclose(got.asnumpy(), want.asnumpy(), rtol=1e-5, atol=1e-6)
    with autograd.record():
        got, _ = fused(x, sparse)
    np.testing.assert_allclose(got.asnumpy(), want.asnumpy(), rtol=1e-5, atol=1e-6)
    xs = mx.nd.stack(x, x, axis=0)
    want, _ = ref.unroll(2, xs, dense, layout="TNC", merge_outputs=True)
    got, _ = fused.unroll(2, xs, sparse, layout="TNC", merge_outputs=True)
    np.testing.assert_allclose(got.asnumpy(), want.asnumpy(), rtol=1e-5, atol=1e-6)


def test_params_operator_with_float16_data_is_refused():
    """The flat-parameter operator's data is float32 or float64 like its parameters (float16
    data used to overflow a buffer in backward)."""
    data = mx.nd.zeros((4, 3, 5), dtype="float16")
    params = mx.nd.zeros(4 * 6 * (5 + 6 + 2))
    data.attach_grad()
    params.attach_grad()
    with pytest.raises(mx.base.MXNetError, match="same dtype"):
        with autograd.record():
            out = mx.nd._internal._fusedrnn_params(data, params, mode="lstm", state_size=6)
        out[0].backward()
        data.grad.asnumpy()
