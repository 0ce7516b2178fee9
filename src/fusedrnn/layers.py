"""Gluon layers: drop-ins for mxnet.gluon.rnn.LSTM / GRU / RNN on fusedrnn's kernels.

Each class subclasses its gluon.rnn counterpart, so the constructor, parameter names and
shapes, initialisers, `begin_state`, layouts and `save_parameters` files are MXNet's; only the
computation differs: every layer and direction is one `_fusedrnn_layer` operator fed the
layer's own parameters (nothing is concatenated per call); inference on arrays of one layer
in one direction (TNC, no lengths or mask) is pushed to MXNet's engine without the operator's
dispatch, as a cell's step is. Unlike MXNet's CPU op, lengths (`sequence_length`) are
honoured, and so are state clipping and projection in training.

Extras:
- `layer(x, states, sequence_length=None, mask=None)`: `sequence_length` [N] (post-padded
  data, MXNet/cuDNN semantics: outputs past a sample's length are 0, states from its last
  valid step; honoured whether or not the layer was built with use_sequence_length=True), or
  `mask` ([N, T] for layout NTC, [T, N] for TNC; bools or 0/1) with Keras semantics: at a
  masked step the states carry over and the output repeats the previous output (0 before the
  first valid step). Masked steps and padding cost no compute, pre-padded or post-padded, and
  a bidirectional layer runs its reverse direction over each sample's valid steps only.
- `unroll`: False runs one fused sequence operator per layer and direction; True a graph of
  per-step fused operators (for a static length: a hybridized layer rebuilds its graph when T
  changes); 'auto' (the default) picks per call, see `choose_unroll`. All give the same numbers.
- GRU `reset_after` (default True, MXNet's GRU; False: the original GRU).
"""
import numpy as np
from mxnet import autograd, gluon, ndarray, symbol
from mxnet import np as mx_np
from mxnet.base import NDArrayHandle
from mxnet.gluon.parameter import DeferredInitializationError
from mxnet.gluon.block import _regroup
from mxnet.util import is_np_array

from . import _C, _checks
from ._op import fused_layer, layers_and_directions, legacy, numpy_mode
from ._results import MODES

__all__ = ["LSTM", "GRU", "RNN", "choose_unroll"]


