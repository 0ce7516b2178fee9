"""Regularised recurrences (zoneout, the variational state mask, Keras' per-gate dropout masks):
the NumPy reference against independent step-by-step implementations and finite differences,
then the kernels against the reference."""
import numpy as np
import pytest

from fusedrnn import kernels, reference
from fusedrnn._results import GATES
from helpers import (assert_results_close, backward_args, choose_clip_bounds, fd_check,
                     make_problem, make_upstream)

# (mode, problem options, forward/backward options), as in test_kernels.py.
VARIANTS = {
    "lstm": ("lstm", {}, {}),
    "lstm_proj": ("lstm", {"proj": 3}, {}),
    "lstm_clip": ("lstm", {}, {"clip": True}),
    "lstm_proj_clip_nan": ("lstm", {"proj": 2}, {"clip": True, "clip_nan": True}),
    "lstm_hard": ("lstm", {}, {"gate_activation": "hard_sigmoid"}),
    "gru": ("gru", {}, {}),
    "gru_reset_before": ("gru", {}, {"reset_after": False}),
    "gru_hard": ("gru", {}, {"gate_activation": "hard_sigmoid"}),
    "rnn_tanh": ("rnn_tanh", {}, {}),
    "rnn_relu": ("rnn_relu", {}, {}),
}
# Which masks each combination draws.
MECHANISMS = {
    "zoneout": ("zoneout_h", "zoneout_c", "zoneout_y"),
    "zoneout_states": ("zoneout_h", "zoneout_c"),
    "zoneout_output": ("zoneout_y",),
    "state": ("state_mask",),
    "gates": ("input_gate_masks", "recurrent_gate_masks"),
    "recurrent_gates": ("recurrent_gate_masks",),
    "all": reference.REGULARISERS,
}


def dropout_mask(rng, shape, p, dtype):
    """gluon's Dropout(ones) / Keras' dropped ones: 0 with probability p, else 1 / (1 - p)."""
    return ((rng.random(shape) >= p) / (1 - p)).astype(dtype)


def draw_masks(mode, problem, names, seed=0, p=0.3):
    rng = np.random.default_rng(seed)
    T, N, C = problem["x"].shape
    P = problem["h0"].shape[1]
    H = problem["w_ih"].shape[0] // GATES[mode]
    G = GATES[mode]
    shapes = {"zoneout_h": (T, N, P), "zoneout_c": (T, N, H), "zoneout_y": (T, N, P),
              "state_mask": (N, P), "input_gate_masks": (G, N, C),
              "recurrent_gate_masks": (G, N, P)}
    return {name: dropout_mask(rng, shapes[name], p, problem["x"].dtype) for name in names
            if name != "zoneout_c" or mode == "lstm"}


def setup(variant, T, N, C, H, dtype=np.float64, lengths=None, seed=0, masks=(), mask_seed=1):
    mode, pkw, okw = VARIANTS[variant]
    problem = make_problem(mode, T, N, C, H, dtype=dtype, seed=seed, lengths=lengths, **pkw)
    options = {k: v for k, v in okw.items() if k != "clip"}
    options.update(draw_masks(mode, problem, masks, seed=mask_seed))
    if okw.get("clip"):
        try:
            options.update(zip(("clip_min", "clip_max"), choose_clip_bounds(problem, **options)))
        except AssertionError:  # too few cells to clip some and not others
            options.update(clip_min=-0.05, clip_max=0.05)
    return mode, problem, options


def run_reference(mode, problem, upstream, **options):
    fwd = reference.forward(mode, **problem, **options)
    args, kwargs = backward_args(problem)
    return fwd, reference.backward(mode, *args, **upstream, **kwargs, **options)


def run_kernels(mode, problem, upstream, **options):
    fwd = kernels.forward(mode, **problem, **options, training=True)
    args, kwargs = backward_args(problem)
    grads = kernels.backward(mode, *args, fwd.reserve, **upstream, **kwargs, **options)
    return fwd, grads


def holes_mask(T, N, seed):
    """A Keras mask [T, N] with holes, one sample fully masked, one fully set."""
    rng = np.random.default_rng(seed)
    mask = rng.random((T, N)) < 0.6
    mask[:, 0] = True
    if N > 1:
        mask[:, 1] = False
    return mask


