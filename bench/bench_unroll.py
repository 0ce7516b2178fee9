#!/usr/bin/env python
"""Fused sequence operator vs unrolled per-step operators, for fusedrnn's Gluon layers: the
measurement behind `unroll='auto'` (fusedrnn.layers.choose_unroll).

    python bench/bench_unroll.py [--quick] [--threads 2] [--out bench/results/unroll.json]

One hybridized 1-layer fusedrnn layer per mode, shape and path (unroll=False / True), float32,
TNC, input size = hidden size; training = forward + backward through autograd, inference =
forward. The two paths are timed interleaved, call by call (bench/_common.py: the timer and the
environment, MXNet's default engine unless --mxnet-engine). Table: python bench/report.py.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402


def step(mode, T, N, H, unroll, training):
    import mxnet as mx
    import numpy as np
    import fusedrnn
    cls = {"lstm": fusedrnn.LSTM, "gru": fusedrnn.GRU, "rnn_tanh": fusedrnn.RNN}[mode]
    net = cls(H, input_size=H, unroll=unroll)
    net.initialize(mx.init.Uniform(1.0 / H ** 0.5))
    net.hybridize(static_alloc=True)
    rng = np.random.default_rng(0)
    x = mx.nd.array(rng.standard_normal((T, N, H)))
    states = net.begin_state(N)
    if training:
        x.attach_grad()

        def run():
            with mx.autograd.record():
                out, _ = net(x, states)
            out.backward()
    else:
        def run():
            net(x, states)
    return run


def main():
    args = C.arguments(__doc__, repeats=15)
    C.enter(args.threads[0], args.mxnet_engine)
    modes = ["lstm", "gru"] if args.quick else ["lstm", "gru", "rnn_tanh"]
    steps = [1, 2, 8, 32] if args.quick else [1, 2, 3, 4, 8, 32]
    batches = [1, 32] if args.quick else [1, 8, 64]
    hiddens = [64, 512] if args.quick else [64, 256, 1024]
    rows = []
    print(f"{'mode':8s} {'T':>4s} {'N':>4s} {'H':>5s} {'phase':5s} {'fused ms':>10s} "
          f"{'unrolled ms':>12s} {'unrolled/fused':>15s}")
    for mode in modes:
        for H in hiddens:
            for N in batches:
                for T in steps:
                    for training in (True, False):
                        res = C.timed({"fused": step(mode, T, N, H, False, training),
                                       "unrolled": step(mode, T, N, H, True, training)},
                                      args.repeats, budget_s=2.0)
                        row = {"mode": mode, "T": T, "N": N, "H": H,
                               "phase": "train" if training else "infer"}
                        for k, r in res.items():
                            row.update({k + "_ms": r["median_ms"],
                                        k + "_iqr_ms": r["p75_ms"] - r["p25_ms"]})
                        row["ratio"] = row["unrolled_ms"] / row["fused_ms"]
                        rows.append(row)
                        print(f"{mode:8s} {T:4d} {N:4d} {H:5d} {row['phase']:5s} "
                              f"{row['fused_ms']:10.3f} {row['unrolled_ms']:12.3f} "
                              f"{row['ratio']:15.2f}", flush=True)
    header = C.machine_header("unroll", args, "One process, MXNet only (fusedrnn's layers "
                              "are MXNet operators).")
    header["workers"]["mxnet"] = C.process_info()
    C.write(args, "unroll", header, rows=rows)


if __name__ == "__main__":
    main()
