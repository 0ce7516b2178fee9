"""Regularised recurrences, fused against stock: training step ms in one run.

Three models, each built with fusedrnn's classes and with stock ones, the same weights,
timed interleaved call by call (bench/_common.py: the timer, the environment, MXNet's default
engine unless --mxnet-engine):

- deepar: GluonTS DeepAR's RNN (gluonts 0.14 mx/model/deepar/_network.py): two
  LSTMCell(40) in ZoneoutCell(zoneout_states=0.1), the second's around a ResidualCell, unrolled
  over 72 steps (its default context + prediction length for hourly data) at batch 32,
  33 input features, a Dense head and an L2 loss, hybridized, Adam. fusedrnn.LSTMCell and
  fusedrnn.ZoneoutCell against gluon.rnn's; also both with dropout 0 (plain cells), the
  speed the zoneout model aims at.
- lm: a GluonNLP-style word LM (AWD-LSTM's regularisation, smaller): Embedding(2000, 200),
  two LSTMCell(200) in VariationalDropoutCell(drop_inputs=0.2, drop_states=0.2,
  drop_outputs=0.2), a tied-size Dense decoder, softmax cross-entropy, 35 steps, batch 32,
  hybridized, SGD. fusedrnn's cells against gluon's contrib VariationalDropoutCell.
- keras: the seed's model (LSTM(128) over one-hot characters, maxlen 40, batch 128,
  RMSprop) with recurrent_dropout=0.2: fusedrnn.keras against stock keras-mxnet. Stock
  cannot train it on MXNet 1.9.1 (unroll=True fails: its masks drawn inside K.rnn have no
  inference symbol; unroll=False computes zeros), so its figure is stock LSTM(128,
  unroll=True) without recurrent dropout: a lower bound of what it would cost.

    python bench/bench_regularisers.py [--threads 2] [--repeats 10] [--quick]
                                       [--out bench/results/regularisers.json]
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
from mxnet.gluon.contrib.rnn import VariationalDropoutCell  # noqa: E402

import fusedrnn  # noqa: E402

DEEPAR = dict(steps=72, batch=32, features=33, hidden=40, zoneout=0.1)
LM = dict(steps=35, batch=32, vocab=2000, embed=200, hidden=200, dropout=0.2)
KERAS = dict(maxlen=40, chars=57, batch=128, units=128, recurrent_dropout=0.2)


class DeepARNet(gluon.HybridBlock):
    def __init__(self, cell, zoneout, hidden, zoneout_rate, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.rnn = gluon.rnn.HybridSequentialRNNCell()
            for k in range(2):
                layer = cell(hidden)
                layer = gluon.rnn.ResidualCell(layer) if k else layer
                self.rnn.add(zoneout(layer, zoneout_states=zoneout_rate) if zoneout_rate
                             else layer)
            self.head = gluon.nn.Dense(1, flatten=False)

    def hybrid_forward(self, F, x):
        out, _ = self.rnn.unroll(DEEPAR["steps"], x, layout="NTC", merge_outputs=True)
        return self.head(out)


class LMNet(gluon.HybridBlock):
    def __init__(self, cell, **kwargs):
        super().__init__(**kwargs)
        p = LM["dropout"]
        with self.name_scope():
            self.embedding = gluon.nn.Embedding(LM["vocab"], LM["embed"])
            self.rnn = gluon.rnn.HybridSequentialRNNCell()
            for k in range(2):
                self.rnn.add(VariationalDropoutCell(cell(LM["hidden"]), p, p, p) if cell is
                             gluon.rnn.LSTMCell else
                             fusedrnn.VariationalDropoutCell(cell(LM["hidden"]), p, p, p))
            self.decoder = gluon.nn.Dense(LM["vocab"], flatten=False)

    def hybrid_forward(self, F, words):
        out, _ = self.rnn.unroll(LM["steps"], self.embedding(words), layout="NTC",
                                 merge_outputs=True)
        return self.decoder(out)


def gluon_step(net, x, y, loss, trainer, batch):
    def train():
        with autograd.record():
            out = loss(net(x), y)
        out.backward()
        trainer.step(batch)
    return train


def share_weights(nets, x):
    """Every net with the first one's weights (same structure, same names order)."""
    for net in nets:
        net.initialize(mx.init.Xavier())
        net.hybridize(static_alloc=True)
        net(x)
    source = list(nets[0].collect_params().values())
    for net in nets[1:]:
        for p, q in zip(source, net.collect_params().values()):
            q.set_data(p.data())


