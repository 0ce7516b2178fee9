"""keras-mxnet's LSTM, GRU and SimpleRNN on fusedrnn's fused operator (`fusedrnn[keras]`).

`fusedrnn.keras.LSTM`, `GRU` and `SimpleRNN` are `keras.layers.LSTM`, `GRU` and `SimpleRNN`
(keras-mxnet 2.2.4.3, the MXNet backend) with the same constructor, weights, config and
saved-model format; only `call` differs: instead of `K.rnn` over a graph of per-step
operators, one `_fusedrnn_layer` operator runs the whole sequence. So

    model.set_weights(stock_model.get_weights())
    keras.models.load_model(path, custom_objects=fusedrnn.keras.custom_objects())

work both ways, and `patch()` makes unchanged Keras code build fused layers. (Keras 2.2.4
reads HDF5 files as h5py < 3 did, its strings as bytes; importing this module gives Keras'
own reads from h5py 3 those types back, so `load_model` and `load_weights` work at all.)

Keras' weights stay Keras' variables; the graph cuts, reorders and transposes them into the
operator's layout, so gradients reach them through MXNet's own operators:
kernel [C, G*H] -> w_ih [G*H, C], recurrent_kernel [H, G*H] -> w_hh [G*H, H]; Keras' one
bias is the operator's b_ih (b_hh = 0), except GRU(reset_after=True), whose bias [2, 3H] is
[b_ih; b_hh]. Gate order: LSTM i, f, c, o is the operator's i, f, g, o; GRU z, r, h becomes
r, z, n.

Masks (`Embedding(mask_zero=True)`, `Masking`) go to the operator as a [T, N] mask with
Keras' semantics: a masked step keeps the states and repeats the previous output (0 before
the first unmasked step), and costs nothing. The time length need not be fixed: a model built
with `input_shape=(None, C)` runs batches of any length, with `unroll` True or False.

`dropout` and `recurrent_dropout` run fused with Keras' masks (one per sample and feature,
the same at every step, drawn in training only; one per gate with implementation=1, else one
for all gates): the operator's input_gate_masks / recurrent_gate_masks, or the masked input
and its state_mask. What the kernels cannot compute makes that layer run Keras' own code,
with one warning per reason: activations other than tanh (and relu for SimpleRNN), and gate
activations other than sigmoid and hard_sigmoid (Keras 2.2.4's default). That path draws the
dropout masks before K.rnn, where stock Keras' dropout fails with MXNet (see
_FusedRNN._keras_call).

keras-mxnet 2.2.4.3 imports names that Python 3.10 removed (`collections.Iterable` & co.)
and 3.11 (`inspect.getargspec`); importing this module puts them back before it imports
keras.
"""
import collections
import collections.abc
import functools
import inspect
import os
import sys
import types
import warnings

import numpy as np


def _restore_removed_names():
    """The aliases keras-mxnet 2.2.4.3 needs on Python >= 3.10."""
    for name in ("Callable", "Hashable", "Iterable", "Iterator", "Mapping", "MutableMapping",
                 "MutableSequence", "MutableSet", "Sequence", "Set"):
        if not hasattr(collections, name):
            setattr(collections, name, getattr(collections.abc, name))
    if not hasattr(inspect, "getargspec"):
        ArgSpec = collections.namedtuple("ArgSpec", "args varargs keywords defaults")

        def getargspec(func):
            spec = inspect.getfullargspec(func)
            return ArgSpec(spec.args, spec.varargs, spec.varkw, spec.defaults)

        inspect.getargspec = getargspec


