#!/usr/bin/env python
"""What users run, float32 on the CPU: fusedrnn's Gluon layers and cells vs MXNet 1.9.1 (fused
RNN op, unrolled cells, cells) vs PyTorch (padded and packed).

    python bench/bench_rnn.py [--quick] [--threads 1 2] [--parts equal varlen decode memory]
                              [--modes lstm gru rnn_tanh] [--repeats 10]
                              [--mxnet-engine ThreadedEnginePerDevice] [--out FILE]

Writes bench/results/rnn.json (about 7 minutes on a quiet machine; --quick: rnn_quick.json, the
first LSTM and GRU shape, 2 threads, fewer repeats and shapes elsewhere). Tables, plot and
targets: python bench/report.py.

Implementations (one layer, TNC, the same weights and initial states for all):
- fusedrnn: fusedrnn.LSTM/GRU/RNN hybridized with static_alloc=True; with sequence_length for
  variable-length batches (fusedrnn_padded: the same batch, no lengths: computes the padding);
- mxnet_fused: mxnet.gluon.rnn.LSTM/GRU/RNN, hybridized the same way (MXNet's fused RNN op;
  on the CPU it ignores sequence_length, so it always runs the padded batch);
- mxnet_unrolled: gluon.rnn.LSTMCell/GRUCell/RNNCell.unroll(T, x, layout='TNC',
  merge_outputs=True) inside a hybridized HybridBlock (what the Keras MXNet backend ran);
- torch / torch_padded: torch.nn.LSTM/GRU/RNN on the padded batch; torch_packed: with
  pack_padded_sequence(enforce_sorted=False) and pad_packed_sequence.
Training = forward + backward from a fixed random upstream gradient of the outputs, gradients
for all parameters and the input; inference = forward only. Before a row is timed, outputs and
input gradients are compared with a reference (PyTorch) at 1e-3 of its scale; an
implementation that disagrees or fails gets its error in that cell and is not timed.

Processes (bench/_common.py says why): per thread count one worker for PyTorch, one for
fusedrnn's layers and cells and one for MXNet's own, both of these on MXNet with --mxnet-engine
(its default); implementations in one worker are timed interleaved, call by call.

Rows, for 1 and 2 threads:
- equal: full-length batches, LSTM / GRU / RNN (tanh), training and inference;
- varlen: LSTM and GRU, lengths uniform in [T/4, T] ("uniform") and a batch with exactly 40%
  padding ("pad40");
- decode: a loop of 100 single steps of a cell, inference, each step's output fed back as the
  next input (I = H): fusedrnn.LSTMCell/GRUCell vs gluon.rnn cells (both hybridized, one cached
  graph call per step) vs torch.nn.LSTMCell/GRUCell; time per 100-step loop. weights_read: the
  floor, the cell's weights read once a step by numpy's OpenBLAS (w @ v, N columns).

Memory (--parts memory; 2 threads, training, the equal-length LSTM and GRU shapes): one short
process per (implementation, shape) imports only that implementation's libraries, builds the
model and data, reads VmRSS from /proc/self/status, writes "5" to /proc/self/clear_refs (resets
VmHWM to the current RSS, where the kernel permits it), runs 3 training steps and reads VmHWM.
peak_mib = VmHWM - VmRSS before the steps: the resident memory the first three steps added at
their peak, one-off costs of the first call and pooled allocator memory included; steady_mib
is the same over steps 2-3 only. A process-level figure, not an allocator trace.
"""
import functools
import gc
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

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
MEMORY_IMPLS = ("fusedrnn", "torch", "mxnet_fused", "mxnet_unrolled")
PAD40 = 0.4
FAIRNESS = ("Per thread count one worker process for PyTorch (no MXNet in it), one for "
            "fusedrnn's Gluon layers and one for MXNet's own, both on MXNet with the engine "
            "named here, as their users run them (interleaved in one process, each library's "
            "calls ran next to the other's OpenMP team, spinning after its operators: LSTM "
            "100,1,256,256 inference 1.47 ms alone, 2.0 next to MXNet's); a row is measured "
            "by each worker in turn, and the implementations within a worker interleaved call "
            "by call.")


# --------------------------------------------------------------------------- implementations
def fusedrnn_layer(case, use_lengths=True):
    import fusedrnn
    layer = C.gluon_layer(fusedrnn, case)
    layer.hybridize(static_alloc=True)
    return C.mxnet_runner(case, layer, C.layer_states(case),
                          case.lengths if use_lengths else None)


