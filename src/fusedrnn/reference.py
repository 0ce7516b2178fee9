"""Pure-NumPy reference for one layer, one direction of an RNN: the yardstick the kernels are
tested against. Written for clarity, not speed.

Modes 'lstm', 'gru', 'rnn_tanh', 'rnn_relu' with G = 4, 3, 1, 1 gates.
Gate order (MXNet == PyTorch): LSTM i, f, g, o ; GRU r, z, n.

Shapes (T steps, N batch, C input size, H hidden size, P = projection size if w_hr given else H):
  x [T, N, C]; w_ih [G*H, C]; w_hh [G*H, P]; b_ih [G*H]; b_hh [G*H]; w_hr [P, H] (LSTM only,
  optional); h0 [N, P]; c0 [N, H] (LSTM only); lengths [N] integers in [0, T] or None (= all T).
  Outputs: y [T, N, P], hy [N, P], cy [N, H] (LSTM only, else None).

Equations (per step, sample with state h (and c)):
  LSTM: gates = W_ih x + b_ih + W_hh h + b_hh ; i=sig, f=sig, g=tanh, o=sig
        c' = f*c + i*g ; if clipping: c' = clip(c', clip_min, clip_max)
        (clip_nan=True: a NaN c' becomes clip_min; clip_nan=False: NaN propagates)
        h' = o * tanh(c') ; with projection: r' = w_hr @ h' and r' is the state/output.
        Clipping gradient: 1 where clip_min <= c'_pre <= clip_max, else 0.
        Clipping is active only when both clip_min and clip_max are given (error if only one).
  GRU reset_after=True  (MXNet/PyTorch): r = sig(Wx_r + b_ir + Wh_r h + b_hr), z likewise,
        n = tanh(Wx_n + b_in + r*(W_hn h + b_hn)), h' = (1-z)*n + z*h
  GRU reset_after=False (Keras 2 original): n = tanh(Wx_n + b_in + W_hn (r*h) + b_hn)
  rnn_tanh: h' = tanh(W_ih x + b_ih + W_hh h + b_hh) ; rnn_relu: max(0, ...)
  sig above is the gate activation (gate_activation, LSTM and GRU): 'sigmoid' (default), or
  'hard_sigmoid' = clip(0.2*v + 0.5, 0, 1) exactly as Keras' MXNet backend writes it, in the
  dtype of x (the product rounded, then the sum), with derivative 0.2 where
  0 <= 0.2*v + 0.5 <= 1 (the kinks included, as MXNet's autograd of clip) and 0 elsewhere.

Lengths semantics: sample n runs exactly lengths[n] steps; hy/cy = state after its last valid
step (= h0/c0 if length 0); y[t, n] = 0 for t >= lengths[n]; dx[t, n] = 0 for t >= lengths[n].
reverse=True: sample n of length L reads x[L-1-t] at step t and writes y[L-1-t] there (runs
right-to-left over its own valid prefix).

Mask semantics (Keras; mask [T, N] of bools or 0/1, instead of lengths): the layer visits the
time positions in order (T-1 down to 0 with reverse=True, Keras' go_backwards). Where
mask[t, n] is set, sample n takes a step on x[t, n]; where it is not, its states carry over
unchanged and y[t, n] repeats the output of its previous step in that order (0 before its
first valid step); dx[t, n] = 0 there. A mask [[1]*L + [0]*(T-L)] gives the lengths semantics
except for y past L, which repeats y[L-1] instead of being 0.

Regularisers (all optional, any combination; the masks are inputs drawn by the caller):
  zoneout_h [T, N, P], zoneout_c [T, N, H] (LSTM), zoneout_y [T, N, P]: zoneout as
      gluon.rnn.ZoneoutCell. With h', c' the cell's new state and y' = h' its output, the step
      at time position t keeps
        h_t = where(zoneout_h[t] != 0, h', h_prev),   c_t = where(zoneout_c[t] != 0, c', c_prev)
        y_t = where(zoneout_y[t] != 0, y', y_prev)
      where y_prev is the sample's previous step's y_t (0 before its first step): the output
      is a track of its own, not h_t. Without zoneout_y, y_t = h' (also with zoneout_h).
      Indexed by time position (with reverse the sample reads the mask where it is). gluon
      draws these masks as Dropout(ones), values 0 or 1/(1-p): only "!= 0" counts.
  state_mask [N, P]: gluon.contrib.rnn.VariationalDropoutCell's drop_states: the cell sees
      h_prev * state_mask wherever it uses h_prev (recurrent products, GRU's z * h); the state
      carried on is the cell's new, unmasked h. c is never masked. With zoneout as well,
      zoneout keeps the unmasked h_prev (ZoneoutCell around VariationalDropoutCell).
  input_gate_masks [G, N, C], recurrent_gate_masks [G, N, P]: Keras' dropout and
      recurrent_dropout (LSTMCell / GRUCell, implementation=1) in this module's gate order:
      gate g's input pre-activation is (x * input_gate_masks[g]) @ w_ih[g]^T and its recurrent
      one (h * recurrent_gate_masks[g]) @ w_hh[g]^T, where h is what the cell sees (above).
      GRU reset before: n's recurrent term is (r * h * recurrent_gate_masks[2]) @ w_hn^T. The
      GRU blend z * h uses h without the gate mask.
  Positions a sample skips (lengths, mask) read no mask and change nothing.

Details the equations above leave open, fixed here:
  * the ReLU derivative at exactly 0 is taken as 0 (as PyTorch does);
  * a cell value that clip_nan turned from NaN into clip_min gets zero gradient towards
    everything upstream (it is a constant), also when the previous cell state was NaN;
  * clip_min/clip_max/clip_nan are ignored for modes other than 'lstm', as are c0 and dcy;
  * a sample of length 0 keeps its initial state untouched (so a NaN in its c0 stays NaN).

API:
  forward(mode, x, w_ih, w_hh, b_ih, b_hh, h0, c0=None, *, w_hr=None, lengths=None,
          mask=None, reverse=False, reset_after=True, clip_min=None, clip_max=None,
          clip_nan=False, gate_activation='sigmoid', zoneout_h=None, zoneout_c=None,
          zoneout_y=None, state_mask=None, input_gate_masks=None,
          recurrent_gate_masks=None)
      -> ForwardResult(y, hy, cy, None)
  backward(mode, x, w_ih, w_hh, b_ih, b_hh, h0, c0, dy=None, dhy=None, dcy=None, *,
           <same keywords>) -> Gradients(dx, dw_ih, dw_hh, db_ih, db_hh, dh0, dc0, dw_hr)
      (dy/dhy/dcy None = zero; backward differentiates
       sum(dy*y) + sum(dhy*hy) + sum(dcy*cy) with respect to every input.)
All computation happens in the dtype of x (float32 or float64).
"""
from types import SimpleNamespace

