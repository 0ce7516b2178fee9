#!/usr/bin/env python
"""Side-by-side one-layer RNN benchmark on the CPU, float32:
fusedrnn.kernels vs PyTorch (torch.nn.LSTM/GRU/RNN) vs MXNet 1.9.1 (gluon.rnn, fused RNN op).

    python bench/bench_kernels.py [--threads 1 2] [--quick] [--modes lstm gru rnn_tanh]
                                  [--out bench/results/kernels.json] [--repeats N]
                                  [--only-baselines]

The parent process spawns one worker subprocess per thread count (`--worker`), because MXNet
reads its OpenMP thread count from the environment only at import time. Workers run with
OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed, so that every OpenBLAS detects the CPU itself
(the machine sets them for old OpenBLAS builds; tests and CI keep them).

MXNet runs with MXNET_ENGINE_TYPE=NaiveEngine unless the environment sets another engine: with
the default threaded engine, MXNet's engine thread owns a second OpenMP team next to the main
thread's (torch, fusedrnn), libgomp then sees more threads than cores and stops spin-waiting,
and with 2 threads every library in the process gets ~3x slower on the small shapes (MXNet too,
even alone). NaiveEngine runs MXNet's ops on the calling thread, so there is one team.
(MXNET_ENGINE_TYPE=ThreadedEnginePerDevice python bench/bench_kernels.py ... measures the default.)

The machine is shared and has 2 cores: one busy foreign process makes 2-thread calls 2-100x
slower. Each measurement therefore waits (a while) for a quiet machine, is taken once more if
other processes were busy during it, and its row reports that load (bg, in cores).

Per row: median ms per call of each implementation (IQR in the JSON and as % in the table),
ratio baseline/fusedrnn (> 1: fusedrnn is faster), fusedrnn's GFLOP/s and its fraction of the
sgemm peak measured in the same worker with the BLAS that fusedrnn links (scipy_openblas32).
training = forward + backward including dx (and dh0/dc0); inference = forward only.
"""
import argparse
import datetime
import functools
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LSTM_SHAPES = [(50, 64, 64, 128), (100, 32, 256, 256), (50, 64, 512, 512), (25, 16, 128, 1024)]
SHAPES = {"lstm": LSTM_SHAPES, "gru": LSTM_SHAPES[:3], "rnn_tanh": LSTM_SHAPES[:1]}
VARLEN_SHAPES = LSTM_SHAPES[:2]  # LSTM only
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
BLAS_ENV_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
SEED = 1234
PHASES = ("train", "infer")


def flops(mode, tokens, I, H, training):
    """GEMM FLOPs of one layer; tokens = T*N, or sum(lengths) for variable-length batches.

    Forward does the input and recurrent GEMMs once (2*G*H*(I+H) per token); backward does
    them twice (data gradients dx/dh and weight gradients), hence 3x for training. Element-wise
    work is ignored; it is small next to the GEMMs for these sizes."""
    fwd = 2.0 * tokens * GATES[mode] * H * (I + H)
    return 3 * fwd if training else fwd


