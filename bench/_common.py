"""What every benchmark shares: the process environment, one timer, the runners of the
libraries compared, worker processes, the machine header and the result file.

Each bench_*.py only measures and writes bench/results/NAME.json ({"header": ..., "rows": ...});
bench/report.py makes every table, the plot and the target list from those files.

Environment (bench_env): OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed (the machine sets them
for old OpenBLAS builds; unset, every OpenBLAS detects the CPU itself), OMP_NUM_THREADS =
MXNET_OMP_MAX_THREADS = the thread count (MXNet reads both at import only), and MXNet's engine:
its default, ThreadedEnginePerDevice, which is what users run, unless --mxnet-engine says
otherwise. MXNet's threaded engine runs operators on an engine thread that owns an OpenMP team
of its own; a second library's team in the same process (PyTorch's, or fusedrnn's when called
from the main thread) then oversubscribes the cores and libgomp stops spin-waiting, which made
every library ~3x slower at small shapes on 2 cores. So a comparison runs each library in its
own worker process that imports only that library: PyTorch never shares a process with MXNet's
engine, and MXNet (with fusedrnn's Gluon layers, which are MXNet operators) runs as its users
run it. Implementations in one process are timed interleaved, call by call.

Timer (timed): warm-up rounds (at least 2 and 0.2 s, which also outlasts the spin-wait of a
thread pool used just before), then rounds of one call per implementation until each has
`repeats` samples (fewer past the time budget, never under 3); mx.nd.waitall() ends every call
when MXNet is loaded, so the clock sees the asynchronous work. Reported: the median, p25/p75.
"""
import argparse
import datetime
import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
import time
import traceback

BLAS_ENV_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
DEFAULT_ENGINE = "ThreadedEnginePerDevice"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results")
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
SEED = 1234
TOLERANCE = 1e-3  # outputs: max |a - b| / max(1, max |reference|)
QUIET_CORES = 0.2  # other processes' load above which a measurement is taken again
PHASES = ("train", "infer")


# --------------------------------------------------------------------------- environment
def bench_env(threads, engine=DEFAULT_ENGINE):
    env = {k: v for k, v in os.environ.items() if k not in BLAS_ENV_VARS}
    env.update(OMP_NUM_THREADS=str(threads), MXNET_OMP_MAX_THREADS=str(threads),
               MXNET_ENGINE_TYPE=engine)
    return env


def enter(threads, engine=DEFAULT_ENGINE, modules=("mxnet", "fusedrnn")):
    """Re-executes this script in bench_env unless it already runs in it (OpenBLAS and MXNet
    read these variables when they load), imports `modules` and sets their thread pools."""
    import importlib
    env = bench_env(threads, engine)
    if env != dict(os.environ):
        os.execve(sys.executable, [sys.executable] + sys.argv, env)
    for module in modules:
        importlib.import_module(module)
    set_threads(threads)


_limits = []


def set_threads(n):
    """Thread counts of the libraries this process has imported; fusedrnn's own setting
    comes last, since it keeps its OpenBLAS single-threaded (it splits work itself)."""
    import threadpoolctl
    _limits.append(threadpoolctl.threadpool_limits(n))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    if "fusedrnn" in sys.modules:
        sys.modules["fusedrnn"].kernels.set_num_threads(n)


