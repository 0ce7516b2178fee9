"""Client libraries on fusedrnn: GluonNLP language-model training steps and a GluonTS DeepAR
predict call, with stock mxnet.gluon.rnn and with fusedrnn's classes swapped in, ms per call.

Nothing in a client is changed but the classes it finds in mxnet.gluon.rnn: the fused worker
sets mxnet.gluon.rnn.LSTM/GRU/RNN/LSTMCell/GRUCell/RNNCell/ZoneoutCell and
mxnet.gluon.contrib.rnn.VariationalDropoutCell to fusedrnn's before any model is built, and
also the names that gluonts.mx.model.deepar._network imported directly (GluonNLP's model code
looks them up through the module, `rnn.LSTM`, at build time).

- gluonnlp (0.10.0): one training step of its word-LM script
  (scripts/language_model/word_language_model.py) on gluonnlp.model.train.StandardRNN with
  standard_lstm_lm_200's settings and gluonnlp.model.train.AWDRNN with awd_lstm_lm_600's
  (weight drop on the LSTM h2h weights, embedding and activation dropouts), untrained, with a
  made-up vocabulary of VOCAB words and a corpus drawn from it batchified by
  CorpusBPTTBatchify: hidden state carried and detached, forward, softmax cross-entropy (plus
  AR/TAR activation regularisation on AWDRNN), backward, clip_global_norm(0.25), SGD
  trainer.step; hybridized (static_alloc, as the script does) and imperative.
- gluonts (0.14.4): DeepAREstimator in its default configuration (2 x LSTMCell(40),
  ZoneoutCell(0.1), residual; daily data, prediction_length 14) trained briefly on a synthetic
  data set made here (the training is not timed), serialized, and deserialized by both workers;
  timed: one `list(predictor.predict(dataset))` (num_samples 100) over SERIES series, and one
  step of GluonTS's training loop (batch 32, Adam) on the training network.

Both variants start from the same weights (the stock worker saves them, the fused one loads
them) and must agree before they are timed (bench/_common.py's TOLERANCE): on the first step,
in predict mode (no dropout), the loss, the global gradient norm, the recurrent parameters'
gradients and (LM) the last LSTM's output; DeepAR's forecast samples under the same random
seed. The fused worker must also hold fusedrnn's classes, the stock one none. A row that
fails either is not timed.

Processes: one worker per variant, each importing MXNet, GluonNLP and GluonTS (and fusedrnn
in the fused one only), in bench/_common.py's environment, MXNet's default engine. The parent
asks the workers in turn for CHUNKS chunks of timed calls each, so that a shared machine's
drift hits both; each chunk starts with a warm-up call (and at least 0.2 s of them, which
outlasts the other worker's spinning threads; bench/_common.py: timed), and each round of
chunks with a short wait for other processes' load to pass (the load seen is recorded per
row either way).

Needs, besides fusedrnn (pip install . in the repository):

    pip install 'mxnet==1.9.1' 'numpy<1.24' 'scipy<1.10' 'pandas<2.2' threadpoolctl \
        'gluonts[mxnet]==0.14.4' Cython wheel
    pip install --no-build-isolation 'gluonnlp==0.10.0'   # an sdist with a Cython extension

A client that does not import is left out with a message; the other is still measured.

    python bench/bench_clients.py [--threads 2] [--repeats 10] [--quick]
                                  [--out bench/results/clients.json]
"""
import collections
import importlib
import importlib.metadata
import logging
import os
import sys
import tempfile
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

VOCAB = 5000
LM = dict(batch=20, bptt=35, clip=0.25, alpha=2.0, beta=1.0,  # the script's defaults
          lr={"standard_lstm_lm_200": 20.0, "awd_lstm_lm_600": 30.0}, wd=1.2e-6)
DEEPAR = dict(freq="D", prediction_length=14, length=400, num_samples=100, train_batches=5)
SERIES = 64
CHUNKS = 5
PLAN = [  # (client, model, phase); --quick keeps the first of each client
    ("gluonnlp", "standard_lstm_lm_200", "train_hybridized"),
    ("gluonnlp", "standard_lstm_lm_200", "train_imperative"),
    ("gluonnlp", "awd_lstm_lm_600", "train_hybridized"),
    ("gluonnlp", "awd_lstm_lm_600", "train_imperative"),
    ("gluonts", "deepar", "predict"),
    ("gluonts", "deepar", "train"),
]
VARIANTS = ("stock", "fusedrnn")
FAIRNESS = ("One worker process per variant (stock gluon.rnn; fusedrnn's classes swapped "
            "into mxnet.gluon.rnn before the models are built), the same weights; the workers "
            "take turns, chunk by chunk.")


