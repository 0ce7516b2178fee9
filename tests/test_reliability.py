"""Run-time reliability: no leak over 10,000 training calls, bit-identical results from run to
run and process to process, concurrent calls (Python threads, MXNet's threaded engine) equal to
serial ones, and no hang in processes forked after fusedrnn used its threads.

Anything that could hang runs in a subprocess with a timeout, so a hang fails the test."""
import concurrent.futures
import hashlib
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import mxnet as mx
import numpy as np
import pytest

import fusedrnn
from fusedrnn import kernels
from helpers import make_problem, make_upstream

TESTS = str(pathlib.Path(__file__).parent)

# (mode, T, N, C, H, options): shapes whose steps are split across two threads
# (batch * gates * H * P >= 2^18 multiply-adds a step, parallel.cc: threads_for), a small one
# that stays on one, and two whose products over all steps are split too.
CASES = {
    "lstm": ("lstm", 4, 17, 5, 67, {}),
    "lstm_proj_clip": ("lstm", 4, 17, 5, 67, {"proj": 35, "clip_min": -0.3, "clip_max": 0.4}),
    "gru": ("gru", 4, 33, 5, 70, {}),
    "gru_reset_before": ("gru", 4, 33, 5, 70, {"reset_after": False}),
    "rnn_tanh": ("rnn_tanh", 3, 65, 4, 66, {}),
    "rnn_relu": ("rnn_relu", 3, 65, 4, 66, {}),
    "lstm_small": ("lstm", 5, 3, 4, 7, {}),
    # Products over all steps large enough to be split across threads (blas.cc: big_gemm).
    "gru_big": ("gru", 12, 100, 300, 150, {}),
    "rnn_big": ("rnn_tanh", 30, 64, 33, 250, {}),
}


def case_problem(name, dtype, valid):
    """Inputs of a case; valid: 'all', 'lengths' (random in [0, T], 0 and T included) or
    'mask' (random positions)."""
    mode, T, N, C, H, opts = CASES[name]
    opts = dict(opts)
    proj = opts.pop("proj", None)
    lengths = None if valid == "all" else [T, 0, 1] + list(np.arange(N - 3) % (T + 1))
    problem = make_problem(mode, T, N, C, H, proj=proj, dtype=dtype, seed=3, lengths=lengths)
    if valid == "mask":
        problem["mask"] = np.random.default_rng(4).random((T, N)) < 0.6
        problem.pop("lengths")
    upstream = {k: None if v is None else v.astype(dtype)
                for k, v in make_upstream(mode, problem, seed=5).items()}
    return mode, problem, opts, upstream


def train(mode, problem, opts, upstream, reverse=False):
    fwd = kernels.forward(mode, **problem, **opts, reverse=reverse, training=True)
    args = [problem[k] for k in ("x", "w_ih", "w_hh", "b_ih", "b_hh", "h0", "c0")]
    kw = {k: problem[k] for k in ("w_hr", "lengths", "mask") if k in problem}
    grads = kernels.backward(mode, *args, fwd.reserve, **upstream, **kw, **opts, reverse=reverse)
    return [a for a in (fwd.y, fwd.hy, fwd.cy) + tuple(grads) if a is not None]


def digest(arrays):
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def all_digests(threads):
    """sha256 of the outputs and gradients of every case, dtype, valid-position kind and
    direction, at a fixed thread count."""
    kernels.set_num_threads(threads)
    out = {}
    for name in CASES:
        for dtype in (np.float32, np.float64):
            for valid in ("all", "lengths", "mask"):
                for reverse in (False, True):
                    mode, problem, opts, up = case_problem(name, dtype, valid)
                    key = f"{name}-{np.dtype(dtype).name}-{valid}-{reverse}"
                    out[key] = digest(train(mode, problem, opts, up, reverse))
    return out


@pytest.fixture
def restore_threads():
    before = kernels.get_num_threads()
    yield
    kernels.set_num_threads(before)


def run_script(script, env=None, timeout=180):
    """Runs a Python script in a fresh interpreter (tests/ on sys.path) and returns stdout;
    a non-zero exit or a hang past the timeout fails the test."""
    full = "import sys\nsys.path.insert(0, %r)\n" % TESTS + textwrap.dedent(script)
    try:
        out = subprocess.run([sys.executable, "-c", full], capture_output=True, text=True,
                             timeout=timeout, env=dict(os.environ, **(env or {})))
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"subprocess hung (no exit within {timeout} s); stderr: "
                    f"{(e.stderr or b'')[-2000:]!r}")
    assert out.returncode == 0, out.stderr[-4000:]
    return out.stdout


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ---------------------------------------------------------------------------------------------
# Leaks
# ---------------------------------------------------------------------------------------------