# ------------------------------------------------------------------------------------------
# The reference
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", list(VARIANTS))
def test_reference_ones_masks_are_the_plain_layer(variant):
    """Masks that drop nothing (all ones) give the plain layer's numbers."""
    mode, problem, options = setup(variant, 5, 3, 4, 5, lengths=[5, 0, 3])
    T, N, C = problem["x"].shape
    P, H, G = problem["h0"].shape[1], problem["w_ih"].shape[0] // GATES[mode], GATES[mode]
    ones = dict(zoneout_h=np.ones((T, N, P)), zoneout_y=np.ones((T, N, P)),
                state_mask=np.ones((N, P)), input_gate_masks=np.ones((G, N, C)),
                recurrent_gate_masks=np.ones((G, N, P)))
    if mode == "lstm":
        ones["zoneout_c"] = np.ones((T, N, H))
    upstream = make_upstream(mode, problem, seed=2)
    plain = run_reference(mode, problem, upstream, **options)
    masked = run_reference(mode, problem, upstream, **options, **ones)
    for a, b in zip(masked, plain):
        assert_results_close(a, b, rtol=1e-13, atol=1e-14)


def plain_step(mode, problem, options, t, h, c, n):
    """One step of sample n from state (h, c) with the plain reference."""
    one = dict(problem, x=problem["x"][t:t + 1, n:n + 1], h0=h[None], lengths=None,
               c0=None if c is None else c[None])
    out = reference.forward(mode, **one, **options)
    return out.y[0, 0], None if out.cy is None else out.cy[0]


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("variant", ["lstm", "lstm_proj", "gru", "gru_reset_before",
                                     "rnn_tanh"])