# --------------------------------------------------------------------------- cases and runners
class Case:
    """Random float32 problem shared by all implementations (same weights, so outputs can be
    cross-checked). lengths=None means a full (padded) batch."""

    def __init__(self, mode, T, N, I, H, varlen=False):
        import numpy as np
        rng = np.random.default_rng(SEED)
        G, k = GATES[mode], 1.0 / H ** 0.5
        f32 = np.float32

        def u(*shape):  # PyTorch/MXNet default init range
            return rng.uniform(-k, k, shape).astype(f32)

        self.mode, self.T, self.N, self.I, self.H = mode, T, N, I, H
        self.x = rng.standard_normal((T, N, I)).astype(f32)
        self.w_ih, self.w_hh, self.b_ih, self.b_hh = u(G * H, I), u(G * H, H), u(G * H), u(G * H)
        self.h0 = rng.standard_normal((N, H)).astype(f32)
        self.c0 = rng.standard_normal((N, H)).astype(f32) if mode == "lstm" else None
        self.dy = rng.standard_normal((T, N, H)).astype(f32)
        self.dhy = rng.standard_normal((N, H)).astype(f32)
        self.dcy = rng.standard_normal((N, H)).astype(f32) if mode == "lstm" else None
        self.lengths = None
        if varlen:
            self.lengths = rng.integers(T // 4, T, size=N, endpoint=True).astype(np.int64)
        self.tokens = int(self.lengths.sum()) if varlen else T * N


def fusedrnn_runner(case, use_lengths=True):
    """The implementation under test, written against /work/API_SPEC.md."""
    from fusedrnn import kernels as K
    c = case
    args = (c.mode, c.x, c.w_ih, c.w_hh, c.b_ih, c.b_hh, c.h0, c.c0)
    lengths = c.lengths if use_lengths else None

    def train():
        r = K.forward(*args, lengths=lengths, training=True)
        return K.backward(*args, r.reserve, c.dy, c.dhy, c.dcy, lengths=lengths)

    def infer():
        return K.forward(*args, lengths=lengths, training=False).y

    return {"train": train, "infer": infer}


def torch_runner(case, packed=False):
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    c = case
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU,
           "rnn_tanh": functools.partial(torch.nn.RNN, nonlinearity="tanh")}[c.mode]
    m = cls(c.I, c.H)  # batch_first=False: TNC like the others
    with torch.no_grad():
        for name, src in (("weight_ih_l0", c.w_ih), ("weight_hh_l0", c.w_hh),
                          ("bias_ih_l0", c.b_ih), ("bias_hh_l0", c.b_hh)):
            getattr(m, name).copy_(torch.from_numpy(src))
    t = torch.from_numpy
    # Gradients w.r.t. input and initial state too, since fusedrnn computes dx, dh0, dc0.
    x = t(c.x).requires_grad_()
    states = [t(c.h0)[None].requires_grad_()]
    grads = [t(c.dy), t(c.dhy)[None]]
    if c.mode == "lstm":
        states.append(t(c.c0)[None].requires_grad_())
        grads.append(t(c.dcy)[None])
    state = tuple(states) if c.mode == "lstm" else states[0]
    lengths = t(c.lengths) if packed else None

    def run():
        if not packed:
            return m(x, state)
        xp = pack_padded_sequence(x, lengths, enforce_sorted=False)
        yp, st = m(xp, state)
        return pad_packed_sequence(yp, total_length=c.T)[0], st

    def train():
        m.zero_grad(set_to_none=True)  # write, not accumulate, like the others
        for v in [x] + states:
            v.grad = None
        y, st = run()
        outs = [y] + (list(st) if c.mode == "lstm" else [st])
        # head gradients instead of backward(sum(y*dy)+...): same gradients, no extra ops
        torch.autograd.backward(outs, grads)

    def infer():
        with torch.inference_mode():
            return run()[0]

    return {"train": train, "infer": infer}


def mxnet_runner(case):
    import mxnet as mx
    c = case
    cls = {"lstm": mx.gluon.rnn.LSTM, "gru": mx.gluon.rnn.GRU,
           "rnn_tanh": functools.partial(mx.gluon.rnn.RNN, activation="tanh")}[c.mode]
    layer = cls(c.H, num_layers=1, layout="TNC", input_size=c.I)
    layer.initialize()
    for name, p in layer.collect_params().items():
        src = {"l0_i2h_weight": c.w_ih, "l0_h2h_weight": c.w_hh,
               "l0_i2h_bias": c.b_ih, "l0_h2h_bias": c.b_hh}[name.split("_", 1)[1]]
        p.set_data(mx.nd.array(src))
    layer.hybridize(static_alloc=True, static_shape=True)
    x = mx.nd.array(c.x)
    x.attach_grad()
    states = [mx.nd.array(c.h0[None])]
    heads = [mx.nd.array(c.dy), mx.nd.array(c.dhy[None])]
    if c.mode == "lstm":
        states.append(mx.nd.array(c.c0[None]))
        heads.append(mx.nd.array(c.dcy[None]))
    for s in states:
        s.attach_grad()

    # MXNet is asynchronous: waitall() inside the timed call so the clock sees the work.
    def train():
        with mx.autograd.record():
            y, st = layer(x, states)
        mx.autograd.backward([y] + list(st), head_grads=heads)
        mx.nd.waitall()

    def infer():
        y, _ = layer(x, states)
        mx.nd.waitall()
        return y

    return {"train": train, "infer": infer}


