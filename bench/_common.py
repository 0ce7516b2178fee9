"""What the layer benchmarks (bench_padding.py, bench_unroll.py) share: the benchmark process
environment, the timer, the command line and the result file."""
import argparse
import datetime
import json
import os
import sys
import time

BLAS_ENV_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def clean_env(threads):
    """Re-execute with the benchmark environment unless already in it: no OPENBLAS_CORETYPE /
    OPENBLAS_L2_SIZE (every OpenBLAS detects the CPU itself), MXNet's NaiveEngine (see
    bench_kernels.py for why), OMP_NUM_THREADS = threads."""
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


def start(doc, markdown, repeats):
    """Parses the shared command line; with --report prints markdown(result) and exits, else
    enters the benchmark environment and sets fusedrnn's threads. Returns the arguments."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[1])
    ap.add_argument("--quick", action="store_true", help="a smaller run (about a minute)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=repeats)
    ap.add_argument("--out", default=None, help="JSON file (default: bench/results/NAME.json, "
                                                "or NAME_quick.json with --quick)")
    ap.add_argument("--report", metavar="JSON", help="print the README's tables of a result "
                                                      "and exit")
    args = ap.parse_args()
    if args.report:
        with open(args.report) as f:
            print(markdown(json.load(f)))
        sys.exit(0)
    clean_env(args.threads)
    import fusedrnn
    fusedrnn.kernels.set_num_threads(args.threads)
    return args


def write(args, name, header, **parts):
    """Writes {"header": machine and run details + header, **parts} to the result file."""
    import fusedrnn
    full = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "threads": args.threads, "fusedrnn": fusedrnn.__version__,
            "instruction_set": fusedrnn.kernels.instruction_set(),
            "engine": os.environ.get("MXNET_ENGINE_TYPE"), "argv": sys.argv[1:]}
    full.update(header)
    out = args.out or os.path.join(ROOT, "bench", "results",
                                   f"{name}_quick.json" if args.quick else f"{name}.json")
    with open(out, "w") as f:
        json.dump(dict(header=full, **parts), f, indent=1)
    print("wrote", out)