# --------------------------------------------------------------------------- worker side
GLUON_RNN = ("LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell", "ZoneoutCell")
SWAPPED = GLUON_RNN + ("VariationalDropoutCell",)  # that one lives in gluon.contrib.rnn


def swap_in_fusedrnn():
    import mxnet.gluon.contrib.rnn as crnn
    import mxnet.gluon.rnn as grnn

    import fusedrnn
    for name in GLUON_RNN:
        setattr(grnn, name, getattr(fusedrnn, name))
    crnn.VariationalDropoutCell = fusedrnn.VariationalDropoutCell
    deepar = sys.modules.get("gluonts.mx.model.deepar._network")
    if deepar is not None:
        deepar.ZoneoutCell = fusedrnn.ZoneoutCell
        deepar.VariationalDropoutCell = fusedrnn.VariationalDropoutCell


def recurrent_classes(block):
    """module.class of each block of a swapped class in a network: proof of which ran."""
    found, todo = set(), [block]
    while todo:
        b = todo.pop()
        todo.extend(b._children.values())
        if type(b).__name__ in SWAPPED:
            found.add(f"{type(b).__module__}.{type(b).__name__}")
    return sorted(found)


def seed(value=C.SEED):
    import random

    import mxnet as mx
    import numpy as np
    random.seed(value)
    np.random.seed(value)
    mx.random.seed(value)


def checks(net, grads):
    """The global gradient norm, and the recurrent parameters' gradients (the loss alone can
    hide them: an untrained LM's is ~log(vocabulary) whatever its LSTM computes)."""
    import mxnet as mx
    import numpy as np
    norm = float(mx.nd.sqrt(sum((g * g).sum() for g in grads)).asscalar())
    recurrent = [p.grad().asnumpy().ravel() for name, p in net.collect_params().items()
                 if "2h_" in name and p.grad_req != "null"]
    return {"grad_norm": norm, "rnn_grads": np.concatenate(recurrent)}


def detach(hidden):
    if isinstance(hidden, (list, tuple)):
        return [detach(h) for h in hidden]
    return hidden.detach()


def lm_batches(n=1):
    """n (data, target) batches of shape (bptt, batch) from a Zipf-distributed corpus over a
    made-up vocabulary, through GluonNLP's own Vocab and CorpusBPTTBatchify."""
    import gluonnlp as nlp
    import numpy as np
    from mxnet.gluon.data import SimpleDataset
    rng = np.random.RandomState(C.SEED)
    words = [f"w{k}" for k in np.minimum(rng.zipf(1.2, LM["bptt"] * LM["batch"] * (n + 1)),
                                         VOCAB) - 1]
    counter = collections.Counter({f"w{k}": 1 for k in range(VOCAB - 2)})
    counter.update(words)
    vocab = nlp.Vocab(counter, max_size=VOCAB - 2, padding_token=None, bos_token=None)
    corpus = SimpleDataset(words)
    batches = nlp.data.batchify.CorpusBPTTBatchify(vocab, LM["bptt"], LM["batch"],
                                                   last_batch="discard")(corpus)
    return len(vocab), [batches[k] for k in range(n)]