# --------------------------------------------------------------------------- timing
def stats(samples_ms):
    import numpy as np
    a = np.asarray(samples_ms)
    p25, med, p75 = np.percentile(a, [25, 50, 75])
    return {"median_ms": float(med), "p25_ms": float(p25), "p75_ms": float(p75),
            "min_ms": float(a.min()), "max_ms": float(a.max()), "n": int(a.size),
            "samples_ms": [round(float(v), 4) for v in a]}


def time_calls(fn, warmup, repeats, budget_s=float("inf"), min_warmup_s=0.2):
    # Warm-up absorbs one-off costs (oneDNN primitive creation, MXNet graph caching) and, by
    # lasting at least min_warmup_s, the spin-wait tail of the previous implementation's thread
    # pool (an idle OpenBLAS worker spins ~2^28 cycles, ~0.1 s, before it sleeps).
    # budget_s bounds the run time when the machine is contended (a 2-thread call can then
    # take seconds): past it, stop after at least 3 timed calls.
    t_start = time.perf_counter()
    t_end = t_start + budget_s
    done = 0
    while done < warmup or time.perf_counter() - t_start < min_warmup_s:
        fn()
        done += 1
        if time.perf_counter() > t_end:
            break
    samples = []
    while len(samples) < repeats and (len(samples) < 3 or time.perf_counter() < t_end):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return stats(samples)


