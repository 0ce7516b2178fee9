"""fusedrnn.nd.RNN: MXNet's `mx.nd.RNN` on fusedrnn's fused kernels.

Same arguments, flat parameter layout and outputs as `mx.nd.RNN` in MXNet 1.9.1, so swapping
the function name changes only speed and correctness: `sequence_length` is honoured on the
CPU (MXNet's own CPU op ignores it), as are LSTM state clipping and projection in training.
Extra: `reset_after` for GRU (False: the original GRU, W_hn applied to r * h).

Each layer and direction is one `_fusedrnn_layer` operator fed by `_fusedrnn_params`, which
cuts every layer's weights out of the flat vector; directions of a bidirectional layer each run
over every sample's valid prefix, and their outputs are concatenated on the feature axis.
`fusedrnn.sym.RNN` is the same on symbols.
"""
import mxnet as mx

from . import _checks
from ._op import fused_layer, layers_and_directions, req_safe
from ._results import GATES

__all__ = ["RNN"]


def _flat_layout(mode, num_layers, dirs, input_size, state_size, projection_size):
    """(offset, shape) of every weight and bias in MXNet's flat parameter vector: all weights
    (per layer, per direction: i2h, h2h, h2r), then all biases (per layer, direction: i2h,
    h2h)."""
    G = GATES[mode]
    P = projection_size or state_size
    weights, biases, offset = [], [], 0
    for layer in range(num_layers):
        in_size = input_size if layer == 0 else dirs * P
        for _ in range(dirs):
            shapes = [(G * state_size, in_size), (G * state_size, P)]
            if projection_size:
                shapes.append((P, state_size))
            entry = []
            for shape in shapes:
                entry.append((offset, shape))
                offset += shape[0] * shape[1]
            weights.append(entry)
    for layer in range(num_layers):
        for _ in range(dirs):
            entry = []
            for _ in range(2):
                entry.append((offset, (G * state_size,)))
                offset += G * state_size
            biases.append(entry)
    return weights, biases, offset


def RNN(data=None, parameters=None, state=None, state_cell=None, sequence_length=None,
        state_size=None, num_layers=1, bidirectional=False, mode=None, p=0.0,
        state_outputs=False, projection_size=None, lstm_state_clip_min=None,
        lstm_state_clip_max=None, lstm_state_clip_nan=False, use_sequence_length=False,
        reset_after=True, name=None, **kwargs):
    """Drop-in for `mx.nd.RNN` (data in TNC layout); see the module docstring. `name` is
    accepted for compatibility and unused."""
    _check_arguments(mx.nd.NDArray, kwargs, data, parameters, state, state_cell,
                     sequence_length, state_size, num_layers, mode, use_sequence_length,
                     projection_size, p)
    if data.ndim != 3:
        raise ValueError(f"data must be [T, N, C]; got shape {data.shape}")
    if 0 in data.shape:
        raise ValueError(f"data must not have a zero-size dimension; got shape {data.shape}")
    dirs = 2 if bidirectional else 1
    N, P = data.shape[1], projection_size or state_size
    expect = [("state", state, (num_layers * dirs, N, P))]
    if mode == "lstm":
        expect.append(("state_cell", state_cell, (num_layers * dirs, N, state_size)))
    if use_sequence_length:
        expect.append(("sequence_length", sequence_length, (N,)))
    for arg, value, shape in expect:
        if value.shape != shape:
            raise ValueError(f"{arg} must have shape {shape}; got {value.shape}")
    size = _flat_layout(mode, num_layers, dirs, data.shape[2], state_size, projection_size)[2]
    if parameters.shape != (size,):
        raise ValueError(f"parameters has shape {parameters.shape}; expected ({size},) for "
                         f"mode={mode!r}, num_layers={num_layers}, "
                         f"bidirectional={bidirectional}, state_size={state_size}")
    outs = _rnn(mx.nd, data, parameters, state, state_cell, sequence_length, state_size,
                num_layers, bidirectional, mode, p, projection_size, lstm_state_clip_min,
                lstm_state_clip_max, lstm_state_clip_nan, use_sequence_length, reset_after)
    return outs if state_outputs else outs[0]