def _read_hdf5_strings_as_keras_expects():
    """Keras 2.2.4 reads the strings of its HDF5 files as h5py < 3 returned them, bytes
    (`.decode('utf8')`, `dtype.type == np.string_`): h5py 3 returns str, so every load_model
    and load_weights fails, stock or fused, and h5py < 3 has no wheels for Python >= 3.9.
    Reads made by Keras' own modules get h5py 2's types back: bytes for a string, an array of
    bytes for an array of strings. Everyone else's reads are unchanged."""
    try:
        import h5py
        from h5py._hl.attrs import AttributeManager
    except ImportError:
        return
    if int(h5py.__version__.split(".")[0]) < 3 or hasattr(AttributeManager, "_h5py3_read"):
        return
    read = AttributeManager.__getitem__

    def __getitem__(self, name):
        value = read(self, name)
        if not sys._getframe(1).f_globals.get("__name__", "").startswith("keras."):
            return value
        if isinstance(value, str):
            return value.encode("utf-8")
        if isinstance(value, np.ndarray) and value.dtype == object and value.size and all(
                isinstance(v, str) for v in value.flat):
            return np.array([v.encode("utf-8") for v in value.flat]).reshape(value.shape)
        return value

    AttributeManager._h5py3_read = read
    AttributeManager.__getitem__ = __getitem__


_restore_removed_names()
_read_hdf5_strings_as_keras_expects()
# keras-mxnet's default backend is MXNet already; a KERAS_BACKEND left over for another
# backend would make these layers unusable, and is refused below.
os.environ.setdefault("KERAS_BACKEND", "mxnet")

import keras  # noqa: E402
import mxnet as mx  # noqa: E402
from keras import activations  # noqa: E402
from keras import backend as K  # noqa: E402
from keras.layers import recurrent  # noqa: E402

from ._op import fused_layer  # noqa: E402

if K.backend() != "mxnet":
    raise ImportError(f"fusedrnn.keras needs Keras' MXNet backend (keras-mxnet); Keras runs "
                      f"the {K.backend()!r} backend (KERAS_BACKEND)")

from keras.backend.mxnet_backend import KerasSymbol, keras_mxnet_symbol  # noqa: E402

__all__ = ["LSTM", "GRU", "SimpleRNN", "patch", "unpatch", "custom_objects"]

# The gate activations (Keras' names) that the operator's `gate_activation` attribute takes;
# a layer with another runs Keras' own path. The attribute is passed only for a gate other
# than the operator's default, sigmoid.
_GATE_ACTIVATIONS = ("sigmoid", "hard_sigmoid")

_warned = set()


def _activation_name(fn):
    return activations.serialize(fn) if fn is not None else "linear"


def _warn_once(layer, reason):
    key = (type(layer).__name__, reason)
    if key not in _warned:
        _warned.add(key)
        warnings.warn(f"fusedrnn.keras.{type(layer).__name__}: {reason}; this layer runs "
                      f"Keras' own (per-step) code", stacklevel=3)


def _reorder(w, units, order, axis):
    """w's gate blocks (each `units` wide along axis) in the given order."""
    blocks = [mx.sym.slice_axis(w, axis=axis, begin=g * units, end=(g + 1) * units)
              for g in order]
    return mx.sym.concat(*blocks, dim=axis)


