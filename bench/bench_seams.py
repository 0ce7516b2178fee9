"""What the gradient seam costs (README, Implementation notes: "Gradients MXNet sums").

Every differentiable input of a fusedrnn operator reaches it through one of MXNet's own
operators (fusedrnn/_op.py: a reshape view under autograd, an identity in a graph, shared by
up to 7 uses of a graph input). This times training steps with that wrapping and, in the same
process, with it switched off (which gives wrong gradients wherever MXNet sums in place, so it
is only a yardstick), and the same model with gluon.rnn for scale, the three timed interleaved,
call by call (bench/_common.py: the timer and the environment, MXNet's default engine unless
--mxnet-engine). Table: python bench/report.py.

    python bench/bench_seams.py [--threads 2] [--repeats 15] [--quick]
                                [--out bench/results/seams.json]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

ARGS = C.arguments(__doc__, repeats=15)
C.enter(ARGS.threads[0], ARGS.mxnet_engine)
import mxnet as mx  # noqa: E402
from mxnet import autograd, gluon  # noqa: E402

import fusedrnn  # noqa: E402
from fusedrnn import _op  # noqa: E402


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


def call(net, seam, x, train):
    def run():
        _op.req_safe = seam
        if train:
            with autograd.record():
                y = net(x)
            y.backward()
        else:
            net(x)
    return run


def main():
    args = ARGS
    wrapped = _op.req_safe

    def unwrapped(F, x):
        return x

    rows = []
    for name, make, shape, train in cases()[:2 if args.quick else None]:
        x = mx.nd.random.normal(shape=shape)
        res = C.timed({"with": call(make(), wrapped, x, train),
                       "without": call(make(), unwrapped, x, train),
                       "gluon": call(make(gluon.rnn), wrapped, x, train)},
                      args.repeats, warmup=3, min_warmup_s=0)
        _op.req_safe = wrapped
        with_ms, without_ms, gluon_ms = (res[k]["median_ms"] for k in ("with", "without",
                                                                         "gluon"))
        rows.append(dict(case=name, with_ms=round(with_ms, 3), without_ms=round(without_ms, 3),
                         overhead=round(with_ms / without_ms - 1, 3),
                         gluon_ms=round(gluon_ms, 3)))
        print(f"{name:55s} with {with_ms:8.2f} ms  without {without_ms:8.2f} ms  "
              f"{rows[-1]['overhead']:+6.1%}  gluon.rnn {gluon_ms:8.2f} ms", flush=True)
    header = C.machine_header("seams", args, "One process, MXNet only (fusedrnn's layers are "
                              "MXNet operators).")
    header["workers"]["mxnet"] = C.process_info()
    C.write(args, "seams", header, rows=rows)


if __name__ == "__main__":
    main()
