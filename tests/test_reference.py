"""Validate fusedrnn.reference (the yardstick for the kernels) against independent references:
torch.nn.LSTM/GRU/RNN with copied weights, the spec's equations written out in torch
(autograd), finite differences, and exact checks of the variable-length semantics."""
import numpy as np
import pytest

from fusedrnn import reference
from fusedrnn._results import ForwardResult, Gradients
from helpers import (GRAD_FIELDS, assert_results_close, backward_args, choose_clip_bounds,
                     fd_check, make_problem, make_upstream, manual_torch_forward_backward,
                     torch_forward_backward)

MODES = ["lstm", "gru", "rnn_tanh", "rnn_relu"]
TIGHT = dict(rtol=1e-8, atol=1e-10)   # float64 against float64: only summation order differs


def run_reference(mode, problem, up, **options):
    args, kw = backward_args(problem)
    fwd = reference.forward(mode, *args, **kw, **options)
    grads = reference.backward(mode, *args, up["dy"], up["dhy"], up["dcy"], **kw, **options)
    return fwd, grads


def check_against_torch(mode, problem, up, reverse=False):
    fwd, grads = run_reference(mode, problem, up, reverse=reverse)
    t_fwd, t_grads = torch_forward_backward(mode, problem, up["dy"], up["dhy"], up["dcy"],
                                            reverse=reverse)
    assert_results_close(fwd, t_fwd, what="forward", **TIGHT)
    assert_results_close(grads, t_grads, what="gradients", **TIGHT)
    return fwd, grads


# ---------------------------------------------------------------------------------------------
# torch.nn with copied weights
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("C,H", [(1, 1), (1, 4), (1, 33), (5, 1), (5, 4), (5, 33), (17, 1),
                                 (17, 4), (17, 33)])
@pytest.mark.parametrize("N", [1, 3])
@pytest.mark.parametrize("T", [1, 2, 7])
@pytest.mark.parametrize("mode", MODES)
def test_sizes_vs_torch(mode, T, N, C, H):
    problem = make_problem(mode, T, N, C, H, seed=T * 100 + N * 10 + C + H)
    check_against_torch(mode, problem, make_upstream(mode, problem, seed=H))


# (mode, projection size); torch requires proj_size < hidden_size (H = 5 here).
TORCH_CONFIGS = [("lstm", None), ("lstm", 1), ("lstm", 3), ("gru", None), ("rnn_tanh", None),
                 ("rnn_relu", None)]
# Boundary lengths 0, 1 and T together, plus random ones (seeded, so possibly also 0 or T).
LENGTHS = [None, [6, 0, 1, 3, 6], "random"]


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("lengths", LENGTHS, ids=["full", "boundary", "random"])
@pytest.mark.parametrize("mode,proj", TORCH_CONFIGS)
def test_options_vs_torch(mode, proj, lengths, reverse):
    problem = make_problem(mode, 6, 5, 3, 5, proj=proj, seed=7, lengths=lengths)
    fwd, grads = check_against_torch(mode, problem, make_upstream(mode, problem), reverse)
    assert np.all(np.isfinite(fwd.y)) and np.all(np.isfinite(grads.dw_hh))


def test_torch_helper_sees_projection_and_lengths():
    """The torch comparison must be able to fail: a wrong projection or wrong lengths differ."""
    problem = make_problem("lstm", 5, 4, 3, 5, proj=2, seed=3, lengths=[5, 2, 0, 4])
    up = make_upstream("lstm", problem)
    fwd, _ = run_reference("lstm", problem, up)
    t_fwd, _ = torch_forward_backward("lstm", problem, **up)
    np.testing.assert_allclose(fwd.y, t_fwd.y, **TIGHT)
    t_full, _ = torch_forward_backward("lstm", problem, **up, lengths=[5, 5, 5, 5])
    assert not np.allclose(fwd.hy, t_full.hy)
    other = dict(problem, w_hr=problem["w_hr"] * 1.01)
    t_other, _ = torch_forward_backward("lstm", other, **up)
    assert not np.allclose(fwd.y, t_other.y)


# ---------------------------------------------------------------------------------------------
# The spec's equations written out in torch (covers what torch.nn cannot)
# ---------------------------------------------------------------------------------------------

