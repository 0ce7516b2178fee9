#!/usr/bin/env python
"""Layer-level side-by-side benchmark, float32 on the CPU: fusedrnn's Gluon layers and cells vs
MXNet 1.9.1 (fused RNN op, unrolled cells, cells) vs PyTorch (padded and packed).

    python bench/bench_rnn.py [--quick] [--threads 1 2] [--parts equal varlen decode memory]
                              [--modes lstm gru rnn_tanh] [--repeats N] [--out FILE]
    python bench/bench_rnn.py --report bench/results/rnn.json [--threads 2]
    python bench/bench_rnn.py --plot bench/results/rnn.json [--threads 2]

Writes bench/results/rnn.json and the plot bench/results/rnn.png, and prints the markdown
tables: about 7 minutes on a quiet machine. --quick writes rnn_quick.json / .png (first LSTM
and GRU shape, 2 threads only, fewer repeats and shapes elsewhere too): about 35 s. --report
prints the README's markdown tables of a result and the targets, met or missed.

Implementations (one layer, TNC, the same float32 weights and initial states for all; the gate
order and the two bias vectors are identical in MXNet and PyTorch):
- fusedrnn: fusedrnn.LSTM/GRU/RNN hybridized with static_alloc=True; with sequence_length for
  variable-length batches (fusedrnn_padded: the same batch, no lengths: computes the padding);
- mxnet_fused: mxnet.gluon.rnn.LSTM/GRU/RNN, hybridized the same way (MXNet's fused RNN op;
  on the CPU it ignores sequence_length, so it always runs the padded batch);
- mxnet_unrolled: gluon.rnn.LSTMCell/GRUCell/RNNCell.unroll(T, x, layout='TNC',
  merge_outputs=True) inside a hybridized HybridBlock (what the Keras MXNet backend ran);
- torch / torch_padded: torch.nn.LSTM/GRU/RNN on the padded batch; torch_packed: with
  pack_padded_sequence(enforce_sorted=False) and pad_packed_sequence.
Training = forward + backward from a fixed random upstream gradient of the outputs
(y.backward(head), the gradient of (y * head).sum() without computing that sum: MXNet's
elementwise product and full sum and their backward took ~3 ms of a 14 ms LSTM step at
50, 64, 64, 128, and measure MXNet's reductions rather than the layers), gradients for all
parameters and the input; inference = forward only (no autograd recording, torch.no_grad()).
Before a row is timed, each implementation's inference outputs and training input gradients
are compared with a reference (PyTorch) at 1e-3 of the reference's scale; an implementation that
disagrees, or fails, gets its error recorded in that cell and is not timed.

Rows, for 1 and 2 threads (one worker subprocess per thread count; its environment has
OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE removed, OMP_NUM_THREADS = MXNET_OMP_MAX_THREADS = n and
MXNET_ENGINE_TYPE=NaiveEngine unless set, see bench_kernels.py; the worker calls
torch.set_num_threads(n) and fusedrnn.kernels.set_num_threads(n)):
- equal: full-length batches, LSTM / GRU / RNN (tanh), training and inference;
- varlen: LSTM and GRU, lengths uniform in [T/4, T] ("uniform") and a batch with exactly 40%
  padding ("pad40"): fusedrnn with lengths vs fusedrnn_padded, torch_packed, torch_padded,
  mxnet_fused (padded);
- decode: a loop of 100 single steps of a cell, inference, each step's output fed back as the
  next input (I = H): fusedrnn.LSTMCell/GRUCell vs gluon.rnn cells (both hybridized, one cached
  graph call per step) vs torch.nn.LSTMCell/GRUCell; time per 100-step loop.
Timing (bench_kernels.time_calls): warm-up (2 calls and at least 0.2 s), then up to --repeats
(10) timed calls within 3 s per implementation and phase, never under 3; median and p25/p75.
MXNet is asynchronous: every timed call ends with mx.nd.waitall(). Before each row and phase
the worker waits for a quiet machine (it is shared), and measures once more if other processes
kept more than 0.2 cores busy meanwhile; the row records that load (background_cores).
Per row: ratio of every baseline's median to fusedrnn's (> 1: fusedrnn is faster); fusedrnn's
GFLOP/s (bench_kernels.flops: GEMM work only, variable lengths count real tokens) and its
fraction of the best sgemm GFLOP/s measured in the same worker (bench_kernels.sgemm_peak, at
its start and end). The header records the machine, versions, argv, the removed variables and
each worker's threadpoolctl info (which OpenBLAS kernel runs).

Memory (--parts memory; 2 threads, training, the equal-length LSTM and GRU shapes): one short
subprocess per (implementation, shape) imports only that implementation's libraries, builds the
model and data (parameters, and for MXNet their gradient buffers, exist by then), reads VmRSS
from /proc/self/status, writes "5" to /proc/self/clear_refs (resets VmHWM to the current RSS,
where the kernel permits it), runs 3 training steps and reads VmHWM. Reported: VmHWM - VmRSS
before the steps, in MiB (peak_mib): the resident memory the first three steps added at their
peak, including one-off costs of the first call (MXNet's graph and static memory plan, oneDNN
primitives, thread stacks, PyTorch's lazily created .grad tensors) and memory that allocators
keep pooled. steady_mib is the same over steps 2-3 only (VmHWM reset after step 1). RSS counts
touched pages only; it is a process-level figure, not an allocator trace.
"""
import argparse
import functools
import gc
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_kernels import (BLAS_ENV_VARS, ROOT, Case, busy_seconds, flops,  # noqa: E402
                           machine_header, package_digest, sgemm_peak, time_calls,
                           wait_for_quiet)

