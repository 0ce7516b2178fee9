"""Gluon cells: drop-ins for mxnet.gluon.rnn.LSTMCell / GRUCell / RNNCell where each step is
one fused operator (`_fusedrnn_layer` over a single step).

Each class subclasses its gluon.rnn counterpart, so the constructor, parameter names,
`begin_state` and `unroll(length, inputs, begin_state, layout, merge_outputs, valid_length)`
are MXNet's, and the cells compose with SequentialRNNCell, BidirectionalCell, ResidualCell
and DropoutCell. A cell built with activations the fused operator does not have (other than
MXNet's defaults, or tanh/relu for RNNCell) falls back to gluon's own step.
"""
from mxnet import gluon

__all__ = ["LSTMCell", "GRUCell", "RNNCell"]


class _FusedCell:
    """The shared step of the fused cells (mixed into the gluon.rnn cell classes)."""

    _reset_after = True

    def _fused_mode(self):
        raise NotImplementedError

    def infer_shape(self, inputs, *args):
        # MXNet's operator-library interface cannot infer an operator's input shapes, so the
        # deferred input size is set here from the data.
        self.i2h_weight.shape = (self.i2h_weight.shape[0], inputs.shape[-1])

    def hybrid_forward(self, F, inputs, states, i2h_weight, h2h_weight, i2h_bias, h2h_bias):
        mode = self._fused_mode()
        if mode is None:
            return super().hybrid_forward(F, inputs, states, i2h_weight, h2h_weight, i2h_bias,
                                          h2h_bias)
        self._counter += 1

        def param(name, value):
            # lib_api cannot tell the operator to add to a gradient, so a parameter whose
            # gradient accumulates reaches it through a copy, whose backward does add.
            return F.identity(value) if getattr(self, name).grad_req == "add" else value

        args = [F.expand_dims(inputs, axis=0), param("i2h_weight", i2h_weight),
                param("h2h_weight", h2h_weight), param("i2h_bias", i2h_bias),
                param("h2h_bias", h2h_bias)] + list(states)
        res = F._internal._fusedrnn_layer(*args, mode=mode, reset_after=self._reset_after)
        next_h = res[1]
        return next_h, [next_h] + ([res[2]] if mode == "lstm" else [])


class LSTMCell(_FusedCell, gluon.rnn.LSTMCell):
    """Drop-in for `mxnet.gluon.rnn.LSTMCell`; one fused operator per step."""

    def _fused_mode(self):
        default = self._activation == "tanh" and self._recurrent_activation == "sigmoid"
        return "lstm" if default else None


class GRUCell(_FusedCell, gluon.rnn.GRUCell):
    """Drop-in for `mxnet.gluon.rnn.GRUCell`, plus `reset_after` (default True, MXNet's GRU;
    False: the original GRU)."""

    def __init__(self, *args, reset_after=True, **kwargs):
        super().__init__(*args, **kwargs)
        self._reset_after = bool(reset_after)

    def _fused_mode(self):
        return "gru"


class RNNCell(_FusedCell, gluon.rnn.RNNCell):
    """Drop-in for `mxnet.gluon.rnn.RNNCell` (activation 'tanh' or 'relu' fused)."""

    def _fused_mode(self):
        return {"tanh": "rnn_tanh", "relu": "rnn_relu"}.get(self._activation)
