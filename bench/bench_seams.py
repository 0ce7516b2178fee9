"""What the gradient seam costs (README, Implementation notes: "Gradients MXNet sums").

Every differentiable input of a fusedrnn operator reaches it through one of MXNet's own
operators (fusedrnn/_op.py: a reshape view under autograd, an identity in a graph, shared by
up to 7 uses of a graph input). This times training steps with that wrapping and, in the same
process, with it switched off (which gives wrong gradients wherever MXNet sums in place, so it
is only a yardstick), and the same model with gluon.rnn for scale: median of repeats after
warm-up, mx.nd.waitall() before each clock read.

    python bench/bench_seams.py [--threads 2] [--repeats 15] [--out bench/results/seams.json]
"""
import argparse
import json
import os
import platform
import statistics
import time

import mxnet as mx
from mxnet import autograd, gluon

import fusedrnn
from fusedrnn import _op


class Stepper(gluon.HybridBlock):
    """A cell stepped T times in one graph (GluonTS DeepAR, ZoneoutCell, decoders)."""

    def __init__(self, hidden, steps, rnn=fusedrnn, **kwargs):
        super().__init__(**kwargs)
        self.steps = steps
        with self.name_scope():
            self.cell = rnn.LSTMCell(hidden, input_size=hidden)

    def hybrid_forward(self, F, x):
        states = self.cell.begin_state(batch_size=0, func=F.zeros)
        outs = []
        for t in range(self.steps):
            out, states = self.cell(F.squeeze(F.slice_axis(x, axis=1, begin=t, end=t + 1),
                                              axis=1), states)
            outs.append(out)
        return F.stack(*outs, axis=1)


def cases():
    """(name, block factory, input shape, train?)"""
    def layer(hybridize):
        def make(rnn=fusedrnn):
            net = rnn.LSTM(128, input_size=64)
            net.initialize()
            if hybridize:
                net.hybridize(static_alloc=True, static_shape=True)
            return net
        return make

    def stepper(hidden, steps):
        def make(rnn=fusedrnn):
            net = Stepper(hidden, steps, rnn)
            net.initialize()
            net.hybridize(static_alloc=True, static_shape=True)
            return net
        return make

    return [("LSTM layer 50,64,64,128 train, imperative", layer(False), (50, 64, 64), True),
            ("LSTM layer 50,64,64,128 train, static graph", layer(True), (50, 64, 64), True),
            ("LSTM layer 50,64,64,128 inference, static graph", layer(True), (50, 64, 64),
             False),
            ("LSTMCell(40) stepped 24x, N=32, train, static graph", stepper(40, 24),
             (32, 24, 40), True),
            ("LSTMCell(256) stepped 35x, N=32, train, static graph", stepper(256, 35),
             (32, 35, 256), True)]


def timed(variants, x, train, repeats):
    """Median ms per call of each (net, req_safe) variant, interleaved call by call so that
    a shared machine's drift hits all of them alike."""
    def call(net, seam):
        _op.req_safe = seam
        if train:
            with autograd.record():
                y = net(x)
            y.backward()
        else:
            net(x)
        mx.nd.waitall()
    times = [[] for _ in variants]
    for i in range(3 + repeats):
        for variant, record in zip(variants, times):
            start = time.perf_counter()
            call(*variant)
            if i >= 3:
                record.append(time.perf_counter() - start)
    return [statistics.median(record) * 1e3 for record in times]


def cpu_model():
    with open("/proc/cpuinfo") as f:
        return next((line.split(":", 1)[1].strip() for line in f
                     if line.startswith("model name")), platform.machine())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    fusedrnn.kernels.set_num_threads(args.threads)
    wrapped = _op.req_safe

    def unwrapped(F, x):
        return x

    rows = []
    for name, make, shape, train in cases():
        x = mx.nd.random.normal(shape=shape)
        with_ms, without_ms, gluon_ms = timed(
            [(make(), wrapped), (make(), unwrapped), (make(gluon.rnn), wrapped)],
            x, train, args.repeats)
        _op.req_safe = wrapped
        rows.append(dict(case=name, with_ms=round(with_ms, 3), without_ms=round(without_ms, 3),
                         overhead=round(with_ms / without_ms - 1, 3),
                         gluon_ms=round(gluon_ms, 3)))
        print(f"{name:55s} with {with_ms:8.2f} ms  without {without_ms:8.2f} ms  "
              f"{rows[-1]['overhead']:+6.1%}  gluon.rnn {gluon_ms:8.2f} ms", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(machine=dict(cpu=cpu_model(), cpus=os.cpu_count(),
                                        load=os.getloadavg(), python=platform.python_version()),
                           threads=args.threads, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