def arguments(doc, repeats, threads=(2,), extra=None):
    """The shared command line; extra(parser) adds a script's own options."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0].strip())
    ap.add_argument("--quick", action="store_true", help="the smallest run, to see that it works")
    ap.add_argument("--threads", type=int, nargs="+", default=list(threads))
    ap.add_argument("--repeats", type=int, default=repeats, help="timed calls per figure")
    ap.add_argument("--mxnet-engine", default=DEFAULT_ENGINE,
                    choices=[DEFAULT_ENGINE, "NaiveEngine", "ThreadedEngine"])
    ap.add_argument("--out", help="JSON file (default bench/results/NAME.json, "
                                  "NAME_quick.json with --quick)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    if extra:
        extra(ap)
    return ap.parse_args()


# --------------------------------------------------------------------------- timing
def sync():
    if "mxnet" in sys.modules:
        sys.modules["mxnet"].nd.waitall()


def stats(samples_ms):
    import numpy as np
    a = np.asarray(samples_ms)
    p25, med, p75 = np.percentile(a, [25, 50, 75])
    return {"median_ms": float(med), "p25_ms": float(p25), "p75_ms": float(p75),
            "min_ms": float(a.min()), "max_ms": float(a.max()), "n": int(a.size),
            "samples_ms": [round(float(v), 4) for v in a]}


def timed(fns, repeats, warmup=2, budget_s=float("inf"), min_warmup_s=0.2):
    """{name: stats} of each callable in fns, timed interleaved call by call, so that a shared
    machine's drift hits all of them alike; a callable that raises gets {"error": ...}.
    budget_s is per callable: past it (a contended machine), stop at 3 samples each."""
    samples = {name: [] for name in fns}
    errors = {}

    def round_(record):
        for name, fn in fns.items():
            if name in errors:
                continue
            t0 = time.perf_counter()
            try:
                fn()
                sync()
            except Exception as e:  # noqa: BLE001 - a failing baseline must not stop the run
                errors[name] = f"{type(e).__name__}: {e}"
                continue
            if record:
                samples[name].append((time.perf_counter() - t0) * 1e3)

    t_start = time.perf_counter()
    done = 0
    while done < warmup or time.perf_counter() - t_start < min_warmup_s:
        round_(False)
        done += 1
    t_end = time.perf_counter() + budget_s * len(fns)
    while True:
        counts = [len(s) for k, s in samples.items() if k not in errors]
        if not counts or min(counts) >= repeats or (
                min(counts) >= 3 and time.perf_counter() > t_end):
            break
        round_(True)
    return {k: {"error": errors[k]} if k in errors else stats(s) for k, s in samples.items()}


def busy_seconds():
    """(CPU seconds all cores were busy, CPU seconds of this process)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]  # user..steal; guest is in user
    t = os.times()
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK"), t.user + t.system


def wait_for_quiet(max_wait_s=30.0, sample_s=0.3):
    """Gives other processes on a shared machine up to max_wait_s to finish: on 2 cores one
    busy process distorts every 2-thread figure 2-100x. Returns the last load seen."""
    t_end = time.perf_counter() + max_wait_s
    while True:
        (b0, o0), t0 = busy_seconds(), time.perf_counter()
        time.sleep(sample_s)
        (b1, o1), t1 = busy_seconds(), time.perf_counter()
        load = ((b1 - b0) - (o1 - o0)) / (t1 - t0)
        if load < QUIET_CORES or t1 > t_end:
            return load


def quietly(measure, quiet_s=20.0, attempts=2):
    """measure() after a wait for a quiet machine, again if other processes kept more than
    QUIET_CORES busy meanwhile. Returns (its result, that load in cores)."""
    for _ in range(attempts):
        wait_for_quiet(quiet_s)
        t0, (busy0, own0) = time.perf_counter(), busy_seconds()
        result = measure()
        busy1, own1 = busy_seconds()
        load = max(0.0, (busy1 - busy0) - (own1 - own0)) / (time.perf_counter() - t0)
        if load < QUIET_CORES:
            break
        print(f"{load:.1f} cores busy with other processes during the measurement",
              file=sys.stderr, flush=True)
    return result, load


def sgemm_peak(threads, n=2048, reps=5):
    """Best-of GFLOP/s of an n x n x n sgemm, with numpy's BLAS and with scipy_openblas32 (the
    OpenBLAS fusedrnn links, through ctypes since no Python API exposes it)."""
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
    with threadpoolctl.threadpool_limits(threads):
        best = timed(calls, reps, warmup=1)
    return {k: 2.0 * n ** 3 / (v["min_ms"] * 1e-3) / 1e9 for k, v in best.items()}