EQUAL_SHAPES = {
    "lstm": [(50, 64, 64, 128), (100, 32, 256, 256), (50, 64, 512, 512), (25, 16, 128, 1024),
             (100, 1, 256, 256)],
    "gru": [(50, 64, 64, 128), (100, 32, 256, 256), (50, 64, 512, 512), (25, 16, 128, 1024),
            (100, 1, 256, 256)],
    "rnn_tanh": [(50, 64, 64, 128), (100, 1, 256, 256)],
}
VARLEN_SHAPES = [(100, 32, 256, 256), (50, 64, 64, 128)]
VARLEN_MODES = ("lstm", "gru")
DECODE_STEPS = 100
DECODE = [(mode, N, H) for mode in ("lstm", "gru") for H in (256, 512) for N in (1, 16)]
MEMORY_THREADS = 2
EQUAL_IMPLS = ("fusedrnn", "torch", "mxnet_fused", "mxnet_unrolled")
VARLEN_IMPLS = ("fusedrnn", "fusedrnn_padded", "torch_packed", "torch_padded", "mxnet_fused")
DECODE_IMPLS = ("fusedrnn", "gluon_cell", "torch_cell")
LABELS = {"fusedrnn": "fusedrnn", "torch": "PyTorch", "mxnet_fused": "MXNet fused",
          "mxnet_unrolled": "MXNet unrolled cells", "fusedrnn_padded": "fusedrnn, padded",
          "torch_packed": "PyTorch packed", "torch_padded": "PyTorch padded",
          "gluon_cell": "gluon.rnn cell", "torch_cell": "PyTorch cell"}
COLORS = {"torch": "tab:orange", "torch_padded": "tab:orange", "torch_packed": "tab:red",
          "mxnet_fused": "tab:blue", "mxnet_unrolled": "tab:purple",
          "fusedrnn_padded": "tab:green", "gluon_cell": "tab:blue", "torch_cell": "tab:orange"}
TOLERANCE = 1e-3  # max |a - b| / max(1, max |reference|)
PAD40 = 0.4


# --------------------------------------------------------------------------- implementations
# Each factory takes a Case (bench_kernels.Case; case.lengths set for variable-length batches)
# and returns {"train": fn, "infer": fn, "outputs": fn -> (y, dx) as NumPy}.
WEIGHTS = ("i2h_weight", "h2h_weight", "i2h_bias", "h2h_bias")


def _case_weights(case):
    return dict(zip(WEIGHTS, (case.w_ih, case.w_hh, case.b_ih, case.b_hh)))


def _load_gluon(block, case):
    """Copies the case's weights into a gluon block (layer: l0_i2h_weight..., cell:
    i2h_weight...)."""
    import mxnet as mx
    params = block.collect_params()
    for key, value in _case_weights(case).items():
        names = [n for n in params if n.endswith(key)]
        assert len(names) == 1, (key, list(params))
        params[names[0]].set_data(mx.nd.array(value))


def _gluon_layer_cls(module, mode):
    return {"lstm": module.LSTM, "gru": module.GRU,
            "rnn_tanh": functools.partial(module.RNN, activation="tanh")}[mode]


def _gluon_cell_cls(module, mode, H, I):
    cls = {"lstm": module.LSTMCell, "gru": module.GRUCell,
           "rnn_tanh": functools.partial(module.RNNCell, activation="tanh")}[mode]
    return cls(H, input_size=I)


def _mxnet_runner(case, net, states, lengths=None):
    """Runs a hybridized block called as net(x, states[, sequence_length]) -> (y, states)."""
    import mxnet as mx
    x = mx.nd.array(case.x)
    x.attach_grad()
    head = mx.nd.array(case.dy)
    extra = {} if lengths is None else {"sequence_length": mx.nd.array(lengths)}

    def train():
        with mx.autograd.record():
            y = net(x, states, **extra)[0]
        y.backward(head)
        mx.nd.waitall()

    def infer():
        y = net(x, states, **extra)[0]
        mx.nd.waitall()
        return y

    def outputs():
        y = infer().asnumpy()
        train()
        return y, x.grad.asnumpy()

    return {"train": train, "infer": infer, "outputs": outputs}


def _layer_states(case):
    import mxnet as mx
    states = [mx.nd.array(case.h0[None])]
    if case.mode == "lstm":
        states.append(mx.nd.array(case.c0[None]))
    return states


def fusedrnn_layer(case, use_lengths=True):
    import fusedrnn
    layer = _gluon_layer_cls(fusedrnn, case.mode)(case.H, num_layers=1, layout="TNC",
                                                   input_size=case.I)
    layer.initialize()
    _load_gluon(layer, case)
    layer.hybridize(static_alloc=True)
    lengths = case.lengths if use_lengths else None
    return _mxnet_runner(case, layer, _layer_states(case), lengths)


def mxnet_fused(case):
    import mxnet as mx
    layer = _gluon_layer_cls(mx.gluon.rnn, case.mode)(case.H, num_layers=1, layout="TNC",
                                                       input_size=case.I)
    layer.initialize()
    _load_gluon(layer, case)
    layer.hybridize(static_alloc=True)
    return _mxnet_runner(case, layer, _layer_states(case))


def mxnet_unrolled(case):
    import mxnet as mx

    class Unrolled(mx.gluon.HybridBlock):
        """cell.unroll over the whole sequence, as one hybridized graph."""

        def __init__(self):
            super().__init__()
            with self.name_scope():
                self.cell = _gluon_cell_cls(mx.gluon.rnn, case.mode, case.H, case.I)

        def hybrid_forward(self, F, x, states):
            return self.cell.unroll(case.T, x, begin_state=states, layout="TNC",
                                    merge_outputs=True)

    net = Unrolled()
    net.initialize()
    _load_gluon(net, case)
    net.hybridize(static_alloc=True)
    states = [s.reshape((case.N, case.H)) for s in _layer_states(case)]
    return _mxnet_runner(case, net, states)