# (mode, proj, options)
ALL_CONFIGS = [
    ("lstm", None, {}),
    ("lstm", 3, {}),
    ("lstm", 7, {}),                                  # P > H: torch.nn cannot, the spec can
    ("lstm", None, {"clip": True}),
    ("lstm", 3, {"clip": True, "clip_nan": True}),
    ("gru", None, {"reset_after": True}),
    ("gru", None, {"reset_after": False}),
    ("rnn_tanh", None, {}),
    ("rnn_relu", None, {}),
]
CONFIG_IDS = ["lstm", "lstmp3", "lstmp7", "lstm-clip", "lstmp-clipnan", "gru", "gru-before",
              "rnn_tanh", "rnn_relu"]


def options_for(mode, problem, opts, reverse):
    """Turn a config's options into forward() keywords, picking clip bounds for this problem."""
    options = {k: v for k, v in opts.items() if k != "clip"}
    options["reverse"] = reverse
    if opts.get("clip"):
        lo, hi = choose_clip_bounds(problem, **options)
        options.update(clip_min=lo, clip_max=hi)
    return options


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("lengths", LENGTHS, ids=["full", "boundary", "random"])
@pytest.mark.parametrize("mode,proj,opts", ALL_CONFIGS, ids=CONFIG_IDS)
def test_all_options_vs_manual_torch(mode, proj, opts, lengths, reverse):
    problem = make_problem(mode, 6, 5, 3, 5, proj=proj, seed=11, lengths=lengths)
    up = make_upstream(mode, problem)
    options = options_for(mode, problem, opts, reverse)
    fwd, grads = run_reference(mode, problem, up, **options)
    m_fwd, m_grads = manual_torch_forward_backward(mode, problem, **up, **options)
    assert_results_close(fwd, m_fwd, what="forward", **TIGHT)
    assert_results_close(grads, m_grads, what="gradients", **TIGHT)


def test_manual_torch_agrees_with_torch_nn():
    """Cross-check of the two torch-based yardsticks on a case both cover."""
    problem = make_problem("lstm", 5, 4, 3, 5, proj=3, seed=5, lengths=[5, 0, 2, 4])
    up = make_upstream("lstm", problem)
    a = torch_forward_backward("lstm", problem, **up, reverse=True)
    b = manual_torch_forward_backward("lstm", problem, **up, reverse=True)
    assert_results_close(a[0], b[0], **TIGHT)
    assert_results_close(a[1], b[1], **TIGHT)


def test_gru_reset_after_variants_differ():
    problem = make_problem("gru", 4, 3, 3, 4, seed=2)
    after = reference.forward("gru", **problem, reset_after=True)
    before = reference.forward("gru", **problem, reset_after=False)
    assert not np.allclose(after.y, before.y)


def test_clipping_changes_results():
    problem = make_problem("lstm", 5, 3, 3, 4, seed=4)
    lo, hi = choose_clip_bounds(problem)
    free = reference.forward("lstm", **problem)
    clipped = reference.forward("lstm", **problem, clip_min=lo, clip_max=hi)
    assert not np.allclose(free.cy, clipped.cy)
    # Every output cell state is a clipped value, hence inside the bounds.
    assert np.all((clipped.cy >= lo) & (clipped.cy <= hi))


# ---------------------------------------------------------------------------------------------
# Finite differences (float64), for every combination torch.nn cannot check
# ---------------------------------------------------------------------------------------------

FD_CONFIGS = [
    ("gru", None, {"reset_after": False}),
    ("lstm", None, {"clip": True}),
    ("lstm", None, {"clip": True, "clip_nan": True}),
    ("lstm", 3, {"clip": True}),
    ("lstm", 7, {}),
    ("gru", None, {"reset_after": True}),
    ("rnn_tanh", None, {}),
    ("rnn_relu", None, {}),
]
FD_IDS = ["gru-before", "lstm-clip", "lstm-clipnan", "lstmp-clip", "lstmp7", "gru", "rnn_tanh",
          "rnn_relu"]


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("lengths", [None, [5, 0, 1, 3]], ids=["full", "boundary"])
@pytest.mark.parametrize("mode,proj,opts", FD_CONFIGS, ids=FD_IDS)
def test_finite_differences(mode, proj, opts, lengths, reverse):
    problem = make_problem(mode, 5, 4, 3, 5, proj=proj, seed=21, lengths=lengths)
    up = make_upstream(mode, problem, seed=22)
    options = options_for(mode, problem, opts, reverse)
    _, grads = run_reference(mode, problem, up, **options)
    fd_check(mode, problem, grads, **up, n_coords=4, seed=23, **options)


