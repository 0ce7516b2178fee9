"""Data-parallel training on MXNet's parameter-server kvstore (examples/distributed): a real
dist_sync job (1 scheduler, 1 server, 2 workers on 127.0.0.1) against one process training
on the combined batches, and the launcher's handling of failures, timeouts and Ctrl-C.

Every child process gets a unique marker (the test's tmp_path) on its command line, so the
tests can check that nothing they started outlives the launcher."""
import importlib.util
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "distributed"
LAUNCH, TRAIN = str(EXAMPLE / "launch.py"), str(EXAMPLE / "train.py")
MXNET_LAUNCH = str(EXAMPLE / "mxnet_launch.py")
# One OpenMP thread per process: four processes share the machine's cores.
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def load_train():
    spec = importlib.util.spec_from_file_location("distributed_train", TRAIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def save_init_params(train, args, seed):
    mx.random.seed(seed)
    net = train.Classifier(args)
    net.initialize(mx.init.Xavier())
    net.save_parameters(args.init_params)


def processes_mentioning(marker):
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


class Launcher:
    """launch.py running in the background, its output read line by line."""

    def __init__(self, args):
        self.proc = subprocess.Popen([sys.executable, LAUNCH] + args, env=ENV,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        self.lines, self._queue = [], queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, pattern, timeout):
        """The first match of `pattern` in the output, waiting at most `timeout` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if line is None:
                break
            self.lines.append(line)
            match = re.search(pattern, line)
            if match:
                return match
        pytest.fail(f"no line matching {pattern!r}; output so far:\n{self.output()}")

    def finish(self, timeout):
        """The exit status; the launcher (and what it started) is killed if it hangs."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            pytest.fail(f"launch.py still running after {timeout} s:\n{self.output()}")
        while (line := self._queue.get(timeout=5)) is not None:
            self.lines.append(line)
        return code

    def output(self):
        return "".join(self.lines)


def train_args(tmp_path, **overrides):
    options = dict(mode="lstm", hidden=12, layers=2, input_size=5, classes=3,
                   num_samples=96, min_len=1, max_len=17, batch_size=8, steps=5, lr=0.5,
                   momentum=0.9, wd=0.01, seed=3, log_interval=1,
                   init_params=str(tmp_path / "init.params"),
                   save_params=str(tmp_path / "rank{rank}.params"))
    options.update(overrides)
    return [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]


def reference_training(train, args, num_workers, path):
    """Saves to `path` what one process, no kvstore: each step runs the workers' batches of that step as one
    combined batch (padded to the longest sequence, lengths given) and applies SGD with
    momentum in NumPy, gradient scaled by 1 / (combined batch size) as dist_sync does."""
    net = train.build_model(args)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    params = list(net.collect_params().values())
    moms = [np.zeros(p.shape, np.float32) for p in params]
    per_worker = [list(train.worker_batches(args, r, num_workers)) for r in range(num_workers)]
    lengths_differ = False
    for step_batches in zip(*per_worker):
        T = max(x.shape[1] for x, _, _ in step_batches)
        lengths_differ |= len({x.shape[1] for x, _, _ in step_batches}) > 1
        x = mx.nd.array(np.concatenate([np.pad(x.asnumpy(), ((0, 0), (0, T - x.shape[1]), (0, 0)))
                                        for x, _, _ in step_batches]))
        lengths = mx.nd.concat(*[l for _, l, _ in step_batches], dim=0)
        labels = mx.nd.concat(*[y for _, _, y in step_batches], dim=0)
        with autograd.record():
            loss = loss_fn(net(x, lengths), labels)
        loss.backward()
        scale = 1.0 / x.shape[0]
        for p, mom in zip(params, moms):
            w, g = p.data().asnumpy(), p.grad().asnumpy()
            # MXNet's sgd_mom_update
            mom[:] = args.momentum * mom - args.lr * (scale * g + args.wd * w)
            p.set_data(w + mom)
    assert lengths_differ, "the workers' batches should pad to different lengths"
    net.save_parameters(str(path))


def load_params(path):
    return {k: v.asnumpy() for k, v in mx.nd.load(str(path)).items()}


def test_dist_sync_matches_one_process_on_the_combined_batches(tmp_path):
    train = load_train()
    argv = train_args(tmp_path)
    args = train.parse_args(argv)
    save_init_params(train, args, seed=7)

    job = Launcher(["-n", "2", "-s", "1", "--timeout", "60", "--", sys.executable, TRAIN,
                    "--kvstore=dist_sync"] + argv)
    code = job.finish(timeout=90)
    assert code == 0, job.output()
    assert "[rank 0/2] done" in job.output() and "[rank 1/2] done" in job.output()
    assert processes_mentioning(str(tmp_path)) == []

    ranks = [load_params(tmp_path / f"rank{r}.params") for r in range(2)]
    assert ranks[0].keys() == ranks[1].keys()
    for name in ranks[0]:
        np.testing.assert_array_equal(ranks[0][name], ranks[1][name], err_msg=name)

    reference_training(train, args, 2, tmp_path / "reference.params")
    expected = load_params(tmp_path / "reference.params")
    start = load_params(args.init_params)
    assert expected.keys() == ranks[0].keys()
    for name, want in expected.items():
        np.testing.assert_allclose(ranks[0][name], want, rtol=1e-5, atol=1e-6, err_msg=name)
        assert np.abs(want - start[name]).max() > 1e-3, f"{name} barely moved"


def test_a_dead_worker_stops_the_job(tmp_path):
    train = load_train()
    args = train.parse_args(train_args(tmp_path))
    save_init_params(train, args, seed=0)

    job = Launcher(["-n", "2", "--timeout", "60", "--", sys.executable, TRAIN,
                    "--kvstore=dist_sync"] + train_args(tmp_path, steps=10**6))
    pid = int(job.wait_for(r"started worker 1 \(pid (\d+)\)", timeout=10).group(1))
    job.wait_for(r"\[worker 1\] \[rank \d/2\] step 2:", timeout=45)
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    assert job.finish(timeout=30) == 1
    assert time.monotonic() - killed < 20
    assert f"worker 1 (pid {pid}) was killed by signal 9; stopping the job" in job.output()
    assert processes_mentioning(str(tmp_path)) == []


def test_mxnet_tools_launch_with_a_hosts_file(tmp_path):
    """The several-machine recipe: mxnet's tools/launch.py (through mxnet_launch.py) with a
    hosts file and the ssh launcher, ssh replaced by a stand-in that runs the remote command
    here, so both "hosts" are this machine."""
    train = load_train()
    argv = train_args(tmp_path)
    save_init_params(train, train.parse_args(argv), seed=1)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "ssh").write_text('#!/bin/sh\nfor last; do :; done\nexec /bin/sh -c "$last"\n')
    (bindir / "ssh").chmod(0o755)
    (tmp_path / "hosts").write_text("127.0.0.1\n127.0.0.1\n")
    env = dict(ENV, PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}")
    try:
        out = subprocess.run([sys.executable, MXNET_LAUNCH, "-n", "2", "-s", "1", "-H",
                              str(tmp_path / "hosts"), "--launcher", "ssh", sys.executable,
                              TRAIN, "--kvstore=dist_sync"] + argv, env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=60,
                             start_new_session=True)
    finally:
        # tools/launch.py does not wait for the server, which exits once the workers are done.
        deadline = time.monotonic() + 15
        while processes_mentioning(str(tmp_path)) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = processes_mentioning(str(tmp_path))
        for pid in left:
            os.kill(pid, signal.SIGKILL)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[rank 0/2] done" in out.stdout and "[rank 1/2] done" in out.stdout, out.stdout
    assert left == []
    ranks = [load_params(tmp_path / f"rank{r}.params") for r in range(2)]
    for name in ranks[0]:
        np.testing.assert_array_equal(ranks[0][name], ranks[1][name], err_msg=name)