def choose_unroll(mode, steps, batch, hidden_size, training):
    """The `unroll='auto'` rule: True where per-step operators beat one fused sequence operator.

    bench/bench_unroll.py (bench/results/unroll.json, 2 threads) measured both paths over
    T in {1, 2, 3, 4, 8, 32}, N in {1, 8, 64}, H in {64, 256, 1024}, LSTM / GRU / RNN,
    training and inference. The per-step path wins only in inference on a single sequence
    with H >= 256 and a few steps (up to 2.4x at T=2; LSTM and GRU up to T=4, the cheaper
    RNN step up to T=2): the fused operator packs the weights once per call, which pays off
    only over more steps or a larger batch. Everywhere else the fused operator is as fast or
    faster, in training by up to 8x."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    for name, value in (("steps", steps), ("batch", batch), ("hidden_size", hidden_size)):
        if not _checks.is_int(value) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer; got {value!r}")
    if training or batch != 1 or hidden_size < 256:
        return False
    return 2 <= steps <= (4 if mode in ("lstm", "gru") else 2)


class _FusedLayer:
    """The shared checks and forward of the fused layers (mixed into the gluon.rnn classes)."""

    _reset_after = True
    _call = None  # (valid kind, unrolled steps or None, dtype, training, guard_weights)

    @staticmethod
    def _check_arguments(hidden_size, num_layers, layout, dropout, input_size, unroll):
        """What gluon's constructor accepts but the layer could not run, or gluon refuses
        with a bare AssertionError."""
        _checks.positive_int("hidden_size", hidden_size)
        _checks.positive_int("num_layers", num_layers)
        if not (_checks.is_int(input_size) and input_size >= 0):
            raise ValueError(f"input_size must be a non-negative integer (0: from the first "
                             f"input); got {input_size!r}")
        _checks.one_of("layout", layout, ("TNC", "NTC"))
        _checks.fraction("dropout", dropout)
        _checks.one_of("unroll", unroll, (False, True, "auto"))

    def __call__(self, inputs, states=None, sequence_length=None, mask=None, **kwargs):
        if sequence_length is not None and mask is not None:
            raise ValueError("give sequence_length or mask, not both")
        kind = "lengths" if sequence_length is not None else "mask" if mask is not None else None
        if kind is None and self._use_sequence_length:
            raise ValueError("sequence_length is required: the layer was built with "
                             "use_sequence_length=True")
        # Outside autograd the operators store nothing for backward. A graph built from
        # Symbols may be trained later, so it always keeps what backward needs.
        steps, dtype, training = None, None, True
        if not isinstance(inputs, (ndarray.NDArray, symbol.Symbol)):
            raise TypeError(f"inputs must be an NDArray or a Symbol; got "
                            f"{type(inputs).__name__}")
        kind_of_input = type(inputs) if isinstance(inputs, ndarray.NDArray) else symbol.Symbol
        for name, value in (("sequence_length", sequence_length), ("mask", mask)):
            if value is not None and not isinstance(value, kind_of_input):
                raise TypeError(f"{name} must be {kind_of_input.__name__}, like inputs; got "
                                f"{type(value).__name__}")
        if isinstance(inputs, ndarray.NDArray):
            training = autograd.is_recording()
            if inputs.ndim != 3:
                raise ValueError(f"inputs must have 3 dimensions ({self._layout}); got shape "
                                 f"{inputs.shape}")
            if 0 in inputs.shape:
                raise ValueError(f"inputs must not have a zero-size dimension; got shape "
                                 f"{inputs.shape}")
            T = inputs.shape[self._layout.find("T")]
            N = inputs.shape[self._layout.find("N")]
            dtype = inputs.dtype
            self._check_dtype(dtype)
            if kind == "lengths":
                if sequence_length.shape != (N,):
                    raise ValueError(f"sequence_length must have shape ({N},); got "
                                     f"{sequence_length.shape}")
                _checks.valid_values("sequence_length", sequence_length, T)
            if kind == "mask":
                want = (N, T) if self._layout == "NTC" else (T, N)
                if mask.shape != want:
                    raise ValueError(f"mask must have shape {want} for layout {self._layout}; "
                                     f"got {mask.shape}")
                _checks.valid_values("mask", mask, 1)
                if np.dtype(mask.dtype) == np.bool_:
                    mask = mask.astype("uint8")  # MXNet 1.9 cannot pass bools to the operator
            if states is not None:
                P = self._projection_size or self._hidden_size
                shapes = [(self._num_layers * self._dir, N, P)]
                if self._mode == "lstm":
                    shapes.append((self._num_layers * self._dir, N, self._hidden_size))
                _checks.states(states, shapes, dtype, note=f" for mode {self._mode!r}")
            unroll = self._unroll
            if unroll == "auto":
                unroll = choose_unroll(self._mode, T, N, self._hidden_size,
                                       autograd.is_training())
            if unroll and T > 0:
                steps = T
        elif self._unroll is True:
            raise ValueError("unroll=True needs the sequence length, which a layer called on "
                             "Symbols (e.g. inside a hybridized parent block) does not know: "
                             "use unroll=False or 'auto' there")
        # In the layer's own graph (or imperatively) each weight feeds one operator, and MXNet
        # sums into its gradient only for grad_req='add' (checked per call, so a change of
        # grad_req rebuilds the graph); a parent's graph may use the layer many times.
        guard_weights = not isinstance(inputs, ndarray.NDArray) or any(
            p.grad_req == "add" for p in self._reg_params.values())
        call = (kind, steps, dtype, training, guard_weights)
        if call != self._call:
            self._clear_cached_op()
            self._call = call

        self.skip_states = states is None
        if states is None and self._on_arrays(inputs, kind) and not (
                self._forward_pre_hooks or self._forward_hooks):
            out = self._forward_on_arrays(inputs, [])  # zero states, never made
            if out is not None:
                return out[0]
        if states is None:
            if isinstance(inputs, ndarray.NDArray):
                batch_size = inputs.shape[self._layout.find("N")]
                states = self.begin_state(batch_size, ctx=inputs.context, dtype=inputs.dtype)
            else:
                states = self.begin_state(0, func=symbol.zeros)
        if isinstance(states, (ndarray.NDArray, symbol.Symbol)):
            states = [states]
        extra = [] if kind is None else [sequence_length if kind == "lengths" else mask]
        return gluon.HybridBlock.__call__(self, inputs, states, *extra, **kwargs)

    def forward(self, inputs, states, *extra):
        if self._on_arrays(inputs, "extra" if extra else None):
            out = self._forward_on_arrays(inputs, states)
            if out is not None:
                return out[0] if self.skip_states else out
        return super().forward(inputs, states, *extra)

    def _on_arrays(self, inputs, kind):
        """Whether this call may go to MXNet's engine straight, as a cell's step does
        (cells.py): inference on arrays, one layer, one direction, TNC, no lengths or mask.
        The operator's dispatch and the graph around it cost more than the kernel at batch
        1. A hybridized layer's first call still builds its graph (export and summary need
        it)."""
        return (kind is None and isinstance(inputs, ndarray.NDArray) and self._call is not None
                and not self._call[3]
                and self._call[1] is None and self._num_layers == 1 and self._dir == 1
                and self._layout == "TNC" and not is_np_array()
                and not (self._active and not self._cached_graph))

    def _forward_on_arrays(self, inputs, states):
        projection = self._projection_size is not None
        names = ["i2h_weight", "h2h_weight", "i2h_bias", "h2h_bias"] + (
            ["h2r_weight"] if projection else [])
        try:
            weights = [getattr(self, "l0_" + name).data(inputs.context) for name in names]
        except DeferredInitializationError:
            return None  # the operator path finishes the initialisation
        lstm = self._mode == "lstm"
        clip = lstm and self._lstm_state_clip_min is not None
        handles = _C._nd_layer_forward(
            self._mode, self._reset_after, self._lstm_state_clip_min if clip else None,
            self._lstm_state_clip_max if clip else None,
            bool(lstm and self._lstm_state_clip_nan), projection, inputs.handle.value,
            [s.handle.value for s in states], [w.handle.value for w in weights])
        if not handles:
            return None
        out = [ndarray.NDArray(NDArrayHandle(h)) for h in handles]
        return out[0], out[1:]

    def export(self, path, epoch=0, remove_amp_cast=True):
        """gluon's export, of a graph that trains: an inference call caches its graph without
        the identities that keep MXNet's gradient sums right (`_op.fused_layer`), and an
        exported file may be trained, so the file gets the same call's training graph."""
        if not (self._cached_graph and self._call is not None and not self._call[3]):
            return super().export(path, epoch, remove_amp_cast)
        cached, call = self._cached_graph, self._call
        self._cached_graph, self._call = (), call[:3] + (True, True)
        try:
            flat = [None if f == -1 else (mx_np.zeros(1) if is_np_array() else ndarray.zeros(1))
                    for f in _leaves(self._in_format)]
            self._get_graph(*_regroup(flat, self._in_format))
            return super().export(path, epoch, remove_amp_cast)
        finally:
            self._cached_graph, self._call = cached, call

    def _check_dtype(self, dtype):
        _checks.float_dtype(dtype)
        param = self.l0_i2h_weight.dtype
        if np.dtype(param) != np.dtype(dtype):
            raise TypeError(f"inputs has dtype {np.dtype(dtype)} but the layer's parameters "
                            f"are {np.dtype(param)}: cast one of them (layer.cast)")

    def _forward_kernel(self, F, inputs, states, valid, **kwargs):
        # HybridBlock.infer_shape and export trace hybrid_forward without __call__: a graph
        # of one fused operator per layer and direction then, which keeps what backward needs.
        kind, steps, dtype, training, guard_weights = self._call or (
            None if valid is None else "lengths", None, None, True, True)
        # numpy mode (npx.set_np): the operators and F.split & co. take legacy arrays, which
        # share the memory; the results go back as numpy-mode ones.
        inputs, valid = legacy(inputs), legacy(valid)
        states = [legacy(s) for s in states]
        kwargs = {name: legacy(value) for name, value in kwargs.items()}
        if self._layout == "NTC":
            inputs = F.swapaxes(inputs, 0, 1)
            if kind == "mask":
                valid = F.swapaxes(valid, 0, 1)
        projection = self._projection_size is not None
        attrs = dict(mode=self._mode, reset_after=self._reset_after, projection=projection,
                     training=training)
        if self._mode == "lstm":
            attrs["clip_nan"] = bool(self._lstm_state_clip_nan)
            if self._lstm_state_clip_min is not None:
                attrs.update(clip_min=self._lstm_state_clip_min,
                             clip_max=self._lstm_state_clip_max)

        def run(x, k, init):
            reverse = k % self._dir == 1
            prefix = "{}{}_".format("lr"[reverse], k // self._dir)
            weights = [kwargs[prefix + g] for g in
                       ("i2h_weight", "h2h_weight", "i2h_bias", "h2h_bias")]
            w_hr = kwargs[prefix + "h2r_weight"] if projection else None
            if steps is None:
                return fused_layer(F, x, weights, init, w_hr, valid, reverse=reverse,
                                   use_lengths=kind == "lengths", use_mask=kind == "mask",
                                   guard_weights=guard_weights, **attrs)
            return _unrolled(F, x, weights, init, w_hr, kind, valid, steps, dtype, reverse,
                             attrs)

        x, new_states = layers_and_directions(F, inputs, states[:2 if self._mode == "lstm" else 1],
                                              self._num_layers, self._dir, self._dropout, run)
        if self._layout == "NTC":
            x = F.swapaxes(x, 0, 1)
        return numpy_mode(x), [numpy_mode(s) for s in new_states]


def _leaves(fmt):
    """The flat formats of gluon's _flatten format `fmt` (-1: None, else an array)."""
    return [fmt] if isinstance(fmt, int) else [leaf for f in fmt for leaf in _leaves(f)]


def _unrolled(F, x, weights, init, w_hr, kind, valid, steps, dtype, reverse, attrs):
    """One layer and direction as `steps` single-step operators. A sample whose step t is
    padding or masked gets length 0 at that step, which keeps its states and costs nothing;
    with a mask its output then repeats the previous one (in visiting order)."""
    xs = F.split(x, num_outputs=steps, axis=0) if steps > 1 else [x]
    if kind == "mask":
        ms = F.split(valid, num_outputs=steps, axis=0, squeeze_axis=True) if steps > 1 else \
            [F.reshape(valid, (-1,))]
    states, ys, prev = init, [None] * steps, None
    for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
        step_valid = None
        if kind == "lengths":
            step_valid = valid > t
        elif kind == "mask":
            step_valid = ms[t]
        res = fused_layer(F, xs[t], weights, states, w_hr, step_valid,
                          use_lengths=kind is not None, **attrs)
        states = [res[1], res[2]] if len(init) == 2 else [res[1]]
        y = res[0]
        if kind == "mask":
            # y is 0 where the step is masked; add the previous output there.
            if prev is not None:
                keep = F.reshape(1 - F.cast(ms[t], dtype=dtype), (1, -1, 1))
                y = y + F.broadcast_mul(prev, keep)
            prev = y
        ys[t] = y
    out = F.concat(*ys, dim=0) if steps > 1 else ys[0]
    return [out] + states


class LSTM(_FusedLayer, gluon.rnn.LSTM):
    """Drop-in for `mxnet.gluon.rnn.LSTM` (the same arguments, in the same order), plus
    `unroll`; see the module docstring."""

    def __init__(self, hidden_size, num_layers=1, layout="TNC", dropout=0, bidirectional=False,
                 input_size=0, i2h_weight_initializer=None, h2h_weight_initializer=None,
                 i2h_bias_initializer="zeros", h2h_bias_initializer="zeros",
                 projection_size=None, h2r_weight_initializer=None, state_clip_min=None,
                 state_clip_max=None, state_clip_nan=False, dtype="float32", *,
                 use_sequence_length=False, unroll="auto", prefix=None, params=None):
        self._check_arguments(hidden_size, num_layers, layout, dropout, input_size, unroll)
        if projection_size:  # gluon reads 0 as no projection
            _checks.positive_int("projection_size", projection_size)
        if (state_clip_min is None) != (state_clip_max is None):
            raise ValueError(f"state_clip_min and state_clip_max must be given together; got "
                             f"{state_clip_min!r} and {state_clip_max!r}")
        super().__init__(hidden_size, num_layers, layout, dropout, bidirectional, input_size,
                         i2h_weight_initializer, h2h_weight_initializer, i2h_bias_initializer,
                         h2h_bias_initializer, projection_size, h2r_weight_initializer,
                         state_clip_min, state_clip_max, state_clip_nan, dtype,
                         use_sequence_length=use_sequence_length, prefix=prefix, params=params)
        self._unroll = unroll


class GRU(_FusedLayer, gluon.rnn.GRU):
    """Drop-in for `mxnet.gluon.rnn.GRU` (the same arguments, in the same order), plus
    `unroll` and `reset_after` (default True, MXNet's GRU; False: the original GRU, with the
    reset gate applied before W_hn); see the module docstring."""

    def __init__(self, hidden_size, num_layers=1, layout="TNC", dropout=0, bidirectional=False,
                 input_size=0, i2h_weight_initializer=None, h2h_weight_initializer=None,
                 i2h_bias_initializer="zeros", h2h_bias_initializer="zeros", dtype="float32", *,
                 use_sequence_length=False, unroll="auto", reset_after=True, prefix=None,
                 params=None):
        self._check_arguments(hidden_size, num_layers, layout, dropout, input_size, unroll)
        super().__init__(hidden_size, num_layers, layout, dropout, bidirectional, input_size,
                         i2h_weight_initializer, h2h_weight_initializer, i2h_bias_initializer,
                         h2h_bias_initializer, dtype, use_sequence_length=use_sequence_length,
                         prefix=prefix, params=params)
        self._unroll = unroll
        self._reset_after = bool(reset_after)


class RNN(_FusedLayer, gluon.rnn.RNN):
    """Drop-in for `mxnet.gluon.rnn.RNN` (the same arguments, in the same order; activation
    'tanh' or 'relu'), plus `unroll`; see the module docstring."""

    def __init__(self, hidden_size, num_layers=1, activation="relu", layout="TNC", dropout=0,
                 bidirectional=False, i2h_weight_initializer=None, h2h_weight_initializer=None,
                 i2h_bias_initializer="zeros", h2h_bias_initializer="zeros", input_size=0,
                 dtype="float32", *, use_sequence_length=False, unroll="auto", prefix=None,
                 params=None):
        self._check_arguments(hidden_size, num_layers, layout, dropout, input_size, unroll)
        _checks.one_of("activation", activation, ("tanh", "relu"))
        super().__init__(hidden_size, num_layers, activation, layout, dropout, bidirectional,
                         i2h_weight_initializer, h2h_weight_initializer, i2h_bias_initializer,
                         h2h_bias_initializer, input_size, dtype,
                         use_sequence_length=use_sequence_length, prefix=prefix, params=params)
        self._unroll = unroll
