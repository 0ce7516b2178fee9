#!/usr/bin/env python
"""One step of a fusedrnn cell in a decoding loop, outside autograd: the cells' array step.

    python bench/bench_cell_step.py [--threads 1 2] [--engines threaded naive]
                                    [--paths array operator] [--repeats 15]
                                    [--out bench/results/cell_step.json]

A loop of 100 steps `h, states = cell(h, states)` (inputs = the previous output, C = H),
float32, not hybridized, timed as one call ending with mx.nd.waitall(); reported per step:
median (and IQR) of the repeats after warm-up, in microseconds. Cases: LSTM and GRU, H = 256,
N = 1 and 16. Each engine (MXNet's default ThreadedEnginePerDevice and NaiveEngine) and thread
count runs in its own process (MXNet reads MXNET_ENGINE_TYPE and its OpenMP thread count at
import), with OMP_NUM_THREADS = MXNET_OMP_MAX_THREADS = n, fusedrnn.kernels.set_num_threads(n)
and OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE removed (as bench_kernels.py). Columns:
- array: the cells' array step (what a decoding loop runs);
- operator: the same steps through the `_fusedrnn_layer` operator (the array step switched
  off), i.e. what every step would cost without the array step.
"""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import BLAS_ENV_VARS, ROOT, median_ms  # noqa: E402

STEPS = 100
CASES = [(mode, N, 256) for mode in ("lstm", "gru") for N in (1, 16)]
ENGINES = {"threaded": "ThreadedEnginePerDevice", "naive": "NaiveEngine"}


def measure(mode, N, H, array_step, repeats):
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

    def loop():
        h, s = x0, states
        for _ in range(STEPS):
            h, s = cell(h, s)

    ms, iqr = median_ms(loop, repeats)
    return 1e3 * ms / STEPS, 1e3 * iqr / STEPS


def worker(args):
    import fusedrnn
    fusedrnn.kernels.set_num_threads(args.threads[0])
    rows = []
    for mode, N, H in CASES:
        row = {"mode": mode, "N": N, "H": H, "C": H}
        for name in args.paths:
            row[name + "_us"], row[name + "_iqr_us"] = measure(mode, N, H, name == "array",
                                                               args.repeats)
        rows.append(row)
    print(json.dumps(rows))


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--engines", nargs="+", choices=list(ENGINES), default=list(ENGINES))
    ap.add_argument("--paths", nargs="+", choices=["array", "operator"],
                    default=["array", "operator"])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "cell_step.json"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    results, load_start = [], os.getloadavg()
    print(f"{'engine':8s} {'thr':>3s} {'mode':5s} {'N':>3s} {'H':>4s} " +
          " ".join(f"{p + ' us/step':>17s}" for p in args.paths))
    for engine in args.engines:
        for n in args.threads:
            env = {k: v for k, v in os.environ.items() if k not in BLAS_ENV_VARS}
            env.update(MXNET_ENGINE_TYPE=ENGINES[engine], OMP_NUM_THREADS=str(n),
                       MXNET_OMP_MAX_THREADS=str(n))
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker",
                                  "--threads", str(n), "--repeats", str(args.repeats),
                                  "--paths", *args.paths],
                                 env=env, check=True, capture_output=True, text=True).stdout
            for row in json.loads(out.strip().splitlines()[-1]):
                row.update(engine=ENGINES[engine], threads=n)
                results.append(row)
                print(f"{engine:8s} {n:3d} {row['mode']:5s} {row['N']:3d} {row['H']:4d} " +
                      " ".join(f"{row[p + '_us']:17.1f}" for p in args.paths), flush=True)
    with open(args.out, "w") as f:
        # The machine is shared: its load average says how far to trust the figures.
        json.dump({"header": {"cpu_model": cpu_model(), "cores": os.cpu_count(),
                              "steps_per_loop": STEPS, "argv": sys.argv[1:],
                              "loadavg_start_end": [load_start, os.getloadavg()]},
                   "rows": results}, f, indent=1)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