# Growth allowed over 10,000 calls after warm-up. Every call makes outputs and a reserve of
# >= 4 KiB each, so leaking any one of them (or its Python object) would grow RSS by >= 40 MB.
RSS_BOUND = 4 << 20


@pytest.mark.parametrize("valid", ["lengths", "mask"])
def test_kernels_memory_flat_over_10000_training_calls(valid):
    mode, T, N, C, H = "lstm", 4, 8, 16, 32
    problem = make_problem(mode, T, N, C, H, proj=16, dtype=np.float32, lengths="random",
                           seed=1)
    if valid == "mask":
        problem["mask"] = np.random.default_rng(2).random((T, N)) < 0.5
        problem.pop("lengths")
    up = {k: v.astype(np.float32) for k, v in make_upstream(mode, problem).items()}
    opts = {"clip_min": -1.0, "clip_max": 1.0}
    for _ in range(500):
        train(mode, problem, opts, up)
    before = rss_bytes()
    for _ in range(10_000):
        train(mode, problem, opts, up)
    grown = rss_bytes() - before
    assert grown < RSS_BOUND, f"RSS grew by {grown / 2**20:.1f} MiB over 10,000 calls"


MXNET_MEMORY_SCRIPT = """
    import json
    import mxnet as mx
    import numpy as np
    import fusedrnn
    from test_reliability import rss_bytes

    def growth(step, warmup, calls):
        for _ in range(warmup):
            step()
        mx.nd.waitall()
        before = rss_bytes()
        for _ in range(calls):
            step()
        mx.nd.waitall()
        return rss_bytes() - before

    # The operator under autograd: forward, backward, the reserve kept between them.
    T, N, C, H = 4, 8, 16, 32
    rng = np.random.default_rng(0)
    arrays = {"x": (T, N, C), "w_ih": (4 * H, C), "w_hh": (4 * H, H), "b_ih": (4 * H,),
              "b_hh": (4 * H,), "h0": (N, H), "c0": (N, H)}
    inputs = {k: mx.nd.array(rng.uniform(-0.5, 0.5, s)) for k, s in arrays.items()}
    lengths = mx.nd.array(rng.integers(0, T + 1, N))
    for a in inputs.values():
        a.attach_grad()
    head = mx.nd.array(rng.standard_normal((T, N, H)))

    def op_step():
        with mx.autograd.record():
            out = mx.nd._internal._fusedrnn_layer(*inputs.values(), lengths, mode="lstm",
                                                  use_lengths=True)
        out[0].backward(head)
        inputs["x"].grad.wait_to_read()

    # A hybridized bidirectional Gluon layer with sequence lengths (two fused operators
    # forward and backward a step, plus MXNet's own work).
    layer = fusedrnn.GRU(16, bidirectional=True, layout="NTC")
    layer.initialize()
    layer.hybridize()
    x = mx.nd.array(rng.standard_normal((6, 5, 8)))
    seq = mx.nd.array([5, 0, 1, 3, 2, 4])
    x.attach_grad()

    def layer_step():
        with mx.autograd.record():
            out, _ = layer(x, layer.begin_state(6), sequence_length=seq)
        out.backward()
        x.grad.wait_to_read()

    print(json.dumps({"op": growth(op_step, 500, 10_000),
                      "layer": growth(layer_step, 300, 2_000)}))
"""


def test_mxnet_op_and_gluon_layer_memory_flat():
    """10,000 training calls of the MXNet operator under autograd and 2,000 training steps of
    a hybridized Gluon layer, in a fresh process: after an operator has once failed (the
    bad-argument tests), MXNet 1.9.1 leaks on every later call into the library (see
    docs/testing.md), which is not what this measures."""
    out = run_script(MXNET_MEMORY_SCRIPT, timeout=300)
    grown = json.loads(out.strip().splitlines()[-1])
    assert grown["op"] < RSS_BOUND, f"operator: RSS grew by {grown['op'] / 2**20:.1f} MiB"
    assert grown["layer"] < RSS_BOUND, f"layer: RSS grew by {grown['layer'] / 2**20:.1f} MiB"


