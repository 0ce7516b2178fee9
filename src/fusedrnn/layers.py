"""Gluon layers: drop-ins for mxnet.gluon.rnn.LSTM / GRU / RNN on fusedrnn's kernels.

Each class subclasses its gluon.rnn counterpart, so the constructor, parameter names and
shapes, initialisers, `begin_state`, layouts and `save_parameters` files are MXNet's; only the
computation differs: every layer and direction is one `_fusedrnn_layer` operator fed the
layer's own parameters (nothing is concatenated per call). Unlike MXNet's CPU op, lengths
(`sequence_length`) are honoured, and so are state clipping and projection in training.

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
import numbers

import numpy as np
from mxnet import autograd, gluon, ndarray, symbol

from ._op import fused_layer, legacy, numpy_mode
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
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer; got {value!r}")
    if training or batch != 1 or hidden_size < 256:
        return False
    return 2 <= steps <= (4 if mode in ("lstm", "gru") else 2)


class _FusedLayer:
    """The shared forward of the fused layers (mixed into the gluon.rnn classes)."""

    _reset_after = True

    def __init__(self, *args, unroll="auto", **kwargs):
        super().__init__(*args, **kwargs)
        for name, value in (("hidden_size", self._hidden_size),
                            ("num_layers", self._num_layers)):
            if not _positive_int(value):
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        if unroll not in (False, True, "auto"):
            raise ValueError(f"unroll must be False, True or 'auto'; got {unroll!r}")
        self._unroll = unroll
        # (valid kind, unrolled steps or None, dtype, training) of the current graph
        self._call = None

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
                _check_values("sequence_length", sequence_length, T)
            if kind == "mask":
                want = (N, T) if self._layout == "NTC" else (T, N)
                if mask.shape != want:
                    raise ValueError(f"mask must have shape {want} for layout {self._layout}; "
                                     f"got {mask.shape}")
                _check_values("mask", mask, 1)
                if np.dtype(mask.dtype) == np.bool_:
                    mask = mask.astype("uint8")  # MXNet 1.9 cannot pass bools to the operator
            if states is not None:
                self._check_states(states, N, dtype)
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
        call = (kind, steps, dtype, training)
        if call != self._call:
            self._clear_cached_op()
            self._call = call

        self.skip_states = states is None
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

    def _check_dtype(self, dtype):
        if np.dtype(dtype) not in (np.float32, np.float64):
            raise TypeError(f"inputs must be float32 or float64; got {np.dtype(dtype)}")
        param = self.l0_i2h_weight.dtype
        if np.dtype(param) != np.dtype(dtype):
            raise TypeError(f"inputs has dtype {np.dtype(dtype)} but the layer's parameters "
                            f"are {np.dtype(param)}: cast one of them (layer.cast)")

    def _check_states(self, states, N, dtype):
        if isinstance(states, ndarray.NDArray):
            states = [states]
        P = self._projection_size or self._hidden_size
        shapes = [(self._num_layers * self._dir, N, P)]
        if self._mode == "lstm":
            shapes.append((self._num_layers * self._dir, N, self._hidden_size))
        if not isinstance(states, (list, tuple)) or len(states) != len(shapes):
            raise ValueError(f"states must be a list of {len(shapes)} NDArray(s) for mode "
                             f"{self._mode!r} (see begin_state); got {type(states).__name__}"
                             + (f" of {len(states)}" if isinstance(states, (list, tuple))
                                else ""))
        for i, (state, shape) in enumerate(zip(states, shapes)):
            if not isinstance(state, ndarray.NDArray):
                raise TypeError(f"states[{i}] must be an NDArray; got {type(state).__name__}")
            if state.shape != shape:
                raise ValueError(f"states[{i}] must have shape {shape}; got {state.shape}")
            if state.dtype != dtype:
                raise TypeError(f"states[{i}] has dtype {np.dtype(state.dtype)}; expected "
                                f"{np.dtype(dtype)} (the dtype of inputs)")

    def _forward_kernel(self, F, inputs, states, valid, **kwargs):
        # HybridBlock.infer_shape and export trace hybrid_forward without __call__: a graph
        # of one fused operator per layer and direction then, which keeps what backward needs.
        kind, steps, dtype, training = self._call or (
            None if valid is None else "lengths", None, None, True)
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

        def per_layer(s):
            # split (unlike slice + squeeze) lets shape inference run backwards, which a
            # graph needs when gluon's begin_state leaves the batch size open.
            count = self._num_layers * self._dir
            if count == 1:
                return [F.reshape(s, (-3, -2))]
            return F.split(s, num_outputs=count, axis=0, squeeze_axis=True)

        h_init = per_layer(states[0])
        c_init = per_layer(states[1]) if self._mode == "lstm" else None

        x, hys, cys = inputs, [], []
        for layer in range(self._num_layers):
            outs = []
            for j, d in enumerate(["l", "r"][:self._dir]):
                k = layer * self._dir + j
                prefix = "{}{}_".format(d, layer)
                weights = [kwargs[prefix + g] for g in
                           ("i2h_weight", "h2h_weight", "i2h_bias", "h2h_bias")]
                init = [h_init[k]] + ([c_init[k]] if c_init is not None else [])
                w_hr = kwargs[prefix + "h2r_weight"] if projection else None
                if steps is None:
                    res = fused_layer(F, x, weights, init, w_hr, valid, reverse=j == 1,
                                      use_lengths=kind == "lengths", use_mask=kind == "mask",
                                      **attrs)
                else:
                    res = _unrolled(F, x, weights, init, w_hr, kind, valid, steps, dtype,
                                    j == 1, attrs)
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
        return numpy_mode(x), [numpy_mode(s) for s in new_states]


def _positive_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


def _check_values(name, array, upper):
    """Refuses an NDArray of lengths (upper = T) or a mask (upper = 1) whose values are not
    whole numbers in [0, upper], before the operator would, and under the user's name for it
    (the per-step path turns lengths into comparisons, which would never fail)."""
    is_mask = name == "mask"
    allowed = ("int32", "int64", "uint8", "int8", "float32", "float64") + \
        (("bool",) if is_mask else ())
    if np.dtype(array.dtype).name not in allowed:
        raise TypeError(f"{name} must be {', '.join(allowed)}; got {np.dtype(array.dtype)}")
    values = array.asnumpy().astype(np.float64)
    bad = ~((values >= 0) & (values <= upper) & (values == np.floor(values)))
    if bad.any():
        what = "only 0 and 1" if is_mask else f"whole numbers in [0, {upper}] (T)"
        raise ValueError(f"{name} must hold {what}; got {values[bad].flat[0]!r}")


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
    """Drop-in for `mxnet.gluon.rnn.LSTM` (same arguments); see the module docstring."""


class GRU(_FusedLayer, gluon.rnn.GRU):
    """Drop-in for `mxnet.gluon.rnn.GRU`, plus `reset_after` (default True, MXNet's GRU;
    False: the original GRU, with the reset gate applied before W_hn); see the module
    docstring."""

    def __init__(self, *args, reset_after=True, **kwargs):
        super().__init__(*args, **kwargs)
        self._reset_after = bool(reset_after)


class RNN(_FusedLayer, gluon.rnn.RNN):
    """Drop-in for `mxnet.gluon.rnn.RNN` (activation 'tanh' or 'relu')."""
