#!/usr/bin/env python
"""Fused sequence operator vs unrolled per-step operators, for fusedrnn's Gluon layers: the
measurement behind `unroll='auto'` (fusedrnn.layers.choose_unroll).

    python bench/bench_unroll.py [--quick] [--threads 2] [--out bench/results/unroll.json]

One hybridized 1-layer fusedrnn layer per mode, shape and path (unroll=False / True), float32,
TNC, input size = hidden size; training = forward + backward through autograd, inference =
forward. Median ms per call after warm-up, mx.nd.waitall() before each clock read. Runs with
OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE removed (the script re-executes itself without them) and
MXNet's NaiveEngine (see bench_kernels.py for why).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import median_ms, start, write  # noqa: E402


def measure(mode, T, N, H, unroll, training, repeats):
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

        def step():
            with mx.autograd.record():
                out, _ = net(x, states)
            out.backward()
    else:
        def step():
            net(x, states)
    return median_ms(step, repeats)


def markdown(data):
    """The README's summary: every row with T > 1 where the per-step graph was faster by more
    than 10%, and the range of the ratio. (At T = 1 both paths are the same single operator:
    those rows show the run-to-run noise, up to ~15% at these sub-millisecond times.)"""
    import fusedrnn
    rows = data["rows"]
    lines = ["| mode | T | N | H | phase | fused ms | unrolled ms | unrolled / fused | auto |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["ratio"] < 0.9 and r["T"] > 1:
            auto = fusedrnn.choose_unroll(r["mode"], r["T"], r["N"], r["H"],
                                          r["phase"] == "train")
            lines.append(f"| {r['mode']} | {r['T']} | {r['N']} | {r['H']} | {r['phase']} | "
                         f"{r['fused_ms']:.3f} | {r['unrolled_ms']:.3f} | {r['ratio']:.2f} | "
                         f"{'unrolled' if auto else 'fused'} |")
    for phase in ("train", "infer"):
        rest = [r["ratio"] for r in rows if r["phase"] == phase and r["T"] > 1]
        lines.append(f"\n{phase}, T > 1: unrolled / fused from {min(rest):.2f} to "
                     f"{max(rest):.2f} (median {sorted(rest)[len(rest) // 2]:.2f}) over "
                     f"{len(rest)} shapes.")
    return "\n".join(lines)


def main():
    args = start(__doc__, markdown, repeats=15)
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
                        fused = measure(mode, T, N, H, False, training, args.repeats)
                        unrolled = measure(mode, T, N, H, True, training, args.repeats)
                        phase = "train" if training else "infer"
                        rows.append({"mode": mode, "T": T, "N": N, "H": H, "phase": phase,
                                     "fused_ms": fused[0], "fused_iqr_ms": fused[1],
                                     "unrolled_ms": unrolled[0],
                                     "unrolled_iqr_ms": unrolled[1],
                                     "ratio": unrolled[0] / fused[0]})
                        print(f"{mode:8s} {T:4d} {N:4d} {H:5d} {phase:5s} {fused[0]:10.3f} "
                              f"{unrolled[0]:12.3f} {rows[-1]['ratio']:15.2f}", flush=True)
    write(args, "unroll", {}, rows=rows)


if __name__ == "__main__":
    main()