import numpy as np

from ._results import GATES, MODES, ForwardResult, Gradients

__all__ = ["forward", "backward", "REGULARISERS"]

GATE_ACTIVATIONS = ("sigmoid", "hard_sigmoid")
# The mask arguments, as forward() and backward() name them (see the module docstring).
REGULARISERS = ("zoneout_h", "zoneout_c", "zoneout_y", "state_mask", "input_gate_masks",
                "recurrent_gate_masks")


def _sigmoid(a):
    # exp(-log(1 + exp(-a))) never overflows, unlike 1 / (1 + exp(-a)) for very negative a.
    return np.exp(-np.logaddexp(0, -a))


def _gate(p, a):
    """The gate activation of pre-activations a: (gate, what _gate_grad needs besides it)."""
    if not p.hard:
        return _sigmoid(a), None
    y = a * 0.2 + 0.5  # Keras: 0.2 * x + 0.5 (a Python float keeps the dtype of a)
    return np.clip(y, 0, 1), y


def _gate_grad(p, d, gate, y):
    """d times the gate activation's derivative (gate, y from _gate)."""
    if not p.hard:
        return d * gate * (1 - gate)
    return np.where((y < 0) | (y > 1), 0, d * 0.2)


def _regularisers(masks, mode, T, N, C, H, P, dt):
    """The given masks, shape-checked and cast to dt; absent ones None."""
    G = GATES[mode]
    shapes = {"zoneout_h": (T, N, P), "zoneout_c": (T, N, H), "zoneout_y": (T, N, P),
              "state_mask": (N, P), "input_gate_masks": (G, N, C),
              "recurrent_gate_masks": (G, N, P)}
    out = {}
    for name, shape in shapes.items():
        value = masks.get(name)
        if value is not None:
            value = np.asarray(value, dtype=dt)
            if name == "zoneout_c" and mode != "lstm":
                raise ValueError(f"zoneout_c is only for mode 'lstm', not {mode!r}")
            if value.shape != shape:
                raise ValueError(f"{name} must have shape {shape}, got {value.shape}")
        out[name] = value
    return out