def lm_case(model, phase, params, save):
    """The word-LM script's training step on `model`; (step, check values)."""
    import gluonnlp as nlp
    import mxnet as mx
    from gluonnlp.model import language_model as zoo
    from mxnet import autograd, gluon

    vocab_size, [(data, target)] = lm_batches()
    hparams = getattr(zoo, model + "_hparams")
    cls = nlp.model.train.AWDRNN if "awd" in model else nlp.model.train.StandardRNN
    net = cls(vocab_size=vocab_size, **hparams)
    if save:
        seed()
        net.initialize(mx.init.Xavier())
    else:
        net.load_parameters(params)
    if phase == "train_hybridized":
        net.hybridize(static_alloc=True)
    ce = gluon.loss.SoftmaxCrossEntropyLoss()
    ar = nlp.loss.ActivationRegularizationLoss(LM["alpha"])
    tar = nlp.loss.TemporalActivationRegularizationLoss(LM["beta"])
    params_all = net.collect_params()
    trainer = gluon.Trainer(params_all, "sgd", {"learning_rate": LM["lr"][model],
                                                "momentum": 0, "wd": LM["wd"]})
    state = {"hidden": net.begin_state(batch_size=LM["batch"], func=mx.nd.zeros)}

    def forward_backward(train_mode):
        hidden = detach(state["hidden"])
        with autograd.record(train_mode=train_mode):
            out, hidden, raw, dropped = net(data, hidden)
            state["hidden_output"] = raw[-1]
            loss = ce(out.reshape(-3, -1), target.reshape(-1))
            if dropped:  # AWDRNN's; StandardRNN returns no dropped activations
                loss = loss + ar(*dropped) + tar(*raw)
            loss = loss / data.size
        loss.backward()
        state["hidden"] = hidden
        return loss, [p.grad() for p in params_all.values() if p.grad_req != "null"]

    # the check: same weights, zero state, no dropout
    loss, grads = forward_backward(train_mode=False)
    check = dict(checks(net, grads), loss=float(loss.sum().asscalar()),
                 rnn_output=state["hidden_output"].asnumpy())
    if save:
        net.save_parameters(params)
    state["hidden"] = net.begin_state(batch_size=LM["batch"], func=mx.nd.zeros)

    def step():
        _, grads = forward_backward(train_mode=True)
        gluon.utils.clip_global_norm(grads, LM["clip"])
        trainer.step(1)

    return step, check, recurrent_classes(net)


def deepar_data(num_series, seed_value=C.SEED):
    """Daily series: level, trend, weekly and yearly seasonality, heavy-tailed noise."""
    import numpy as np
    import pandas as pd
    from gluonts.dataset.common import ListDataset
    rng = np.random.RandomState(seed_value)
    t = np.arange(DEEPAR["length"])
    series = []
    for i in range(num_series):
        level = rng.uniform(20, 200)
        y = level * (1 + rng.uniform(-1e-3, 2e-3) * t
                     + rng.uniform(0.05, 0.3) * np.sin(2 * np.pi * t / 7 + rng.uniform(0, 7))
                     + rng.uniform(0.0, 0.2) * np.sin(2 * np.pi * t / 365.25)
                     + 0.05 * rng.standard_t(5, size=t.size))
        series.append({"start": pd.Period("2019-01-01", freq=DEEPAR["freq"])
                       + int(rng.randint(0, 30)),
                       "target": np.maximum(y, 0).astype("float32"), "item_id": str(i)})
    return ListDataset(series, freq=DEEPAR["freq"])


def deepar_estimator():
    from gluonts.mx import DeepAREstimator, Trainer
    return DeepAREstimator(freq=DEEPAR["freq"], prediction_length=DEEPAR["prediction_length"],
                           trainer=Trainer(epochs=1, num_batches_per_epoch=DEEPAR[
                               "train_batches"]))


def deepar_predict_case(series, shared, save):
    """The stock worker trains and serializes a predictor; both time the deserialized one."""
    from pathlib import Path

    import numpy as np
    from gluonts.model.predictor import Predictor
    path = Path(shared, "deepar")
    data = deepar_data(series)
    if save:
        seed()
        path.mkdir()
        deepar_estimator().train(data).serialize(path)
    predictor = Predictor.deserialize(path)

    def call():
        return list(predictor.predict(data, num_samples=DEEPAR["num_samples"]))

    seed(C.SEED + 1)
    samples = np.stack([f.samples for f in call()])
    return call, {"samples": samples}, recurrent_classes(predictor.prediction_net)