@keras_mxnet_symbol
def _fused_rnn(inputs, weights, states, mask, dropout, mode, units, gate_order,
               bias_layout, go_backwards, reset_after, return_sequences, gate_activation):
    """The operator over Keras tensors: (output, new states); output: [N, T, H] if
    return_sequences, else Keras' last output [N, H].

    inputs [N, T, C]; weights: [kernel, recurrent_kernel, (bias)] (KerasSymbols: passing them
    makes them neighbours of the result, which is how keras-mxnet finds their values);
    states: [h0 (, c0)] [N, H], or [] for zeros; mask [N, T] or None; dropout: Keras'
    dropout masks, [input masks [N, C], recurrent masks [N, H]], each a list (one per gate
    in Keras' order, or one for all gates) or empty; bias_layout: None (no bias), "one"
    (Keras' single bias, b_hh = 0) or "two" (GRU reset_after: [2, G*H]); gate_activation:
    Keras' name, or None for the operator's default (sigmoid)."""
    kernel, recurrent_kernel = weights[0].symbol, weights[1].symbol
    gates = len(gate_order)

    def operator_layout(w):  # [in, G*H] -> [G*H, in] in the operator's gate order
        if gate_order != tuple(range(gates)):
            w = _reorder(w, units, gate_order, axis=1)
        return mx.sym.transpose(w)

    w_ih, w_hh = operator_layout(kernel), operator_layout(recurrent_kernel)
    if bias_layout is None:
        b_ih = b_hh = mx.sym.zeros(shape=(gates * units,))
    else:
        bias = weights[2].symbol
        if bias_layout == "two":
            b_ih = mx.sym.reshape(mx.sym.slice_axis(bias, axis=0, begin=0, end=1), shape=(-1,))
            b_hh = mx.sym.reshape(mx.sym.slice_axis(bias, axis=0, begin=1, end=2), shape=(-1,))
        else:
            b_ih, b_hh = bias, mx.sym.zeros_like(bias)
        if gate_order != tuple(range(gates)):
            b_ih = _reorder(b_ih, units, gate_order, axis=0)
            b_hh = _reorder(b_hh, units, gate_order, axis=0)
    x = mx.sym.swapaxes(inputs.symbol, dim1=0, dim2=1)  # TNC
    attrs = dict(mode=mode, reverse=go_backwards, reset_after=reset_after,
                 training=bool(K.learning_phase()))
    if gate_activation is not None:
        attrs["gate_activation"] = gate_activation
    valid = None
    if mask is not None:
        # Keras' [N, T] of 0/1 in any dtype -> [T, N] float32, which the operator reads as
        # 0/1 (MXNet 1.9 cannot pass bool arrays to a library operator).
        valid = mx.sym.transpose(mx.sym.cast(mask.symbol, dtype="float32"))
        attrs["use_mask"] = True
    # keras-mxnet infers shapes while it builds the model (for the loss, say), with the batch
    # size and maybe the time length unknown. Keras' initial states (from tile) then have no
    # known rank, which MXNet 1.9.1's bridge to library operators cannot take (see
    # fusedrnn.nd._shaped_like_data), and the operator cannot infer its outputs, which the
    # bridge then reports as scalars ([]) that the next operator refuses. So the states going
    # in take their shape from a tensor made for it from x's (an identity), and the outputs
    # are added to zeros of their shape (a scalar broadcasts): [N, H] and [T, N, H]
    # broadcasts of a [T, N, 1] slice of x.
    zeros = mx.sym.BlockGrad(mx.sym.zeros_like(mx.sym.slice_axis(x, axis=2, begin=0, end=1)))
    first = mx.sym.reshape(mx.sym.slice_axis(zeros, axis=0, begin=0, end=1), shape=(-3, 0))
    like_state = mx.sym.broadcast_to(first, shape=(0, units))
    data, masks = x, {}
    input_masks, recurrent_masks = dropout if K.learning_phase() else ([], [])
    # (keras-mxnet builds a training and an inference symbol: Keras' dropout acts in training
    # only, where MXNet's Dropout draws its masks.) What reaches the operator takes its shape
    # from x's too, for the bridge (broadcasts and stacks of partly known shapes have none).
    like = mx.sym._internal._identity_with_attr_like_rhs

    def per_gate(masks, like_one):  # [N, X] each, Keras' order -> [G, N, X], the operator's
        stacked = mx.sym.stack(*[masks[g].symbol for g in gate_order])
        return like(stacked, mx.sym.broadcast_to(mx.sym.expand_dims(like_one, axis=0),
                                                 shape=(gates, 0, 0)))

    like_input = mx.sym.broadcast_to(first, shape=(0, K.int_shape(inputs)[-1]))
    if len(input_masks) == 1:
        data = like(mx.sym.broadcast_mul(x, mx.sym.expand_dims(input_masks[0].symbol, axis=0)),
                    x)
    elif input_masks:  # implementation=1: a mask per gate
        masks["input_gate_masks"] = per_gate(input_masks, like_input)
    if len(recurrent_masks) == 1:
        # SimpleRNN, and implementation=2: h_tm1 * mask wherever the cell reads h_tm1
        masks["state_mask"] = like(recurrent_masks[0].symbol, like_state)
    elif recurrent_masks:
        masks["recurrent_gate_masks"] = per_gate(recurrent_masks, like_state)
    if states:
        states = [like(s.symbol, like_state) for s in states]
    else:
        states = [like_state] * (2 if mode == "lstm" else 1)
    out = fused_layer(mx.sym, data, [w_ih, w_hh, b_ih, b_hh], states, valid=valid,
                      masks=masks, **attrs)
    new_states = [mx.sym.broadcast_add(out[1 + k], like_state) for k in range(len(states))]
    if return_sequences:
        y = mx.sym.broadcast_add(out[0], mx.sym.broadcast_to(zeros, shape=(0, 0, units)))
        if go_backwards:  # Keras' sequence is in visiting order
            y = mx.sym.reverse(y, axis=0)
        output = mx.sym.swapaxes(y, dim1=0, dim2=1)
    elif valid is None:
        # A node of its own: keras-mxnet groups a stateful layer's outputs with its new
        # states, and refuses two outputs of one name.
        output = mx.sym.broadcast_add(out[1], like_state)
    else:
        # Keras' last output: the output of the sample's last unmasked step (its final h), or
        # 0 if it has none (its final h is then h0).
        ran = mx.sym.reshape(mx.sym.sum(valid, axis=0) > 0, shape=(-1, 1))
        output = mx.sym.broadcast_mul(new_states[0], ran)
    return KerasSymbol(output), [KerasSymbol(s) for s in new_states]