def _prepare(mode, x, w_ih, w_hh, b_ih, b_hh, h0, c0, w_hr, lengths, mask, reverse,
             reset_after, clip_min, clip_max, clip_nan, gate_activation, masks):
    """Check the arguments lightly and bundle them, cast to the dtype of x."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not isinstance(gate_activation, str) or gate_activation not in GATE_ACTIVATIONS:
        raise ValueError(f"gate_activation must be one of {GATE_ACTIVATIONS}, "
                         f"got {gate_activation!r}")
    if gate_activation != "sigmoid" and mode not in ("lstm", "gru"):
        raise ValueError(f"gate_activation {gate_activation!r} is only for modes 'lstm' and "
                         f"'gru', not {mode!r}")
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        raise ValueError(f"x must be float32 or float64, got {x.dtype}")
    if x.ndim != 3:
        raise ValueError(f"x must have shape [T, N, C], got {x.shape}")
    dt = x.dtype
    lstm = mode == "lstm"
    if lstm and c0 is None:
        raise ValueError("c0 is required for mode 'lstm'")
    if w_hr is not None and not lstm:
        raise ValueError(f"w_hr (projection) is only supported for mode 'lstm', not {mode!r}")
    if (clip_min is None) != (clip_max is None):
        raise ValueError("clip_min and clip_max must be given together (got only one)")

    T, N, _ = x.shape
    all_steps = lengths is None
    if lengths is None:
        lengths = np.full(N, T, dtype=np.int64)
    else:
        lengths = np.asarray(lengths)
        if lengths.shape != (N,) or not np.issubdtype(lengths.dtype, np.integer):
            raise ValueError(f"lengths must be {N} integers, got {lengths!r}")
        if lengths.size and (lengths.min() < 0 or lengths.max() > T):
            raise ValueError(f"lengths must lie in [0, T={T}], got {lengths!r}")
        lengths = lengths.astype(np.int64)
    if mask is not None:
        if not all_steps:
            raise ValueError("give lengths or mask, not both")
        mask = np.asarray(mask)
        if mask.shape != (T, N) or not np.all((mask == 0) | (mask == 1)):
            raise ValueError(f"mask must be [T, N] = {(T, N)} of bools or 0/1, got {mask!r}")
        mask = mask.astype(bool)

    def cast(a):
        return None if a is None else np.asarray(a, dtype=dt)

    G = GATES[mode]
    H = np.shape(w_ih)[0] // G
    P = np.shape(w_hr)[0] if w_hr is not None else H
    regs = _regularisers(masks, mode, T, N, x.shape[2], H, P, dt)
    return SimpleNamespace(
        **regs, mode=mode, lstm=lstm, dtype=dt, G=G, H=H,
        x=x, w_ih=cast(w_ih), w_hh=cast(w_hh), b_ih=cast(b_ih), b_hh=cast(b_hh),
        h0=cast(h0), c0=cast(c0) if lstm else None, w_hr=cast(w_hr),
        lengths=lengths, mask=mask, reverse=bool(reverse), reset_after=bool(reset_after),
        clip=lstm and clip_min is not None, clip_min=clip_min, clip_max=clip_max,
        clip_nan=bool(clip_nan), hard=gate_activation == "hard_sigmoid")


# ---------------------------------------------------------------------------------------------
# Cells. Each *_fwd takes the inputs of the samples active at this step (x [n, C], h [n, P]
# as the cell sees it, c [n, H] or None, and the Keras gate masks mi [G, n, C], mr [G, n, P]
# or None) and returns (h', c' or None, cache); each *_bwd takes that cache and the gradients
# reaching h' and c', adds the weight gradients into `acc`, and returns (dx, dh, dc or None).
# ---------------------------------------------------------------------------------------------

def _masked(a, masks, g):
    """a as gate g sees it: a * masks[g], or a itself without masks."""
    return a if masks is None else a * masks[g]


def _gate_product(a, w, masks, G):
    """The gates' pre-activation terms from a: a @ w.T, or per gate (a * masks[g]) @ w[g].T."""
    if masks is None:
        return a @ w.T
    H = w.shape[0] // G
    return np.concatenate([(a * masks[g]) @ w[g * H:(g + 1) * H].T for g in range(G)], axis=1)


