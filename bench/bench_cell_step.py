#!/usr/bin/env python
"""One step of a fusedrnn cell in a decoding loop, outside autograd: the cells' array step.

    python bench/bench_cell_step.py [--threads 1 2] [--engines threaded naive]
                                    [--paths array operator] [--repeats 15] [--quick]
                                    [--out bench/results/cell_step.json]

A loop of 100 steps `h, states = cell(h, states)` (inputs = the previous output, C = H),
float32, not hybridized, timed as one call ending with mx.nd.waitall(); reported per step:
median (and IQR) of the repeats after warm-up, in microseconds. Cases: LSTM and GRU, H = 256,
N = 1 and 16. Each engine (MXNet's default ThreadedEnginePerDevice and NaiveEngine) and thread
count runs in its own worker process in bench/_common.py's environment (MXNet reads the engine
and its thread count at import); the two paths are timed interleaved, call by call. Columns:
- array: the cells' array step (what a decoding loop runs);
- operator: the same steps through the `_fusedrnn_layer` operator (the array step switched
  off), i.e. what every step would cost without the array step.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

STEPS = 100
CASES = [(mode, N, 256) for mode in ("lstm", "gru") for N in (1, 16)]
ENGINES = {"threaded": "ThreadedEnginePerDevice", "naive": "NaiveEngine"}


def loop(mode, N, H, array_step):
    import mxnet as mx
    import numpy as np
    import fusedrnn
    cell = {"lstm": fusedrnn.LSTMCell, "gru": fusedrnn.GRUCell}[mode](H, input_size=H)
    cell.initialize(mx.init.Uniform(1.0 / H ** 0.5))
    rng = np.random.default_rng(0)
    x0 = mx.nd.array(rng.standard_normal((N, H)))
    states = cell.begin_state(N)
    if not array_step:
        cell._step_on_arrays = lambda inputs, states: None

    def run():
        h, s = x0, states
        for _ in range(STEPS):
            h, s = cell(h, s)
    return run


def rows(req):
    """In a worker: every case, both paths, in microseconds per step."""
    out = []
    for mode, N, H in CASES[:req["cases"]]:
        res = C.timed({p: loop(mode, N, H, p == "array") for p in req["paths"]},
                      req["repeats"], budget_s=2.0)
        row = {"mode": mode, "N": N, "H": H, "C": H}
        for p, r in res.items():
            row[p + "_us"] = 1e3 * r["median_ms"] / STEPS
            row[p + "_iqr_us"] = 1e3 * (r["p75_ms"] - r["p25_ms"]) / STEPS
        out.append(row)
    return {"rows": out, "info": C.process_info()}


def main():
    def extra(ap):
        ap.add_argument("--engines", nargs="+", choices=list(ENGINES), default=list(ENGINES))
        ap.add_argument("--paths", nargs="+", choices=["array", "operator"],
                        default=["array", "operator"])
    args = C.arguments(__doc__, repeats=15, threads=(1, 2), extra=extra)
    if args.worker:
        import fusedrnn  # noqa: F401
        C.set_threads(args.threads[0])
        return C.serve(rows)
    header = C.machine_header("cell_step", args, "Each engine and thread count in its own "
                              "process; only fusedrnn (on MXNet) is measured.",
                              steps_per_loop=STEPS)
    header["mxnet_engine"] = " and ".join(ENGINES[e] for e in args.engines)
    results = []
    print(f"{'engine':8s} {'thr':>3s} {'mode':5s} {'N':>3s} {'H':>4s} " +
          " ".join(f"{p + ' us/step':>17s}" for p in args.paths))
    for engine in args.engines:
        for n in args.threads:
            w = C.Worker("cell", n, ENGINES[engine])
            try:
                reply = w(paths=args.paths, repeats=args.repeats,
                          cases=1 if args.quick else len(CASES))
            finally:
                w.close()
            header["workers"][f"{ENGINES[engine]}:{n}"] = reply["info"]
            for row in reply["rows"]:
                row.update(engine=ENGINES[engine], threads=n)
                results.append(row)
                print(f"{engine:8s} {n:3d} {row['mode']:5s} {row['N']:3d} {row['H']:4d} " +
                      " ".join(f"{row[p + '_us']:17.1f}" for p in args.paths), flush=True)
    C.write(args, "cell_step", header, rows=results)


if __name__ == "__main__":
    main()