def mxnet_fused(case):
    import mxnet as mx
    layer = C.gluon_layer(mx.gluon.rnn, case)
    layer.hybridize(static_alloc=True)
    return C.mxnet_runner(case, layer, C.layer_states(case))


def mxnet_unrolled(case):
    import mxnet as mx

    class Unrolled(mx.gluon.HybridBlock):
        """cell.unroll over the whole sequence, as one hybridized graph."""

        def __init__(self):
            super().__init__()
            with self.name_scope():
                self.cell = C.gluon_cell(mx.gluon.rnn, case)

        def hybrid_forward(self, F, x, states):
            return self.cell.unroll(case.T, x, begin_state=states, layout="TNC",
                                    merge_outputs=True)

    net = Unrolled()  # its cell comes initialized with the case's weights
    net.hybridize(static_alloc=True)
    states = [s.reshape((case.N, case.H)) for s in C.layer_states(case)]
    return C.mxnet_runner(case, net, states)


def _decoder(step, x0, states, to_numpy, infer_scope):
    """A loop of DECODE_STEPS calls h, states = step(h, states), starting from x0."""
    def infer():
        with infer_scope():
            h, s = x0, states
            for _ in range(DECODE_STEPS):
                h, s = step(h, s)
            return h

    return {"infer": infer, "outputs": lambda: (to_numpy(infer()), None)}


def gluon_decoder(case, module):
    import contextlib
    import mxnet as mx
    cell = C.gluon_cell(module, case)
    cell.hybridize(static_alloc=True)
    states = [mx.nd.array(case.h0)] + ([mx.nd.array(case.c0)] if case.mode == "lstm" else [])
    return _decoder(cell, mx.nd.array(case.x[0]), states, lambda y: y.asnumpy(),
                    contextlib.nullcontext)


def weights_read(case):
    """The decoding loop's floor: the cell's weights [W_ih | W_hh] read once a step, as numpy's
    own OpenBLAS multiplies them by N columns (a GEMV at N = 1), on the same threads. A step
    whose weights stream from L3 or memory cannot take less."""
    import numpy as np
    w_ih, w_hh, _, _ = case.weights()
    w = np.ascontiguousarray(np.concatenate([w_ih, w_hh], axis=1))
    v = np.ones((w.shape[1], case.N), np.float32)

    def infer():
        for _ in range(DECODE_STEPS):
            out = w @ v
        return out

    return {"infer": infer, "outputs": lambda: (infer(), None)}


def torch_cell(case):
    import torch
    cls = {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}[case.mode]
    cell = cls(case.I, case.H)
    with torch.no_grad():
        for name, value in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"),
                               case.weights()):
            getattr(cell, name).copy_(torch.from_numpy(value))
    lstm = case.mode == "lstm"
    h0 = torch.from_numpy(case.h0)
    states = (h0, torch.from_numpy(case.c0)) if lstm else h0

    def step(h, s):
        s = cell(h, s)
        return (s[0] if lstm else s), s

    return _decoder(step, torch.from_numpy(case.x[0]), states, lambda y: y.numpy(),
                    torch.no_grad)


FACTORIES = {
    "torch": {"equal": {"torch": C.torch_rnn},
              "varlen": {"torch_packed": functools.partial(C.torch_rnn, packed=True),
                         "torch_padded": C.torch_rnn},
              "decode": {"torch_cell": torch_cell}},
    "fusedrnn": {"equal": {"fusedrnn": fusedrnn_layer},
                 "varlen": {"fusedrnn": fusedrnn_layer,
                            "fusedrnn_padded": functools.partial(fusedrnn_layer,
                                                                 use_lengths=False)},
                 "decode": {"fusedrnn": lambda case: gluon_decoder(case,
                                                                   sys.modules["fusedrnn"]),
                            "weights_read": weights_read}},
    "mxnet": {"equal": {"mxnet_fused": mxnet_fused, "mxnet_unrolled": mxnet_unrolled},
              "varlen": {"mxnet_fused": mxnet_fused},
              "decode": {"gluon_cell": lambda case: gluon_decoder(
                  case, sys.modules["mxnet"].gluon.rnn)}},
}
# What each implementation is checked against: (references, first available one used; compare
# dx too). Outputs are compared at valid positions only (padding differs by design: zero with
# lengths or packing, computed otherwise).
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
    case = C.Case(mode, T, N, I, H, varlen=kind == "varlen")
    if batch == "pad40":
        case.lengths = lengths_with_padding(T, N, PAD40, np.random.default_rng(7))
        case.tokens = int(case.lengths.sum())
    case.batch = batch
    return case