def _gate_product_grad(d, a, w, masks, G):
    """The backward of _gate_product for its gradient d: (da, dw)."""
    if masks is None:
        return d @ w, d.T @ a
    H = w.shape[0] // G
    blocks = [slice(g * H, (g + 1) * H) for g in range(G)]
    da = sum((d[:, b] @ w[b]) * masks[g] for g, b in enumerate(blocks))
    return da, np.concatenate([d[:, b].T @ (a * masks[g]) for g, b in enumerate(blocks)])


def _lstm_fwd(p, x, h, c, mi, mr):
    gates = (_gate_product(x, p.w_ih, mi, 4) + p.b_ih + _gate_product(h, p.w_hh, mr, 4)
             + p.b_hh)
    i, f, g, o = np.split(gates, 4, axis=1)
    (i, yi), (f, yf), g, (o, yo) = _gate(p, i), _gate(p, f), np.tanh(g), _gate(p, o)
    c_pre = f * c + i * g
    keep = None
    c_new = c_pre
    if p.clip:
        # Comparisons with NaN are False, so a NaN cell also counts as "clipped" (gradient 0).
        keep = (c_pre >= p.clip_min) & (c_pre <= p.clip_max)
        c_new = np.clip(c_pre, p.clip_min, p.clip_max)  # np.clip lets NaN through
        if p.clip_nan:
            c_new = np.where(np.isnan(c_pre), np.asarray(p.clip_min, dtype=p.dtype), c_new)
    tanh_c = np.tanh(c_new)
    h_full = o * tanh_c
    h_new = h_full @ p.w_hr.T if p.w_hr is not None else h_full
    return h_new, c_new, SimpleNamespace(x=x, h=h, c=c, i=i, f=f, g=g, o=o, yi=yi, yf=yf,
                                         yo=yo, c_pre=c_pre, keep=keep, tanh_c=tanh_c,
                                         h_full=h_full, mi=mi, mr=mr)


def _lstm_bwd(p, cache, dh_new, dc_new, acc):
    x, h, c, i, f, g, o = cache.x, cache.h, cache.c, cache.i, cache.f, cache.g, cache.o
    keep, tanh_c, h_full = cache.keep, cache.tanh_c, cache.h_full
    if p.w_hr is not None:
        acc["w_hr"] += dh_new.T @ h_full
        dh_full = dh_new @ p.w_hr
    else:
        dh_full = dh_new
    do = dh_full * tanh_c
    dc = dc_new + dh_full * o * (1 - tanh_c * tanh_c)
    df = dc * c
    if keep is not None:
        dc = np.where(keep, dc, 0)
        # A clipped cell does not depend on f; spelled out so that a NaN c (clip_nan) cannot
        # turn 0 * NaN into a NaN weight gradient.
        df = np.where(keep, df, 0)
    di = dc * g
    dg = dc * i
    dgates = np.concatenate(
        [_gate_grad(p, di, i, cache.yi), _gate_grad(p, df, f, cache.yf), dg * (1 - g * g),
         _gate_grad(p, do, o, cache.yo)], axis=1)
    dx, dh = _accumulate(p, acc, dgates, x, cache.mi, dgates, h, cache.mr)
    return dx, dh, dc * f


