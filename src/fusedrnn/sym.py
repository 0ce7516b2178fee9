"""fusedrnn.sym.RNN: MXNet's `mx.sym.RNN` on fusedrnn's fused kernels (see fusedrnn.nd)."""
import mxnet as mx

from .nd import _check_options, _rnn

__all__ = ["RNN"]


def RNN(data=None, parameters=None, state=None, state_cell=None, sequence_length=None,
        state_size=None, num_layers=1, bidirectional=False, mode=None, p=0.0,
        state_outputs=False, projection_size=None, lstm_state_clip_min=None,
        lstm_state_clip_max=None, lstm_state_clip_nan=False, use_sequence_length=False,
        reset_after=True, **kwargs):
    """Drop-in for `mx.sym.RNN` (data in TNC layout); shapes are checked at bind time."""
    _check_options(kwargs, mode, state_size, num_layers)
    for name, value in (("data", data), ("parameters", parameters), ("state", state)):
        if not isinstance(value, mx.sym.Symbol):
            raise TypeError(f"{name} must be a Symbol")
    if mode == "lstm" and not isinstance(state_cell, mx.sym.Symbol):
        raise TypeError("state_cell must be a Symbol for mode 'lstm'")
    if use_sequence_length and not isinstance(sequence_length, mx.sym.Symbol):
        raise TypeError("sequence_length must be a Symbol when use_sequence_length=True")
    outs = _rnn(mx.sym, data, parameters, state, state_cell, sequence_length, state_size,
                num_layers, bidirectional, mode, p, projection_size, lstm_state_clip_min,
                lstm_state_clip_max, lstm_state_clip_nan, use_sequence_length, reset_after)
    return mx.sym.Group(outs) if state_outputs else outs[0]