def deepar_train_case(shared, save):
    """One iteration of GluonTS's training loop (gluonts/mx/trainer/_base.py) on one batch."""
    import mxnet as mx
    from mxnet import autograd
    est = deepar_estimator()
    seed()
    data = est.create_transformation().apply(deepar_data(SERIES), is_train=True)
    batch = list(next(iter(est.create_training_data_loader(data))).values())
    net = est.create_training_network()
    params = os.path.join(shared, "deepar_train.params")
    if save:
        net.initialize(mx.init.Xavier())
        net(*batch)
        net.save_parameters(params)
    else:
        net.load_parameters(params)
    net.hybridize(static_alloc=True, static_shape=True)
    t = est.trainer
    trainer = mx.gluon.Trainer(net.collect_params(), optimizer=mx.optimizer.Adam(
        learning_rate=t.learning_rate, wd=t.weight_decay, clip_gradient=t.clip_gradient),
        kvstore="device")

    def forward_backward(mode):
        with autograd.record(), mode():
            loss = net(*batch)[0]
        loss.backward()
        return loss

    loss = forward_backward(autograd.predict_mode)
    grads = [p.grad() for p in net.collect_params().values() if p.grad_req != "null"]
    check = dict(checks(net, grads), loss=float(loss.mean().asscalar()))

    def step():
        loss = forward_backward(autograd.train_mode)
        trainer.step(loss.shape[0])

    return step, check, recurrent_classes(net)


def serve_worker(args):
    import numpy as np
    n = args.threads[0]
    warnings.simplefilter("ignore")  # clients' deprecation notes; errors still surface
    import mxnet  # noqa: F401
    clients = {}
    for client in ("gluonnlp", "gluonts"):
        try:
            clients[client] = importlib.import_module(client).__version__
            if client == "gluonts":
                importlib.import_module("gluonts.mx.model.deepar._network")
        except Exception as e:  # noqa: BLE001 - reported, the other client still runs
            clients[client] = f"not importable: {type(e).__name__}: {e}"
    if args.worker == "fusedrnn":
        swap_in_fusedrnn()
    C.set_threads(n)
    logging.getLogger("gluonts").setLevel(logging.WARNING)
    built = {}

    def handle(req):
        if req["op"] == "info":
            return dict(C.process_info(), clients=clients)
        key = tuple(req["row"])
        client, model, phase = key
        if req["op"] == "build":
            save, shared = args.worker == "stock", req["shared"]
            if client == "gluonnlp":
                params = os.path.join(shared, model + ".params")
                call, check, classes = lm_case(model, phase, params, save)
            elif phase == "predict":
                call, check, classes = deepar_predict_case(req["series"], shared, save)
            else:
                call, check, classes = deepar_train_case(shared, save)
            built[key] = call
            arrays = {k: v for k, v in check.items() if isinstance(v, np.ndarray)}
            for k, v in arrays.items():
                np.save(os.path.join(shared, f"{args.worker}-{k}.npy"), v)
            return {"check": {k: v for k, v in check.items() if k not in arrays},
                    "arrays": sorted(arrays), "classes": classes}
        if req["op"] == "time":
            res, load = C.quietly(lambda: C.timed({"call": built[key]}, **req["timing"]),
                                  quiet_s=req["quiet_s"], attempts=1)
            return {"samples_ms": res["call"].get("samples_ms"),
                    "error": res["call"].get("error"), "background_cores": load}
        if req["op"] == "drop":
            del built[key]
            return {}
        raise ValueError(req["op"])

    C.serve(handle)


# --------------------------------------------------------------------------- parent side
def agreement(parts, shared):
    """The largest scaled difference between the variants' check values."""
    import numpy as np
    s, f = parts["stock"], parts["fusedrnn"]
    worst = {}
    for k, v in s["check"].items():
        worst[k] = abs(f["check"][k] - v) / max(1.0, abs(v))
    for k in s["arrays"]:
        a = np.load(os.path.join(shared, f"stock-{k}.npy"))
        b = np.load(os.path.join(shared, f"fusedrnn-{k}.npy"))
        worst[k] = float(np.abs(a - b).max()) / max(1.0, float(np.abs(a).max()))
    return worst


