"""One recurrent layer, one direction, a whole sequence per call, on NumPy arrays.

The fused C++ kernels behind every fusedrnn layer, usable on their own. Shapes (T steps,
N batch, C input size, H hidden size, G gates: 4 for 'lstm' (i, f, g, o), 3 for 'gru'
(r, z, n), 1 for 'rnn_tanh' / 'rnn_relu'; P = projection size if ``w_hr`` is given, else H)::

    x [T, N, C]   w_ih [G*H, C]   w_hh [G*H, P]   b_ih, b_hh [G*H]   w_hr [P, H]
    h0 [N, P]     c0 [N, H] (lstm)                 lengths [N] integers in [0, T]
    y [T, N, P]   hy [N, P]       cy [N, H] (lstm)

Gate order and the two bias vectors are MXNet's (and PyTorch's), so weights load unchanged.
Everything runs in the dtype of ``x`` (float32 or float64); the other arrays must match it.

With ``lengths``, sample n runs exactly ``lengths[n]`` steps: ``hy``/``cy`` are its state after
its last valid step (``h0``/``c0`` for length 0), ``y`` is zero past its length, the gradient
w.r.t. padded positions of ``x`` is zero, and no work is spent on padding. ``reverse=True``
runs each sample right-to-left over its own valid prefix (what a bidirectional layer needs).

With ``mask`` ([T, N] of bools or 0/1, instead of ``lengths``: Keras masking) sample n runs
only at the positions where its mask is set, in time order (right to left with
``reverse=True``, Keras' ``go_backwards``), whatever their pattern (pre-padded, post-padded,
holes). At the other positions its states carry over unchanged, ``y`` repeats the output of its
previous step in that order (0 before its first), the gradient w.r.t. ``x`` is zero, and no
work is spent on them.

``gate_activation`` ('lstm', 'gru') is the activation of the sigmoid gates (LSTM i, f, o; GRU
r, z): 'sigmoid' (default), or 'hard_sigmoid', Keras' clip(0.2 * v + 0.5, 0, 1) (the product
rounded before the sum, as keras-mxnet computes it) with derivative 0.2 where
0 <= 0.2 * v + 0.5 <= 1, the kinks included (MXNet's autograd of that expression), else 0.
The candidate (g, n) and the cell output stay tanh.

Regularisers run inside the recurrence from masks the caller draws (so a run is
reproducible); each is optional, any combination works with every option above, and positions
a sample skips read no mask. Masks have the dtype of ``x``::

    zoneout_h [T, N, P]  zoneout_c [T, N, H] (lstm)  zoneout_y [T, N, P]
    state_mask [N, P]    input_gate_masks [G, N, C]   recurrent_gate_masks [G, N, P]

* Zoneout (``gluon.rnn.ZoneoutCell``): at time position t a sample keeps, unit by unit,
  ``h_t = h'`` where ``zoneout_h[t] != 0`` else ``h_{t-1}`` (likewise ``c`` with
  ``zoneout_c``), and its output ``y_t = h'`` where ``zoneout_y[t] != 0`` else its previous
  step's ``y`` (0 before its first step): the output is a track of its own. h', c' are the
  cell's new values (h' projected with ``w_hr``).
* ``state_mask`` (``gluon.contrib.rnn.VariationalDropoutCell``'s ``drop_states``): the cell
  sees ``h_{t-1} * state_mask`` wherever it uses ``h_{t-1}``; the state carried on is the cell's
  new h, and c is never masked. With zoneout too, zoneout keeps the unmasked ``h_{t-1}``.
* ``input_gate_masks`` / ``recurrent_gate_masks`` (Keras' ``dropout`` / ``recurrent_dropout``,
  implementation=1, in the gate order above): gate g's terms are
  ``(x_t * input_gate_masks[g]) @ w_ih[g].T`` and ``(h * recurrent_gate_masks[g]) @ w_hh[g].T``;
  GRU with ``reset_after=False``: ``(r * h * recurrent_gate_masks[2]) @ w_hn.T``; GRU's blend
  ``z * h`` takes h unmasked.

With no mask given the kernels run exactly their plain code. With masks a training forward's
reserve is larger (``reserve_size(..., with_masks=True)``), and backward needs the same masks.

The equivalent NumPy code is :mod:`fusedrnn.reference`, which takes the same arguments.
"""
import numbers