def torch_layer(case, packed=False):
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU,
           "rnn_tanh": functools.partial(torch.nn.RNN, nonlinearity="tanh")}[case.mode]
    m = cls(case.I, case.H)
    with torch.no_grad():
        for suffix, value in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"),
                                 _case_weights(case).values()):
            getattr(m, suffix + "_l0").copy_(torch.from_numpy(value))
    x = torch.from_numpy(case.x).requires_grad_()
    head = torch.from_numpy(case.dy)
    h0 = torch.from_numpy(case.h0)[None]
    state = (h0, torch.from_numpy(case.c0)[None]) if case.mode == "lstm" else h0
    lengths = torch.from_numpy(case.lengths) if packed else None

    def forward():
        if not packed:
            return m(x, state)[0]
        y = m(pack_padded_sequence(x, lengths, enforce_sorted=False), state)[0]
        return pad_packed_sequence(y, total_length=case.T)[0]

    def train():
        m.zero_grad(set_to_none=True)
        x.grad = None
        forward().backward(head)

    def infer():
        with torch.no_grad():
            return forward()

    def outputs():
        y = infer().numpy()
        train()
        return y, x.grad.numpy()

    return {"train": train, "infer": infer, "outputs": outputs}


def _decode_runner(step, x0, states, to_numpy):
    """A loop of DECODE_STEPS calls h, states = step(h, states), starting from x0."""
    def loop():
        h, s = x0, states
        for _ in range(DECODE_STEPS):
            h, s = step(h, s)
        return h

    def outputs():
        return to_numpy(loop()), None

    return {"infer": loop, "outputs": outputs}


def _gluon_decoder(case, module):
    import mxnet as mx
    cell = _gluon_cell_cls(module, case.mode, case.H, case.I)
    cell.initialize()
    _load_gluon(cell, case)
    cell.hybridize(static_alloc=True)
    states = [mx.nd.array(case.h0)] + ([mx.nd.array(case.c0)] if case.mode == "lstm" else [])

    def step(h, s):
        return cell(h, s)

    r = _decode_runner(step, mx.nd.array(case.x[0]), states, lambda y: y.asnumpy())
    loop = r["infer"]

    def infer():
        h = loop()
        mx.nd.waitall()
        return h

    r["infer"] = infer
    return r


def fusedrnn_cell(case):
    import fusedrnn
    return _gluon_decoder(case, fusedrnn)


def gluon_cell(case):
    import mxnet as mx
    return _gluon_decoder(case, mx.gluon.rnn)


def torch_cell(case):
    import torch
    cls = {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}[case.mode]
    cell = cls(case.I, case.H)
    with torch.no_grad():
        for suffix, value in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"),
                                 _case_weights(case).values()):
            getattr(cell, suffix).copy_(torch.from_numpy(value))
    lstm = case.mode == "lstm"
    h0 = torch.from_numpy(case.h0)
    states = (h0, torch.from_numpy(case.c0)) if lstm else h0

    def step(h, s):
        s = cell(h, s)
        return (s[0] if lstm else s), s

    r = _decode_runner(step, torch.from_numpy(case.x[0]), states, lambda y: y.detach().numpy())
    loop = r["infer"]

    def infer():
        with torch.no_grad():
            return loop()

    r["infer"] = infer
    return r


FACTORIES = {
    "equal": {"fusedrnn": fusedrnn_layer, "torch": torch_layer, "mxnet_fused": mxnet_fused,
              "mxnet_unrolled": mxnet_unrolled},
    "varlen": {"fusedrnn": fusedrnn_layer,
               "fusedrnn_padded": functools.partial(fusedrnn_layer, use_lengths=False),
               "torch_packed": functools.partial(torch_layer, packed=True),
               "torch_padded": torch_layer, "mxnet_fused": mxnet_fused},
    "decode": {"fusedrnn": fusedrnn_cell, "gluon_cell": gluon_cell, "torch_cell": torch_cell},
}
# What each implementation's outputs are checked against: (references, first available one
# used; compare dx too). Outputs are compared at valid positions only (padding differs by
# design: zero with lengths or packing, computed otherwise).
CHECKS = {
    "equal": {"fusedrnn": (("torch", "mxnet_fused"), True),
              "mxnet_fused": (("torch", "mxnet_unrolled"), True),
              "mxnet_unrolled": (("torch", "mxnet_fused"), True)},
    "varlen": {"fusedrnn": (("torch_packed",), True),
               "torch_packed": (("torch_padded", "mxnet_fused"), False),
               "fusedrnn_padded": (("torch_padded", "mxnet_fused"), True),
               "mxnet_fused": (("torch_padded", "fusedrnn_padded"), True)},
    "decode": {"fusedrnn": (("torch_cell", "gluon_cell"), False),
               "gluon_cell": (("torch_cell", "fusedrnn"), False)},
}