SLEEPER = "import time; time.sleep(600)"


def test_a_failing_server_stops_the_job(tmp_path):
    code = ("import os, sys, time\n"
            "if os.environ['DMLC_ROLE'] == 'server': sys.exit(3)\n"
            "time.sleep(600)")
    job = Launcher(["-n", "2", "--", sys.executable, "-c", code, str(tmp_path)])
    assert job.finish(timeout=30) == 1
    assert re.search(r"server 0 \(pid \d+\) exited with status 3; stopping the job",
                     job.output()), job.output()
    assert processes_mentioning(str(tmp_path)) == []


def test_timeout_stops_every_process(tmp_path):
    job = Launcher(["-n", "2", "-s", "2", "--timeout", "1", "--", sys.executable, "-c", SLEEPER,
                    str(tmp_path)])
    assert job.finish(timeout=30) == 124
    assert ("timeout after 1 s; still running: scheduler, server 0, server 1, worker 0, "
            "worker 1; stopping the job") in job.output()
    assert processes_mentioning(str(tmp_path)) == []


def test_a_process_ignoring_sigterm_is_killed(tmp_path):
    code = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); " + SLEEPER
    job = Launcher(["-n", "1", "--timeout", "1", "--grace", "0.5", "--", sys.executable, "-c",
                    code, str(tmp_path)])
    assert job.finish(timeout=30) == 124
    assert re.search(r"worker 0 \(pid \d+\) outlived SIGTERM by 0.5 s; killed", job.output())
    assert processes_mentioning(str(tmp_path)) == []


def test_ctrl_c_stops_every_process(tmp_path):
    job = Launcher(["-n", "2", "--", sys.executable, "-c", SLEEPER, str(tmp_path)])
    job.wait_for(r"scheduler on 127\.0\.0\.1:\d+", timeout=10)
    # The launcher and its 4; on a loaded machine the last ones start a little later.
    deadline = time.monotonic() + 20
    while len(processes_mentioning(str(tmp_path))) < 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(processes_mentioning(str(tmp_path))) == 5
    os.kill(job.proc.pid, signal.SIGINT)
    assert job.finish(timeout=30) == 130
    assert "SIGINT: stopping the job" in job.output()
    assert processes_mentioning(str(tmp_path)) == []


def test_scripts_help_and_bad_arguments(tmp_path):
    for script, option in ((LAUNCH, "--num-workers"), (TRAIN, "--kvstore")):
        out = subprocess.run([sys.executable, script, "--help"], env=ENV, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0 and option in out.stdout, out.stderr
    bad = [([LAUNCH, "-n", "0", "--", "true"], "--num-workers must be at least 1"),
           ([LAUNCH, "-n", "1"], "a command to run is required"),
           ([TRAIN, "--max-len", "2", "--min-len", "3"], "--max-len (2) must be >= --min-len"),
           ([TRAIN, "--num-samples", "10", "--batch-size", "16"],
            "--batch-size 16 exceeds the 10 samples")]
    for argv, message in bad:
        out = subprocess.run([sys.executable] + argv, env=ENV, capture_output=True, text=True,
                             timeout=60)
        assert out.returncode != 0 and message in out.stderr, (argv, out.stderr)