# ---------------------------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("threads", [1, 2])
def test_bit_identical_across_calls_and_processes(threads, restore_threads):
    here = all_digests(threads)
    assert all_digests(threads) == here  # again in this process
    out = run_script(f"""
        import json
        from test_reliability import all_digests
        print(json.dumps(all_digests({threads})))
    """)
    other = json.loads(out.strip().splitlines()[-1])
    differ = [k for k in here if here[k] != other[k]]
    assert not differ, f"a fresh process gives other bits for {differ}"


# ---------------------------------------------------------------------------------------------
# Concurrency
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_concurrent_kernel_calls_equal_serial(dtype, restore_threads):
    """Calls from four Python threads at once, with steps large enough to want both pool
    threads, give the serial results bit for bit (a call that found the pool busy must not
    run on fewer threads: that would change the order of its sums)."""
    kernels.set_num_threads(2)
    jobs = [(name, valid) for name in CASES for valid in ("lengths", "mask")]

    def run(job):
        mode, problem, opts, up = case_problem(job[0], dtype, job[1])
        return [train(mode, problem, opts, up, reverse) for reverse in (False, True)
                for _ in range(3)]

    serial = [run(job) for job in jobs]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(run, jobs))
    for job, ser, par in zip(jobs, serial, parallel):
        for a, b in zip(ser, par):
            assert digest(a) == digest(b), f"{job}: concurrent result differs from serial"


# Layers in float64 (where a changed order of sums shows in the last bits), large enough that
# both the steps and the products over all steps are split across two threads.
LAYER_T, LAYER_N, LAYER_C, LAYER_H = 12, 64, 33, 150


def make_layer(kind, seed):
    cls = {"lstm": fusedrnn.LSTM, "gru": fusedrnn.GRU}[kind]
    layer = cls(LAYER_H, num_layers=2, bidirectional=True, layout="TNC", dtype="float64")
    layer.initialize()
    rng = np.random.default_rng(seed)
    layer(mx.nd.zeros((LAYER_T, LAYER_N, LAYER_C), dtype="float64"))
    for p in layer.collect_params().values():
        p.set_data(mx.nd.array(rng.uniform(-0.1, 0.1, p.shape), dtype="float64"))
    return layer


def layer_inputs(seed):
    rng = np.random.default_rng(seed)
    x = mx.nd.array(rng.standard_normal((LAYER_T, LAYER_N, LAYER_C)), dtype="float64")
    lengths = mx.nd.array(rng.integers(0, LAYER_T + 1, LAYER_N), dtype="float64")
    x.attach_grad()
    return rng, x, lengths


def layer_run(layer, seed):
    """Training step of a layer on its own inputs: outputs and all gradients as NumPy."""
    rng, x, lengths = layer_inputs(seed)
    with mx.autograd.record():
        out, states = layer(x, layer.begin_state(LAYER_N), sequence_length=lengths)
    heads = [mx.nd.array(rng.standard_normal(a.shape), dtype="float64")
             for a in [out] + states]
    mx.autograd.backward([out] + states, heads)
    return [a.asnumpy() for a in [out] + states + [x.grad]] + [
        p.grad().asnumpy() for p in layer.collect_params().values()]


def test_concurrent_layer_calls_equal_serial(restore_threads):
    """Gluon layers trained from four Python threads at once (each on its own layer and
    inputs) give the serial results bit for bit."""
    kernels.set_num_threads(2)
    layers = [make_layer(kind, seed) for seed, kind in enumerate(["lstm", "gru"] * 2)]
    serial = [layer_run(layer, i) for i, layer in enumerate(layers)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(layer_run, layers, range(4)))
    for i, (ser, par) in enumerate(zip(serial, parallel)):
        assert digest(ser) == digest(par), f"layer {i}: concurrent result differs from serial"


ENGINE_SCRIPT = """
    import json, os
    import mxnet as mx
    import numpy as np
    from fusedrnn import kernels
    from test_reliability import make_layer, layer_inputs, digest, LAYER_N
    kernels.set_num_threads(2)
    layers = [make_layer(kind, seed) for seed, kind in enumerate(["lstm", "gru"] * 2)]
    # Push every layer's work before reading any result back, so that the threaded engine
    # runs the operators of different layers on its worker threads at the same time.
    outs = []
    for i, layer in enumerate(layers):
        rng, x, lengths = layer_inputs(i)
        with mx.autograd.record():
            out, states = layer(x, layer.begin_state(LAYER_N), sequence_length=lengths)
        heads = [mx.nd.array(rng.standard_normal(a.shape), dtype="float64")
                 for a in [out] + states]
        mx.autograd.backward([out] + states, heads)
        outs.append([out] + states + [x.grad] + [p.grad() for p in
                                                  layer.collect_params().values()])
    print(json.dumps([digest([a.asnumpy() for a in o]) for o in outs]))
"""


