#!/usr/bin/env python
"""The kernels alone, one layer, float32 on the CPU: fusedrnn.kernels vs PyTorch
(torch.nn.LSTM/GRU/RNN) vs MXNet 1.9.1 (gluon.rnn, its fused RNN op).

    python bench/bench_kernels.py [--threads 1 2] [--quick] [--modes lstm gru rnn_tanh]
                                  [--repeats 20] [--mxnet-engine ThreadedEnginePerDevice]
                                  [--only-baselines] [--out bench/results/kernels.json]

Rows: full-length batches (kind "padded") of LSTM / GRU / RNN (tanh), and LSTM batches with
lengths uniform in [T/4, T] ("varlen": fusedrnn with lengths and padded, PyTorch packed and
padded). Training = forward + backward with all gradients including dx, dh0 (and dc0);
inference = forward only. Each library runs in a worker process of its own per thread count
(bench/_common.py says why): PyTorch; fusedrnn.kernels (MXNet is imported with fusedrnn but runs
no operator there, NaiveEngine, so no engine thread exists); MXNet with --mxnet-engine (its
default). Inference outputs are checked against PyTorch's before timing. --quick: the first two
shapes per mode, fewer repeats. Tables: python bench/report.py.
"""
import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

LSTM_SHAPES = [(50, 64, 64, 128), (100, 32, 256, 256), (50, 64, 512, 512), (25, 16, 128, 1024)]
SHAPES = {"lstm": LSTM_SHAPES, "gru": LSTM_SHAPES[:3], "rnn_tanh": LSTM_SHAPES[:1]}
VARLEN_SHAPES = LSTM_SHAPES[:2]  # LSTM only
FAIRNESS = ("Each library in its own worker process per thread count, importing only that "
            "library: PyTorch; fusedrnn.kernels (MXNet imported but idle, NaiveEngine); MXNet "
            "with the engine named here. A row is measured by each worker in turn (PyTorch "
            "first: it gives the reference outputs).")


def mxnet_fused(case):
    import mxnet as mx
    layer = C.gluon_layer(mx.gluon.rnn, case)
    layer.hybridize(static_alloc=True, static_shape=True)
    return C.mxnet_runner(case, layer, C.layer_states(case), state_grads=True)


FACTORIES = {
    "torch": {"padded": {"torch": functools.partial(C.torch_rnn, state_grads=True)},
              "varlen": {"torch_packed": functools.partial(C.torch_rnn, packed=True,
                                                           state_grads=True),
                         "torch_padded": functools.partial(C.torch_rnn, state_grads=True)}},
    "fusedrnn": {"padded": {"fusedrnn": C.fusedrnn_kernels},
                 "varlen": {"fusedrnn": C.fusedrnn_kernels,
                            "fusedrnn_padded": functools.partial(C.fusedrnn_kernels,
                                                                 use_lengths=False)}},
    "mxnet": {"padded": {"mxnet": mxnet_fused}},
}
CHECKS = {"padded": {"fusedrnn": (("torch",), False), "mxnet": (("torch",), False)},
          "varlen": {"fusedrnn": (("torch_packed",), False),
                     "fusedrnn_padded": (("torch_padded",), False)}}


def make_case(kind, mode, T, N, I, H):
    return C.Case(mode, T, N, I, H, varlen=kind == "varlen")


def groups(args):
    g = {"torch": ("NaiveEngine", ["torch"]), "fusedrnn": ("NaiveEngine", ["fusedrnn"]),
         "mxnet": (args.mxnet_engine, ["mxnet"])}
    if args.only_baselines:
        del g["fusedrnn"]
    return g


def plan(args):
    n = 2 if args.quick else None
    rows = [("padded", (mode, *s), C.PHASES) for mode in args.modes for s in SHAPES[mode][:n]]
    if "lstm" in args.modes:
        rows += [("varlen", ("lstm", *s), C.PHASES) for s in VARLEN_SHAPES[:n]]
    return rows


def main():
    def extra(ap):
        ap.add_argument("--modes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
        ap.add_argument("--only-baselines", action="store_true",
                        help="skip fusedrnn (PyTorch and MXNet only)")
    args = C.arguments(__doc__, repeats=20, threads=(1, 2), extra=extra)
    args.repeats = 5 if args.quick and args.repeats == 20 else args.repeats
    if args.worker:
        return C.serve_rows(args, groups(args), FACTORIES, CHECKS, make_case, "fusedrnn")
    header = C.machine_header("kernels", args, FAIRNESS)
    timing = {"warmup": 2 if args.quick else 3, "repeats": args.repeats,
              "budget_s": 2.0 if args.quick else 15.0}
    rows = C.measure_rows(args, header, groups(args), plan(args), make_case, timing,
                          quiet={"quiet_s": 5.0, "attempts": 1} if args.quick else
                          {"quiet_s": 30.0, "attempts": 2},
                          worker_argv=["--modes", *args.modes] +
                          ["--only-baselines"] * args.only_baselines)
    C.write(args, "kernels", header, rows=rows)


if __name__ == "__main__":
    main()