def flops(mode, tokens, I, H, training):
    """GEMM FLOPs of one layer; tokens = T*N, or sum(lengths) for variable-length batches.
    Forward does the input and recurrent GEMMs once (2*G*H*(I+H) per token); backward twice
    (data and weight gradients), hence 3x for training. Element-wise work is left out."""
    fwd = 2.0 * tokens * GATES[mode] * H * (I + H)
    return 3 * fwd if training else fwd


# --------------------------------------------------------------------------- runners
class Case:
    """A random float32 problem shared by all implementations (same weights, so that outputs
    can be cross-checked; the gate order and the two bias vectors are the same in fusedrnn,
    MXNet and PyTorch). lengths=None means a full batch."""

    def __init__(self, mode, T, N, I, H, varlen=False):
        import numpy as np
        rng = np.random.default_rng(SEED)
        G, k = GATES[mode], 1.0 / H ** 0.5
        f32 = np.float32

        def u(*shape):  # PyTorch's and MXNet's default init range
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
        self.batch = None

    def weights(self):
        """In the order of MXNet's i2h_weight, h2h_weight, i2h_bias, h2h_bias and PyTorch's
        weight_ih, weight_hh, bias_ih, bias_hh."""
        return self.w_ih, self.w_hh, self.b_ih, self.b_hh


# Each runner returns {"train": fn, "infer": fn, "outputs": fn -> (y, dx) as NumPy}. Training
# is forward + backward from fixed random upstream gradients (backward(head): the gradient of
# (y * head).sum() without computing that sum, which would time the framework's reductions);
# with state_grads also of the final states, giving dh0 (and dc0) as fusedrnn.kernels does.
def fusedrnn_kernels(case, use_lengths=True):
    from fusedrnn import kernels as K
    c = case
    args = (c.mode, c.x, *c.weights(), c.h0, c.c0)
    lengths = c.lengths if use_lengths else None

    def train():
        r = K.forward(*args, lengths=lengths, training=True)
        return K.backward(*args, r.reserve, c.dy, c.dhy, c.dcy, lengths=lengths)

    def infer():
        return K.forward(*args, lengths=lengths, training=False).y

    def outputs():
        return infer(), train().dx

    return {"train": train, "infer": infer, "outputs": outputs}


def torch_rnn(case, packed=False, state_grads=False):
    """torch.nn.LSTM/GRU/RNN on the padded batch, or packed with pack_padded_sequence."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    c = case
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU,
           "rnn_tanh": functools.partial(torch.nn.RNN, nonlinearity="tanh")}[c.mode]
    m = cls(c.I, c.H)  # batch_first=False: TNC like the others
    with torch.no_grad():
        for name, value in zip(("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"),
                               c.weights()):
            getattr(m, name).copy_(torch.from_numpy(value))
    t = torch.from_numpy
    x = t(c.x).requires_grad_()
    states = [t(c.h0)[None].requires_grad_(state_grads)]
    heads = [t(c.dy), t(c.dhy)[None]]
    if c.mode == "lstm":
        states.append(t(c.c0)[None].requires_grad_(state_grads))
        heads.append(t(c.dcy)[None])
    state = tuple(states) if c.mode == "lstm" else states[0]
    lengths = t(c.lengths) if packed else None

    def run():
        if not packed:
            return m(x, state)
        y, st = m(pack_padded_sequence(x, lengths, enforce_sorted=False), state)
        return pad_packed_sequence(y, total_length=c.T)[0], st

    def train():
        m.zero_grad(set_to_none=True)  # write, not accumulate, like the others
        for v in [x] + states:
            v.grad = None
        y, st = run()
        if state_grads:
            torch.autograd.backward([y] + (list(st) if c.mode == "lstm" else [st]), heads)
        else:
            y.backward(heads[0])

    def infer():
        with torch.no_grad():
            return run()[0]

    def outputs():
        y = infer().numpy()
        train()
        return y, x.grad.numpy()

    return {"train": train, "infer": infer, "outputs": outputs}


def load_gluon(block, case):
    """Copies the case's weights into a Gluon layer (l0_i2h_weight...) or cell (i2h_weight...)."""
    import mxnet as mx
    params = block.collect_params()
    for key, value in zip(("i2h_weight", "h2h_weight", "i2h_bias", "h2h_bias"), case.weights()):
        names = [n for n in params if n.endswith(key)]
        assert len(names) == 1, (key, list(params))
        params[names[0]].set_data(mx.nd.array(value))