def test_threaded_engine_equals_naive_engine():
    """The same training steps through MXNet's threaded engine (four CPU workers, several
    layers in flight at once) and through NaiveEngine (one operator at a time) give the same
    bits."""
    results = {}
    for engine in ("NaiveEngine", "ThreadedEnginePerDevice"):
        out = run_script(ENGINE_SCRIPT, env={"MXNET_ENGINE_TYPE": engine,
                                             "MXNET_CPU_WORKER_NTHREADS": "4"})
        results[engine] = out.strip().splitlines()[-1]
    assert results["ThreadedEnginePerDevice"] == results["NaiveEngine"]


@pytest.mark.parametrize("entry", ["kernels", "layer", "cell"])
def test_openblas_single_threaded_from_the_first_call(entry):
    """fusedrnn splits its products itself, so OpenBLAS must run on one thread, even when
    the first call of a process (one that never set a thread count) has only products too
    small to share: OpenBLAS's own threads then fought MXNet's for the cores (an LSTM layer,
    50 steps at batch 1, took 15 ms a call instead of 0.5)."""
    out = run_script(f"""
        import threadpoolctl, numpy as np, mxnet as mx, fusedrnn
        from fusedrnn import kernels
        def blas_threads():
            return [m["num_threads"] for m in threadpoolctl.threadpool_info()
                    if "scipy_openblas" in m["filepath"]]
        threadpoolctl.threadpool_limits(2, user_api="blas")
        assert blas_threads() == [2], blas_threads()
        entry = {entry!r}
        if entry == "kernels":
            r = np.random.RandomState(0)
            w = lambda *s: r.uniform(-0.1, 0.1, s).astype("f4")
            kernels.forward("lstm", w(1, 1, 64), w(512, 64), w(512, 128), w(512), w(512),
                            w(1, 128), w(1, 128))
        elif entry == "layer":
            layer = fusedrnn.LSTM(128, input_size=64)
            layer.initialize()
            layer(mx.nd.ones((50, 1, 64)))
        else:
            cell = fusedrnn.LSTMCell(128, input_size=64)
            cell.initialize()
            cell(mx.nd.ones((1, 64)), cell.begin_state(1))
        mx.nd.waitall()
        print(blas_threads())
    """)
    assert out.strip().splitlines()[-1] == "[1]"


# ---------------------------------------------------------------------------------------------
# Fork safety
# ---------------------------------------------------------------------------------------------

def test_dataloader_workers_after_threaded_use():
    """A process that ran fusedrnn on two threads (the kernels directly and a Gluon layer
    through MXNet, so both the OpenMP team and the engine have run fusedrnn work) then starts
    a gluon DataLoader with two worker processes, whose dataset calls the kernels, and forks
    a plain child that does too: everything finishes, with the parent's numbers."""
    out = run_script("""
        import os
        import mxnet as mx
        import numpy as np
        from fusedrnn import kernels
        from test_reliability import case_problem, train, digest, make_layer, layer_run
        kernels.set_num_threads(2)
        mode, problem, opts, up = case_problem("lstm", np.float32, "lengths")
        expect = digest(train(mode, problem, opts, up))
        layer_run(make_layer("lstm", 0), 0)
        mx.nd.waitall()

        class Data(mx.gluon.data.Dataset):
            def __len__(self):
                return 8
            def __getitem__(self, i):
                ok = digest(train(mode, problem, opts, up)) == expect
                return np.array([i, ok, os.getpid()], dtype=np.int64)

        loader = mx.gluon.data.DataLoader(Data(), batch_size=2, num_workers=2)
        rows = np.concatenate([b.asnumpy() for b in loader])
        assert sorted(rows[:, 0]) == list(range(8)), rows
        assert rows[:, 1].all(), "a worker computed other numbers"
        assert os.getpid() not in rows[:, 2], "the dataset ran in the parent, not in workers"

        pid = os.fork()
        if pid == 0:
            os._exit(0 if digest(train(mode, problem, opts, up)) == expect else 3)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        # The parent still runs on its team afterwards.
        assert digest(train(mode, problem, opts, up)) == expect
        print("ok")
    """, timeout=120)
    assert out.strip().splitlines()[-1] == "ok"