def _gru_fwd(p, x, h, c, mi, mr):
    H = p.H
    gi = _gate_product(x, p.w_ih, mi, 3) + p.b_ih
    # The recurrent input of each gate (Keras' recurrent_dropout masks it per gate). r and z
    # see it plain in both variants; only the candidate n differs.
    hr = [_masked(h, mr, g) for g in range(3)]
    gh_rz = np.concatenate([hr[0] @ p.w_hh[:H].T, hr[1] @ p.w_hh[H:2 * H].T], axis=1)
    gh_rz = gh_rz + p.b_hh[:2 * H]
    r, yr = _gate(p, gi[:, :H] + gh_rz[:, :H])
    z, yz = _gate(p, gi[:, H:2 * H] + gh_rz[:, H:])
    w_hn, b_hn = p.w_hh[2 * H:], p.b_hh[2 * H:]
    if p.reset_after:
        gh_n = hr[2] @ w_hn.T + b_hn
        n = np.tanh(gi[:, 2 * H:] + r * gh_n)
    else:
        gh_n = (r * hr[2]) @ w_hn.T + b_hn
        n = np.tanh(gi[:, 2 * H:] + gh_n)
    h_new = (1 - z) * n + z * h
    return h_new, None, SimpleNamespace(x=x, h=h, hr=hr, r=r, z=z, yr=yr, yz=yz, n=n,
                                        gh_n=gh_n, mi=mi, mr=mr)


def _gru_bwd(p, cache, dh_new, dc_new, acc):
    x, h, hr, r, z, n, gh_n = cache.x, cache.h, cache.hr, cache.r, cache.z, cache.n, cache.gh_n
    H, mr = p.H, cache.mr
    w_hn = p.w_hh[2 * H:]
    dn = dh_new * (1 - z) * (1 - n * n)   # gradient at n's pre-activation
    dz = _gate_grad(p, dh_new * (h - n), z, cache.yz)   # ... at z's pre-activation
    dh = dh_new * z
    if p.reset_after:
        dr = _gate_grad(p, dn * gh_n, r, cache.yr)
        dgi = np.concatenate([dr, dz, dn], axis=1)
        dgh = np.concatenate([dr, dz, dn * r], axis=1)
        dx, dh_rec = _accumulate(p, acc, dgi, x, cache.mi, dgh, h, mr)
        dh = dh + dh_rec
    else:
        # n's recurrent input is r * hr[2], so W_hn's gradient pairs with that, not with h.
        drh = dn @ w_hn
        dr = _gate_grad(p, drh * hr[2], r, cache.yr)
        dgi = np.concatenate([dr, dz, dn], axis=1)
        dx, dw_ih = _gate_product_grad(dgi, x, p.w_ih, cache.mi, 3)
        acc["w_ih"] += dw_ih
        acc["b_ih"] += dgi.sum(axis=0)
        acc["w_hh"][:H] += dr.T @ hr[0]
        acc["w_hh"][H:2 * H] += dz.T @ hr[1]
        acc["w_hh"][2 * H:] += dn.T @ (r * hr[2])
        acc["b_hh"] += dgi.sum(axis=0)
        dh = (dh + _masked(dr @ p.w_hh[:H], mr, 0) + _masked(dz @ p.w_hh[H:2 * H], mr, 1)
              + _masked(drh * r, mr, 2))
    return dx, dh, None


def _rnn_fwd(p, x, h, c, mi, mr):
    pre = _gate_product(x, p.w_ih, mi, 1) + p.b_ih + _gate_product(h, p.w_hh, mr, 1) + p.b_hh
    h_new = np.tanh(pre) if p.mode == "rnn_tanh" else np.maximum(pre, 0)
    return h_new, None, SimpleNamespace(x=x, h=h, pre=pre, h_new=h_new, mi=mi, mr=mr)


def _rnn_bwd(p, cache, dh_new, dc_new, acc):
    x, h, pre, h_new = cache.x, cache.h, cache.pre, cache.h_new
    if p.mode == "rnn_tanh":
        dpre = dh_new * (1 - h_new * h_new)
    else:
        dpre = np.where(pre > 0, dh_new, 0)
    dx, dh = _accumulate(p, acc, dpre, x, cache.mi, dpre, h, cache.mr)
    return dx, dh, None


def _accumulate(p, acc, dgi, x, mi, dgh, h, mr):
    """Add the weight/bias gradients of one step and return (dx, dh) through the products:
    dgi/dgh are the gradients at the input and recurrent pre-activations (the same array
    except for GRU's candidate gate)."""
    dx, dw_ih = _gate_product_grad(dgi, x, p.w_ih, mi, p.G)
    dh, dw_hh = _gate_product_grad(dgh, h, p.w_hh, mr, p.G)
    acc["w_ih"] += dw_ih
    acc["b_ih"] += dgi.sum(axis=0)
    acc["w_hh"] += dw_hh
    acc["b_hh"] += dgh.sum(axis=0)
    return dx, dh