def lengths_with_padding(T, N, padding, rng):
    """Lengths in [1, T], one of them T, whose padding is exactly round(padding * T * N)
    positions: drawn uniform in [T/4, T], then nudged one step at a time."""
    target = round((1 - padding) * T * N)
    lengths = rng.integers(T // 4, T, size=N, endpoint=True)
    lengths[0] = T
    while lengths.sum() != target:
        i = rng.integers(1, N)
        step = 1 if lengths.sum() < target else -1
        if 1 <= lengths[i] + step <= T:
            lengths[i] += step
    return lengths


def make_case(kind, mode, T, N, I, H, batch=None):
    import numpy as np
    case = Case(mode, T, N, I, H, varlen=kind == "varlen")
    if batch == "pad40":
        case.lengths = lengths_with_padding(T, N, PAD40, np.random.default_rng(7))
        case.tokens = int(case.lengths.sum())
    case.batch = batch
    return case


# --------------------------------------------------------------------------- worker
def configure_threads(n):
    """Thread counts of the libraries this process has imported (threadpoolctl first, so that
    fusedrnn's own setting, which keeps its OpenBLAS single-threaded, comes last)."""
    import threadpoolctl
    limits = threadpoolctl.threadpool_limits(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    if "fusedrnn" in sys.modules:
        sys.modules["fusedrnn"].kernels.set_num_threads(n)
    return limits


def cross_check(kind, case, outs, errors):
    """Compares outputs with their references; an implementation that disagrees gets an
    error. Returns {impl-ref: scaled max difference}."""
    import numpy as np
    valid = np.ones((case.T, case.N, 1), bool)
    if case.lengths is not None:
        valid = (np.arange(case.T)[:, None] < case.lengths[None])[..., None]
    diffs = {}
    for name, (refs, with_dx) in CHECKS[kind].items():
        ref = next((r for r in refs if r in outs), None)
        if name not in outs or ref is None:
            if name in outs:
                diffs[f"{name}-{refs[0]}"] = None  # no reference ran: unchecked
            continue
        (y, dx), (y_ref, dx_ref) = outs[name], outs[ref]
        pairs = [(y, y_ref, valid if kind != "decode" else True)]
        if with_dx:
            pairs.append((dx, dx_ref, True))
        worst = 0.0
        for a, b, where in pairs:
            scale = max(1.0, float(np.abs(b).max()))
            worst = max(worst, float(np.where(where, np.abs(a - b), 0).max()) / scale)
        diffs[f"{name}-{ref}"] = worst
        if not worst <= TOLERANCE:
            errors[name] = f"differs from {ref}: scaled max difference {worst:.2e}"
    return diffs


class Worker:
    """Measures rows in one worker process (one thread count) and collects them."""

    def __init__(self, n, quick, repeats):
        self.n, self.quick = n, quick
        self.warmup = 1 if quick else 2
        self.repeats = repeats or (5 if quick else 10)
        self.budget_s = 1.5 if quick else 3.0  # per implementation and phase
        self.quiet_s = 3.0 if quick else 20.0
        self.rows = []

    def measure(self, built, errors, phase):
        res = {}
        t0, (busy0, own0) = time.perf_counter(), busy_seconds()
        for name, r in built.items():
            if name in errors:
                res[name] = {"error": errors[name]}
                continue
            try:
                res[name] = time_calls(r[phase], self.warmup, self.repeats, self.budget_s)
            except Exception as e:  # noqa: BLE001 - a failing baseline must not stop the run
                res[name] = {"error": f"{type(e).__name__}: {e}"}
        busy1, own1 = busy_seconds()
        return res, max(0.0, (busy1 - busy0) - (own1 - own0)) / (time.perf_counter() - t0)

    def row(self, kind, case, phases):
        built, errors, outs = {}, {}, {}
        for name, make in FACTORIES[kind].items():
            try:
                built[name] = make(case)
                outs[name] = built[name]["outputs"]()
            except Exception as e:  # noqa: BLE001
                errors[name] = f"{type(e).__name__}: {e}"
                built.setdefault(name, None)
        diffs = cross_check(kind, case, outs, errors)
        del outs
        for phase in phases:
            for attempt in range(1 if self.quick else 2):
                wait_for_quiet(max_wait_s=self.quiet_s, sample_s=0.3)
                res, background = self.measure(built, errors, phase)
                if background < 0.2:
                    break
                print(f"[{self.n} thr] {background:.1f} cores busy with other processes "
                      "during the measurement" + (", measuring again" if attempt == 0 and not
                                                  self.quick else ""), flush=True)
            tokens = case.tokens  # decode: T = DECODE_STEPS single steps
            row = {"kind": kind, "batch": case.batch, "mode": case.mode, "T": case.T,
                   "N": case.N, "I": case.I, "H": case.H, "threads": self.n, "phase": phase,
                   "tokens": tokens,
                   "padding_fraction": 1 - case.tokens / (case.T * case.N),
                   "gflop": flops(case.mode, tokens, case.I, case.H, phase == "train") / 1e9,
                   "impls": res, "maxdiff": diffs, "background_cores": background}
            f = res.get("fusedrnn", {})
            if "median_ms" in f:
                row["fusedrnn_gflops"] = row["gflop"] / (f["median_ms"] * 1e-3)
                row["ratio_vs_fusedrnn"] = {k: v["median_ms"] / f["median_ms"]
                                            for k, v in res.items()
                                            if k != "fusedrnn" and "median_ms" in v}
            self.rows.append(row)
            print(f"[{self.n} thr] {row_label(row)} {phase}: " + ", ".join(
                f"{k} {v['median_ms']:.2f} ms" if "median_ms" in v else f"{k} ERROR"
                for k, v in res.items()) + f" (bg {background:.1f})", flush=True)
        del built
        gc.collect()


def worker_info(n):
    import mxnet as mx
    import threadpoolctl
    import torch
    import fusedrnn
    K = fusedrnn.kernels
    return {
        "threads": n,
        "env": {k: os.environ.get(k) for k in BLAS_ENV_VARS + (
            "OMP_NUM_THREADS", "MXNET_OMP_MAX_THREADS", "MXNET_ENGINE_TYPE", "OMP_WAIT_POLICY",
            "MXNET_USE_MKLDNN_RNN", "OPENBLAS_NUM_THREADS")},
        "threadpool_info": [{k: d.get(k) for k in ("filepath", "internal_api", "version",
                                                   "architecture", "threading_layer",
                                                   "num_threads")}
                            for d in threadpoolctl.threadpool_info()],
        "torch_num_threads": torch.get_num_threads(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mxnet_features": [f.name for f in mx.runtime.Features().values() if f.enabled],
        "fusedrnn": {"file": K.__file__, "digest": package_digest(fusedrnn),
                     "threads": K.get_num_threads(),
                     "instruction_set": K.instruction_set()},
    }


def plan(args):
    """(kind, case arguments, phases) of every row this run measures, in order."""
    rows = []
    quick = args.quick
    if "equal" in args.parts:
        for mode in args.modes:
            shapes = EQUAL_SHAPES[mode][:1 if quick else None]
            if quick and mode == "rnn_tanh":
                shapes = []
            rows += [("equal", (mode, *s), ("train", "infer")) for s in shapes]
    if "varlen" in args.parts:
        for mode in [m for m in VARLEN_MODES if m in args.modes][:1 if quick else None]:
            for shape in VARLEN_SHAPES[:1 if quick else None]:
                for batch in (("pad40",) if quick else ("uniform", "pad40")):
                    rows.append(("varlen", (mode, *shape, batch), ("train", "infer")))
    if "decode" in args.parts:
        for mode, N, H in DECODE:
            if mode in args.modes and not (quick and H != 256):
                rows.append(("decode", (mode, DECODE_STEPS, N, H, H), ("infer",)))
    return rows


def worker(args):
    n = args.threads[0]
    import mxnet  # noqa: F401  (after the parent set the OpenMP variables)
    import torch  # noqa: F401
    import fusedrnn
    _limits = configure_threads(n)  # noqa: F841
    info = worker_info(n)
    peak = sgemm_peak(n)
    print(f"[{n} thr] sgemm 2048 GFLOP/s: " + ", ".join(f"{k} {v:.0f}" for k, v in peak.items()),
          flush=True)
    w = Worker(n, args.quick, args.repeats)
    for kind, spec, phases in plan(args):
        w.row(kind, make_case(kind, *spec), phases)
    peak_end = sgemm_peak(n)
    info["sgemm_peak_gflops_start_end"] = [peak, peak_end]
    info["sgemm_peak_gflops"] = {k: max(v, peak_end.get(k, 0.0)) for k, v in peak.items()}
    best = max(info["sgemm_peak_gflops"].values())
    for row in w.rows:
        if "fusedrnn_gflops" in row and row["kind"] != "decode":
            row["fusedrnn_peak_frac"] = row["fusedrnn_gflops"] / best
    if package_digest(fusedrnn) != info["fusedrnn"]["digest"]:
        info["fusedrnn"]["digest_changed_during_run"] = True
    with open(args.worker_out, "w") as f:
        json.dump({"header": info, "rows": w.rows}, f)


def status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_hwm():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_probe(args):
    """Peak resident memory of 3 training steps of one implementation (see the docstring)."""
    impl, mode, *shape = args.memory
    case = make_case("equal", mode, *map(int, shape))
    train = FACTORIES["equal"][impl](case)["train"]
    _limits = configure_threads(MEMORY_THREADS)  # noqa: F841
    gc.collect()
    rss0 = status_kib("VmRSS")
    reset = reset_hwm()
    train()
    hwm1 = status_kib("VmHWM")
    reset_hwm()
    rss1 = status_kib("VmRSS")
    train()
    train()
    hwm2 = status_kib("VmHWM")
    mib = 1024.0
    out = {"impl": impl, "mode": mode, "shape": list(map(int, shape)),
           "rss_before_mib": rss0 / mib, "hwm_reset": reset,
           "peak_mib": (max(hwm1, hwm2) - rss0) / mib,
           "steady_mib": (hwm2 - rss1) / mib if reset else None,
           "rss_after_mib": status_kib("VmRSS") / mib}
    with open(args.worker_out, "w") as f:
        json.dump(out, f)


# --------------------------------------------------------------------------- parent
def worker_env(n):
    env = {k: v for k, v in os.environ.items() if k not in BLAS_ENV_VARS}
    env.setdefault("MXNET_ENGINE_TYPE", "NaiveEngine")  # see bench_kernels.py
    env.update(OMP_NUM_THREADS=str(n), MXNET_OMP_MAX_THREADS=str(n))
    return env


def run_child(extra, n):
    """Runs this script with `extra` arguments in the worker environment; returns its JSON
    output or {"error": ...}."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
        out = tmp.name
    try:
        p = subprocess.run([sys.executable, os.path.abspath(__file__), *extra,
                            "--worker-out", out], env=worker_env(n),
                           stderr=subprocess.PIPE, text=True)
        if p.returncode != 0:
            return {"error": f"exit {p.returncode}: " + p.stderr.strip()[-500:]}
        with open(out) as f:
            return json.load(f)
    finally:
        os.unlink(out)


def memory_shapes(args):
    modes = [m for m in ("lstm", "gru") if m in args.modes]
    return [(m, s) for m in modes for s in EQUAL_SHAPES[m][:1 if args.quick else None]]


def parent(args):
    t_start = time.perf_counter()
    header = machine_header()
    header["workers"] = {}
    rows = []
    threads = [2] if args.quick and args.threads == [1, 2] else args.threads
    for n in threads:
        cmd = ["--worker", "--threads", str(n), "--modes", *args.modes, "--parts", *args.parts]
        cmd += ["--quick"] * args.quick + (["--repeats", str(args.repeats)] if args.repeats
                                           else [])
        wait_for_quiet(max_wait_s=5 if args.quick else 30)
        res = run_child(cmd, n)
        if "error" in res:
            sys.exit(f"worker for {n} thread(s) failed: {res['error']}")
        header["workers"][str(n)] = res["header"]
        rows += res["rows"]
    memory = []
    if "memory" in args.parts:
        for mode, shape in memory_shapes(args):
            for impl in EQUAL_IMPLS:
                m = run_child(["--memory", impl, mode, *map(str, shape)], MEMORY_THREADS)
                m.update(impl=impl, mode=mode, shape=list(shape))
                memory.append(m)
                print(f"memory {mode} {shape} {impl}: " + (
                    f"{m['peak_mib']:.1f} MiB" if "peak_mib" in m else m["error"]), flush=True)
        for r in rows:
            if r["kind"] == "equal" and r["phase"] == "train" and r["threads"] == MEMORY_THREADS:
                r["memory_mib"] = {m["impl"]: m.get("peak_mib") for m in memory
                                   if m["mode"] == r["mode"] and
                                   m["shape"] == [r["T"], r["N"], r["I"], r["H"]]}
    header["duration_s"] = time.perf_counter() - t_start
    result = {"header": header, "rows": rows, "memory": memory}
    out = args.out or os.path.join(ROOT, "bench", "results",
                                   "rnn_quick.json" if args.quick else "rnn.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {out} ({header['duration_s']:.0f} s)")
    png = os.path.splitext(out)[0] + ".png"
    plot(result, png, max(threads))
    print(f"wrote {png}\n")
    print(markdown(result, max(threads)))


# --------------------------------------------------------------------------- report
def row_label(r):
    shape = f"{r['T']},{r['N']},{r['I']},{r['H']}"
    if r["kind"] == "decode":
        return f"{r['mode'].upper()} cell N={r['N']} H={r['H']}"
    mode = {"rnn_tanh": "RNN"}.get(r["mode"], r["mode"].upper())
    return f"{mode} {shape}" + (f" {r['batch']}" if r["kind"] == "varlen" else "")


def ratio(r, impl):
    return r.get("ratio_vs_fusedrnn", {}).get(impl)


def memory_ratio(r):
    m = r.get("memory_mib") or {}
    if m.get("fusedrnn") and m.get("mxnet_fused") is not None:
        return m["mxnet_fused"] / m["fusedrnn"]
    return None


def _is(kind, phase, modes=None, where=lambda r: True):
    return lambda r: (r["kind"] == kind and r["phase"] == phase and
                      (modes is None or r["mode"] in modes) and where(r))


LG = ("lstm", "gru")
# (text, rows it covers, figure, goal, strict): met when every figure >= goal (> if strict).
TARGETS = [
    ("training >= 1.5x PyTorch on every LSTM and GRU shape", _is("equal", "train", LG),
     functools.partial(ratio, impl="torch"), 1.5, False),
    ("training >= 2x MXNet fused on every LSTM and GRU shape", _is("equal", "train", LG),
     functools.partial(ratio, impl="mxnet_fused"), 2.0, False),
    ("training >= 4x MXNet unrolled cells on every LSTM and GRU shape",
     _is("equal", "train", LG), functools.partial(ratio, impl="mxnet_unrolled"), 4.0, False),
    ("inference >= 1.3x PyTorch on every shape", _is("equal", "infer"),
     functools.partial(ratio, impl="torch"), 1.3, False),
    ("batch-1 latency (N=1 rows, inference) >= 2x MXNet fused",
     _is("equal", "infer", where=lambda r: r["N"] == 1),
     functools.partial(ratio, impl="mxnet_fused"), 2.0, False),
    ("large shapes (H >= 512) training >= 60% of the measured sgemm peak",
     _is("equal", "train", where=lambda r: r["H"] >= 512),
     lambda r: 100 * r["fusedrnn_peak_frac"] if "fusedrnn_peak_frac" in r else None, 60.0,
     False),
    ("variable length, 40% padding: >= 1.5x faster than the same batch padded",
     lambda r: r["kind"] == "varlen" and r["batch"] == "pad40",
     functools.partial(ratio, impl="fusedrnn_padded"), 1.5, False),
    ("variable length, 40% padding: faster than PyTorch packed",
     lambda r: r["kind"] == "varlen" and r["batch"] == "pad40",
     functools.partial(ratio, impl="torch_packed"), 1.0, True),
    ("decoding loop: fusedrnn cells >= 3x faster than gluon.rnn cells",
     lambda r: r["kind"] == "decode", functools.partial(ratio, impl="gluon_cell"), 3.0, False),
    ("memory: fusedrnn training peak <= MXNet fused's (MXNet fused / fusedrnn >= 1)",
     lambda r: "memory_mib" in r and r["mode"] in LG, memory_ratio, 1.0, False),
]


def evaluate_targets(rows, threads):
    out = []
    for text, select, figure, goal, strict in TARGETS:
        got = [(figure(r), r) for r in rows if r["threads"] == threads and select(r)]
        if not got:
            out.append({"target": text, "status": "not measured"})
            continue
        missing = [r for v, r in got if v is None]
        values = [(v, r) for v, r in got if v is not None]
        ok = [v > goal if strict else v >= goal for v, _ in values]
        worst = min(values, key=lambda p: p[0]) if values else None
        out.append({"target": text, "met": bool(values) and all(ok) and not missing,
                    "passed": sum(ok), "count": len(got), "missing": len(missing),
                    "worst": worst[0] if worst else None, "goal": goal,
                    "worst_row": (row_label(worst[1]) + " " + worst[1]["phase"]) if worst
                    else None})
    return out


def fmt_ms(r):
    if r is None:
        return "-"
    if "median_ms" not in r:
        return "error"
    return f"{r['median_ms']:.2f} ({r['p25_ms']:.2f}-{r['p75_ms']:.2f})"


def fmt_x(v):
    return "-" if v is None else f"{v:.2f}x"


def markdown(data, threads=2):
    h = data["header"]
    rows = [r for r in data["rows"] if r["threads"] == threads]
    w = h["workers"].get(str(threads))
    if w is None:
        return f"no rows for {threads} thread{'s' * (threads != 1)} in this result"
    blas = [i for i in w["threadpool_info"] if "scipy_openblas" in (i["filepath"] or "")]
    peak = max(w["sgemm_peak_gflops"].values())
    lines = [f"{h['cpu_model']}, {h['cores']} cores, {threads} thread{'s' * (threads != 1)}, float32, "
             f"{h['date'][:10]}; fusedrnn {h['versions']['fusedrnn']} "
             f"({w['fusedrnn']['instruction_set']}), torch {h['versions']['torch']}, "
             f"mxnet {h['versions']['mxnet']} ({w['env'].get('MXNET_ENGINE_TYPE')}); OpenBLAS "
             f"kernel {blas[0]['architecture'] if blas else '?'}; sgemm peak {peak:.0f} GFLOP/s. "
             "Median ms per call (p25-p75); \"vs X\" = X's median / fusedrnn's (> 1: fusedrnn "
             "is faster). Command: `python bench/bench_rnn.py" +
             "".join(" " + a for a in h["argv"]) + "`.", ""]
    eq = [r for r in rows if r["kind"] == "equal"]
    if eq:
        lines += ["Full-length batches, one layer (T, N, I, H = steps, batch, input, hidden); "
                  "memory: peak MiB added by 3 training steps (fusedrnn / PyTorch / MXNet fused "
                  "/ MXNet unrolled cells).", "",
                  "| mode | T, N, I, H | phase | fusedrnn ms | PyTorch ms | MXNet fused ms | "
                  "MXNet unrolled ms | vs PyTorch | vs MXNet fused | vs MXNet unrolled | "
                  "GFLOP/s | % of peak | memory MiB |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in eq:
            mem = r.get("memory_mib")
            mem = " / ".join("-" if mem.get(k) is None else f"{mem[k]:.0f}"
                             for k in EQUAL_IMPLS) if mem else ""
            lines.append(f"| {row_label(r).split()[0]} | {r['T']}, {r['N']}, {r['I']}, {r['H']} "
                         f"| {r['phase']} | " +
                         " | ".join(fmt_ms(r["impls"].get(k)) for k in EQUAL_IMPLS) + " | " +
                         " | ".join(fmt_x(ratio(r, k)) for k in EQUAL_IMPLS[1:]) +
                         f" | {r.get('fusedrnn_gflops', 0):.0f} | "
                         f"{100 * r.get('fusedrnn_peak_frac', 0):.0f}% | {mem} |")
    vl = [r for r in rows if r["kind"] == "varlen"]
    if vl:
        lines += ["", "Variable lengths: uniform = lengths uniform in [T/4, T], pad40 = exactly "
                  "40% padding; fusedrnn gets sequence_length, the others compute the padding "
                  "(PyTorch packed skips it); GFLOP/s counts real tokens.", "",
                  "| mode | T, N, I, H | batch | padding | phase | fusedrnn, lengths | "
                  "fusedrnn, padded | PyTorch packed | PyTorch padded | MXNet fused | "
                  "vs fusedrnn padded | vs PyTorch packed | vs PyTorch padded | vs MXNet fused "
                  "| GFLOP/s |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in vl:
            lines.append(f"| {row_label(r).split()[0]} | {r['T']}, {r['N']}, {r['I']}, "
                         f"{r['H']} | {r['batch']} | {100 * r['padding_fraction']:.0f}% | "
                         f"{r['phase']} | " +
                         " | ".join(fmt_ms(r["impls"].get(k)) for k in VARLEN_IMPLS) + " | " +
                         " | ".join(fmt_x(ratio(r, k)) for k in VARLEN_IMPLS[1:]) +
                         f" | {r.get('fusedrnn_gflops', 0):.0f} |")
    dec = [r for r in rows if r["kind"] == "decode"]
    if dec:
        lines += ["", f"Decoding loop: {DECODE_STEPS} single steps of a cell, inference, output "
                  "fed back as the next input (I = H); ms per loop.", "",
                  "| cell | N | H | fusedrnn cell | gluon.rnn cell | PyTorch cell | "
                  "vs gluon.rnn cell | vs PyTorch cell | fusedrnn us per step |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in dec:
            f = r["impls"].get("fusedrnn", {})
            us = f"{f['median_ms'] * 1e3 / DECODE_STEPS:.0f}" if "median_ms" in f else "-"
            lines.append(f"| {r['mode'].upper()} | {r['N']} | {r['H']} | " +
                         " | ".join(fmt_ms(r["impls"].get(k)) for k in DECODE_IMPLS) + " | " +
                         " | ".join(fmt_x(ratio(r, k)) for k in DECODE_IMPLS[1:]) + f" | {us} |")
    errors = sorted({(k, v["error"]) for r in rows for k, v in r["impls"].items()
                     if "error" in v})
    errors += sorted({(m["impl"], "memory: " + m["error"]) for m in data.get("memory", [])
                      if "error" in m})
    if errors:
        lines += [""] + [f"- error, {LABELS.get(k, k)}: {e}" for k, e in errors]
    lines += ["", f"Targets ({threads} thread{'s' * (threads != 1)}, float32):", ""]
    for t in evaluate_targets(rows, threads):
        if t.get("status"):
            lines.append(f"- not measured: {t['target']}")
            continue
        unit = "%" if "sgemm" in t["target"] else "x"
        worst = "-" if t["worst"] is None else f"{t['worst']:.{0 if unit == '%' else 2}f}{unit}"
        lines.append(f"- **{'met' if t['met'] else 'missed'}**: {t['target']}: "
                     f"{t['passed']}/{t['count']} rows, worst {worst} ({t['worst_row']})" +
                     (f", {t['missing']} without a figure" if t["missing"] else ""))
    return "\n".join(lines)


def _bars(ax, rows, impls, title, targets=(), segments=(), labels=None):
    """Log-scale bars of baseline / fusedrnn per row, drawn from the 1x line (up: fusedrnn is
    faster); targets: (value, impl) lines; segments: (value, impl, row indices) for targets
    that cover some rows only."""
    import numpy as np
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter
    width = 0.8 / len(impls)
    x = np.arange(len(rows))
    seen = [1.0] + [t[0] for t in targets] + [s[0] for s in segments]
    for j, impl in enumerate(impls):
        vals = [ratio(r, impl) for r in rows]
        pos = x - 0.4 + width * (j + 0.5)
        ax.bar(pos, [v - 1 if v else 0 for v in vals], width, bottom=1, label=LABELS[impl],
               color=COLORS[impl])
        for p, v in zip(pos, vals):
            if v:
                seen.append(v)
                ax.text(p, v, f"{v:.2g}", ha="center", va="bottom" if v >= 1 else "top",
                        fontsize=6)
    ax.axhline(1.0, color="black", lw=1)
    for value, impl in targets:
        ax.axhline(value, color=COLORS[impl], ls="--", lw=1,
                   label=f"target {value:g}x vs {LABELS[impl]}")
    for value, impl, idx in segments:
        for i in idx:
            ax.hlines(value, i - 0.45, i + 0.45, color=COLORS[impl], ls=":", lw=2)
    ax.set_yscale("log")
    ax.set_ylim(min(seen) / 1.3, max(seen) * 2.2)  # room for the legend
    ax.yaxis.set_major_locator(FixedLocator([0.1, 0.2, 0.3, 0.5, 0.7, 1, 1.5, 2, 3, 4, 6, 10,
                                             20, 30, 50, 100]))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(x)
    ax.set_xticklabels(labels or [row_label(r).replace(" ", "\n", 1) for r in rows],
                       fontsize=7 if labels is None else 6)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel("baseline time / fusedrnn time")
    ax.legend(fontsize=7, ncol=4, loc="upper left")
    ax.grid(axis="y", which="both", alpha=0.3)


def plot(data, path, threads=2):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [r for r in data["rows"] if r["threads"] == threads]
    eq = {p: [r for r in rows if r["kind"] == "equal" and r["phase"] == p]
          for p in ("train", "infer")}
    dec = [r for r in rows if r["kind"] == "decode"]
    vl = [r for r in rows if r["kind"] == "varlen"]
    fig = plt.figure(figsize=(16, 12))
    gs = fig.add_gridspec(3, 3)
    baselines = EQUAL_IMPLS[1:]
    if eq["train"]:
        _bars(fig.add_subplot(gs[0, :]), eq["train"], baselines,
              f"Training (forward + backward), full-length batches, {threads} thread{'s' * (threads != 1)}",
              [(1.5, "torch"), (2.0, "mxnet_fused"), (4.0, "mxnet_unrolled")])
    if eq["infer"]:
        n1 = [i for i, r in enumerate(eq["infer"]) if r["N"] == 1]
        _bars(fig.add_subplot(gs[1, :]), eq["infer"], baselines,
              f"Inference, full-length batches, {threads} thread{'s' * (threads != 1)} (dotted: batch-1 target "
              "2x vs MXNet fused)", [(1.3, "torch")], [(2.0, "mxnet_fused", n1)])
    if dec:
        _bars(fig.add_subplot(gs[2, 0]), dec, DECODE_IMPLS[1:],
              f"Decoding loop, {DECODE_STEPS} cell steps, inference", [(3.0, "gluon_cell")],
              labels=[f"{r['mode'].upper()}\nN={r['N']}\nH={r['H']}" for r in dec])
    if vl:
        pad40 = [i for i, r in enumerate(vl) if r["batch"] == "pad40"]
        _bars(fig.add_subplot(gs[2, 1:]), vl, VARLEN_IMPLS[1:],
              "Variable lengths, fusedrnn with sequence_length (T,N; I,H = 256,256 or 64,128); "
              "dotted: 40%-padding targets", (),
              [(1.5, "fusedrnn_padded", pad40), (1.0, "torch_packed", pad40)],
              labels=[f"{r['mode'].upper()} {r['T']},{r['N']}\n{r['batch']}\n{r['phase']}"
                      for r in vl])
    h = data["header"]
    fig.suptitle(f"fusedrnn speedup over each baseline (baseline time / fusedrnn time; > 1: "
                 f"fusedrnn faster). {h['cpu_model']}, {threads} thread{'s' * (threads != 1)}, float32, "
                 f"{h['date'][:10]}", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--quick", action="store_true", help="a subset, 2 threads, fewer repeats "
                   "(under two minutes)")
    p.add_argument("--modes", nargs="+", default=list(EQUAL_SHAPES), choices=list(EQUAL_SHAPES))
    p.add_argument("--parts", nargs="+", default=["equal", "varlen", "decode", "memory"],
                   choices=["equal", "varlen", "decode", "memory"])
    p.add_argument("--repeats", type=int, help="timed calls per measurement at most (default "
                   "10, 5 with --quick; fewer once 3 s (1.5 s) have passed, never under 3)")
    p.add_argument("--out", help="JSON to write (default bench/results/rnn.json, or "
                   "rnn_quick.json with --quick); the plot goes next to it (.png)")
    p.add_argument("--report", metavar="JSON", help="print the markdown tables of a result")
    p.add_argument("--plot", metavar="JSON", help="draw a result's plot again (next to it, .png)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--memory", nargs=6, help=argparse.SUPPRESS)
    p.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.report:
        with open(args.report) as f:
            data = json.load(f)
        print(markdown(data, args.threads[-1]))
    elif args.plot:
        with open(args.plot) as f:
            data = json.load(f)
        png = os.path.splitext(args.plot)[0] + ".png"
        plot(data, png, args.threads[-1])
        print("wrote", png)
    elif args.memory:
        memory_probe(args)
    elif args.worker:
        worker(args)
    else:
        parent(args)


if __name__ == "__main__":
    main()
