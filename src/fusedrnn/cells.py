"""Gluon cells: drop-ins for mxnet.gluon.rnn.LSTMCell / GRUCell / RNNCell on fusedrnn's kernels.

Each class subclasses its gluon.rnn counterpart, so the constructor, parameter names,
`begin_state` and `unroll(length, inputs, begin_state, layout, merge_outputs, valid_length)`
are MXNet's, and the cells compose with SequentialRNNCell, BidirectionalCell, ResidualCell,
DropoutCell and ZoneoutCell. A step (`cell(x, states)`, e.g. in a decoding loop) is one fused
operator (`_fusedrnn_layer` over a single step); outside autograd recording, on CPU arrays, the
step is pushed to MXNet's engine straight, without an operator's dispatch (see
`_FusedCell.forward` and csrc/mxnet/nd_step.cc). `unroll` runs the whole sequence as one
`_fusedrnn_layer`, imperatively or in a graph; with `valid_length` no work is spent on
padding: outputs past a sample's length are 0 and its states come from its last valid step,
as gluon's unroll returns them (return types included). A cell built with activations the
fused operator does not have (other than MXNet's defaults, or tanh/relu for RNNCell) falls
back to gluon's own step and unroll.
"""
import contextlib
import ctypes
import functools

from mxnet import autograd, gluon, ndarray, symbol
from mxnet.base import _LIB, NDArrayHandle
from mxnet.gluon.contrib.rnn import VariationalDropoutCell as _GluonVariationalDropoutCell
from mxnet.gluon.parameter import DeferredInitializationError
from mxnet.gluon.rnn.rnn_cell import (_format_sequence, _get_begin_state,
                                      _mask_sequence_variable_length)

from . import _C, _checks
from ._op import fused_layer

__all__ = ["LSTMCell", "GRUCell", "RNNCell", "ZoneoutCell", "VariationalDropoutCell"]

_PARAMS = ("i2h_weight", "h2h_weight", "i2h_bias", "h2h_bias")

_C._set_ndarray_api({name: ctypes.cast(getattr(_LIB, name), ctypes.c_void_p).value for name in (
    "MXNDArrayGetData", "MXNDArrayToDLPack", "MXNDArrayGetShapeEx", "MXNDArrayGetDType",
    "MXNDArrayGetContext", "MXNDArrayGetStorageType", "MXNDArrayCreateEx",
    "MXShallowCopyNDArray", "MXNDArrayWaitToRead", "MXNDArrayFree", "MXEnginePushAsyncND",
    "MXGetLastError")})


def _dense(states):
    """States as dense arrays: gluon's cells take row_sparse ones too, library operators
    only dense (autograd follows the conversion)."""
    if not isinstance(states, (list, tuple)):
        return states
    return [s.tostype("default") if isinstance(s, ndarray.NDArray) and s.stype != "default"
            else s for s in states]


class _FusedUnroll:
    """unroll as fused operators where the cell can (`_fusable`), else as its gluon class
    does; mixed in before the gluon class."""

    def unroll(self, length, inputs, begin_state=None, layout="NTC", merge_outputs=None,
               valid_length=None):
        if not self._fusable():
            return super().unroll(length, inputs, begin_state=begin_state, layout=layout,
                                  merge_outputs=merge_outputs, valid_length=valid_length)
        return self._fused_unroll(length, inputs, begin_state, layout, merge_outputs,
                                  valid_length)


