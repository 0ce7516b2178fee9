"""fusedrnn.sym.RNN: MXNet's `mx.sym.RNN` on fusedrnn's fused kernels (see fusedrnn.nd)."""
import mxnet as mx

from .nd import _check_arguments, _rnn

__all__ = ["RNN"]


def RNN(data=None, parameters=None, state=None, state_cell=None, sequence_length=None,
        state_size=None, num_layers=1, bidirectional=False, mode=None, p=0.0,
        state_outputs=False, projection_size=None, lstm_state_clip_min=None,
        lstm_state_clip_max=None, lstm_state_clip_nan=False, use_sequence_length=False,
        reset_after=True, name=None, **kwargs):
    """Drop-in for `mx.sym.RNN` (data in TNC layout); shapes are checked at bind time. `name`
    is accepted for compatibility and unused."""
    _check_arguments(mx.sym.Symbol, kwargs, data, parameters, state, state_cell,
                     sequence_length, state_size, num_layers, mode, use_sequence_length,
                     projection_size, p)
    outs = _rnn(mx.sym, data, parameters, state, state_cell, sequence_length, state_size,
                num_layers, bidirectional, mode, p, projection_size, lstm_state_clip_min,
                lstm_state_clip_max, lstm_state_clip_nan, use_sequence_length, reset_after)
    return mx.sym.Group(outs) if state_outputs else outs[0]
