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
import argparse
import datetime
import json
import os
import sys
import time

BLAS_ENV_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def clean_env(threads):
    """Re-execute with the benchmark environment unless already in it."""
    want = {"MXNET_ENGINE_TYPE": os.environ.get("MXNET_ENGINE_TYPE", "NaiveEngine"),
            "OMP_NUM_THREADS": str(threads)}
    if any(k in os.environ for k in BLAS_ENV_VARS) or any(
            os.environ.get(k) != v for k, v in want.items()):
        env = {k: v for k, v in os.environ.items() if k not in BLAS_ENV_VARS}
        env.update(want)
        os.execve(sys.executable, [sys.executable] + sys.argv, env)


def median_ms(fn, repeats, min_warmup_s=0.1, budget_s=2.0):
    import mxnet as mx
    import numpy as np
    t0 = time.perf_counter()
    fn()
    mx.nd.waitall()
    while time.perf_counter() - t0 < min_warmup_s:
        fn()
        mx.nd.waitall()
    samples, t_end = [], time.perf_counter() + budget_s
    while len(samples) < repeats and (len(samples) < 3 or time.perf_counter() < t_end):
        s = time.perf_counter()
        fn()
        mx.nd.waitall()
        samples.append((time.perf_counter() - s) * 1e3)
    return float(np.median(samples)), float(np.percentile(samples, 75) -
                                            np.percentile(samples, 25))


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
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--quick", action="store_true", help="a smaller grid (about a minute)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--out", default=None, help="JSON file (default: bench/results/unroll.json,"
                                                " or unroll_quick.json with --quick)")
    ap.add_argument("--report", metavar="JSON", help="print the README's summary of a result "
                                                      "and exit")
    args = ap.parse_args()
    if args.report:
        with open(args.report) as f:
            print(markdown(json.load(f)))
        return
    clean_env(args.threads)
    import mxnet as mx  # noqa: F401
    import fusedrnn

    fusedrnn.kernels.set_num_threads(args.threads)
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
    header = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "threads": args.threads, "fusedrnn": fusedrnn.__version__,
              "instruction_set": fusedrnn.kernels.instruction_set(),
              "engine": os.environ.get("MXNET_ENGINE_TYPE"), "argv": sys.argv[1:]}
    out = args.out or os.path.join(ROOT, "bench", "results",
                                   "unroll_quick.json" if args.quick else "unroll.json")
    with open(out, "w") as f:
        json.dump({"header": header, "rows": rows}, f, indent=1)
    print("wrote", out)


if __name__ == "__main__":
    main()