@keras_mxnet_symbol
def _state_of(inputs, units, value):
    """[N, units] of `value` for inputs [N, T, C], made without shape inference: Keras' own
    get_initial_state infers shapes, and with keras-mxnet gets [1, N * units] when the batch
    size is not fixed and inputs come from another RNN layer."""
    first = mx.sym.slice_axis(mx.sym.slice_axis(inputs.symbol, axis=1, begin=0, end=1),
                              axis=2, begin=0, end=1)  # [N, 1, 1]
    filled = mx.sym.zeros_like(mx.sym.reshape(first, shape=(-3, 0))) + value  # [N, 1]
    return KerasSymbol(mx.sym.broadcast_to(mx.sym.BlockGrad(filled), shape=(0, units)))


@keras_mxnet_symbol
def _step_ones(inputs):
    """Ones [N, C] for inputs [N, T, C]: what Keras' cells draw their input dropout masks
    from."""
    first = mx.sym.slice_axis(inputs.symbol, axis=1, begin=0, end=1)
    return KerasSymbol(mx.sym.BlockGrad(mx.sym.ones_like(mx.sym.reshape(first, shape=(0, -3)))))


class _FusedRNN:
    """What the three fused layers share; mixed in before the Keras class."""

    def get_initial_state(self, inputs):
        sizes = self.cell.state_size
        return [_state_of(inputs, units=units, value=0)
                for units in (sizes if hasattr(sizes, "__len__") else [sizes])]

    def _keras_call(self, inputs, mask, training, initial_state):
        """Keras' own code, unrolled where the time length is fixed: keras-mxnet's unroll=False
        path (mx.sym.contrib.foreach) computes zeros with MXNet 1.9.1."""
        timesteps = K.int_shape(inputs[0] if isinstance(inputs, list) else inputs)[1]
        unroll = self.unroll
        if timesteps is None:
            if not unroll:
                _warn_once(self, "the time length is not fixed, and keras-mxnet's unroll=False "
                                 "path computes zeros with MXNet 1.9.1")
        elif timesteps > 1:
            self.unroll = True
        # Keras' cells draw their dropout masks inside K.rnn, which keras-mxnet runs twice (a
        # training and an inference symbol): the masks drawn in the first pass have no
        # inference symbol, and the cell reuses them in the second, which then fails (stock
        # Keras with dropout and unroll=True). Drawn here, outside K.rnn, they have both, and
        # MXNet's Dropout tells the phases apart when it runs. keras.layers.RNN.call, not
        # super().call: that would reset them.
        first = inputs[0] if isinstance(inputs, list) else inputs
        cell = self.cell
        cell._dropout_mask = self._draw_masks(_step_ones(first), cell.dropout, training)
        cell._recurrent_dropout_mask = self._draw_masks(
            _state_of(first, units=cell.units, value=1), cell.recurrent_dropout, training)
        try:
            return keras.layers.RNN.call(self, inputs, mask=mask, training=training,
                                         initial_state=initial_state)
        finally:
            cell._dropout_mask = cell._recurrent_dropout_mask = None
            self.unroll = unroll

    def _draw_masks(self, ones, rate, training):
        """Keras' dropout masks as its cells draw them: K.dropout of ones, in training only,
        one per gate (LSTM 4, GRU 3; SimpleRNN: one, not in a list); None for rate 0."""
        if not 0 < rate < 1:
            return None
        return recurrent._generate_dropout_mask(ones, rate, training=training,
                                                count=self._gates)

    def _dropout_masks(self, inputs, training):
        """Keras' dropout masks for the operator, [input masks, recurrent masks]: each one per
        gate (implementation=1), or one for all gates (implementation=2, SimpleRNN), or
        none."""
        cell = self.cell
        drawn = [self._draw_masks(_step_ones(inputs), cell.dropout, training),
                 self._draw_masks(_state_of(inputs, units=cell.units, value=1),
                                  cell.recurrent_dropout, training)]
        per_gate = self._gates > 1 and cell.implementation == 1
        return [[] if masks is None else [masks] if self._gates == 1 else
                masks if per_gate else masks[:1] for masks in drawn]

    def _fused_plan(self):
        """(operator mode, gate order, why not) for this layer's cell."""
        raise NotImplementedError

    def _bias_layout(self):
        return "one" if self.cell.use_bias else None

    def _gate_activation(self):
        """The operator's gate_activation attribute, None for its default."""
        return None

    def call(self, inputs, mask=None, training=None, initial_state=None):
        mode, gate_order, why_not = self._fused_plan()
        if why_not is not None:
            _warn_once(self, why_not)
            return self._keras_call(inputs, mask, training, initial_state)
        # As keras.layers.RNN.call, up to K.rnn.
        if isinstance(inputs, list):
            initial_state = inputs[1:] or None
            inputs = inputs[0]
        if initial_state is None and self.stateful:
            initial_state = self.states
        if isinstance(mask, list):
            mask = mask[0]
        if initial_state is not None and len(initial_state) != len(self.states):
            raise ValueError(f"Layer has {len(self.states)} states but was passed "
                             f"{len(initial_state)} initial states.")
        cell = self.cell
        weights = [cell.kernel, cell.recurrent_kernel] + ([cell.bias] if cell.use_bias else [])
        dropout = self._dropout_masks(inputs, training)
        output, states = _fused_rnn(
            inputs, weights, list(initial_state or []), mask, dropout, mode=mode,
            units=cell.units,
            gate_order=gate_order, bias_layout=self._bias_layout(),
            go_backwards=self.go_backwards, reset_after=getattr(cell, "reset_after", False),
            return_sequences=self.return_sequences, gate_activation=self._gate_activation())
        if self.stateful:
            self.add_update(list(zip(self.states, states)), inputs)
        if any(getattr(m, "_uses_learning_phase", False) for m in sum(dropout, [])):
            for tensor in [output] + states:
                tensor._uses_learning_phase = True
        if self.return_state:
            return [output] + list(states)
        return output