def gluon_layer(module, case):
    """module.LSTM/GRU/RNN (fusedrnn or mxnet.gluon.rnn) with the case's weights, TNC."""
    cls = {"lstm": module.LSTM, "gru": module.GRU,
           "rnn_tanh": functools.partial(module.RNN, activation="tanh")}[case.mode]
    layer = cls(case.H, num_layers=1, layout="TNC", input_size=case.I)
    layer.initialize()
    load_gluon(layer, case)
    return layer


def gluon_cell(module, case):
    cls = {"lstm": module.LSTMCell, "gru": module.GRUCell,
           "rnn_tanh": functools.partial(module.RNNCell, activation="tanh")}[case.mode]
    cell = cls(case.H, input_size=case.I)
    cell.initialize()
    load_gluon(cell, case)
    return cell


def layer_states(case):
    import mxnet as mx
    states = [mx.nd.array(case.h0[None])]
    if case.mode == "lstm":
        states.append(mx.nd.array(case.c0[None]))
    return states


def mxnet_runner(case, net, states, lengths=None, state_grads=False):
    """A hybridized block called as net(x, states[, sequence_length]) -> (y, states)."""
    import mxnet as mx
    x = mx.nd.array(case.x)
    x.attach_grad()
    heads = [mx.nd.array(case.dy), mx.nd.array(case.dhy).reshape(states[0].shape)]
    if case.mode == "lstm":
        heads.append(mx.nd.array(case.dcy).reshape(states[1].shape))
    if state_grads:
        for s in states:
            s.attach_grad()
    extra = {} if lengths is None else {"sequence_length": mx.nd.array(lengths)}

    def train():
        with mx.autograd.record():
            y, st = net(x, states, **extra)
        if state_grads:
            mx.autograd.backward([y] + list(st), head_grads=heads)
        else:
            y.backward(heads[0])

    def infer():
        return net(x, states, **extra)[0]

    def outputs():
        y = infer().asnumpy()
        train()
        return y, x.grad.asnumpy()

    return {"train": train, "infer": infer, "outputs": outputs}


# --------------------------------------------------------------------------- rows
def cross_check(checks, outputs, valid):
    """checks: {impl: (references, first available one used; compare dx too)}; outputs(impl)
    -> (y, dx) or None. Compares y at `valid` positions (padding differs by design).
    Returns ({impl-ref: scaled max difference}, {impl: error})."""
    import numpy as np
    diffs, errors = {}, {}
    for name, (refs, with_dx) in checks.items():
        mine = outputs(name)
        if mine is None:
            continue
        ref, theirs = next(((r, o) for r in refs for o in [outputs(r)] if o is not None),
                           (refs[0], None))
        if theirs is None:
            diffs[f"{name}-{ref}"] = None  # no reference ran: unchecked
            continue
        pairs = [(mine[0], theirs[0], valid)] + ([(mine[1], theirs[1], True)] if with_dx else [])
        worst = 0.0
        for a, b, where in pairs:
            scale = max(1.0, float(np.abs(b).max()))
            worst = max(worst, float(np.where(where, np.abs(a - b), 0).max()) / scale)
        diffs[f"{name}-{ref}"] = worst
        if not worst <= TOLERANCE:
            errors[name] = f"differs from {ref}: scaled max difference {worst:.2e}"
    return diffs, errors