_CELLS = {"lstm": (_lstm_fwd, _lstm_bwd), "gru": (_gru_fwd, _gru_bwd),
          "rnn_tanh": (_rnn_fwd, _rnn_bwd), "rnn_relu": (_rnn_fwd, _rnn_bwd)}


# ---------------------------------------------------------------------------------------------
# Time loop.
# ---------------------------------------------------------------------------------------------

def _zoneout(mask, new, old):
    """Zoneout of one step: new where the mask is non-zero, else old."""
    return new if mask is None else np.where(mask != 0, new, old)


def _run_forward(p):
    """Run the recurrence; returns (y, hy, cy, trace) where trace holds, per step, the active
    samples, the time index each of them reads/writes, and the cell cache (with a mask: every
    time position in visiting order, also those where no sample is active)."""
    cell_fwd = _CELLS[p.mode][0]
    T, N, _ = p.x.shape
    h = p.h0.copy()
    c = p.c0.copy() if p.lstm else None
    y = np.zeros((T, N, h.shape[1]), dtype=p.dtype)
    # Each sample's latest output: what a mask repeats at the positions it skips, and
    # zoneout_y's y_prev.
    out = np.zeros_like(h)
    trace = []
    for t in range(T):
        if p.mask is None:
            # Only samples whose own sequence is still running take part; the others keep
            # their state, which is what makes hy/cy the state after each sample's last step.
            act = np.nonzero(t < p.lengths)[0]
            if act.size == 0:
                break
            src = p.lengths[act] - 1 - t if p.reverse else np.full(act.size, t)
        else:
            pos = T - 1 - t if p.reverse else t
            act = np.nonzero(p.mask[pos])[0]
            src = np.full(act.size, pos)
        seen = h[act] if p.state_mask is None else h[act] * p.state_mask[act]
        mi = None if p.input_gate_masks is None else p.input_gate_masks[:, act]
        mr = None if p.recurrent_gate_masks is None else p.recurrent_gate_masks[:, act]
        h_new, c_new, cache = cell_fwd(p, p.x[src, act], seen, None if c is None else c[act],
                                       mi, mr)
        zh, zc, zy = (None if m is None else m[src, act]
                      for m in (p.zoneout_h, p.zoneout_c, p.zoneout_y))
        h[act] = _zoneout(zh, h_new, h[act])
        if c is not None:
            c[act] = _zoneout(zc, c_new, c[act])
        out[act] = _zoneout(zy, h_new, out[act])
        if p.mask is None:
            y[src, act] = out[act]
        else:
            y[pos] = out
        trace.append((act, src, cache))
    return y, h, c, trace


def forward(mode, x, w_ih, w_hh, b_ih, b_hh, h0, c0=None, *, w_hr=None, lengths=None,
            mask=None, reverse=False, reset_after=True, clip_min=None, clip_max=None, clip_nan=False,
            gate_activation="sigmoid", zoneout_h=None, zoneout_c=None, zoneout_y=None,
            state_mask=None, input_gate_masks=None, recurrent_gate_masks=None):
    """Reference forward pass. Returns ForwardResult(y, hy, cy, None); see the module docstring."""
    masks = dict(zoneout_h=zoneout_h, zoneout_c=zoneout_c, zoneout_y=zoneout_y,
                 state_mask=state_mask, input_gate_masks=input_gate_masks,
                 recurrent_gate_masks=recurrent_gate_masks)
    p = _prepare(mode, x, w_ih, w_hh, b_ih, b_hh, h0, c0, w_hr, lengths, mask, reverse,
                 reset_after, clip_min, clip_max, clip_nan, gate_activation, masks)
    y, hy, cy, _ = _run_forward(p)
    return ForwardResult(y, hy, cy, None)