def _check_arguments(kind, kwargs, data, parameters, state, state_cell, sequence_length,
                     state_size, num_layers, mode, use_sequence_length, projection_size, p):
    """The checks nd.RNN and sym.RNN share; kind is NDArray or Symbol."""
    what = "an NDArray" if kind is mx.nd.NDArray else "a Symbol"
    if kwargs:
        raise TypeError(f"RNN() got unexpected arguments {sorted(kwargs)}")
    if mode not in GATES:
        raise ValueError(f"mode must be one of {tuple(GATES)}; got {mode!r}")
    _checks.positive_int("state_size", state_size)
    _checks.positive_int("num_layers", num_layers)
    if projection_size is not None and not (_checks.is_int(projection_size) and
                                            projection_size >= 0):  # 0, like None: none
        raise ValueError(f"projection_size must be None or a positive integer; got "
                         f"{projection_size!r}")
    if projection_size and mode != "lstm":
        raise ValueError(f"projection_size is only for mode 'lstm'; got mode {mode!r}")
    _checks.fraction("p (dropout)", p)
    for name, value in (("data", data), ("parameters", parameters), ("state", state)):
        if not isinstance(value, kind):
            raise TypeError(f"{name} must be {what}")
    if mode == "lstm" and not isinstance(state_cell, kind):
        raise TypeError(f"state_cell must be {what} for mode 'lstm'")
    if use_sequence_length and not isinstance(sequence_length, kind):
        raise TypeError(f"sequence_length must be {what} when use_sequence_length=True")


def _shaped_like_data(data, parameters, state, state_cell, mode, num_layers, dirs, state_size,
                      projection_size):
    """parameters, state and state_cell (Symbols) with their shapes and dtype tied to data's
    by MXNet's own operators, as mx.sym.RNN infers them: [a * C + b], [L * D, N, P] and
    [L * D, N, H]. MXNet 1.9.1 hands a library operator its input shapes through a bridge
    that breaks on any shape it does not fully know (an unknown rank counts -1 where it sizes
    a buffer, so MXNet writes past it or throws std::bad_alloc; an unknown size comes back
    as 4294967295), so whenever data's shape is known, fusedrnn's operators see only known
    shapes."""
    F = mx.sym
    layers = num_layers * dirs
    P = projection_size or state_size
    b = _flat_layout(mode, num_layers, dirs, 0, state_size, projection_size)[2]
    first = F.slice_axis(F.slice_axis(data, axis=0, begin=0, end=1), axis=1, begin=0, end=1)
    zeros_c = F.zeros_like(F.reshape(first, shape=(-1,)))                          # [C]
    like_params = F.concat(F.tile(zeros_c, reps=(GATES[mode] * state_size * dirs,)),
                           F.tile(F.slice_axis(zeros_c, axis=0, begin=0, end=1), reps=(b,)),
                           dim=0)
    zeros_n = F.zeros_like(F.slice_axis(F.slice_axis(data, axis=0, begin=0, end=1), axis=2,
                                        begin=0, end=1))                           # [1, N, 1]

    def like(x, rhs, arg):
        # Named after the argument: a shape that contradicts data's fails there.
        return F._internal._identity_with_attr_like_rhs(x, rhs, name=f"{arg}_shape_from_data")

    parameters = like(parameters, like_params, "parameters")
    state = like(state, F.tile(zeros_n, reps=(layers, 1, P)), "state")
    if state_cell is not None:
        state_cell = like(state_cell, F.tile(zeros_n, reps=(layers, 1, state_size)),
                          "state_cell")
    return parameters, state, state_cell


def _rnn(F, data, parameters, state, state_cell, sequence_length, state_size, num_layers,
         bidirectional, mode, p, projection_size, clip_min, clip_max, clip_nan,
         use_sequence_length, reset_after):
    """The RNN on F (mx.nd or mx.sym): [output, hy, (cy)]."""
    dirs = 2 if bidirectional else 1
    if F is mx.sym:
        parameters, state, state_cell = _shaped_like_data(
            data, parameters, state, state_cell, mode, num_layers, dirs, state_size,
            projection_size)
    attrs = dict(mode=mode, reset_after=reset_after, projection=bool(projection_size),
                 use_lengths=bool(use_sequence_length), clip_nan=clip_nan)
    if F is mx.nd:
        # Outside autograd nothing is stored for backward (a symbol may be trained later).
        attrs["training"] = mx.autograd.is_recording()
    if clip_min is not None or clip_max is not None:
        attrs.update(clip_min=clip_min, clip_max=clip_max)
    cut = dict(mode=mode, state_size=state_size, num_layers=num_layers,
               bidirectional=bidirectional, projection_size=projection_size or 0)

    per_piece = 5 if projection_size else 4
    cut_out = F._internal._fusedrnn_params(req_safe(F, data), req_safe(F, parameters), **cut)
    pieces = [cut_out[i] for i in range(num_layers * dirs * per_piece)]

    def run(x, k, init):
        w = pieces[k * per_piece:(k + 1) * per_piece]
        return fused_layer(F, x, w[:4], init, w[4] if projection_size else None,
                           sequence_length if use_sequence_length else None,
                           reverse=k % dirs == 1, **attrs)

    states = [state] + ([state_cell] if mode == "lstm" else [])
    x, finals = layers_and_directions(F, data, states, num_layers, dirs, p, run)
    return [x] + finals
