"""Where fusedrnn's Python code calls its MXNet operators (layers, cells, nd/sym.RNN), and
the graph of layers and directions that the layers and nd/sym.RNN share.

lib_api (MXNet 1.9.1) never tells a library operator whether to write or to add its
gradients: the dispatcher drops `req`. MXNet asks for an add wherever it sums into a gradient
in place: grad_req='add' on a parameter or an array marked for autograd, and, in a
static_alloc graph, every entry used MXNET_EXEC_INPLACE_GRAD_SUM_CAP (8) times or more, such
as the weights of a cell stepped 8 times. A library operator would overwrite there. So every
differentiable input reaches a fusedrnn operator through one of MXNet's own operators, which
honour req: the library operator's gradient always goes to a buffer of its own, and MXNet's
operator writes or adds it where it belongs.

In autograd that operator is a reshape to the same shape, which MXNet records as a view,
without copying. In a graph it is `identity`, which MXNet's memory planner runs in place
(free) unless its input is an input of the graph (a parameter or the data): then it copies.
So a graph input (a Variable) shares one identity among up to cap - 1 uses: MXNet sums
those few gradients out of place (ElementwiseSum), and only the identities' own gradients,
which MXNet's operators produce, may be summed in place. A cell stepped 35 times then copies
its weights 5 times per call, not 35. Each identity carries an attribute of its own: MXNet
merges equal nodes of a graph (MXNET_ELIMINATE_COMMON_EXPR, on by default), which would
leave one identity for all uses of a weight, and the summation at the library operators.
"""
import ctypes
import itertools
import os

from mxnet import autograd, ndarray
from mxnet.base import NDArrayHandle, _LIB, check_call
from mxnet.util import is_np_array

_ids = itertools.count()
_shared = {}  # id(Variable) -> [the Variable, its identity, uses of that identity so far]


def req_safe(F, x):
    """x, to be passed to a fusedrnn operator as a differentiable input (see above)."""
    if F is ndarray:
        return view(x, x.shape) if autograd.is_recording() else x
    if x.get_children() is not None:  # inside the graph: in place, one per use
        return _identity(F, x)
    # MXNet reads the cap once per process; 8 unless the user set it.
    per_identity = max(1, int(os.environ.get("MXNET_EXEC_INPLACE_GRAD_SUM_CAP", 8)) - 1)
    entry = _shared.get(id(x))
    if entry is None or entry[0] is not x or entry[2] >= per_identity:
        entry = _shared[id(x)] = [x, _identity(F, x), 0]
    entry[2] += 1
    return entry[1]


def view(x, shape):
    """NDArray x reshaped to `shape` (whole numbers, same size): what x.reshape(shape) gives, a
    view that autograd records, without its argument handling (a quarter of the cost: a
    training call of a layer makes up to 11 of them)."""
    out = NDArrayHandle()
    check_call(_LIB.MXNDArrayReshape64(x.handle, len(shape), (ctypes.c_int64 * len(shape))(*shape),
                                       False, ctypes.byref(out)))
    return ndarray.NDArray(out, writable=x.writable)


def _identity(F, x):
    return F.identity(x, attr={"__fusedrnn_use__": str(next(_ids))})


def legacy(x):
    """A numpy-mode array or symbol (npx.set_np) as the legacy kind that library operators
    and F.split & co. take; the same memory, and autograd follows."""
    return x.as_nd_ndarray() if x is not None and is_np_array() else x


def numpy_mode(x):
    """The inverse of `legacy`, for what fusedrnn returns to the caller."""
    return x.as_np_ndarray() if x is not None and is_np_array() else x


# The regularisers' masks the operator takes (fusedrnn::Masks), in its order of inputs.
MASKS = ("zoneout_h", "zoneout_c", "zoneout_y", "state_mask", "input_gate_masks",
         "recurrent_gate_masks")


def fused_layer(F, x, weights, states, w_hr=None, valid=None, masks=None, guard_weights=True,
                **attrs):
    """One `_fusedrnn_layer` operator: [y, hy, (cy)]. weights: [w_ih, w_hh, b_ih, b_hh];
    states: [h0] or [h0, c0]; w_hr: the projection or None; valid: lengths [N] or mask [T, N]
    (integers, not differentiable) or None; masks: {name in MASKS: mask} (constants: drawn
    by the caller, no gradient) or None; attrs: the operator's attributes."""
    weights = weights + ([w_hr] if w_hr is not None else [])
    # An operator told training=False keeps nothing for backward: no gradient can reach its
    # inputs, and an inference graph does without the identities.
    if attrs.get("training", True):
        x, states = req_safe(F, x), [req_safe(F, s) for s in states]
        if guard_weights:
            weights = [req_safe(F, w) for w in weights]
    inputs = [x, *weights[:4], *states] + weights[4:]
    if valid is not None:
        inputs.append(valid)
    for name in MASKS:
        if masks and masks.get(name) is not None:
            inputs.append(F.BlockGrad(masks[name]))
            attrs[f"use_{name}"] = True
    return F._internal._fusedrnn_layer(*inputs, **attrs)


def layers_and_directions(F, x, states, num_layers, dirs, dropout, run):
    """x [T, N, C] through num_layers layers of dirs directions each (a bidirectional layer's
    outputs concatenated on the feature axis, dropout between layers); the graph of the
    layers and of nd/sym.RNN. states: [h0] or [h0, c0], each [num_layers * dirs, N, ...];
    run(x, k, init) -> [y, hy, (cy)] runs layer and direction k (direction k % dirs, 1 is
    the reverse one) from init, its states. Returns (y, [hy, (cy)]) stacked as states."""
    count = num_layers * dirs
    # split (unlike slice + squeeze) lets shape inference run backwards, which a graph needs
    # when gluon's begin_state leaves the batch size open. On arrays one layer's states are
    # views (no operator for the engine to schedule; autograd records them).
    inits = [[view(s, s.shape[1:]) if F is ndarray else F.reshape(s, (-3, -2))]
             if count == 1 else F.split(s, num_outputs=count, axis=0, squeeze_axis=True)
             for s in states]
    finals = [[] for _ in states]
    for layer in range(num_layers):
        outs = []
        for d in range(dirs):
            k = layer * dirs + d
            res = run(x, k, [init[k] for init in inits])
            outs.append(res[0])
            for i, final in enumerate(finals):
                final.append(res[1 + i])
        x = outs[0] if dirs == 1 else F.concat(*outs, dim=2)
        if dropout and layer < num_layers - 1:
            x = F.Dropout(x, p=dropout)
    if F is ndarray and count == 1:
        return x, [view(final[0], (1,) + final[0].shape) for final in finals]
    return x, [F.stack(*final, axis=0) for final in finals]