class _FusedCell(_FusedUnroll):
    """The shared step and unroll of the fused cells (mixed into the gluon.rnn cell classes)."""

    _reset_after = True

    def _fused_mode(self):
        raise NotImplementedError

    def _check_step(self, inputs, states):
        if inputs.ndim != 2 or 0 in inputs.shape:
            raise ValueError(f"inputs of a step must have shape [N, C] (no zero-size "
                             f"dimension); got {inputs.shape}")
        _checks.float_dtype(inputs.dtype)
        self._check_states(states, inputs.shape[0], inputs.dtype)

    def _check_states(self, states, batch, dtype):
        _checks.states(states, [(batch, self._hidden_size)] * len(self.state_info()), dtype)

    def forward(self, inputs, states):
        # A step outside autograd (a decoding loop) runs on the arrays' memory: an operator's
        # dispatch through MXNet costs ~100 us, more than the step itself at batch 1-16.
        # That step checks its arguments itself; these checks cost ~20 us a step. A hybridized
        # cell's first call still builds its graph, which export and summary need.
        if isinstance(inputs, ndarray.NDArray):
            states = _dense(states)
            if not autograd.is_recording() and not (self._active and not self._cached_graph):
                out = self._step_on_arrays(inputs, states)
                if out is not None:
                    return out
            self._check_step(inputs, states)
        return super().forward(inputs, states)

    def _step_on_arrays(self, inputs, states):
        mode = self._fused_mode()
        if mode is None or not isinstance(states, (list, tuple)) or \
                not all(isinstance(s, ndarray.NDArray) for s in states):
            return None
        ctx = inputs.context
        try:
            weights = [getattr(self, name).data(ctx) for name in _PARAMS]
        except DeferredInitializationError:
            return None  # the operator path finishes the initialisation
        handles = _C._nd_cell_step(mode, self._reset_after, inputs.handle.value,
                                   [s.handle.value for s in states],
                                   [w.handle.value for w in weights])
        if not handles:
            return None  # not all dense float CPU arrays of one dtype on one device
        self._counter += 1  # as gluon's RecurrentCell.forward, which this step bypasses
        out = [ndarray.NDArray(NDArrayHandle(h)) for h in handles]
        return out[0], out

    def hybrid_forward(self, F, inputs, states, i2h_weight, h2h_weight, i2h_bias, h2h_bias):
        mode = self._fused_mode()
        if mode is None:
            return super().hybrid_forward(F, inputs, states, i2h_weight, h2h_weight, i2h_bias,
                                          h2h_bias)
        res = fused_layer(F, F.expand_dims(inputs, axis=0),
                          [i2h_weight, h2h_weight, i2h_bias, h2h_bias], list(states),
                          mode=mode, reset_after=self._reset_after)
        next_h = res[1]
        return next_h, [next_h] + ([res[2]] if mode == "lstm" else [])

    def _unroll_params(self, F, x):
        if F is symbol:
            return {name: getattr(self, name).var() for name in _PARAMS}
        # The cell is not called through Block.__call__ here, so the deferred initialisation
        # that HybridBlock.forward would do happens here.
        try:
            return {name: getattr(self, name).data(x.context) for name in _PARAMS}
        except DeferredInitializationError:
            self.i2h_weight.shape = (self.i2h_weight.shape[0], x.shape[-1])
            for param in self.params.values():
                param._finish_deferred_init()
            return {name: getattr(self, name).data(x.context) for name in _PARAMS}

    def _fusable(self):
        """Whether unroll runs one fused operator (the regularising cells ask)."""
        return self._fused_mode() is not None

    def _fused_unroll(self, length, inputs, begin_state, layout, merge_outputs, valid_length,
                      masks=None):
        """unroll as one fused operator; masks(F, x, states) -> {name: mask} (see
        _op.MASKS) draws the regularisers' masks from the time-major inputs and the begin
        states, or masks is None."""
        mode = self._fused_mode()
        _checks.one_of("layout", layout, ("NTC", "TNC"))
        if isinstance(inputs, ndarray.NDArray) and inputs.ndim != 3:
            raise ValueError(f"inputs must have 3 dimensions ({layout}); got shape "
                             f"{inputs.shape}")
        self.reset()
        x, axis, F, batch_size = _format_sequence(length, inputs, layout, True)
        if F is ndarray:
            if x.shape[axis] != length:
                raise ValueError(f"length is {length!r} but inputs has {x.shape[axis]} steps")
            if 0 in x.shape:
                raise ValueError(f"inputs must not have a zero-size dimension; got shape "
                                 f"{x.shape}")
            _checks.float_dtype(x.dtype)
            if valid_length is not None:
                if not isinstance(valid_length, ndarray.NDArray):
                    raise TypeError(f"valid_length must be an NDArray, like inputs; got "
                                    f"{type(valid_length).__name__}")
                if valid_length.shape != (batch_size,):
                    raise ValueError(f"valid_length must have shape ({batch_size},); got "
                                     f"{valid_length.shape}")
                _checks.valid_values("valid_length", valid_length, length)
            if begin_state is not None:
                begin_state = _dense(begin_state)
                self._check_states(begin_state, batch_size, x.dtype)
        states = list(_get_begin_state(self, F, begin_state, x, batch_size))
        if axis != 0:
            x = F.swapaxes(x, dim1=0, dim2=axis)
        params = self._unroll_params(F, x)
        res = fused_layer(F, x, [params[name] for name in _PARAMS], states, None, valid_length,
                          masks(F, x, states) if masks else None, mode=mode,
                          reset_after=self._reset_after, use_lengths=valid_length is not None)
        outputs = res[0] if axis == 0 else F.swapaxes(res[0], dim1=0, dim2=axis)
        # gluon's unroll, asked for neither, returns a list of steps, or one tensor when it
        # masked padding (valid_length); the same here, so that indexing the result means
        # the same thing with either cell.
        if merge_outputs is None:
            merge_outputs = valid_length is not None
        outputs, _, _, _ = _format_sequence(length, outputs, layout, merge_outputs)
        if F is symbol and not merge_outputs:
            # gluon's step outputs are named '{prefix}t{i}_out'; code reads them by name.
            outputs = [F.identity(o, name=f"{self._prefix}t{self._counter + 1 + i}_out")
                       for i, o in enumerate(outputs)]
        # Counted as gluon's unroll counts its steps, so that steps taken afterwards go on
        # from the same count.
        self._counter += length
        return outputs, [res[1]] + ([res[2]] if mode == "lstm" else [])