def test_reference_zoneout_and_state_mask_step_by_step(variant, reverse):
    """Zoneout and the state mask written as gluon's ZoneoutCell(VariationalDropoutCell(cell))
    runs them, one plain step at a time per sample."""
    T, lengths = 6, [6, 2, 0, 5]
    mode, problem, options = setup(variant, T, 4, 3, 5, lengths=lengths,
                                   masks=MECHANISMS["zoneout"] + ("state_mask",))
    masks = {k: options.pop(k) for k in reference.REGULARISERS if k in options}
    got = reference.forward(mode, **problem, **options, **masks, reverse=reverse)
    for n, L in enumerate(lengths):
        h, c = problem["h0"][n], None if problem["c0"] is None else problem["c0"][n]
        y_prev = np.zeros_like(h)
        for s in range(L):
            t = L - 1 - s if reverse else s
            h_new, c_new = plain_step(mode, problem, options, t, h * masks["state_mask"][n], c,
                                      n)
            h = np.where(masks["zoneout_h"][t, n] != 0, h_new, h)
            if c is not None:
                c = np.where(masks["zoneout_c"][t, n] != 0, c_new, c)
            y_prev = np.where(masks["zoneout_y"][t, n] != 0, h_new, y_prev)
            np.testing.assert_allclose(got.y[t, n], y_prev, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(got.hy[n], h, rtol=1e-12, atol=1e-14)
        assert not got.y[L:, n].any()
        if c is not None:
            np.testing.assert_allclose(got.cy[n], c, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh"])
def test_reference_is_gluons_zoneout_and_variational_cells(mode, monkeypatch):
    """gluon's ZoneoutCell(VariationalDropoutCell(cell, drop_states)) stepped by hand, its
    Dropout replaced by our masks in the order it draws them, with autograd for the
    gradients: the reference's numbers."""
    mx = pytest.importorskip("mxnet")
    from mxnet import autograd, gluon
    T, N, C, H = 4, 3, 5, 6
    problem = make_problem(mode, T, N, C, H, seed=11)
    masks = draw_masks(mode, problem, ("zoneout_h", "zoneout_c", "zoneout_y", "state_mask"),
                       seed=12)
    upstream = make_upstream(mode, problem, seed=13)
    # The order gluon draws them: drop_states once (first step), then per step the output's
    # zoneout mask and the states' (h, then c).
    drawn = [masks["state_mask"]]
    for t in range(T):
        drawn += [masks["zoneout_y"][t], masks["zoneout_h"][t]]
        if mode == "lstm":
            drawn.append(masks["zoneout_c"][t])
    monkeypatch.setattr(mx.nd, "Dropout", lambda data, p, **kw: mx.nd.array(drawn.pop(0),
                                                                             dtype="float64"))
    base = {"lstm": gluon.rnn.LSTMCell, "gru": gluon.rnn.GRUCell,
            "rnn_tanh": gluon.rnn.RNNCell}[mode](H, input_size=C)
    cell = gluon.rnn.ZoneoutCell(
        gluon.contrib.rnn.VariationalDropoutCell(base, drop_states=0.3), 0.3, 0.3)
    cell.initialize()
    cell.cast("float64")
    params = {"i2h_weight": "w_ih", "h2h_weight": "w_hh", "i2h_bias": "b_ih",
              "h2h_bias": "b_hh"}
    for name, param in base.collect_params().items():
        param.set_data(mx.nd.array(problem[params[name.split("_", 1)[1]]], dtype="float64"))
    x = mx.nd.array(problem["x"], dtype="float64")
    states = [mx.nd.array(problem["h0"], dtype="float64")]
    if mode == "lstm":
        states.append(mx.nd.array(problem["c0"], dtype="float64"))
    for a in [x, *states]:
        a.attach_grad()
    cell.reset()
    with autograd.record():
        ys, st = [], states
        for t in range(T):
            y, st = cell(x[t], st)
            ys.append(y)
        loss = (mx.nd.stack(*ys) * mx.nd.array(upstream["dy"], dtype="float64")).sum() + \
            (st[0] * mx.nd.array(upstream["dhy"], dtype="float64")).sum()
        if mode == "lstm":
            loss = loss + (st[1] * mx.nd.array(upstream["dcy"], dtype="float64")).sum()
    loss.backward()
    assert not drawn
    ref_fwd, ref_grads = run_reference(mode, problem, upstream, **masks)
    np.testing.assert_allclose(mx.nd.stack(*ys).asnumpy(), ref_fwd.y, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(st[0].asnumpy(), ref_fwd.hy, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(x.grad.asnumpy(), ref_grads.dx, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(states[0].grad.asnumpy(), ref_grads.dh0, rtol=1e-9, atol=1e-11)
    grads = {n.split("_", 1)[1]: p.grad().asnumpy() for n, p in base.collect_params().items()}
    np.testing.assert_allclose(grads["h2h_weight"], ref_grads.dw_hh, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(grads["i2h_bias"], ref_grads.db_ih, rtol=1e-9, atol=1e-11)
    if mode == "lstm":
        np.testing.assert_allclose(st[1].asnumpy(), ref_fwd.cy, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(states[1].grad.asnumpy(), ref_grads.dc0, rtol=1e-9,
                                   atol=1e-11)


def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


def keras_lstm_step(p, x, h, c, mi, mr):
    """keras-mxnet 2.2.4 LSTMCell.call, implementation=1 (kernels split per gate i f c o)."""
    H = c.shape[-1]
    w_ih, w_hh, b = p["w_ih"], p["w_hh"], p["b_ih"] + p["b_hh"]
    pre = [(x * mi[g]) @ w_ih[g * H:(g + 1) * H].T + (h * mr[g]) @ w_hh[g * H:(g + 1) * H].T
           + b[g * H:(g + 1) * H] for g in range(4)]
    i, f, o = _sigmoid(pre[0]), _sigmoid(pre[1]), _sigmoid(pre[3])
    c = f * c + i * np.tanh(pre[2])
    return o * np.tanh(c), c


def keras_gru_step(p, x, h, mi, mr, reset_after):
    """keras-mxnet 2.2.4 GRUCell.call, implementation=1 (here in gate order r z n)."""
    H = h.shape[-1]
    w_ih, w_hh, b_ih, b_hh = p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"]
    blk = [slice(g * H, (g + 1) * H) for g in range(3)]
    x_g = [(x * mi[g]) @ w_ih[blk[g]].T + b_ih[blk[g]] for g in range(3)]
    h_g = [h * mr[g] for g in range(3)]
    r = _sigmoid(x_g[0] + h_g[0] @ w_hh[blk[0]].T + b_hh[blk[0]])
    z = _sigmoid(x_g[1] + h_g[1] @ w_hh[blk[1]].T + b_hh[blk[1]])
    if reset_after:
        rec = r * (h_g[2] @ w_hh[blk[2]].T + b_hh[blk[2]])
    else:
        rec = (r * h_g[2]) @ w_hh[blk[2]].T + b_hh[blk[2]]
    n = np.tanh(x_g[2] + rec)
    return z * h + (1 - z) * n


@pytest.mark.parametrize("variant", ["lstm", "gru", "gru_reset_before", "rnn_tanh"])
def test_reference_gate_masks_as_keras_writes_them(variant):
    T = 5
    mode, problem, options = setup(variant, T, 3, 4, 6, masks=MECHANISMS["gates"])
    mi, mr = options["input_gate_masks"], options["recurrent_gate_masks"]
    got = reference.forward(mode, **problem, **options)
    h, c = problem["h0"], problem["c0"]
    for t in range(T):
        x = problem["x"][t]
        if mode == "lstm":
            h, c = keras_lstm_step(problem, x, h, c, mi, mr)
        elif mode == "gru":
            h = keras_gru_step(problem, x, h, mi, mr, options.get("reset_after", True))
        else:
            h = np.tanh((x * mi[0]) @ problem["w_ih"].T + (h * mr[0]) @ problem["w_hh"].T
                        + problem["b_ih"] + problem["b_hh"])
        np.testing.assert_allclose(got.y[t], h, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("mechanism", list(MECHANISMS))
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_reference_finite_differences(variant, reverse, mechanism):
    mode, problem, options = setup(variant, 5, 3, 4, 5, lengths=[5, 2, 4], seed=3,
                                   masks=MECHANISMS[mechanism])
    upstream = make_upstream(mode, problem, seed=4)
    _, grads = run_reference(mode, problem, upstream, reverse=reverse, **options)
    fd_check(mode, problem, grads, **upstream, n_coords=4, reverse=reverse, **options)


@pytest.mark.parametrize("variant", ["lstm_proj", "gru_reset_before"])
def test_reference_finite_differences_with_holes(variant):
    mode, problem, options = setup(variant, 6, 4, 3, 5, seed=5, masks=MECHANISMS["all"])
    options["mask"] = holes_mask(6, 4, seed=6)
    for reverse in (False, True):
        upstream = make_upstream(mode, problem, seed=7)
        _, grads = run_reference(mode, problem, upstream, reverse=reverse, **options)
        fd_check(mode, problem, grads, **upstream, n_coords=4, reverse=reverse, **options)


def test_reference_refuses_bad_masks():
    mode, problem, _ = setup("gru", 4, 3, 2, 5)
    with pytest.raises(ValueError, match="zoneout_h must have shape"):
        reference.forward(mode, **problem, zoneout_h=np.ones((4, 3, 4)))
    with pytest.raises(ValueError, match="zoneout_c is only for mode 'lstm'"):
        reference.forward(mode, **problem, zoneout_c=np.ones((4, 3, 5)))
    with pytest.raises(ValueError, match="recurrent_gate_masks must have shape"):
        reference.forward(mode, **problem, recurrent_gate_masks=np.ones((4, 3, 5)))


# ------------------------------------------------------------------------------------------
# The kernels against the reference
# ------------------------------------------------------------------------------------------

def positions_for(kind, T, N, seed):
    """Lengths (with 0, 1 and T) or a Keras mask with holes, as forward() options."""
    if kind == "full":
        return {}
    if kind == "lengths":
        rng = np.random.default_rng(seed)
        lengths = rng.integers(0, T + 1, size=N)
        lengths[:3] = [T, 0, 1][:N]
        return {"lengths": lengths}
    return {"mask": holes_mask(T, N, seed)}


def compare(variant, T, N, C, H, masks, valid="full", reverse=False, dtype=np.float64, seed=0,
            proj=None):
    mode, problem, options = setup(variant, T, N, C, H, seed=seed, masks=masks,
                                   mask_seed=seed + 1)
    if proj is not None:
        problem = make_problem(mode, T, N, C, H, proj=proj, seed=seed)
        options.update(draw_masks(mode, problem, masks, seed=seed + 1))
    where = positions_for(valid, T, N, seed)
    problem["lengths"] = where.get("lengths")
    if "mask" in where:
        options["mask"] = where["mask"]
    options["reverse"] = reverse
    if "clip_min" in options:
        try:
            options.update(zip(("clip_min", "clip_max"), choose_clip_bounds(problem, **options)))
        except AssertionError:  # too few cells to clip some and not others
            options.update(clip_min=-0.05, clip_max=0.05)
    upstream = make_upstream(mode, problem, seed=seed + 2)
    ref_fwd, ref_grads = run_reference(mode, problem, upstream, **options)
    cast = {k: v if v is None or k in ("lengths",) else np.asarray(v).astype(dtype)
            for k, v in problem.items()}
    opts = {k: v.astype(dtype) if k in reference.REGULARISERS else v for k, v in options.items()}
    up = {k: None if v is None else v.astype(dtype) for k, v in upstream.items()}
    fwd, grads = run_kernels(mode, cast, up, **opts)
    tol = dict(rtol=1e-9, atol=1e-11) if dtype == np.float64 else dict(rtol=3e-4, atol=3e-5)
    assert fwd.y.dtype == dtype and grads.dw_ih.dtype == dtype
    assert_results_close(fwd, ref_fwd, what="forward", **tol)
    assert_results_close(grads, ref_grads, what="backward", **tol)
    inference = kernels.forward(mode, **cast, **opts)
    assert inference.reserve is None
    assert_results_close(inference, fwd, what="inference vs training", rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("valid", ["full", "lengths", "holes"])
@pytest.mark.parametrize("mechanism", list(MECHANISMS))
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_kernels_match_reference(variant, mechanism, valid, reverse, dtype):
    compare(variant, 7, 4, 5, 9, MECHANISMS[mechanism], valid, reverse, dtype, seed=3)


@pytest.mark.parametrize("size", [(1, 1, 1, 1), (2, 3, 5, 4), (1, 5, 3, 17), (9, 2, 17, 33)],
                         ids=lambda s: "T%dN%dC%dH%d" % s)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_kernels_match_reference_odd_sizes(variant, size):
    compare(variant, *size, MECHANISMS["all"], "lengths", reverse=True, seed=sum(size))


@pytest.mark.parametrize("mechanism", ["zoneout", "state", "gates", "all"])
@pytest.mark.parametrize("variant", ["lstm", "lstm_proj", "gru", "gru_reset_before",
                                     "rnn_relu"])
def test_kernels_match_reference_two_threads(variant, mechanism, two_threads):
    """Sizes at which the step products and the products over all steps split across two
    threads (H not a multiple of the vector width)."""
    compare(variant, 12, 40, 60, 70, MECHANISMS[mechanism], "lengths", reverse=True, seed=8,
            proj=37 if variant == "lstm_proj" else None)


@pytest.mark.parametrize("variant", ["lstm", "lstm_proj", "gru", "rnn_tanh"])
def test_kernels_finite_differences(variant):
    mode, problem, options = setup(variant, 5, 3, 4, 5, lengths=[5, 2, 4], seed=4,
                                   masks=MECHANISMS["all"])
    upstream = make_upstream(mode, problem, seed=5)
    _, grads = run_kernels(mode, problem, upstream, **options)

    def forward_fn(mode, **kw):
        return kernels.forward(mode, **kw)

    fd_check(mode, problem, grads, **upstream, forward_fn=forward_fn, n_coords=4, **options)


def test_kernels_without_masks_run_the_plain_code():
    """No mask (or all None) is the plain call, bit for bit, with the plain reserve."""
    mode, problem, _ = setup("lstm", 6, 5, 4, 7, dtype=np.float32, lengths="random")
    plain = kernels.forward(mode, **problem, training=True)
    nones = kernels.forward(mode, **problem, training=True,
                            **{k: None for k in kernels.REGULARISERS})
    assert nones.reserve.shape == (kernels.reserve_size(mode, 6, 5, 4, 7),)
    for a, b in zip(plain[:3], nones[:3]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh"])
def test_kernels_empty_sizes_and_all_lengths_zero(mode):
    for T, N, lengths in [(0, 3, None), (4, 0, None), (4, 3, [0, 0, 0])]:
        problem = make_problem(mode, T, N, 2, 5, lengths=lengths)
        masks = draw_masks(mode, problem, reference.REGULARISERS)
        upstream = make_upstream(mode, problem)
        fwd, grads = run_kernels(mode, problem, upstream, **masks)
        ref_fwd, ref_grads = run_reference(mode, problem, upstream, **masks)
        assert_results_close(fwd, ref_fwd, rtol=0, atol=0)
        assert_results_close(grads, ref_grads, rtol=0, atol=0)


def test_kernels_take_strided_masks():
    mode, problem, options = setup("lstm", 5, 3, 4, 6, masks=MECHANISMS["all"])
    strided = {k: np.asfortranarray(v) for k, v in options.items()}
    assert not strided["zoneout_h"].flags.c_contiguous
    a = kernels.forward(mode, **problem, **options)
    b = kernels.forward(mode, **problem, **strided)
    for x, y in zip(a[:3], b[:3]):
        np.testing.assert_array_equal(x, y)


def test_kernels_zoneout_all_zero_keeps_everything():
    mode, problem, _ = setup("lstm_proj", 5, 3, 4, 6)
    T, N, _ = problem["x"].shape
    P, H = problem["h0"].shape[1], problem["c0"].shape[1]
    fwd = kernels.forward(mode, **problem, zoneout_h=np.zeros((T, N, P)),
                          zoneout_c=np.zeros((T, N, H)), zoneout_y=np.zeros((T, N, P)),
                          training=True)
    np.testing.assert_array_equal(fwd.hy, problem["h0"])
    np.testing.assert_array_equal(fwd.cy, problem["c0"])
    assert not fwd.y.any()
    assert fwd.reserve.shape == (kernels.reserve_size(mode, 5, 3, 4, 6, 3, with_masks=True),)


def test_kernels_portable_build_matches_reference():
    """The non-AVX-512 code, forced in a subprocess, gives the reference's numbers too."""
    import os
    import pathlib
    import subprocess
    import sys
    import textwrap
    script = textwrap.dedent("""
        import numpy as np, sys
        sys.path.insert(0, %r)
        from fusedrnn import kernels
        from test_regularisers import compare, MECHANISMS, VARIANTS
        assert kernels.instruction_set() == "base", kernels.instruction_set()
        for variant in VARIANTS:
            for dtype in (np.float32, np.float64):
                compare(variant, 6, 21, 5, 19, MECHANISMS["all"], "holes", True, dtype)
        print("ok")
    """) % str(pathlib.Path(__file__).parent)
    env = dict(os.environ, FUSEDRNN_DISABLE_AVX512="1")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


@pytest.mark.parametrize("mode,name,shape,pattern", [
    ("lstm", "zoneout_h", (4, 3, 5), r"zoneout_h has shape \(4, 3, 5\); expected \(4, 3, 6\)"),
    ("lstm", "zoneout_c", (3, 6), r"zoneout_c has shape \(3, 6\); expected \(4, 3, 6\)"),
    ("gru", "zoneout_c", (4, 3, 6), "zoneout_c is only for mode 'lstm'"),
    ("lstm", "zoneout_y", (4, 2, 6), r"zoneout_y has shape \(4, 2, 6\)"),
    ("lstm", "state_mask", (3, 5), r"state_mask has shape \(3, 5\); expected \(3, 6\)"),
    ("gru", "input_gate_masks", (4, 3, 5),
     r"input_gate_masks has shape \(4, 3, 5\); expected \(3, 3, 5\)"),
    ("rnn_tanh", "recurrent_gate_masks", (1, 3, 5),
     r"recurrent_gate_masks has shape \(1, 3, 5\); expected \(1, 3, 6\)"),
])
def test_kernels_refuse_bad_mask_shapes(mode, name, shape, pattern):
    problem = make_problem(mode, 4, 3, 5, 6, dtype=np.float32)
    with pytest.raises(ValueError, match=pattern):
        kernels.forward(mode, **problem, **{name: np.ones(shape, np.float32)})
    fwd = kernels.forward(mode, **problem, training=True)
    args, kwargs = backward_args(problem)
    with pytest.raises(ValueError, match=pattern):
        kernels.backward(mode, *args, fwd.reserve, **kwargs,
                         **{name: np.ones(shape, np.float32)})


def test_kernels_refuse_mask_dtype_and_plain_reserve():
    problem = make_problem("lstm", 4, 3, 5, 6, dtype=np.float32)
    with pytest.raises(TypeError, match="state_mask has dtype float64"):
        kernels.forward("lstm", **problem, state_mask=np.ones((3, 6)))
    plain = kernels.forward("lstm", **problem, training=True)
    args, kwargs = backward_args(problem)
    with pytest.raises(ValueError, match="reserve has shape"):
        kernels.backward("lstm", *args, plain.reserve, **kwargs,
                         state_mask=np.ones((3, 6), np.float32))
    zoned = kernels.forward("lstm", **problem, training=True,
                            zoneout_h=np.ones((4, 3, 6), np.float32))
    with pytest.raises(ValueError, match="backward needs the masks forward had"):
        kernels.backward("lstm", *args, zoned.reserve, **kwargs,
                         zoneout_y=np.ones((4, 3, 6), np.float32))