def measure(args, workers, row, shared, timing, quiet_s):
    client, model, phase = row
    out = {"client": client, "model": model, "phase": phase, "threads": args.threads[0],
           "impls": {}, "background_cores": 0.0}
    if client == "gluonts" and phase == "predict":
        out.update(series=args.series, num_samples=DEEPAR["num_samples"])
    parts = {}
    for name in VARIANTS:  # stock first: it saves the weights the fused worker loads
        try:
            parts[name] = workers[name](op="build", row=row, shared=shared, series=args.series)
        except RuntimeError as e:  # a client that fails to build must not stop the others
            out["impls"] = {k: {"error": str(e)[-1500:]} for k in VARIANTS}
            print(f"{client} {model} {phase}: NOT TIMED, {name} failed: {e}", flush=True)
            return out
    out["classes"] = {k: p["classes"] for k, p in parts.items()}
    out["check"] = {k: p["check"] for k, p in parts.items()}
    out["maxdiff"] = agreement(parts, shared)
    bad = {k: v for k, v in out["maxdiff"].items() if not v <= C.TOLERANCE}
    swapped = all("fusedrnn" in c for c in parts["fusedrnn"]["classes"]) and all(
        "fusedrnn" not in c for c in parts["stock"]["classes"])
    if bad or not swapped:
        why = (f"variants differ: {bad}" if bad else
               f"recurrent classes not as expected: {out['classes']}")
        out["impls"] = {k: {"error": why} for k in VARIANTS}
        print(f"{client} {model} {phase}: NOT TIMED, {why}", flush=True)
    else:
        samples = {k: [] for k in VARIANTS}
        for _ in range(CHUNKS):
            for k, name in enumerate(VARIANTS):
                r = workers[name](op="time", row=row, timing=timing,
                                  quiet_s=0.0 if k else quiet_s)
                if r["error"]:
                    out["impls"][name] = {"error": r["error"]}
                samples[name] += r["samples_ms"] or []
                out["background_cores"] = max(out["background_cores"], r["background_cores"])
        for name in VARIANTS:
            if name not in out["impls"]:
                out["impls"][name] = C.stats(samples[name])
        i = out["impls"]
        if all("median_ms" in i[k] for k in VARIANTS):
            out["speedup"] = i["stock"]["median_ms"] / i["fusedrnn"]["median_ms"]
        print(f"{client} {model} {phase}: " + ", ".join(
            f"{k} {v['median_ms']:.1f} ms" if "median_ms" in v else f"{k} ERROR {v['error']}"
            for k, v in i.items()) + f"; max diff {max(out['maxdiff'].values()):.1e} "
            f"(bg {out['background_cores']:.1f} cores)", flush=True)
    for w in workers.values():
        w(op="drop", row=row)
    return out


def main():
    def extra(ap):
        ap.add_argument("--series", type=int, default=SERIES,
                        help="DeepAR series per predict call")
    args = C.arguments(__doc__, repeats=10, extra=extra)
    if args.worker:
        return serve_worker(args)
    n = args.threads[0]
    if args.quick:
        args.repeats = 4 if args.repeats == 10 else args.repeats
        args.series = 8 if args.series == SERIES else args.series
    timing = {"repeats": max(1, args.repeats // CHUNKS), "warmup": 1, "budget_s": 20.0}
    quiet_s = 1.0 if args.quick else 3.0
    versions = {}
    for pkg in ("gluonnlp", "gluonts", "pandas"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    header = C.machine_header("clients", args, FAIRNESS, client_versions=versions,
                              lm=dict(LM, vocab=VOCAB), deepar=DEEPAR, chunks=CHUNKS)
    C.wait_for_quiet(quiet_s)
    workers = {k: C.Worker(k, n, args.mxnet_engine) for k in VARIANTS}
    rows = []
    try:
        for k, w in workers.items():
            header["workers"][f"{k}:{n}"] = w(op="info")
        clients = header["workers"][f"stock:{n}"]["clients"]
        plan = PLAN
        if args.quick:
            plan = [r for k, r in enumerate(PLAN) if k == 0 or PLAN[k - 1][0] != r[0]]
        for client in sorted({r[0] for r in plan}):
            if clients[client].startswith("not importable"):
                print(f"{client}: skipped, {clients[client]}", file=sys.stderr, flush=True)
        for row in plan:
            if clients[row[0]].startswith("not importable"):
                continue
            with tempfile.TemporaryDirectory() as shared:
                rows.append(measure(args, workers, row, shared, timing, quiet_s))
    finally:
        for w in workers.values():
            w.close()
    C.write(args, "clients", header, rows=rows)


if __name__ == "__main__":
    main()