class LSTMCell(_FusedCell, gluon.rnn.LSTMCell):
    """Drop-in for `mxnet.gluon.rnn.LSTMCell` (the same arguments, in the same order); one
    fused operator per step or unroll."""

    def __init__(self, hidden_size, i2h_weight_initializer=None, h2h_weight_initializer=None,
                 i2h_bias_initializer="zeros", h2h_bias_initializer="zeros", input_size=0,
                 prefix=None, params=None, activation="tanh", recurrent_activation="sigmoid"):
        _checks.positive_int("hidden_size", hidden_size)
        super().__init__(hidden_size, i2h_weight_initializer, h2h_weight_initializer,
                         i2h_bias_initializer, h2h_bias_initializer, input_size, prefix, params,
                         activation, recurrent_activation)

    def _fused_mode(self):
        default = self._activation == "tanh" and self._recurrent_activation == "sigmoid"
        return "lstm" if default else None


class GRUCell(_FusedCell, gluon.rnn.GRUCell):
    """Drop-in for `mxnet.gluon.rnn.GRUCell` (the same arguments, in the same order), plus
    `reset_after` (default True, MXNet's GRU; False: the original GRU)."""

    def __init__(self, hidden_size, i2h_weight_initializer=None, h2h_weight_initializer=None,
                 i2h_bias_initializer="zeros", h2h_bias_initializer="zeros", input_size=0,
                 prefix=None, params=None, *, reset_after=True):
        _checks.positive_int("hidden_size", hidden_size)
        super().__init__(hidden_size, i2h_weight_initializer, h2h_weight_initializer,
                         i2h_bias_initializer, h2h_bias_initializer, input_size, prefix, params)
        self._reset_after = bool(reset_after)

    def _fused_mode(self):
        return "gru"


