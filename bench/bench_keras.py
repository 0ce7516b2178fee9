"""Keras on fused ops (fusedrnn.keras) against stock keras-mxnet 2.2.4.3: ms per batch.

Two models, each trained (train_on_batch, RMSprop) and run (predict_on_batch) on one fixed
batch: the seed's (../shared/seed/using_rnn_with_mxnet_backend.md: one-hot characters, maxlen
40, 57 characters, batch 128, LSTM(128), Dense softmax) and the demo's scale (the same with
2 x LSTM(256)). Each is built four ways in one process (MXNet only; bench/_common.py: the
timer, the environment, MXNet's default engine unless --mxnet-engine) and timed interleaved,
call by call:

- fused: fusedrnn.keras.LSTM;
- stock_unroll: keras.layers.LSTM(unroll=True), the only stock path that computes (the oracle
  of tests/test_keras.py); the fused model starts from its weights and must predict the same;
- stock_foreach: keras.layers.LSTM(unroll=False), stock's default, for reference only: with
  MXNet 1.9.1 it outputs zeros;
- gluon: the same network on fusedrnn's Gluon layer (hybridized, gluon.Trainer RMSprop), what
  the fused operator costs without Keras around it.

Each row also has the LSTM layers' GEMM FLOPs (bench/_common.py: flops) and the rate the fused
model reaches on them, and the header an sgemm peak, to tell what limits a figure.

The Keras models use Keras 2.2.4's default gates (hard_sigmoid), as the seed's model does; the
Gluon layer has sigmoid gates (gluon's only kind), at the same cost in the kernels. Stock
keras-mxnet stacks RNN layers only with a fixed batch size, so every model has one.

    python bench/bench_keras.py [--threads 2] [--repeats 10] [--quick]
                                [--out bench/results/keras.json]
"""
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

ARGS = C.arguments(__doc__, repeats=10)
C.enter(ARGS.threads[0], ARGS.mxnet_engine)
import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402
from mxnet import autograd, gluon  # noqa: E402

import fusedrnn  # noqa: E402
import fusedrnn.keras as fk  # noqa: E402
import keras  # noqa: E402

MAXLEN, CHARS, BATCH = 40, 57, 128
MODELS = {"seed": [128], "demo": [256, 256]}  # LSTM sizes, stacked
IMPLS = ("fused", "stock_unroll", "stock_foreach", "gluon")


def keras_model(impl, sizes):
    layers = []
    for k, units in enumerate(sizes):
        kwargs = dict(return_sequences=k < len(sizes) - 1)
        if k == 0:
            kwargs["batch_input_shape"] = (BATCH, MAXLEN, CHARS)
        if impl == "fused":
            layers.append(fk.LSTM(units, **kwargs))
        else:
            layers.append(keras.layers.recurrent.LSTM(units, unroll=impl == "stock_unroll",
                                                      **kwargs))
    layers.append(keras.layers.Dense(CHARS, activation="softmax"))
    model = keras.models.Sequential(layers)
    model.compile(keras.optimizers.RMSprop(lr=0.01), "categorical_crossentropy")
    return model


class GluonModel(gluon.HybridBlock):
    def __init__(self, sizes, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.rnns = [fusedrnn.LSTM(units, input_size=inputs, layout="NTC")
                         for inputs, units in zip([CHARS] + sizes[:-1], sizes)]
            for rnn in self.rnns:
                self.register_child(rnn)
            self.output = gluon.nn.Dense(CHARS, in_units=sizes[-1])

    def hybrid_forward(self, F, x):
        for rnn in self.rnns:
            x = rnn(x)
        return self.output(F.squeeze(F.slice_axis(x, axis=1, begin=-1, end=None), axis=1))


def gluon_calls(sizes, x, y):
    net = GluonModel(sizes)
    net.initialize()
    net.hybridize(static_alloc=True, static_shape=True)
    trainer = gluon.Trainer(net.collect_params(), "rmsprop", {"learning_rate": 0.01})
    loss = gluon.loss.SoftmaxCrossEntropyLoss(sparse_label=False)
    x, y = mx.nd.array(x), mx.nd.array(y)

    def train():
        with autograd.record():
            out = loss(net(x), y)
        out.backward()
        trainer.step(BATCH)

    return {"train": train, "predict": lambda: net(x)}


def main():
    args = ARGS
    rng = np.random.RandomState(C.SEED)
    x = np.eye(CHARS, dtype="float32")[rng.randint(0, CHARS, (BATCH, MAXLEN))]
    y = np.eye(CHARS, dtype="float32")[rng.randint(0, CHARS, BATCH)]
    rows = []
    for name, sizes in list(MODELS.items())[:1 if args.quick else None]:
        calls, checks = {}, {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # keras-mxnet's deprecation and rescale_grad notes
            # The oracle's weights and outputs first: keras-mxnet keeps only the model used
            # last in sync with its weights.
            stock = keras_model("stock_unroll", sizes)
            weights, expect = stock.get_weights(), stock.predict_on_batch(x)
            for impl in IMPLS:
                if impl == "gluon":
                    calls[impl] = gluon_calls(sizes, x, y)
                    continue
                model = stock if impl == "stock_unroll" else keras_model(impl, sizes)
                model.set_weights(weights)
                out = model.predict_on_batch(x)
                checks[impl] = float(np.abs(out - expect).max())
                calls[impl] = {"train": lambda m=model: m.train_on_batch(x, y),
                               "predict": lambda m=model: m.predict_on_batch(x)}
            for phase in ("train", "predict"):
                res, load = C.quietly(lambda: C.timed({k: c[phase] for k, c in calls.items()},
                                                      args.repeats, warmup=2))
                fused = res["fused"]["median_ms"]
                gflop = sum(C.flops("lstm", BATCH * MAXLEN, inputs, units, phase == "train")
                            for inputs, units in zip([CHARS] + sizes[:-1], sizes)) / 1e9
                rows.append(dict(model=name, lstm_sizes=sizes, maxlen=MAXLEN, chars=CHARS,
                                 batch=BATCH, phase=phase, impls=res, background_cores=load,
                                 lstm_gflop=gflop, fused_lstm_gflops=gflop / (fused * 1e-3),
                                 maxdiff_vs_stock_unroll=checks,
                                 ratio_vs_fused={k: v["median_ms"] / fused
                                                 for k, v in res.items()
                                                 if k != "fused" and "median_ms" in v}))
                print(f"{name} {sizes} {phase}: " + ", ".join(
                    f"{k} {v['median_ms']:.1f} ms" if "median_ms" in v else f"{k} ERROR"
                    for k, v in res.items()) + f" (fused: LSTM GEMMs at "
                    f"{rows[-1]['fused_lstm_gflops']:.0f} GFLOP/s; bg {load:.1f} cores)",
                    flush=True)
        print(f"{name}: |predict - stock_unroll| max " +
              ", ".join(f"{k} {v:.1e}" for k, v in checks.items()), flush=True)
    header = C.machine_header("keras", args, "One process, MXNet only (fusedrnn.keras and "
                              "fusedrnn's Gluon layers run MXNet operators); implementations "
                              "timed interleaved.",
                              keras=keras.__version__)
    header["workers"]["mxnet"] = C.process_info()
    # What the LSTM GEMMs could reach: the gap to it is the kernels', not Keras'.
    peak = C.sgemm_peak(args.threads[0])
    header["workers"][f"sgemm:{args.threads[0]}"] = {"sgemm_peak_gflops": peak}
    print("sgemm peak GFLOP/s:", {k: round(v) for k, v in peak.items()})
    C.write(args, "keras", header, rows=rows)


if __name__ == "__main__":
    main()