def test_finite_differences_can_fail():
    problem = make_problem("gru", 4, 2, 3, 4, seed=1)
    up = make_upstream("gru", problem)
    _, grads = run_reference("gru", problem, up, reset_after=True)
    # Gradients of the other GRU variant are wrong for this forward.
    with pytest.raises(AssertionError, match="finite differences disagree"):
        fd_check("gru", problem, grads, **up, reset_after=False)


# ---------------------------------------------------------------------------------------------
# Variable-length semantics, exactly
# ---------------------------------------------------------------------------------------------

# Configs for the self-consistency checks (no torch): every mode and option.
SEMANTIC_CONFIGS = ALL_CONFIGS
SEMANTIC_IDS = CONFIG_IDS


@pytest.mark.parametrize("mode,proj,opts", SEMANTIC_CONFIGS, ids=SEMANTIC_IDS)
def test_length_zero_keeps_state(mode, proj, opts):
    T = 4
    problem = make_problem(mode, T, 4, 3, 5, proj=proj, seed=31, lengths=[0, T, 0, 1])
    up = make_upstream(mode, problem)
    options = options_for(mode, problem, opts, reverse=False)
    for reverse in (False, True):
        options["reverse"] = reverse
        fwd, grads = run_reference(mode, problem, up, **options)
        for n in (0, 2):
            assert np.all(fwd.y[:, n] == 0)
            np.testing.assert_array_equal(fwd.hy[n], problem["h0"][n])
            np.testing.assert_array_equal(grads.dh0[n], up["dhy"][n])
            assert np.all(grads.dx[:, n] == 0)
            if mode == "lstm":
                np.testing.assert_array_equal(fwd.cy[n], problem["c0"][n])
                np.testing.assert_array_equal(grads.dc0[n], up["dcy"][n])
        # Samples that did run have moved away from their initial state.
        assert not np.allclose(fwd.hy[1], problem["h0"][1])


@pytest.mark.parametrize("mode", MODES)
def test_all_lengths_zero(mode):
    problem = make_problem(mode, 3, 2, 3, 4, seed=32, lengths=[0, 0])
    up = make_upstream(mode, problem)
    fwd, grads = run_reference(mode, problem, up)
    assert np.all(fwd.y == 0)
    np.testing.assert_array_equal(fwd.hy, problem["h0"])
    np.testing.assert_array_equal(grads.dh0, up["dhy"])
    for field in ("dx", "dw_ih", "dw_hh", "db_ih", "db_hh"):
        assert np.all(getattr(grads, field) == 0), field


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("mode,proj,opts", SEMANTIC_CONFIGS, ids=SEMANTIC_IDS)
def test_lengths_equal_separate_truncated_runs(mode, proj, opts, reverse):
    """A batch with lengths must equal running every sample alone on its valid prefix: per
    sample outputs and input gradients, and the sum of the per-sample weight gradients."""
    T = 5
    lengths = [T, 1, 0, 3, 2]
    problem = make_problem(mode, T, 5, 3, 4, proj=proj, seed=41, lengths=lengths)
    up = make_upstream(mode, problem)
    options = options_for(mode, problem, opts, reverse)
    fwd, grads = run_reference(mode, problem, up, **options)

    weight_sum = {f: np.zeros_like(getattr(grads, f)) for f in ("dw_ih", "dw_hh", "db_ih",
                                                                 "db_hh", "dw_hr")
                  if getattr(grads, f) is not None}
    for n, L in enumerate(lengths):
        assert np.all(fwd.y[L:, n] == 0) and np.all(grads.dx[L:, n] == 0)
        if L == 0:
            continue
        solo = dict(problem, x=problem["x"][:L, n:n + 1], h0=problem["h0"][n:n + 1],
                    c0=None if mode != "lstm" else problem["c0"][n:n + 1], lengths=None)
        solo_up = dict(dy=up["dy"][:L, n:n + 1], dhy=up["dhy"][n:n + 1],
                       dcy=None if mode != "lstm" else up["dcy"][n:n + 1])
        s_fwd, s_grads = run_reference(mode, solo, solo_up, **options)
        np.testing.assert_allclose(fwd.y[:L, n], s_fwd.y[:, 0], **TIGHT)
        np.testing.assert_allclose(fwd.hy[n], s_fwd.hy[0], **TIGHT)
        np.testing.assert_allclose(grads.dx[:L, n], s_grads.dx[:, 0], **TIGHT)
        np.testing.assert_allclose(grads.dh0[n], s_grads.dh0[0], **TIGHT)
        if mode == "lstm":
            np.testing.assert_allclose(fwd.cy[n], s_fwd.cy[0], **TIGHT)
            np.testing.assert_allclose(grads.dc0[n], s_grads.dc0[0], **TIGHT)
        for f in weight_sum:
            weight_sum[f] += getattr(s_grads, f)
    for f, total in weight_sum.items():
        np.testing.assert_allclose(getattr(grads, f), total, err_msg=f, **TIGHT)