def busy_seconds():
    """(CPU seconds of all cores busy, CPU seconds of this process), to see how much of the
    machine other processes took during a measurement (the machine is shared)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]  # user..steal; guest is in user
    t = os.times()
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK"), t.user + t.system


def wait_for_quiet(max_wait_s=60.0, threshold_cores=0.2, sample_s=1.0):
    """Give other processes on this shared machine up to max_wait_s to finish, since with 2
    cores a single busy process distorts every 2-thread figure. Returns the last load seen."""
    t_end = time.perf_counter() + max_wait_s
    told = False
    while True:
        (b0, o0), t0 = busy_seconds(), time.perf_counter()
        time.sleep(sample_s)
        (b1, o1), t1 = busy_seconds(), time.perf_counter()
        load = ((b1 - b0) - (o1 - o0)) / (t1 - t0)
        if load < threshold_cores or t1 > t_end:
            return load
        if not told:
            print(f"machine busy ({load:.1f} cores), waiting up to {max_wait_s:.0f} s", flush=True)
            told = True


def package_digest(module):
    """Short hash of a package's files: the lead reinstalls fusedrnn while iterating, so each
    result names the build it measured (checked again at the end of the worker)."""
    import hashlib
    h = hashlib.sha256()
    d = os.path.dirname(module.__file__)
    for name in sorted(os.listdir(d)):
        if name.endswith((".so", ".py")):
            with open(os.path.join(d, name), "rb") as f:
                h.update(f.read())
    return h.hexdigest()[:12]


def to_numpy(y):
    if hasattr(y, "asnumpy"):
        return y.asnumpy()
    if hasattr(y, "numpy"):
        return y.detach().numpy()
    return y


def sgemm_peak(threads, n=2048, reps=5):
    """Best-of GFLOP/s of an n x n x n sgemm on `threads` threads, with numpy's BLAS and with
    scipy_openblas32 (the OpenBLAS fusedrnn links; called through ctypes since no Python API
    exposes it). The thread limit is set here because fusedrnn keeps its OpenBLAS at one
    thread between calls (it splits large products across its own pool)."""
    import ctypes
    import numpy as np
    import threadpoolctl
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    b, c = a.copy(), np.empty_like(a)
    calls = {"numpy": lambda: np.matmul(a, b, out=c)}
    try:
        import scipy_openblas32
        sgemm = scipy_openblas32.dll.scipy_cblas_sgemm
        sgemm.restype = None
        i, f, p = ctypes.c_int, ctypes.c_float, ctypes.c_void_p
        sgemm.argtypes = [i, i, i, i, i, i, f, p, i, p, i, f, p, i]
        row_major, no_trans = 101, 111
        calls["scipy_openblas32"] = lambda: sgemm(row_major, no_trans, no_trans, n, n, n, 1.0,
                                                  a.ctypes.data, n, b.ctypes.data, n, 0.0,
                                                  c.ctypes.data, n)
    except (ImportError, AttributeError):
        pass
    out = {}
    with threadpoolctl.threadpool_limits(threads):
        for name, fn in calls.items():
            fn()
            best = min(time_calls(fn, 1, reps)["samples_ms"])
            out[name] = 2.0 * n ** 3 / (best * 1e-3) / 1e9
    return out


# --------------------------------------------------------------------------- worker
def worker(args):
    n = args.threads[0]
    have_fused = not args.only_baselines
    if have_fused:
        try:
            import fusedrnn.kernels  # noqa: F401
        except ImportError as e:
            print(f"cannot import fusedrnn.kernels ({e}); use --only-baselines", file=sys.stderr)
            sys.exit(2)
    import numpy as np
    import torch
    import mxnet as mx  # after the parent set MXNET_OMP_MAX_THREADS / OMP_NUM_THREADS
    import threadpoolctl

    torch.set_num_threads(n)
    # Global for the whole worker: caps every BLAS/OpenMP pool that is loaded, including the
    # OpenBLAS behind fusedrnn, in case fusedrnn has no thread setter of its own.
    _limits = threadpoolctl.threadpool_limits(n)  # noqa: F841
    fused_info = None
    if have_fused:
        import fusedrnn
        K = fusedrnn.kernels
        if hasattr(K, "set_num_threads"):
            K.set_num_threads(n)
        fused_info = {"file": K.__file__, "version": getattr(fusedrnn, "__version__", None),
                      "digest": package_digest(fusedrnn),
                      "set_num_threads": hasattr(K, "set_num_threads"),
                      "get_num_threads": K.get_num_threads() if hasattr(K, "get_num_threads")
                      else None}

    peak = sgemm_peak(n)  # again at the end; the best of both counts
    peak_src = max(peak, key=peak.get)  # the machine's sgemm peak: the faster BLAS
    header = {
        "threads": n,
        "env": {k: os.environ.get(k) for k in
                BLAS_ENV_VARS + ("OMP_NUM_THREADS", "MXNET_OMP_MAX_THREADS", "OMP_WAIT_POLICY",
                                 "MXNET_USE_MKLDNN_RNN", "MXNET_ENGINE_TYPE",
                                 "OPENBLAS_THREAD_TIMEOUT", "OPENBLAS_NUM_THREADS")},
        "threadpool_info": [{k: d.get(k) for k in ("filepath", "internal_api", "version",
                                                   "architecture", "threading_layer",
                                                   "num_threads")}
                            for d in threadpoolctl.threadpool_info()],
        "torch": {"num_threads": torch.get_num_threads(),
                  "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                  "mkl": torch.backends.mkl.is_available(),
                  "mkldnn": torch.backends.mkldnn.is_available(),
                  # torch links MKL statically, so threadpoolctl cannot see its GEMM library
                  "config": torch.__config__.show().splitlines()[:8]},
        "mxnet_features": [f.name for f in mx.runtime.Features().values() if f.enabled],
        "fusedrnn": fused_info,
        "sgemm_peak_gflops": peak, "peak_source": peak_src,
        "loadavg_at_start": os.getloadavg(),
    }
    for k in BLAS_ENV_VARS:
        if os.environ.get(k):
            print(f"WARNING: {k} is set in the worker; figures are not representative")
    print(f"[{n} thr] sgemm 2048 peak GFLOP/s: " +
          ", ".join(f"{k} {v:.0f}" for k, v in peak.items()), flush=True)

    warmup = 2 if args.quick else 3
    repeats = args.repeats or (5 if args.quick else 20)
    budget_s = 2.0 if args.quick else 15.0  # per implementation and phase
    quiet_wait_s = 5.0 if args.quick else 30.0
    rows = []

    def run_row(kind, case, impls, refs):
        # refs: implementation -> the one whose inference y it must match (a bug catcher)
        # Blocked per implementation (warm-up then repeats), one implementation after another.
        built, errors = {}, {}
        for name, make in impls.items():
            try:
                built[name] = make(case)
            except Exception as e:  # a missing mode in one library must not stop the others
                errors[name] = f"{type(e).__name__}: {e}"
        outputs = {}
        for name, r in built.items():
            try:
                outputs[name] = to_numpy(r["infer"]())
            except Exception as e:
                errors[name] = f"{type(e).__name__}: {e}"
        check = {f"{k}-{ref}": float(np.abs(outputs[k] - outputs[ref]).max())
                 for k, ref in refs.items() if k in outputs and ref in outputs}

        def measure(phase):
            res = {}
            t0, (busy0, own0) = time.perf_counter(), busy_seconds()
            for name in impls:
                if name in errors:
                    res[name] = {"error": errors[name]}
                    continue
                try:
                    res[name] = time_calls(built[name][phase], warmup, repeats, budget_s)
                except Exception as e:
                    res[name] = {"error": f"{type(e).__name__}: {e}"}
            busy1, own1 = busy_seconds()
            return res, max(0.0, (busy1 - busy0) - (own1 - own0)) / (time.perf_counter() - t0)

        for phase in PHASES:
            # Another process taking a core spoils a 2-thread measurement by 2-100x:
            # wait for a quiet machine before, and measure once more if it was not quiet.
            for attempt in range(2):
                wait_for_quiet(max_wait_s=quiet_wait_s, sample_s=0.3)
                res, background = measure(phase)
                if background < 0.2:
                    break
                print(f"[{n} thr] background load {background:.1f} cores during the "
                      "measurement" + (", measuring again" if attempt == 0 else ""), flush=True)
            row = {"kind": kind, "mode": case.mode, "T": case.T, "N": case.N, "I": case.I,
                   "H": case.H, "threads": n, "phase": phase, "tokens": case.tokens,
                   "gflop": flops(case.mode, case.tokens, case.I, case.H, phase == "train") / 1e9,
                   "impls": res, "maxdiff_infer_y": check,
                   # average number of cores that other processes kept busy meanwhile
                   "background_cores": background}
            fused = res.get("fusedrnn", {})
            if "median_ms" in fused:
                row["fusedrnn_gflops"] = row["gflop"] / (fused["median_ms"] * 1e-3)
                row["ratio_vs_fusedrnn"] = {
                    k: v["median_ms"] / fused["median_ms"]
                    for k, v in res.items() if k != "fusedrnn" and "median_ms" in v}
            rows.append(row)
            print(f"[{n} thr] {kind:6s} {case.mode:8s} {case.T}x{case.N}x{case.I}x{case.H} "
                  f"{phase}: " + ", ".join(
                      f"{k} {v['median_ms']:.2f} ms" if "median_ms" in v else f"{k} ERROR"
                      for k, v in res.items()) + f" (background {background:.1f} cores)",
                  flush=True)

    nshapes = 2 if args.quick else None
    for mode in args.modes:
        for shape in SHAPES[mode][:nshapes]:
            impls = {}
            if have_fused:
                impls["fusedrnn"] = fusedrnn_runner
            impls["torch"] = torch_runner
            impls["mxnet"] = mxnet_runner
            run_row("padded", Case(mode, *shape), impls,
                    {"fusedrnn": "torch", "mxnet": "torch"})
    if "lstm" in args.modes:
        for shape in VARLEN_SHAPES[:nshapes]:
            impls = {}
            if have_fused:
                impls["fusedrnn"] = fusedrnn_runner
                impls["fusedrnn_padded"] = functools.partial(fusedrnn_runner, use_lengths=False)
            impls["torch_packed"] = functools.partial(torch_runner, packed=True)
            impls["torch_padded"] = torch_runner
            run_row("varlen", Case("lstm", *shape, varlen=True), impls,
                    {"fusedrnn": "torch_packed", "fusedrnn_padded": "torch_padded"})

    peak_end = sgemm_peak(n)
    header["sgemm_peak_gflops_start_end"] = [peak, peak_end]
    header["sgemm_peak_gflops"] = {k: max(v, peak_end.get(k, 0.0)) for k, v in peak.items()}
    best = max(header["sgemm_peak_gflops"].values())
    for row in rows:
        if "fusedrnn_gflops" in row:
            row["fusedrnn_peak_frac"] = row["fusedrnn_gflops"] / best
    if have_fused and package_digest(fusedrnn) != fused_info["digest"]:
        fused_info["digest_changed_during_run"] = True
        print("WARNING: fusedrnn was reinstalled during this run; its figures mix builds")
    with open(args.worker_out, "w") as f:
        json.dump({"header": header, "rows": rows}, f)


# --------------------------------------------------------------------------- parent
def machine_header():
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for pkg in ("numpy", "torch", "mxnet", "threadpoolctl", "scipy-openblas32", "fusedrnn"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "cpu_model": cpu, "cores": os.cpu_count(),
            "cores_usable": len(os.sched_getaffinity(0)),
            "platform": platform.platform(), "python": platform.python_version(),
            "versions": versions, "argv": sys.argv[1:],
            "removed_from_worker_env": {k: os.environ.get(k) for k in BLAS_ENV_VARS}}


def fmt_ms(r):
    if r is None:
        return "-"
    if "median_ms" not in r:
        return "ERR"
    iqr = (r["p75_ms"] - r["p25_ms"]) / r["median_ms"] * 100
    return f"{r['median_ms']:.2f} ({iqr:.0f}%)"


def print_table(rows, title, impls, ratios):
    """impls: implementation columns; ratios: (implementation, label) of the ratio columns."""
    if not rows:
        return
    print(f"\n{title}\n(median ms per call, IQR as % of median; x/f = x's median / fusedrnn's, "
          f">1: fusedrnn faster; bg = cores busy with other processes meanwhile)")
    head = (f"{'mode':8s} {'T,N,I,H':>15s} {'thr':>3s} {'phase':5s} " +
            " ".join(f"{k:>15s}" for k in impls) + " " +
            " ".join(f"{label:>8s}" for _, label in ratios) +
            f" {'GFLOP/s':>8s} {'%peak':>6s} {'bg':>4s}")
    print(head)
    print("-" * len(head))
    for r in sorted(rows, key=lambda r: (r["mode"], r["H"], r["I"], r["T"], r["phase"] != "train",
                                         r["threads"])):
        got = r.get("ratio_vs_fusedrnn", {})
        line = (f"{r['mode']:8s} {'%d,%d,%d,%d' % (r['T'], r['N'], r['I'], r['H']):>15s} "
                f"{r['threads']:>3d} {r['phase']:5s} " +
                " ".join(f"{fmt_ms(r['impls'].get(k)):>15s}" for k in impls) + " " +
                " ".join(f"{got[k]:8.2f}" if k in got else f"{'-':>8s}" for k, _ in ratios))
        if "fusedrnn_gflops" in r:
            line += f" {r['fusedrnn_gflops']:8.1f} {100 * r['fusedrnn_peak_frac']:5.1f}%"
        else:
            line += f" {'-':>8s} {'-':>6s}"
        print(line + f" {r['background_cores']:4.1f}")
    errors = {(k, v["error"]) for r in rows for k, v in r["impls"].items() if "error" in v}
    for k, e in sorted(errors):
        print(f"  ERR {k}: {e}")


def parent(args):
    header = machine_header()
    header["workers"] = {}
    rows = []
    env = dict(os.environ)
    for k in BLAS_ENV_VARS:
        env.pop(k, None)
    env.setdefault("MXNET_ENGINE_TYPE", "NaiveEngine")  # see the module docstring
    for n in args.threads:
        # MXNet takes its OpenMP thread count from the environment at import time only.
        env.update(OMP_NUM_THREADS=str(n), MXNET_OMP_MAX_THREADS=str(n))
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
            out = tmp.name
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--threads", str(n),
               "--modes", *args.modes, "--worker-out", out]
        cmd += ["--quick"] * args.quick + ["--only-baselines"] * args.only_baselines
        cmd += ["--repeats", str(args.repeats)] if args.repeats else []
        if wait_for_quiet() >= 0.2:
            print("WARNING: the machine is busy; see the bg column", flush=True)
        rc = subprocess.call(cmd, env=env)
        if rc != 0:
            os.unlink(out)
            sys.exit(f"worker for {n} thread(s) failed (exit {rc})")
        with open(out) as f:
            res = json.load(f)
        os.unlink(out)
        header["workers"][str(n)] = res["header"]
        rows += res["rows"]

    print_table([r for r in rows if r["kind"] == "padded"], "One layer, full-length batch",
                ["fusedrnn", "torch", "mxnet"], [("torch", "torch/f"), ("mxnet", "mxnet/f")])
    print_table([r for r in rows if r["kind"] == "varlen"],
                "LSTM, lengths uniform in [T/4, T]; fusedrnn = with lengths; "
                "GFLOP/s counts valid steps only",
                ["fusedrnn", "fusedrnn_padded", "torch_packed", "torch_padded"],
                [("fusedrnn_padded", "fpad/f"), ("torch_packed", "tpack/f"),
                 ("torch_padded", "tpad/f")])
    worst = {}
    for r in rows:
        for pair, d in r["maxdiff_infer_y"].items():
            worst[pair] = max(worst.get(pair, 0.0), d)
    print("\ncross-check, worst max|y - y_ref| of inference outputs over all rows: " +
          (", ".join(f"{k} {v:.1e}" for k, v in worst.items()) or "-"))
    print("sgemm 2048 peak GFLOP/s per thread count: " + "; ".join(
        f"{n} thr: " + ", ".join(f"{k} {v:.0f}" for k, v in w["sgemm_peak_gflops"].items())
        for n, w in header["workers"].items()))
    for n, w in header["workers"].items():
        if w["fusedrnn"]:
            print(f"fusedrnn ({n} thr): {w['fusedrnn']['file']} build {w['fusedrnn']['digest']}"
                  + (" (REINSTALLED DURING THE RUN)"
                     if w["fusedrnn"].get("digest_changed_during_run") else ""))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"header": header, "rows": rows}, f, indent=1)
    print(f"wrote {args.out}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--quick", action="store_true",
                   help="first two shapes per mode, fewer repeats (< 2 min)")
    p.add_argument("--modes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--out", default=None,
                   help="JSON to write (default bench/results/kernels.json, or "
                        "kernels_quick.json with --quick)")
    p.add_argument("--repeats", type=int, help="timed calls per measurement "
                   "(default 20, 5 with --quick)")
    p.add_argument("--only-baselines", action="store_true",
                   help="skip fusedrnn (PyTorch and MXNet only)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.out is None:
        name = "kernels_quick.json" if args.quick else "kernels.json"
        args.out = os.path.join(ROOT, "bench", "results", name)
    if args.worker:
        worker(args)
    else:
        parent(args)


if __name__ == "__main__":
    main()