def backward(mode, x, w_ih, w_hh, b_ih, b_hh, h0, c0, dy=None, dhy=None, dcy=None, *,
             w_hr=None, lengths=None, mask=None, reverse=False, reset_after=True,
             clip_min=None, clip_max=None, clip_nan=False, gate_activation="sigmoid",
             zoneout_h=None, zoneout_c=None, zoneout_y=None, state_mask=None,
             input_gate_masks=None, recurrent_gate_masks=None):
    """Reference backprop through time: the gradients of
    sum(dy*y) + sum(dhy*hy) + sum(dcy*cy) with respect to every input, as
    Gradients(dx, dw_ih, dw_hh, db_ih, db_hh, dh0, dc0, dw_hr). dy/dhy/dcy None mean zero.
    The masks are constants: they get no gradient."""
    masks = dict(zoneout_h=zoneout_h, zoneout_c=zoneout_c, zoneout_y=zoneout_y,
                 state_mask=state_mask, input_gate_masks=input_gate_masks,
                 recurrent_gate_masks=recurrent_gate_masks)
    p = _prepare(mode, x, w_ih, w_hh, b_ih, b_hh, h0, c0, w_hr, lengths, mask, reverse,
                 reset_after, clip_min, clip_max, clip_nan, gate_activation, masks)
    y, hy, cy, trace = _run_forward(p)
    cell_bwd = _CELLS[p.mode][1]
    dt = p.dtype

    dy = np.zeros_like(y) if dy is None else np.asarray(dy, dtype=dt)
    dh = np.zeros_like(hy) if dhy is None else np.array(dhy, dtype=dt)  # copied: updated below
    dc = None
    if p.lstm:
        dc = np.zeros_like(cy) if dcy is None else np.array(dcy, dtype=dt)
    acc = {"w_ih": np.zeros_like(p.w_ih), "w_hh": np.zeros_like(p.w_hh),
           "b_ih": np.zeros_like(p.b_ih), "b_hh": np.zeros_like(p.b_hh)}
    if p.w_hr is not None:
        acc["w_hr"] = np.zeros_like(p.w_hr)
    dx = np.zeros_like(p.x)

    # The gradient reaching each sample's latest output: from the positions a mask repeats
    # it at, and through zoneout_y's y_prev.
    carried = np.zeros_like(dh)
    T = p.x.shape[0]
    for i in reversed(range(len(trace))):
        act, src, cache = trace[i]
        # This step's output is y[src] (and, with a mask, what the skipped positions after it
        # repeat); its state h_t is what the later steps (or hy) saw, whose gradient dh[act]
        # holds. Without zoneout both are h'.
        if p.mask is None:
            d_out = carried[act] + dy[src, act]
        else:
            carried += dy[T - 1 - i if p.reverse else i]
            d_out = carried[act]
        zh, zc, zy = (None if m is None else m[src, act] != 0
                      for m in (p.zoneout_h, p.zoneout_c, p.zoneout_y))
        carried[act] = 0 if zy is None else np.where(zy, 0, d_out)
        dh_new = (d_out if zy is None else np.where(zy, d_out, 0)) + \
            (dh[act] if zh is None else np.where(zh, dh[act], 0))
        dh_kept = 0 if zh is None else np.where(zh, 0, dh[act])
        dc_new = dc_kept = None
        if dc is not None:
            dc_new = dc[act] if zc is None else np.where(zc, dc[act], 0)
            dc_kept = 0 if zc is None else np.where(zc, 0, dc[act])
        dx_t, dh_seen, dc_prev = cell_bwd(p, cache, dh_new, dc_new, acc)
        dx[src, act] = dx_t
        dh[act] = dh_kept + (dh_seen if p.state_mask is None else dh_seen * p.state_mask[act])
        if dc is not None:
            dc[act] = dc_kept + dc_prev

    return Gradients(dx, acc["w_ih"], acc["w_hh"], acc["b_ih"], acc["b_hh"], dh, dc,
                     acc.get("w_hr"))


def _forward_trace(mode, x, w_ih, w_hh, b_ih, b_hh, h0, c0=None, *, w_hr=None, lengths=None,
                   mask=None, reverse=False, reset_after=True, clip_min=None, clip_max=None,
                   clip_nan=False, gate_activation="sigmoid", **masks):
    """For tests only: the per-step trace of forward(), a list of (active samples, time index
    each reads/writes, cell cache); e.g. to see LSTM pre-clip cells (cache.c_pre)."""
    p = _prepare(mode, x, w_ih, w_hh, b_ih, b_hh, h0, c0, w_hr, lengths, mask, reverse,
                 reset_after, clip_min, clip_max, clip_nan, gate_activation, masks)
    return _run_forward(p)[3]