class RNNCell(_FusedCell, gluon.rnn.RNNCell):
    """Drop-in for `mxnet.gluon.rnn.RNNCell` (the same arguments, in the same order;
    activation 'tanh' or 'relu' fused, others run gluon's own step)."""

    def __init__(self, hidden_size, activation="tanh", i2h_weight_initializer=None,
                 h2h_weight_initializer=None, i2h_bias_initializer="zeros",
                 h2h_bias_initializer="zeros", input_size=0, prefix=None, params=None):
        _checks.positive_int("hidden_size", hidden_size)
        super().__init__(hidden_size, activation, i2h_weight_initializer,
                         h2h_weight_initializer, i2h_bias_initializer, h2h_bias_initializer,
                         input_size, prefix, params)

    def _fused_mode(self):
        return {"tanh": "rnn_tanh", "relu": "rnn_relu"}.get(self._activation)


def _fused_unroller(cell):
    """The function that unrolls `cell` as fused operators, with the regularisers' masks of
    the cells around it (`_FusedCell._fused_unroll`'s arguments), or None where it cannot:
    fusedrnn's cells and regularising cells over them, and gluon's ResidualCell around
    those (DeepAR puts its ZoneoutCell around one)."""
    if isinstance(cell, gluon.rnn.ResidualCell):
        inner = _fused_unroller(cell.base_cell)
        return None if inner is None else functools.partial(_residual_unroll, cell, inner)
    if getattr(cell, "_fusable", lambda: False)():
        return cell._fused_unroll
    return None


@contextlib.contextmanager
def _unmodified(cell):
    """What a modifier cell does around its base cell's unroll: a modified cell refuses to
    make its begin state."""
    cell._modified = False
    try:
        yield
    finally:
        cell._modified = True


def _residual_unroll(cell, inner, length, inputs, begin_state, layout, merge_outputs,
                     valid_length, masks=None):
    """gluon.rnn.ResidualCell.unroll over a fused unroll: its base cell's outputs plus the
    inputs (zero where padded)."""
    cell.reset()
    with _unmodified(cell.base_cell):
        outputs, states = inner(length, inputs, begin_state, layout, merge_outputs,
                                valid_length, masks)
    merge_outputs = not isinstance(outputs, (list, tuple))
    inputs, axis, F, _ = _format_sequence(length, inputs, layout, merge_outputs)
    if valid_length is not None:
        inputs = _mask_sequence_variable_length(F, inputs, length, valid_length, axis,
                                                merge_outputs)
    if merge_outputs:
        return F.elemwise_add(outputs, inputs), states
    return [F.elemwise_add(o, i) for o, i in zip(outputs, inputs)], states


def _draws(F):
    """Whether to draw masks: in a graph always (its Dropout draws only when it runs in
    training, and gives ones otherwise), imperatively only in training."""
    return F is symbol or autograd.is_training()


def _last_step(outputs, layout):
    if isinstance(outputs, (list, tuple)):
        return outputs[-1]
    return outputs.slice_axis(axis=layout.find("T"), begin=-1, end=None).squeeze(
        axis=layout.find("T"))