def deepar_calls():
    d = DEEPAR
    rng = np.random.RandomState(C.SEED)
    x = mx.nd.array(rng.randn(d["batch"], d["steps"], d["features"]))
    y = mx.nd.array(rng.randn(d["batch"], d["steps"], 1))
    nets = {"fused": DeepARNet(fusedrnn.LSTMCell, fusedrnn.ZoneoutCell, d["hidden"],
                               d["zoneout"]),
            "stock": DeepARNet(gluon.rnn.LSTMCell, gluon.rnn.ZoneoutCell, d["hidden"],
                               d["zoneout"]),
            "fused_no_zoneout": DeepARNet(fusedrnn.LSTMCell, None, d["hidden"], 0),
            "stock_no_zoneout": DeepARNet(gluon.rnn.LSTMCell, None, d["hidden"], 0)}
    share_weights(list(nets.values()), x)
    # inference (no masks) is the same function of the weights for all four
    outs = {k: n(x).asnumpy() for k, n in nets.items()}
    check = {k: float(np.abs(v - outs["stock"]).max()) for k, v in outs.items()}
    loss = gluon.loss.L2Loss()
    return {k: gluon_step(n, x, y, loss, gluon.Trainer(n.collect_params(), "adam"),
                          d["batch"]) for k, n in nets.items()}, check


def lm_calls():
    d = LM
    rng = np.random.RandomState(C.SEED)
    words = mx.nd.array(rng.randint(0, d["vocab"], (d["batch"], d["steps"])))
    target = mx.nd.array(rng.randint(0, d["vocab"], (d["batch"], d["steps"])))
    nets = {"fused": LMNet(fusedrnn.LSTMCell), "stock": LMNet(gluon.rnn.LSTMCell)}
    share_weights(list(nets.values()), words)
    outs = {k: n(words).asnumpy() for k, n in nets.items()}
    check = {k: float(np.abs(v - outs["stock"]).max()) for k, v in outs.items()}
    loss = gluon.loss.SoftmaxCrossEntropyLoss()
    return {k: gluon_step(n, words, target, loss,
                          gluon.Trainer(n.collect_params(), "sgd", {"learning_rate": 1}),
                          d["batch"]) for k, n in nets.items()}, check


def keras_calls():
    import fusedrnn.keras as fk
    import keras
    d = KERAS
    rng = np.random.RandomState(C.SEED)
    x = np.eye(d["chars"], dtype="float32")[rng.randint(0, d["chars"], (d["batch"],
                                                                         d["maxlen"]))]
    y = np.eye(d["chars"], dtype="float32")[rng.randint(0, d["chars"], d["batch"])]

    def model(layer):
        m = keras.models.Sequential([layer, keras.layers.Dense(d["chars"],
                                                               activation="softmax")])
        m.compile(keras.optimizers.RMSprop(lr=0.01), "categorical_crossentropy")
        return m

    shape = dict(batch_input_shape=(d["batch"], d["maxlen"], d["chars"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # keras-mxnet's deprecation and rescale_grad notes
        # the oracle's weights first: keras-mxnet keeps only the model used last in sync
        stock = model(keras.layers.recurrent.LSTM(d["units"], unroll=True, **shape))
        weights, expect = stock.get_weights(), stock.predict_on_batch(x)
        fused = model(fk.LSTM(d["units"], recurrent_dropout=d["recurrent_dropout"], **shape))
        fused.set_weights(weights)
        check = {"fused": float(np.abs(fused.predict_on_batch(x) - expect).max())}
    return {"fused": lambda: fused.train_on_batch(x, y),
            "stock_without_recurrent_dropout": lambda: stock.train_on_batch(x, y)}, check


def main():
    args = ARGS
    models = {"deepar": (deepar_calls, DEEPAR), "lm": (lm_calls, LM),
              "keras": (keras_calls, KERAS)}
    rows = []
    for name, (make, sizes) in list(models.items())[:1 if args.quick else None]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            calls, check = make()
            res, load = C.quietly(lambda: C.timed(calls, args.repeats, warmup=2))
        fused = res["fused"]["median_ms"]
        rows.append(dict(model=name, sizes=sizes, phase="train", impls=res,
                         background_cores=load, maxdiff_inference_vs_stock=check,
                         ratio_vs_fused={k: v["median_ms"] / fused for k, v in res.items()
                                         if k != "fused" and "median_ms" in v}))
        print(f"{name} train: " + ", ".join(
            f"{k} {v['median_ms']:.1f} ms" if "median_ms" in v else f"{k} ERROR"
            for k, v in res.items()) + f" (bg {load:.1f} cores); inference max|diff| " +
            ", ".join(f"{k} {v:.1e}" for k, v in check.items()), flush=True)
    header = C.machine_header("regularisers", args, "One process, MXNet only (fusedrnn's "
                              "cells and fusedrnn.keras run MXNet operators); implementations "
                              "timed interleaved.")
    header["workers"]["mxnet"] = C.process_info()
    C.write(args, "regularisers", header, rows=rows)


if __name__ == "__main__":
    main()
