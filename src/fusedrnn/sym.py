"""fusedrnn.sym.RNN: MXNet's `mx.sym.RNN` on fusedrnn's fused kernels (see fusedrnn.nd)."""
import mxnet as mx

from .nd import _check_arguments, _rnn

__all__ = ["RNN"]


def RNN(data=None, parameters=None, state=None, state_cell=None, sequence_length=None,
        state_size=None, num_layers=1, bidirectional=False, mode=None, p=0.0,
        state_outputs=False, projection_size=None, lstm_state_clip_min=None,
        lstm_state_clip_max=None, lstm_state_clip_nan=False, use_sequence_length=False,
        reset_after=True, name=None, **kwargs):
    """Drop-in for `mx.sym.RNN` (data in TNC layout); shapes are checked at bind time. As
    with mx.sym.RNN, an input left out becomes a Variable named `{name}_data`,
    `{name}_parameters`, `{name}_state`, `{name}_state_cell`, `{name}_sequence_length`
    (`name` defaults to MXNet's next 'rnn<i>'), the outputs are named as mx.sym.RNN's, and
    shape inference fills in what data implies: the size of `parameters`, the states' shapes
    and the dtypes."""
    name = mx.name.NameManager.current.get(name, "rnn")
    wanted = dict(data=True, parameters=True, state=True, state_cell=mode == "lstm",
                  sequence_length=bool(use_sequence_length))
    given = dict(data=data, parameters=parameters, state=state, state_cell=state_cell,
                 sequence_length=sequence_length)
    data, parameters, state, state_cell, sequence_length = (
        mx.sym.var(f"{name}_{arg}") if value is None and wanted[arg] else value
        for arg, value in given.items())
    _check_arguments(mx.sym.Symbol, kwargs, data, parameters, state, state_cell,
                     sequence_length, state_size, num_layers, mode, use_sequence_length,
                     projection_size, p)
    outs = _rnn(mx.sym, data, parameters, state, state_cell, sequence_length, state_size,
                num_layers, bidirectional, mode, p, projection_size, lstm_state_clip_min,
                lstm_state_clip_max, lstm_state_clip_nan, use_sequence_length, reset_after)
    # Outputs named as mx.sym.RNN's ('{name}_output', '{name}_state_output',
    # '{name}_statecell_output'), which code reads from an executor's output_dict.
    outs = [mx.sym.identity(out, name=name + suffix)
            for out, suffix in zip(outs, ("", "_state", "_statecell"))]
    return mx.sym.Group(outs) if state_outputs else outs[0]
