"""Gluon layers: drop-ins for mxnet.gluon.rnn.LSTM / GRU / RNN on fusedrnn's kernels.

Each class subclasses its gluon.rnn counterpart, so the constructor, parameter names and
shapes, initialisers, `begin_state`, layouts and `save_parameters` files are MXNet's; only the
computation differs: every layer and direction is one `_fusedrnn_layer` operator fed the
layer's own parameters (nothing is concatenated per call). Unlike MXNet's CPU op, lengths
(`sequence_length` with `use_sequence_length=True`) are honoured, and so are state clipping
and projection in training. Extra: `reset_after` for GRU.
"""
from mxnet import gluon

__all__ = ["LSTM", "GRU", "RNN"]


class _FusedLayer:
    """The shared forward of the fused layers (mixed into the gluon.rnn classes)."""

    _reset_after = True

    def infer_shape(self, inputs, *args):
        # MXNet's operator-library interface cannot infer an operator's input shapes, so the
        # deferred input-size of the first layer is set here from the data.
        size = inputs.shape[self._layout.find("C")]
        for d in ["l", "r"][:self._dir]:
            weight = getattr(self, "{}0_i2h_weight".format(d))
            weight.shape = (weight.shape[0], size)

    def _forward_kernel(self, F, inputs, states, sequence_length, **kwargs):
        if self._layout == "NTC":
            inputs = F.swapaxes(inputs, 0, 1)
        projection = self._projection_size is not None
        attrs = dict(mode=self._mode, reset_after=self._reset_after, projection=projection,
                     use_lengths=bool(self._use_sequence_length))
        if self._mode == "lstm":
            attrs["clip_nan"] = bool(self._lstm_state_clip_nan)
            if self._lstm_state_clip_min is not None:
                attrs.update(clip_min=self._lstm_state_clip_min,
                             clip_max=self._lstm_state_clip_max)

        def state_of(s, k):
            return F.squeeze(F.slice_axis(s, axis=0, begin=k, end=k + 1), axis=0)

        def param(name):
            # lib_api cannot tell the operator to add to a gradient, so a parameter whose
            # gradient accumulates reaches it through a copy, whose backward does add.
            p = kwargs[name]
            return F.identity(p) if getattr(self, name).grad_req == "add" else p

        x, hys, cys = inputs, [], []
        for layer in range(self._num_layers):
            outs = []
            for j, d in enumerate(["l", "r"][:self._dir]):
                k = layer * self._dir + j
                prefix = "{}{}_".format(d, layer)
                args = [x] + [param(prefix + g) for g in
                              ("i2h_weight", "h2h_weight", "i2h_bias", "h2h_bias")]
                args.append(state_of(states[0], k))
                if self._mode == "lstm":
                    args.append(state_of(states[1], k))
                if projection:
                    args.append(param(prefix + "h2r_weight"))
                if self._use_sequence_length:
                    args.append(sequence_length)
                res = F._internal._fusedrnn_layer(*args, reverse=j == 1, **attrs)
                outs.append(res[0])
                hys.append(res[1])
                if self._mode == "lstm":
                    cys.append(res[2])
            x = outs[0] if self._dir == 1 else F.concat(*outs, dim=2)
            if self._dropout and layer < self._num_layers - 1:
                x = F.Dropout(x, p=self._dropout)
        if self._layout == "NTC":
            x = F.swapaxes(x, 0, 1)
        new_states = [F.stack(*hys, axis=0)]
        if self._mode == "lstm":
            new_states.append(F.stack(*cys, axis=0))
        return x, new_states


class LSTM(_FusedLayer, gluon.rnn.LSTM):
    """Drop-in for `mxnet.gluon.rnn.LSTM` (same arguments); see the module docstring."""


class GRU(_FusedLayer, gluon.rnn.GRU):
    """Drop-in for `mxnet.gluon.rnn.GRU`, plus `reset_after` (default True, MXNet's GRU;
    False: the original GRU, with the reset gate applied before W_hn)."""

    def __init__(self, *args, reset_after=True, **kwargs):
        super().__init__(*args, **kwargs)
        self._reset_after = bool(reset_after)


class RNN(_FusedLayer, gluon.rnn.RNN):
    """Drop-in for `mxnet.gluon.rnn.RNN` (activation 'tanh' or 'relu')."""