def measure_row(case, factories, checks, phases, shared, timing, quiet, valid=True):
    """In a worker: builds the implementations of one row, checks their outputs (against
    references from this process or, through the folder `shared`, from workers that ran this
    row before), stores its own for the next workers, and times each phase. An implementation
    that fails or disagrees is not timed. Returns {"maxdiff", "phases": {phase: {"impls",
    "background_cores"}}}. timing, quiet: keyword arguments of timed, quietly."""
    import numpy as np
    built, errors, outs = {}, {}, {}
    for name, make in factories.items():
        try:
            built[name] = make(case)
            outs[name] = built[name]["outputs"]()
        except Exception as e:  # noqa: BLE001
            errors[name] = f"{type(e).__name__}: {e}"
    for name, (y, dx) in outs.items():
        np.save(os.path.join(shared, name + "-y.npy"), y)
        if dx is not None:
            np.save(os.path.join(shared, name + "-dx.npy"), dx)

    def output(name):
        if name in outs:
            return outs[name]
        y = os.path.join(shared, name + "-y.npy")
        if not os.path.exists(y):
            return None
        dx = os.path.join(shared, name + "-dx.npy")
        return np.load(y), np.load(dx) if os.path.exists(dx) else None

    diffs, wrong = cross_check({k: v for k, v in checks.items() if k in outs}, output, valid)
    errors.update(wrong)
    del outs
    fns = {phase: {k: r[phase] for k, r in built.items() if k not in errors and phase in r}
           for phase in phases}
    result = {"maxdiff": diffs, "phases": {}}
    for phase in phases:
        res, load = quietly(lambda: timed(fns[phase], **timing), **quiet)
        res.update({k: {"error": e} for k, e in errors.items() if k in factories})
        result["phases"][phase] = {"impls": {k: res[k] for k in factories if k in res},
                                   "background_cores": load}
    return result


def merge_row(base, parts, phase, threads):
    """One result row from the workers' parts of it: implementations side by side, fusedrnn's
    GFLOP/s and every baseline's median / fusedrnn's (> 1: fusedrnn is faster)."""
    row = dict(base, threads=threads, phase=phase, impls={}, maxdiff={}, background_cores=0.0)
    row["gflop"] = flops(base["mode"], base["tokens"], base["I"], base["H"],
                         phase == "train") / 1e9
    for part in parts:
        p = part["phases"][phase]
        row["impls"].update(p["impls"])
        row["maxdiff"].update(part["maxdiff"])
        row["background_cores"] = max(row["background_cores"], p["background_cores"])
    f = row["impls"].get("fusedrnn", {})
    if "median_ms" in f:
        row["fusedrnn_gflops"] = row["gflop"] / (f["median_ms"] * 1e-3)
        row["ratio_vs_fusedrnn"] = {k: v["median_ms"] / f["median_ms"]
                                    for k, v in row["impls"].items()
                                    if k != "fusedrnn" and "median_ms" in v}
    return row


# --------------------------------------------------------------------------- workers
class Worker:
    """This script run again as a worker (`--worker GROUP`) in bench_env(threads, engine): it
    answers one JSON request per line of its stdin with one JSON line on its stdout."""

    def __init__(self, group, threads, engine=DEFAULT_ENGINE, argv=()):
        self.group = group
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(sys.argv[0]), "--worker", group,
             "--threads", str(threads), *argv],
            env=bench_env(threads, engine), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True)

    def __call__(self, **request):
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.group} exited ({self.proc.wait()})")
        reply = json.loads(line)
        if "worker_error" in reply:
            raise RuntimeError(f"worker {self.group}: {reply['worker_error']}")
        return reply

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def serve(handle):
    """A worker's loop: handle(request) -> reply; what libraries print goes to stderr."""
    out, sys.stdout = sys.stdout, sys.stderr
    for line in sys.stdin:
        try:
            reply = handle(json.loads(line))
        except Exception:  # noqa: BLE001 - the parent reports it
            reply = {"worker_error": traceback.format_exc()[-2000:]}
        out.write(json.dumps(reply) + "\n")
        out.flush()


# --------------------------------------------------------------------------- header
def cpu_model():
    with open("/proc/cpuinfo") as f:
        return next((line.split(":", 1)[1].strip() for line in f
                     if line.startswith("model name")), platform.machine())


