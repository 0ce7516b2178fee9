"""Memory of the kernels at large hidden sizes (issue 13): a call reserves address space in
proportion to what it needs, and fusedrnn.LSTM / GRU run where gluon's do.

The LSTM and GRU sized their packed recurrent weights with the gate columns (4H, 3H) where the
layout holds 4 (3) gates: H times the packed size, reserved on every call but never touched.
Resident memory hardly showed it; the address space did (16 GiB for an LSTM at H = 1024), and
at H = 1536 (54 GiB) the allocation failed with "out of memory" on a machine where MXNet's own
layer trains. The scratch arena is not visible from Python, so the test watches VmPeak (peak
virtual memory, /proc/self/status) over one call, in a fresh process (the arena keeps its
blocks from call to call, and VmPeak only grows). Not under AddressSanitizer, whose
quarantine keeps freed memory mapped by design.
"""
import json
import os
import subprocess
import sys
import textwrap

import mxnet as mx
import numpy as np
import pytest

import fusedrnn

GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1}

PROBE = textwrap.dedent("""
    import json, sys
    import numpy as np
    from fusedrnn import kernels as K

    def vm(key):
        with open("/proc/self/status") as f:
            return next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith(key + ":"))

    def problem(mode, T, N, C, H):
        G = {"lstm": 4, "gru": 3, "rnn_tanh": 1}[mode]
        rng = np.random.default_rng(0)
        u = lambda *s: rng.random(s, dtype=np.float32) * 0.06 - 0.03
        return (mode, u(T, N, C), u(G * H, C), u(G * H, H), u(G * H), u(G * H), u(N, H),
                u(N, H) if mode == "lstm" else None), u(T, N, H)

    def call(args, dy, training):
        r = K.forward(*args, training=training)
        if training:
            K.backward(*args, r.reserve, dy)

    mode = sys.argv[1]
    T, N, C, H = map(int, sys.argv[2:])
    K.set_num_threads(2)
    # Starts the pool, and OpenBLAS on each of its threads: their stacks, malloc arenas and
    # GEMM buffers are not the call's.
    call(*problem(mode, 4, 64, 256, 128), True)
    args, dy = problem(mode, T, N, C, H)
    growth = {}
    try:
        # Inference first: training then measures only what it needs beyond that.
        # VmPeak cannot be reset: the call's peak is bounded by VmPeak after it less VmSize
        # before it (exact when the call raised the peak).
        for phase in ("infer", "train"):
            before = vm("VmSize")
            call(args, dy, phase == "train")
            growth[phase] = vm("VmPeak") - before
        print(json.dumps(growth))
    except MemoryError as e:
        print(json.dumps({"error": str(e)}))
""")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="AddressSanitizer's quarantine keeps freed memory mapped")
@pytest.mark.parametrize("mode", list(GATES))
def test_address_space_of_a_call_follows_the_weights(mode):
    T, N, C, H = 3, 4, 64, 1536
    env = dict(os.environ, OMP_NUM_THREADS="2")
    out = subprocess.run([sys.executable, "-c", PROBE, mode, str(T), str(N), str(C), str(H)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    growth = json.loads(out.stdout.strip().splitlines()[-1])
    assert "error" not in growth, growth["error"]
    # Inference needs one packed copy of the recurrent weights; training beyond that its
    # gradients (the weights' size), a packed copy for backward and the merged weight-gradient
    # product. Rows-proportional buffers are small here. The H-fold sizes reserved ~1500x the
    # weights' bytes.
    weight_bytes = GATES[mode] * H * (C + H) * 4
    for phase, times in (("infer", 2), ("train", 5)):
        bound = times * weight_bytes + (32 << 20)
        assert growth[phase] <= bound, (
            f"VmPeak grew by {growth[phase] >> 20} MiB over one {mode} {phase} call at "
            f"H={H}; bound {bound >> 20} MiB (weights: {weight_bytes >> 20} MiB)")


@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_hidden_size_1536_matches_gluon(mode, tmp_path):
    """fusedrnn.LSTM(1536) / GRU(1536) train where gluon.rnn's do, with the same numbers."""
    T, N, C, H = 3, 2, 16, 1536
    gluon_cls, fused_cls = {"lstm": (mx.gluon.rnn.LSTM, fusedrnn.LSTM),
                            "gru": (mx.gluon.rnn.GRU, fusedrnn.GRU)}[mode]
    ref = gluon_cls(H, input_size=C)
    ref.initialize(mx.init.Uniform(1.0 / H ** 0.5))
    path = str(tmp_path / "params")
    ref.save_parameters(path)
    fused = fused_cls(H, input_size=C)
    fused.load_parameters(path)
    rng = np.random.default_rng(0)
    x = mx.nd.array(rng.standard_normal((T, N, C)))
    states = [mx.nd.array(rng.standard_normal(s.shape)) for s in ref.begin_state(batch_size=N)]
    heads = None
    results = []
    for net in (ref, fused):
        xi = x.copy()
        xi.attach_grad()
        with mx.autograd.record():
            out, new_states = net(xi, [s.copy() for s in states])
        if heads is None:
            heads = [mx.nd.array(rng.standard_normal(a.shape)) for a in [out] + new_states]
        mx.autograd.backward([out] + new_states, heads)
        grads = {name[len(net.prefix):]: p.grad().asnumpy()
                 for name, p in net.collect_params().items()}
        results.append(([out.asnumpy()] + [s.asnumpy() for s in new_states] +
                        [xi.grad.asnumpy()], grads))
    (want, want_grads), (got, got_grads) = results
    for name, g, w in zip(["out", "h", "c"][: len(want) - 1] + ["dx"], got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=name)
    assert got_grads.keys() == want_grads.keys()
    for name in want_grads:
        np.testing.assert_allclose(got_grads[name], want_grads[name], rtol=1e-4, atol=1e-5,
                                   err_msg=name)