import numpy as np

from . import _C
from ._results import MODES, ForwardResult, Gradients

__all__ = ["forward", "backward", "reserve_size", "set_num_threads", "get_num_threads",
           "instruction_set", "GATE_ACTIVATIONS", "REGULARISERS"]

GATE_ACTIVATIONS = ("sigmoid", "hard_sigmoid")
# The mask arguments of forward() and backward() (see the module docstring).
REGULARISERS = ("zoneout_h", "zoneout_c", "zoneout_y", "state_mask", "input_gate_masks",
                "recurrent_gate_masks")


def _lengths(lengths, x):
    """Lengths as int32; the kernels' own check refuses what is not a whole number in [0, T]."""
    if lengths is None:
        return None
    arr = np.asarray(lengths)
    n = x.shape[1]
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"lengths must have shape ({n},) (one per sample); got {arr.shape}")
    if arr.dtype.kind not in "iuf":
        # (bools included: a boolean array here is more likely a mask given as lengths)
        raise TypeError(f"lengths must be integers; got dtype {arr.dtype}")
    return _C._lengths_as_int32(arr.astype(np.float64), x.shape[0])


def _mask(mask, lengths, x):
    """A [T, N] mask as (lengths, positions): positions[n, :lengths[n]] are sample n's set
    time positions in increasing order (the kernels' conversion, which refuses values other
    than 0 and 1)."""
    if lengths is not None:
        raise ValueError("give lengths or mask, not both")
    arr = np.asarray(mask)
    shape = x.shape[:2] if x.ndim == 3 else None
    if arr.shape != shape:
        raise ValueError(f"mask must have shape {shape} ([T, N], like x's first two "
                         f"dimensions); got {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"mask must hold bools or 0/1; got dtype {arr.dtype}")
    return _C._mask_as_valid(arr.astype(np.float64))


def _clip_value(value, name):
    if value is None:
        return None
    if not isinstance(value, numbers.Real) or np.isnan(value):
        raise ValueError(f"{name} must be a real number; got {value!r}")
    return float(value)


def _options(mode, x, lengths, mask, reverse, reset_after, clip_min, clip_max, clip_nan,
             gate_activation):
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    if not isinstance(gate_activation, str) or gate_activation not in GATE_ACTIVATIONS:
        raise ValueError(f"gate_activation must be one of {GATE_ACTIVATIONS}; "
                         f"got {gate_activation!r}")
    if gate_activation != "sigmoid" and mode not in ("lstm", "gru"):
        raise ValueError(f"gate_activation {gate_activation!r} is only for modes 'lstm' and "
                         f"'gru'; got mode {mode!r}")
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x must be a numpy.ndarray; got {type(x).__name__}")
    positions = None
    if mask is not None:
        lengths, positions = _mask(mask, lengths, x)
    elif x.ndim == 3:
        lengths = _lengths(lengths, x)
    return dict(lengths=lengths, positions=positions, carry=mask is not None,
                reverse=bool(reverse), reset_after=bool(reset_after),
                clip_min=_clip_value(clip_min, "clip_min"),
                clip_max=_clip_value(clip_max, "clip_max"), clip_nan=bool(clip_nan),
                gate_activation=gate_activation)


def forward(mode, x, w_ih, w_hh, b_ih, b_hh, h0, c0=None, *, w_hr=None, lengths=None,
            mask=None, reverse=False, reset_after=True, clip_min=None, clip_max=None, clip_nan=False,
            training=False, gate_activation="sigmoid", zoneout_h=None, zoneout_c=None,
            zoneout_y=None, state_mask=None, input_gate_masks=None, recurrent_gate_masks=None):
    """Runs the layer over the sequence; returns ForwardResult(y, hy, cy, reserve).

    mode: 'lstm', 'gru', 'rnn_tanh' or 'rnn_relu'. reset_after (GRU): True for MXNet's /
    PyTorch's GRU, False for the original one (reset gate applied before W_hn). clip_min /
    clip_max (LSTM, given together): clip the cell state to that range after each step;
    clip_nan turns a NaN cell value into clip_min. w_hr (LSTM): projection, the state and
    output become w_hr @ h. training=True also returns the reserve buffer that backward needs.
    gate_activation ('lstm', 'gru'): 'sigmoid' or 'hard_sigmoid' (Keras'), see the module.
    zoneout_h ... recurrent_gate_masks: the regularisers' masks, see the module.
    """
    opts = _options(mode, x, lengths, mask, reverse, reset_after, clip_min, clip_max, clip_nan,
                    gate_activation)
    masks = dict(zoneout_h=zoneout_h, zoneout_c=zoneout_c, zoneout_y=zoneout_y,
                 state_mask=state_mask, input_gate_masks=input_gate_masks,
                 recurrent_gate_masks=recurrent_gate_masks)
    y, hy, cy, reserve = _C.forward(mode, x, w_ih, w_hh, b_ih, b_hh, h0, c0, w_hr,
                                    training=bool(training), masks=masks, **opts)
    return ForwardResult(y, hy, cy, reserve)


def backward(mode, x, w_ih, w_hh, b_ih, b_hh, h0, c0, reserve, dy=None, dhy=None, dcy=None, *,
             w_hr=None, lengths=None, mask=None, reverse=False, reset_after=True,
             clip_min=None, clip_max=None, clip_nan=False, gate_activation="sigmoid",
             zoneout_h=None, zoneout_c=None, zoneout_y=None, state_mask=None,
             input_gate_masks=None, recurrent_gate_masks=None):
    """Gradients from a training forward's reserve; returns Gradients.

    Pass the same arguments, options and masks as to forward. dy [T, N, P], dhy [N, P] and
    dcy [N, H] are the upstream gradients; None means zero. Fields that do not apply are
    None (dc0 unless 'lstm', dw_hr without projection). The masks get no gradient.
    """
    opts = _options(mode, x, lengths, mask, reverse, reset_after, clip_min, clip_max, clip_nan,
                    gate_activation)
    masks = dict(zoneout_h=zoneout_h, zoneout_c=zoneout_c, zoneout_y=zoneout_y,
                 state_mask=state_mask, input_gate_masks=input_gate_masks,
                 recurrent_gate_masks=recurrent_gate_masks)
    grads = _C.backward(mode, x, w_ih, w_hh, b_ih, b_hh, h0, c0, reserve, dy, dhy, dcy, w_hr,
                        masks=masks, **opts)
    return Gradients(*grads)


def reserve_size(mode, steps, batch, input_size, hidden_size, proj_size=0, *, with_masks=False):
    """Elements (of the dtype) in the reserve buffer of a training forward of this size
    (with_masks: of a forward given any of the masks)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    sizes = dict(steps=steps, batch=batch, input_size=input_size, hidden_size=hidden_size,
                 proj_size=proj_size)
    for name, value in sizes.items():
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            raise TypeError(f"{name} must be an integer; got {value!r}")
        if not -2 ** 63 <= value < 2 ** 63:
            raise ValueError(f"sizes too large: {name} = {value}")
    return _C.reserve_size(mode, *(int(v) for v in sizes.values()), bool(with_masks))


def set_num_threads(n):
    """Threads the kernels use (an OpenMP team, MXNet's own where MXNet is loaded; their
    OpenBLAS stays single-threaded and large products are split across the team). n <= 0
    restores the default: OMP_NUM_THREADS if set, else the cores this process may run on."""
    _C.set_num_threads(int(n))


def get_num_threads():
    """Threads the kernels use."""
    return _C.get_num_threads()


def instruction_set():
    """'avx512' or 'base': the vector code the elementwise passes run (chosen at import from
    the CPU; FUSEDRNN_DISABLE_AVX512=1 in the environment forces 'base')."""
    return _C.instruction_set()
