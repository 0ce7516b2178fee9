"""Argument checks shared by the layers, cells, nd/sym.RNN and BucketSampler: each names the
argument as the caller spelled it."""
import numbers

import numpy as np
from mxnet import ndarray


def is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def positive_int(name, value, none_ok=False):
    if not (value is None and none_ok) and not (is_int(value) and value >= 1):
        raise ValueError(f"{name} must be {'None or ' if none_ok else ''}a positive integer; "
                         f"got {value!r}")


def one_of(name, value, choices):
    if value not in choices:
        *rest, last = [repr(c) for c in choices]
        raise ValueError(f"{name} must be {', '.join(rest)} or {last}; got {value!r}")


def fraction(name, value):
    if not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number in [0, 1]; got {value!r}")


def float_dtype(dtype):
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise TypeError(f"inputs must be float32 or float64; got {np.dtype(dtype)}")


def states(value, shapes, dtype, note=""):
    """value: the states a caller gave (a list, or one NDArray for one state); shapes: the
    shape each must have; note: why that many (e.g. " for mode 'lstm'")."""
    if isinstance(value, ndarray.NDArray):
        value = [value]
    if not isinstance(value, (list, tuple)) or len(value) != len(shapes):
        raise ValueError(f"states must be a list of {len(shapes)} NDArray(s){note} (see "
                         f"begin_state); got {type(value).__name__}" +
                         (f" of {len(value)}" if isinstance(value, (list, tuple)) else ""))
    for i, (state, shape) in enumerate(zip(value, shapes)):
        if not isinstance(state, ndarray.NDArray):
            raise TypeError(f"states[{i}] must be an NDArray; got {type(state).__name__}")
        if state.shape != shape:
            raise ValueError(f"states[{i}] must have shape {shape}; got {state.shape}")
        if state.dtype != dtype:
            raise TypeError(f"states[{i}] has dtype {np.dtype(state.dtype)}; expected "
                            f"{np.dtype(dtype)} (the dtype of inputs)")


def valid_values(name, array, upper):
    """Refuses an NDArray of lengths (upper = T) or a mask (upper = 1) whose values are not
    whole numbers in [0, upper], before the operator would, and under the user's name for it
    (the per-step path turns lengths into comparisons, which would never fail). Reading the
    values waits for whatever computes them; a bool mask needs no reading."""
    is_mask = name == "mask"
    allowed = ("int32", "int64", "uint8", "int8", "float32", "float64") + \
        (("bool",) if is_mask else ())
    dtype = np.dtype(array.dtype)
    if dtype.name not in allowed:
        raise TypeError(f"{name} must be {', '.join(allowed)}; got {dtype}")
    if dtype == np.bool_:
        return
    values = array.asnumpy()
    bad = ~((values >= 0) & (values <= upper))  # NaN included
    if dtype.kind == "f":
        bad |= values != np.floor(values)
    if bad.any():
        what = "only 0 and 1" if is_mask else f"whole numbers in [0, {upper}] (T)"
        raise ValueError(f"{name} must hold {what}; got {float(values[bad].flat[0])!r}")