def plan(args):
    """(kind, case arguments, phases) of every row this run measures, in order."""
    rows = []
    quick = args.quick
    if "equal" in args.parts:
        for mode in args.modes:
            shapes = [] if quick and mode == "rnn_tanh" else EQUAL_SHAPES[mode][:1 if quick
                                                                                 else None]
            rows += [("equal", (mode, *s), C.PHASES) for s in shapes]
    if "varlen" in args.parts:
        for mode in [m for m in VARLEN_MODES if m in args.modes][:1 if quick else None]:
            for shape in VARLEN_SHAPES[:1 if quick else None]:
                for batch in (("pad40",) if quick else ("uniform", "pad40")):
                    rows.append(("varlen", (mode, *shape, batch), C.PHASES))
    if "decode" in args.parts:
        for mode, N, H in DECODE:
            if mode in args.modes and not (quick and H != 256):
                rows.append(("decode", (mode, DECODE_STEPS, N, H, H), ("infer",)))
    return rows


# --------------------------------------------------------------------------- memory
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


def memory_probe(req):
    """Peak resident memory of 3 training steps of one implementation (see the docstring)."""
    impl, mode, shape = req["impl"], req["mode"], req["shape"]
    case = make_case("equal", mode, *shape)
    make = next(f["equal"][impl] for f in FACTORIES.values() if impl in f["equal"])
    run = make(case)["train"]

    def train():
        run()
        C.sync()

    C.set_threads(MEMORY_THREADS)
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
    return {"impl": impl, "mode": mode, "shape": shape, "rss_before_mib": rss0 / mib,
            "hwm_reset": reset, "peak_mib": (max(hwm1, hwm2) - rss0) / mib,
            "steady_mib": (hwm2 - rss1) / mib if reset else None,
            "rss_after_mib": status_kib("VmRSS") / mib}


def memory(args, rows):
    out = []
    for mode in [m for m in ("lstm", "gru") if m in args.modes]:
        for shape in EQUAL_SHAPES[mode][:1 if args.quick else None]:
            for impl in MEMORY_IMPLS:
                w = C.Worker("memory", MEMORY_THREADS, args.mxnet_engine)
                try:
                    m = w(op="memory", impl=impl, mode=mode, shape=list(shape))
                except RuntimeError as e:
                    m = {"impl": impl, "mode": mode, "shape": list(shape), "error": str(e)}
                finally:
                    w.close()
                out.append(m)
                print(f"memory {mode} {shape} {impl}: " + (
                    f"{m['peak_mib']:.1f} MiB" if "peak_mib" in m else m["error"]), flush=True)
    for r in rows:
        if r["kind"] == "equal" and r["phase"] == "train" and r["threads"] == MEMORY_THREADS:
            r["memory_mib"] = {m["impl"]: m.get("peak_mib") for m in out
                               if m["mode"] == r["mode"] and
                               m["shape"] == [r["T"], r["N"], r["I"], r["H"]]}
    return out


def main():
    def extra(ap):
        ap.add_argument("--modes", nargs="+", default=list(EQUAL_SHAPES),
                        choices=list(EQUAL_SHAPES))
        ap.add_argument("--parts", nargs="+", default=["equal", "varlen", "decode", "memory"],
                        choices=["equal", "varlen", "decode", "memory"])
    args = C.arguments(__doc__, repeats=10, threads=(1, 2), extra=extra)
    groups = {"torch": ("NaiveEngine", ["torch"]),
              "fusedrnn": (args.mxnet_engine, ["mxnet", "fusedrnn"]),
              "mxnet": (args.mxnet_engine, ["mxnet"])}
    if args.worker == "memory":
        return C.serve(memory_probe)
    if args.worker:
        return C.serve_rows(args, groups, FACTORIES, CHECKS, make_case, "mxnet")
    if args.quick:
        args.threads = [2] if args.threads == [1, 2] else args.threads
        args.repeats = 5 if args.repeats == 10 else args.repeats
    header = C.machine_header("rnn", args, FAIRNESS, decode_steps=DECODE_STEPS,
                              memory_threads=MEMORY_THREADS)
    timing = {"warmup": 1 if args.quick else 2, "repeats": args.repeats,
              "budget_s": 1.5 if args.quick else 3.0}
    rows = C.measure_rows(args, header, groups, plan(args), make_case, timing,
                          quiet={"quiet_s": 3.0, "attempts": 1} if args.quick else
                          {"quiet_s": 20.0, "attempts": 2},
                          worker_argv=["--modes", *args.modes])
    mem = memory(args, rows) if "memory" in args.parts else []
    C.write(args, "rnn", header, rows=rows, memory=mem)


if __name__ == "__main__":
    main()
