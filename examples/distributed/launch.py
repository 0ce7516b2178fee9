#!/usr/bin/env python
"""Runs an MXNet parameter-server job on this machine over 127.0.0.1: one scheduler,
NUM_SERVERS servers and NUM_WORKERS workers, each running COMMAND with the DMLC_* variables
of its role (as mxnet's tools/launch.py does, so `import mxnet` turns the scheduler and server
processes into their roles).

    python launch.py -n 2 -s 1 -- python train.py --kvstore dist_sync

Every process runs in its own process group, its output prefixed with its role. The launcher
watches them: when one exits with an error (a dead worker leaves the others waiting forever
in ps-lite) or the timeout passes, it stops all the others and exits non-zero naming the
culprit; on Ctrl-C or SIGTERM it stops them all too. Exit status: 0 when every process exited
cleanly, 1 when one failed, 124 on timeout, 130 when interrupted.
"""
import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time

POLL_S = 0.05


class Interrupted(Exception):
    pass


def free_port():
    """A TCP port free on 127.0.0.1 now (the scheduler binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _forward(stream, prefix, lock):
    for line in iter(stream.readline, b""):
        with lock:
            sys.stdout.buffer.write(prefix + line)
            sys.stdout.flush()
    stream.close()


class Job:
    def __init__(self, grace):
        self.grace = grace       # seconds from SIGTERM to SIGKILL when stopping processes
        self.procs = []          # (role, Popen)
        self.threads = []
        self.lock = threading.Lock()

    def say(self, message):
        with self.lock:
            print(f"launch.py: {message}", flush=True)

    def start(self, role, command, env):
        # start_new_session: a process group of its own, so that stopping it reaches anything
        # it started, and a Ctrl-C on the terminal reaches only the launcher, which then
        # stops the job in order.
        proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append((role, proc))
        self.say(f"started {role} (pid {proc.pid})")
        thread = threading.Thread(target=_forward, daemon=True,
                                  args=(proc.stdout, f"[{role}] ".encode(), self.lock))
        thread.start()
        self.threads.append(thread)

    def running(self):
        return [(role, p) for role, p in self.procs if p.poll() is None]

    def stop(self):
        """SIGTERM to every process group still running, SIGKILL to those left after the
        grace period; returns once all have exited."""
        alive = self.running()
        self._signal(alive, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for _, proc in alive:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        alive = self.running()
        self._signal(alive, signal.SIGKILL)
        for role, proc in alive:
            proc.wait()
            self.say(f"{role} (pid {proc.pid}) outlived SIGTERM by {self.grace:g} s; killed")
        for thread in self.threads:
            thread.join(timeout=1.0)

    @staticmethod
    def _signal(procs, sig):
        for _, proc in procs:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass    # exited since running() looked

    def watch(self, timeout):
        """0 when all processes exited cleanly, 1 when one failed, 124 on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            for role, proc in self.procs:
                code = proc.poll()
                if code is not None and code != 0:
                    how = (f"was killed by signal {-code}" if code < 0 else
                           f"exited with status {code}")
                    self.say(f"{role} (pid {proc.pid}) {how}; stopping the job")
                    return 1
            alive = self.running()
            if not alive:
                return 0
            if time.monotonic() > deadline:
                self.say(f"timeout after {timeout:g} s; still running: "
                         + ", ".join(role for role, _ in alive) + "; stopping the job")
                return 124
            time.sleep(POLL_S)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("-n", "--num-workers", type=int, required=True, help="worker processes")
    p.add_argument("-s", "--num-servers", type=int, default=1, help="server processes")
    p.add_argument("--port", type=int, default=0,
                   help="the scheduler's port on 127.0.0.1 (0: pick a free one)")
    p.add_argument("--timeout", type=float, default=3600.0,
                   help="stop the whole job after this many seconds")
    p.add_argument("--grace", type=float, default=5.0,
                   help="seconds a stopped process gets between SIGTERM and SIGKILL")
    p.add_argument("command", nargs=argparse.REMAINDER,
                   help="the command every process runs (after '--')")
    args = p.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command:
        p.error("a command to run is required, e.g. -- python train.py --kvstore dist_sync")
    if args.num_workers < 1:
        p.error(f"--num-workers must be at least 1; got {args.num_workers}")
    if args.num_servers < 1:
        p.error(f"--num-servers must be at least 1; got {args.num_servers}")
    if not 0 <= args.port < 65536:
        p.error(f"--port must be in [0, 65535]; got {args.port}")
    if args.timeout <= 0:
        p.error(f"--timeout must be positive; got {args.timeout:g}")
    if args.grace < 0:
        p.error(f"--grace must be non-negative; got {args.grace:g}")
    return args


def _interrupt(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


def main(argv=None):
    args = parse_args(argv)
    port = args.port or free_port()
    base = dict(os.environ, DMLC_PS_ROOT_URI="127.0.0.1", DMLC_PS_ROOT_PORT=str(port),
                DMLC_NUM_SERVER=str(args.num_servers), DMLC_NUM_WORKER=str(args.num_workers),
                DMLC_NODE_HOST="127.0.0.1")
    roles = (["scheduler"] + [f"server {i}" for i in range(args.num_servers)]
             + [f"worker {i}" for i in range(args.num_workers)])
    job = Job(args.grace)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    code = 130
    try:
        for role in roles:
            job.start(role, args.command, dict(base, DMLC_ROLE=role.split()[0]))
        job.say(f"scheduler on 127.0.0.1:{port}, {args.num_servers} server(s), "
                f"{args.num_workers} worker(s)")
        code = job.watch(args.timeout)
    except OSError as e:
        job.say(f"cannot start {role}: {e}")
        code = 1
    except Interrupted as e:
        job.say(f"{e}: stopping the job")
    finally:
        # Signals now would cut the clean-up short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        job.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
