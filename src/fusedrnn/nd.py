"""fusedrnn.nd.RNN: MXNet's `mx.nd.RNN` on fusedrnn's fused kernels.

Same arguments, flat parameter layout and outputs as `mx.nd.RNN` in MXNet 1.9.1, so swapping
the function name changes only speed and correctness: `sequence_length` is honoured on the
CPU (MXNet's own CPU op ignores it), as are LSTM state clipping and projection in training.
Extra: `reset_after` for GRU (False: the original GRU, W_hn applied to r * h).

Each layer and direction is one `_fusedrnn_layer` operator; directions of a bidirectional
layer each run over every sample's valid prefix, and their outputs are concatenated on the
feature axis.
"""
import mxnet as mx

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
        reset_after=True, **kwargs):
    """Drop-in for `mx.nd.RNN` (data in TNC layout); see the module docstring."""
    if kwargs:
        raise TypeError(f"RNN() got unexpected arguments {sorted(kwargs)}")
    if mode not in GATES:
        raise ValueError(f"mode must be one of {tuple(GATES)}; got {mode!r}")
    for name, value in (("data", data), ("parameters", parameters), ("state", state)):
        if not isinstance(value, mx.nd.NDArray):
            raise TypeError(f"{name} must be an NDArray")
    if mode == "lstm" and not isinstance(state_cell, mx.nd.NDArray):
        raise TypeError("state_cell must be an NDArray for mode 'lstm'")
    if state_size is None or int(state_size) < 1:
        raise ValueError(f"state_size must be a positive integer; got {state_size!r}")
    if use_sequence_length and not isinstance(sequence_length, mx.nd.NDArray):
        raise TypeError("sequence_length must be an NDArray when use_sequence_length=True")
    if data.ndim != 3:
        raise ValueError(f"data must be [T, N, C]; got shape {data.shape}")
    dirs = 2 if bidirectional else 1
    weights, biases, size = _flat_layout(mode, num_layers, dirs, data.shape[2], state_size,
                                         projection_size)
    if parameters.shape != (size,):
        raise ValueError(f"parameters has shape {parameters.shape}; expected ({size},) for "
                         f"mode={mode!r}, num_layers={num_layers}, "
                         f"bidirectional={bidirectional}, state_size={state_size}")

    def piece(offset, shape):
        n = 1
        for s in shape:
            n *= s
        return parameters[offset:offset + n].reshape(shape)

    attrs = dict(mode=mode, reset_after=reset_after, projection=bool(projection_size),
                 use_lengths=bool(use_sequence_length), clip_nan=lstm_state_clip_nan)
    if lstm_state_clip_min is not None or lstm_state_clip_max is not None:
        attrs.update(clip_min=lstm_state_clip_min, clip_max=lstm_state_clip_max)
    x, hys, cys = data, [], []
    for layer in range(num_layers):
        outs = []
        for d in range(dirs):
            k = layer * dirs + d
            w = [piece(*spec) for spec in weights[k]]
            b = [piece(*spec) for spec in biases[k]]
            inputs = [x, w[0], w[1], b[0], b[1], state[k]]
            if mode == "lstm":
                inputs.append(state_cell[k])
            if projection_size:
                inputs.append(w[2])
            if use_sequence_length:
                inputs.append(sequence_length)
            res = mx.nd._internal._fusedrnn_layer(*inputs, reverse=d == 1, **attrs)
            outs.append(res[0])
            hys.append(res[1])
            if mode == "lstm":
                cys.append(res[2])
        x = outs[0] if dirs == 1 else mx.nd.concat(*outs, dim=2)
        if p and layer < num_layers - 1:
            x = mx.nd.Dropout(x, p=p)
    if not state_outputs:
        return x
    result = [x, mx.nd.stack(*hys, axis=0)]
    if mode == "lstm":
        result.append(mx.nd.stack(*cys, axis=0))
    return result