@pytest.mark.parametrize("mode,proj,opts", SEMANTIC_CONFIGS, ids=SEMANTIC_IDS)
def test_reverse_equals_flipped_input(mode, proj, opts):
    problem = make_problem(mode, 5, 3, 3, 4, proj=proj, seed=51)
    up = make_upstream(mode, problem)
    options = options_for(mode, problem, opts, reverse=True)
    fwd, grads = run_reference(mode, problem, up, **options)
    flipped = dict(problem, x=problem["x"][::-1])
    f_up = dict(up, dy=up["dy"][::-1])
    f_fwd, f_grads = run_reference(mode, flipped, f_up, **dict(options, reverse=False))
    np.testing.assert_allclose(fwd.y, f_fwd.y[::-1], **TIGHT)
    np.testing.assert_allclose(grads.dx, f_grads.dx[::-1], **TIGHT)
    assert_results_close(grads._replace(dx=None), f_grads._replace(dx=None), **TIGHT)
    # ... and reversing does change the result.
    plain, _ = run_reference(mode, problem, up, **dict(options, reverse=False))
    assert not np.allclose(plain.hy, fwd.hy)


# ---------------------------------------------------------------------------------------------
# clip_nan
# ---------------------------------------------------------------------------------------------

def nan_problem(T=3, seed=61):
    problem = make_problem("lstm", T, 3, 3, 4, seed=seed)
    problem["c0"][1, 2] = np.nan
    return problem


def test_clip_nan_true_gives_finite_results():
    problem = nan_problem()
    up = make_upstream("lstm", problem)
    options = dict(clip_min=-0.4, clip_max=0.45, clip_nan=True)
    fwd, grads = run_reference("lstm", problem, up, **options)
    for name, value in list(fwd._asdict().items()) + list(grads._asdict().items()):
        if value is not None:
            assert np.all(np.isfinite(value)), name
    # A cell whose state is NaN does not depend on anything upstream.
    assert grads.dc0[1, 2] == 0
    # The NaN cell became clip_min after the first step.
    one = reference.forward("lstm", **dict(problem, x=problem["x"][:1]), **options)
    assert one.cy[1, 2] == -0.4
    # The gradients of the finite inputs are right (fd_check skips the NaN coordinate).
    fd_check("lstm", problem, grads, **up, n_coords=4, **options)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("options", [dict(clip_min=-0.4, clip_max=0.45, clip_nan=False),
                                     dict(clip_nan=True),   # no bounds: clipping is off
                                     {}], ids=["clip", "clip_nan-without-bounds", "no-clip"])
def test_nan_propagates_without_clip_nan(options):
    problem = nan_problem()
    fwd = reference.forward("lstm", **problem, **options)
    assert np.isnan(fwd.cy[1, 2])
    assert np.all(np.isnan(fwd.hy[1]))        # spread through W_hh to the whole state
    assert np.all(np.isfinite(fwd.hy[[0, 2]]))  # other samples are unaffected


def test_clip_nan_leaves_length_zero_state_alone():
    problem = nan_problem()
    problem["lengths"] = np.array([3, 0, 3])
    fwd = reference.forward("lstm", **problem, clip_min=-0.4, clip_max=0.45, clip_nan=True)
    assert np.isnan(fwd.cy[1, 2])
    assert np.all(fwd.y[:, 1] == 0)