def _gated_plan(cell, mode, gate_order):
    activation = _activation_name(cell.activation)
    gate = _activation_name(cell.recurrent_activation)
    if activation != "tanh":
        return mode, gate_order, f"activation={activation!r} is not in the kernels (tanh is)"
    if gate not in _GATE_ACTIVATIONS:
        return mode, gate_order, (f"recurrent_activation={gate!r} is not in the kernels "
                                  f"({', '.join(map(repr, _GATE_ACTIVATIONS))} is)")
    return mode, gate_order, None


class SimpleRNN(_FusedRNN, keras.layers.SimpleRNN):
    """keras.layers.SimpleRNN on fusedrnn's fused operator (activation tanh or relu)."""
    _gates = 1

    def _fused_plan(self):
        activation = _activation_name(self.cell.activation)
        modes = {"tanh": "rnn_tanh", "relu": "rnn_relu"}
        if activation not in modes:
            return None, (0,), (f"activation={activation!r} is not in the kernels "
                                f"(tanh and relu are)")
        return modes[activation], (0,), None


class _Gated(_FusedRNN):
    def _gate_activation(self):
        gate = _activation_name(self.cell.recurrent_activation)
        return None if gate == "sigmoid" else gate


class LSTM(_Gated, keras.layers.LSTM):
    """keras.layers.LSTM on fusedrnn's fused operator (gates i, f, c, o in both)."""
    _gates = 4

    def _fused_plan(self):
        return _gated_plan(self.cell, "lstm", (0, 1, 2, 3))