class ZoneoutCell(_FusedUnroll, gluon.rnn.ZoneoutCell):
    """Drop-in for `mxnet.gluon.rnn.ZoneoutCell(base_cell, zoneout_outputs, zoneout_states)`.

    Around a fused cell (or a fusedrnn.VariationalDropoutCell of one), `unroll` runs one fused
    operator with the zoneout inside the recurrence: masks [T, N, H] for the output and each
    state, drawn by MXNet's Dropout (so `mx.random.seed` makes a run reproducible) in training
    only, as gluon's cell draws them step by step. A step (`cell(x, states)`) and a cell
    around anything else are gluon's."""

    def __init__(self, base_cell, zoneout_outputs=0., zoneout_states=0.):
        _checks.fraction("zoneout_outputs", zoneout_outputs)
        _checks.fraction("zoneout_states", zoneout_states)
        super().__init__(base_cell, zoneout_outputs, zoneout_states)

    def _fusable(self):
        # Around a ResidualCell the output track would be h' + x: only the states' zoneout
        # is in the kernels then.
        residual = isinstance(self.base_cell, gluon.rnn.ResidualCell)
        return _fused_unroller(self.base_cell) is not None and not (
            residual and self.zoneout_outputs)

    def _fused_unroll(self, length, inputs, begin_state, layout, merge_outputs, valid_length,
                      masks=None):
        self.reset()
        p_outputs, p_states = self.zoneout_outputs, self.zoneout_states

        def zoneout(F, x, states):
            drawn = masks(F, x, states) if masks else {}
            if _draws(F) and (p_outputs or p_states):
                # ones [T, N, H] from x [T, N, C] and h [N, H], in a graph too (the cells'
                # states and output all have h's shape)
                ones = F.broadcast_like(F.expand_dims(F.ones_like(states[0]), axis=0), x,
                                        lhs_axes=(0,), rhs_axes=(0,))
                if p_outputs:
                    drawn["zoneout_y"] = F.Dropout(ones, p=p_outputs)
                if p_states:
                    for name in ("zoneout_h", "zoneout_c")[:len(states)]:
                        drawn[name] = F.Dropout(ones, p=p_states)
            return drawn

        with _unmodified(self.base_cell):
            outputs, states = _fused_unroller(self.base_cell)(
                length, inputs, begin_state, layout, merge_outputs, valid_length, zoneout)
        # A step taken next, without reset, goes on from this output, as after gluon's unroll.
        self._prev_output = _last_step(outputs, layout)
        return outputs, states


class VariationalDropoutCell(_FusedUnroll, _GluonVariationalDropoutCell):
    """Drop-in for `mxnet.gluon.contrib.rnn.VariationalDropoutCell(base_cell, drop_inputs,
    drop_states, drop_outputs)`.

    Around a fused cell, `unroll` runs one fused operator, with the state mask [N, H] of
    `drop_states` inside the recurrence (for it gluon's cell steps one operator at a time);
    the input and output masks, the same at every step, multiply the whole sequence, as
    gluon's unroll does without drop_states. Masks are drawn by MXNet's Dropout in training only. A
    step and a cell around anything else are gluon's."""

    def __init__(self, base_cell, drop_inputs=0., drop_states=0., drop_outputs=0.):
        for name, rate in (("drop_inputs", drop_inputs), ("drop_states", drop_states),
                           ("drop_outputs", drop_outputs)):
            _checks.fraction(name, rate)
        super().__init__(base_cell, drop_inputs, drop_states, drop_outputs)

    def _fusable(self):
        return _fused_unroller(self.base_cell) is not None

    def _fused_unroll(self, length, inputs, begin_state, layout, merge_outputs, valid_length,
                      masks=None):
        self.reset()
        inputs, axis, F, _ = _format_sequence(length, inputs, layout, True)
        if self.drop_inputs:
            inputs = F.Dropout(inputs, p=self.drop_inputs, axes=(axis,))
        p_states = self.drop_states

        def variational(F, x, states):
            drawn = masks(F, x, states) if masks else {}
            if _draws(F) and p_states:
                drawn["state_mask"] = F.Dropout(F.ones_like(states[0]), p=p_states)
            return drawn

        with _unmodified(self.base_cell):
            outputs, states = _fused_unroller(self.base_cell)(
                length, inputs, begin_state, layout, True, valid_length, variational)
        if self.drop_outputs:
            outputs = F.Dropout(outputs, p=self.drop_outputs, axes=(axis,))
        if merge_outputs is None:  # as gluon's: the base cell's outputs came merged
            merge_outputs = True
        outputs, _, _, _ = _format_sequence(length, outputs, layout, merge_outputs)
        if valid_length is not None:
            outputs = _mask_sequence_variable_length(F, outputs, length, valid_length, axis,
                                                     merge_outputs)
        return outputs, states