# ---------------------------------------------------------------------------------------------
# dtypes, defaults, inputs
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode,proj,opts", ALL_CONFIGS, ids=CONFIG_IDS)
def test_float32(mode, proj, opts):
    p64 = make_problem(mode, 5, 3, 3, 4, proj=proj, seed=71, lengths=[5, 2, 0])
    up64 = make_upstream(mode, p64)
    options = options_for(mode, p64, opts, reverse=True)
    p32 = {k: None if v is None else v.astype(np.float32) if v.dtype == np.float64 else v
           for k, v in p64.items()}
    up32 = {k: None if v is None else v.astype(np.float32) for k, v in up64.items()}
    fwd64, grads64 = run_reference(mode, p64, up64, **options)
    fwd32, grads32 = run_reference(mode, p32, up32, **options)
    for rec in (fwd32, grads32):
        for name, value in rec._asdict().items():
            if value is not None:
                assert value.dtype == np.float32, name
    assert_results_close(fwd32, fwd64, rtol=1e-4, atol=1e-5)
    assert_results_close(grads32, grads64, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("mode", MODES)
def test_none_upstream_means_zero(mode):
    problem = make_problem(mode, 3, 2, 3, 4, seed=81)
    up = make_upstream(mode, problem)
    args, kw = backward_args(problem)
    zeros = {k: None if v is None else np.zeros_like(v) for k, v in up.items()}
    for missing in up:
        given = dict(up, **{missing: None})
        expected = reference.backward(mode, *args, **dict(up, **{missing: zeros[missing]}), **kw)
        got = reference.backward(mode, *args, **given, **kw)
        assert_results_close(got, expected, rtol=0, atol=0)
    everything_none = reference.backward(mode, *args, **kw)
    for name, value in everything_none._asdict().items():
        assert value is None or np.all(value == 0), name


@pytest.mark.parametrize("mode,proj", [("lstm", None), ("lstm", 2), ("gru", None),
                                       ("rnn_tanh", None)])
def test_result_types_and_shapes(mode, proj):
    T, N, C, H = 3, 2, 5, 4
    P = H if proj is None else proj
    problem = make_problem(mode, T, N, C, H, proj=proj, seed=91)
    up = make_upstream(mode, problem)
    fwd, grads = run_reference(mode, problem, up)
    assert isinstance(fwd, ForwardResult) and isinstance(grads, Gradients)
    assert fwd.reserve is None
    assert fwd.y.shape == (T, N, P) and fwd.hy.shape == (N, P)
    assert (fwd.cy is None) == (mode != "lstm")
    assert (grads.dc0 is None) == (mode != "lstm")
    assert (grads.dw_hr is None) == (proj is None)
    for name, field in GRAD_FIELDS.items():
        if problem[name] is not None:
            assert getattr(grads, field).shape == problem[name].shape, field


def test_inputs_not_modified():
    problem = make_problem("lstm", 4, 3, 3, 4, proj=2, seed=95, lengths=[4, 0, 2])
    up = make_upstream("lstm", problem)
    before = {k: None if v is None else v.copy() for k, v in {**problem, **up}.items()}
    run_reference("lstm", problem, up, reverse=True, clip_min=-0.5, clip_max=0.5)
    for k, v in {**problem, **up}.items():
        if v is not None:
            np.testing.assert_array_equal(v, before[k], err_msg=k)


@pytest.mark.parametrize("fn", ["forward", "backward"])
def test_input_errors(fn):
    lstm = make_problem("lstm", 2, 2, 3, 4, seed=1)
    gru = make_problem("gru", 2, 2, 3, 4, seed=1)
    call = getattr(reference, fn)

    def run(mode, problem, **kw):
        args, bkw = backward_args(problem)
        return call(mode, *args, **{**bkw, **kw})

    with pytest.raises(ValueError, match="mode"):
        run("lstmp", lstm)
    with pytest.raises(ValueError, match="c0"):
        run("lstm", dict(lstm, c0=None))
    with pytest.raises(ValueError, match="clip_min"):
        run("lstm", lstm, clip_min=-1.0)
    with pytest.raises(ValueError, match="clip_max"):
        run("lstm", lstm, clip_max=1.0)
    with pytest.raises(ValueError, match="w_hr"):
        run("gru", gru, w_hr=np.zeros((2, 4)))
    with pytest.raises(ValueError, match="lengths"):
        run("gru", gru, lengths=[3, 1])