class GRU(_Gated, keras.layers.GRU):
    """keras.layers.GRU on fusedrnn's fused operator (Keras' gates z, r, h are the operator's
    r, z, n; reset_after False and True)."""
    _gates = 3

    def _fused_plan(self):
        return _gated_plan(self.cell, "gru", (1, 0, 2))

    def _bias_layout(self):
        if not self.cell.use_bias:
            return None
        return "two" if self.cell.reset_after else "one"


_FUSED = {"LSTM": LSTM, "GRU": GRU, "SimpleRNN": SimpleRNN}
_STOCK = {name: getattr(recurrent, name) for name in _FUSED}


def custom_objects():
    """For keras.models.load_model: the fused layers under the names Keras saves them as."""
    return dict(_FUSED)


def _pin_module_names(fn, names):
    """fn, reading its module's names from `names` (a copy of them) instead of the module;
    functions it wraps (in its closure, Keras' legacy-interface decorators) likewise."""
    for cell in fn.__closure__ or ():
        inner = cell.cell_contents
        if isinstance(inner, types.FunctionType) and inner.__globals__ is recurrent.__dict__:
            cell.cell_contents = _pin_module_names(inner, names)
    if fn.__globals__ is not recurrent.__dict__:
        return fn
    pinned = types.FunctionType(fn.__code__, names, fn.__name__, fn.__defaults__,
                                fn.__closure__)
    functools.update_wrapper(pinned, fn, updated=())
    pinned.__kwdefaults__ = fn.__kwdefaults__
    return pinned


def _pin_stock_classes():
    """Keras' LSTM, GRU and SimpleRNN reach keras.layers.RNN through `super(LSTM, self)`, the
    name in keras.layers.recurrent: once patch() puts the fused class there, that would be
    the fused class, and every stock layer would fail (or recurse, in a fused one). Their
    methods read the module's names as they were before the first patch()."""
    names = dict(vars(recurrent))
    for cls in _STOCK.values():
        for attr, value in list(vars(cls).items()):
            if isinstance(value, types.FunctionType):
                setattr(cls, attr, _pin_module_names(value, names))
            elif isinstance(value, property) and value.fget is not None:
                setattr(cls, attr, property(_pin_module_names(value.fget, names),
                                            value.fset, value.fdel, value.__doc__))


def patch():
    """Makes keras.layers.LSTM, GRU and SimpleRNN (and the names in keras.layers.recurrent)
    the fused layers, so unchanged Keras code (`keras.layers.LSTM(...)`, `from keras.layers
    import LSTM` after the call) and load_model build them."""
    if not getattr(recurrent, "_fusedrnn_pinned", False):
        _pin_stock_classes()
        recurrent._fusedrnn_pinned = True
    for name, cls in _FUSED.items():
        setattr(keras.layers, name, cls)
        setattr(recurrent, name, cls)


def unpatch():
    """Undoes patch()."""
    for name, cls in _STOCK.items():
        setattr(keras.layers, name, cls)
        setattr(recurrent, name, cls)