def cpu_caches():
    """{"L1d": "48K", "L2": "1024K", "L3": "32768K"}: cpu0's caches as /sys gives them (the
    size of one cache; lscpu adds up the instances)."""
    caches = {}
    root = "/sys/devices/system/cpu/cpu0/cache"
    for index in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        try:
            level, kind, size = (open(os.path.join(root, index, f)).read().strip()
                                 for f in ("level", "type", "size"))
        except OSError:
            continue
        if kind != "Instruction":
            caches[f"L{level}" + ("d" if kind == "Data" else "")] = size
    return caches


def package_digest(module):
    """Short hash of a package's files, so that each result names the build it measured."""
    h = hashlib.sha256()
    d = os.path.dirname(module.__file__)
    for name in sorted(os.listdir(d)):
        if name.endswith((".so", ".py")):
            with open(os.path.join(d, name), "rb") as f:
                h.update(f.read())
    return h.hexdigest()[:12]


def machine_header(name, args, fairness, **extra):
    """The machine and the run: CPU, cores, load, Python, versions, the command, the MXNet
    engine, the thread counts, and how the libraries were kept apart (fairness)."""
    versions = {}
    for pkg in ("numpy", "torch", "mxnet", "threadpoolctl", "scipy-openblas32", "fusedrnn"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    return dict({"bench": name,
                 "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                 "command": " ".join(["python", f"bench/bench_{name}.py"] + sys.argv[1:]),
                 "cpu_model": cpu_model(), "caches": cpu_caches(), "cores": os.cpu_count(),
                 "cores_usable": len(os.sched_getaffinity(0)), "loadavg": os.getloadavg(),
                 "platform": platform.platform(), "python": platform.python_version(),
                 "versions": versions, "threads": args.threads,
                 "mxnet_engine": args.mxnet_engine,
                 "removed_from_env": {k: os.environ.get(k) for k in BLAS_ENV_VARS},
                 "fairness": fairness, "workers": {}}, **extra)


def process_info():
    """What this process runs with: environment, every thread pool and BLAS kernel
    (threadpoolctl), and each compared library it imported."""
    import threadpoolctl
    info = {"env": {k: os.environ.get(k) for k in BLAS_ENV_VARS + (
                "OMP_NUM_THREADS", "MXNET_OMP_MAX_THREADS", "MXNET_ENGINE_TYPE",
                "OMP_WAIT_POLICY", "MXNET_USE_MKLDNN_RNN", "OPENBLAS_NUM_THREADS")},
            "threadpool_info": [{k: d.get(k) for k in ("filepath", "internal_api", "version",
                                                       "architecture", "threading_layer",
                                                       "num_threads")}
                                for d in threadpoolctl.threadpool_info()],
            "loadavg": os.getloadavg()}
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        info["torch"] = {"num_threads": torch.get_num_threads(),
                         "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    if "mxnet" in sys.modules:
        mx = sys.modules["mxnet"]
        info["mxnet"] = {"engine": os.environ.get("MXNET_ENGINE_TYPE", DEFAULT_ENGINE),
                         "features": [f.name for f in mx.runtime.Features().values()
                                      if f.enabled]}
    if "fusedrnn" in sys.modules:
        fusedrnn = sys.modules["fusedrnn"]
        K = fusedrnn.kernels
        info["fusedrnn"] = {"file": K.__file__, "digest": package_digest(fusedrnn),
                            "threads": K.get_num_threads(),
                            "instruction_set": K.instruction_set()}
    return info


def machine_folder(model=None):
    """bench/results/<machine>: the folder of this machine's results, named from its CPU model
    ("AMD EPYC 7763 64-Core Processor" -> amd-epyc, "Intel(R) Xeon(R) Processor" ->
    intel-xeon): figures from different kinds of machine are never mixed."""
    words = re.sub(r"\((r|tm)\)", " ", (model or cpu_model()).lower()).split()
    return os.path.join(RESULTS, "-".join(re.sub(r"[^a-z0-9]", "", w) for w in words[:2]))


def write(args, name, header, **parts):
    """Writes {"header": header, **parts} to --out or bench/results/<machine>/NAME[_quick].json."""
    header["duration_s"] = round(time.perf_counter() - _T0, 1)
    out = args.out or os.path.join(machine_folder(), f"{name}_quick.json" if args.quick else
                                   f"{name}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(dict(header=header, **parts), f, indent=1)
    print("wrote", out, "- tables: python bench/report.py")


_T0 = time.perf_counter()


# --------------------------------------------------------------------------- side by side
def serve_rows(args, groups, factories, checks, make_case, peak_group):
    """The worker of group args.worker: imports that group's libraries only, sets the thread
    pools, then measures the rows the parent asks for (see measure_rows)."""
    import importlib
    import numpy as np
    n = args.threads[0]
    for module in groups[args.worker][1]:
        importlib.import_module(module)
    set_threads(n)

    def handle(req):
        if req["op"] == "info":
            return process_info()
        if req["op"] == "peak":
            return sgemm_peak(n) if args.worker == peak_group else {}
        case = make_case(req["kind"], *req["spec"])
        valid = True
        if case.lengths is not None:
            valid = (np.arange(case.T)[:, None] < case.lengths[None])[..., None]
        return measure_row(case, factories[args.worker].get(req["kind"], {}),
                           checks.get(req["kind"], {}), req["phases"], req["shared"],
                           req["timing"], req["quiet"], valid)

    serve(handle)


def measure_rows(args, header, groups, plan, make_case, timing, quiet, worker_argv=()):
    """For each thread count: one worker process per group of libraries ({name: (MXNet engine,
    modules)}; the first group computes the references), and per row of the plan ((kind,
    case arguments, phases)) each worker in turn, so that a row's figures are taken minutes
    apart at most. Fills header["workers"]; returns the rows."""
    import tempfile
    rows = []
    for n in args.threads:
        wait_for_quiet(quiet["quiet_s"])
        workers = [Worker(g, n, engine, worker_argv) for g, (engine, _) in groups.items()]
        try:
            peak = {}
            for w in workers:
                header["workers"][f"{w.group}:{n}"] = w(op="info")
                peak.update(w(op="peak"))
            for kind, spec, phases in plan:
                case = make_case(kind, *spec)
                base = {"kind": kind, "batch": case.batch, "mode": case.mode, "T": case.T,
                        "N": case.N, "I": case.I, "H": case.H, "tokens": case.tokens,
                        "padding_fraction": 1 - case.tokens / (case.T * case.N)}
                with tempfile.TemporaryDirectory() as shared:
                    parts = [w(op="row", kind=kind, spec=list(spec), phases=list(phases),
                               shared=shared, timing=timing, quiet=quiet)
                             for w in workers]
                for phase in phases:
                    row = merge_row(base, parts, phase, n)
                    rows.append(row)
                    print(f"[{n} thr] {kind} {case.mode} {case.T},{case.N},{case.I},{case.H}"
                          f"{' ' + case.batch if case.batch else ''} {phase}: " + ", ".join(
                              f"{k} {v['median_ms']:.2f} ms" if "median_ms" in v else
                              f"{k} ERROR" for k, v in row["impls"].items()) +
                          f" (bg {row['background_cores']:.1f})", flush=True)
            end = {}
            for w in workers:
                end.update(w(op="peak"))
        finally:
            for w in workers:
                w.close()
        best = max([*peak.values(), *end.values()], default=0.0)
        header["workers"][f"sgemm:{n}"] = {"sgemm_peak_gflops_start_end": [peak, end],
                                            "sgemm_peak_gflops": {
                                                k: max(v, end.get(k, 0.0))
                                                for k, v in peak.items()}}
        for row in rows:
            if (row["threads"] == n and "fusedrnn_gflops" in row and best and
                    row["kind"] != "decode"):
                row["fusedrnn_peak_frac"] = row["fusedrnn_gflops"] / best
    return rows
