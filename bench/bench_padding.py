#!/usr/bin/env python
"""What padding costs with fusedrnn's Gluon layers: pre- vs post-padded batches, masks vs
lengths vs plain padding, and an epoch of padded vs bucketed batches.

    python bench/bench_padding.py [--quick] [--threads 2] [--out bench/results/padding.json]

Part 1 (one batch, T=100, N=32, I=128, H=256, 2-layer LSTM and GRU, lengths uniform in
[20, 100]: ~40% padding): fusedrnn computing the padding (no lengths), with sequence_length
(post-padded), with a mask on post-padded and on pre-padded data (Keras' default), and MXNet's
gluon.rnn layer (computes the padding: its CPU op cannot skip it). Training = forward + backward.

Part 2 (one epoch, 2048 sequences with lengths 5-200 from a skewed distribution, batch 32,
2-layer LSTM, training): batches in random order padded to the dataset's longest sequence,
padded to each batch's longest with lengths, and BucketSampler + pad_collate batches with
lengths; real tokens per second and the padding fraction each reached.

The variants of each part are timed interleaved, call by call (bench/_common.py: the timer and
the environment, MXNet's default engine unless --mxnet-engine). Tables: python bench/report.py.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

T, N, I, H, LAYERS = 100, 32, 128, 256, 2


def one_batch(mode, repeats):
    import mxnet as mx
    import numpy as np
    import fusedrnn
    rng = np.random.default_rng(0)
    lengths = rng.integers(T // 5, T + 1, size=N)
    post = np.zeros((T, N, I), np.float32)
    pre = np.zeros_like(post)
    for n, L in enumerate(lengths):
        seq = rng.standard_normal((L, I))
        post[:L, n], pre[T - L:, n] = seq, seq
    t = np.arange(T)[:, None]
    cases = {"padded": (post, {}),
             "post_lengths": (post, {"sequence_length": mx.nd.array(lengths)}),
             "post_mask": (post, {"mask": mx.nd.array(t < lengths)}),
             "pre_mask": (pre, {"mask": mx.nd.array(t >= T - lengths)})}
    fused_cls = {"lstm": fusedrnn.LSTM, "gru": fusedrnn.GRU}[mode]
    gluon_cls = {"lstm": mx.gluon.rnn.LSTM, "gru": mx.gluon.rnn.GRU}[mode]
    nets = {name: fused_cls(H, num_layers=LAYERS, input_size=I) for name in cases}
    nets["mxnet_padded"] = gluon_cls(H, num_layers=LAYERS, input_size=I)
    cases["mxnet_padded"] = cases["padded"]
    for net in nets.values():
        net.initialize(mx.init.Uniform(0.06))
        net.hybridize(static_alloc=True)

    def step(net, data, extra, training):
        x = mx.nd.array(data)
        x.attach_grad()

        def run():
            if training:
                with mx.autograd.record():
                    out = net(x, net.begin_state(N), **extra)[0]
                out.backward()
            else:
                net(x, net.begin_state(N), **extra)
        return run

    rows = []
    for training in (True, False):
        res = C.timed({name: step(nets[name], *cases[name], training) for name in nets},
                      repeats, budget_s=2.0)
        row = {"mode": mode, "phase": "train" if training else "infer",
               "padding_fraction": float(1 - lengths.sum() / (T * N))}
        row.update({name + "_ms": r["median_ms"] for name, r in res.items()})
        rows.append(row)
        print(f"{mode:5s} {row['phase']:5s} " + "  ".join(
            f"{k[:-3]} {v:.2f} ms" for k, v in row.items() if k.endswith("_ms")), flush=True)
    return rows


def epoch(strategy, lengths, data, batch_size):
    """A callable that trains one epoch of `strategy`'s batches, and what it computes."""
    import mxnet as mx
    import numpy as np
    import fusedrnn
    rng = np.random.default_rng(1)
    net = fusedrnn.LSTM(H, num_layers=LAYERS, input_size=I, layout="NTC")
    net.initialize(mx.init.Uniform(0.06))
    net.hybridize()  # not static_alloc: it would plan memory anew for every batch shape
    if strategy == "bucketed":
        sampler = fusedrnn.BucketSampler(lengths, batch_size, seed=0)
    else:
        order = rng.permutation(len(lengths))
        sampler = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    batches = []
    for idx in sampler:
        if strategy == "padded_global":
            x = fusedrnn.pad_sequences([data[i] for i in idx], maxlen=int(lengths.max()),
                                       dtype="float32", padding="post")
            batches.append((mx.nd.array(x), None))
        else:
            x, lens = fusedrnn.pad_collate([data[i] for i in idx])
            batches.append((x, lens))
    padded = sum(b[0].shape[0] * b[0].shape[1] for b in batches)
    real = int(lengths.sum())

    def run():
        for x, lens in batches:
            with mx.autograd.record():
                extra = {} if lens is None else {"sequence_length": lens}
                out = net(x, net.begin_state(x.shape[0]), **extra)[0]
            out.backward()
    return run, {"strategy": strategy, "tokens": real, "padding_fraction": 1 - real / padded,
                 "batches": len(batches)}


def main():
    args = C.arguments(__doc__, repeats=21)
    C.enter(args.threads[0], args.mxnet_engine)
    import numpy as np

    batch_rows = []
    for mode in (["lstm"] if args.quick else ["lstm", "gru"]):
        batch_rows += one_batch(mode, args.repeats)

    rng = np.random.default_rng(2)
    count = 512 if args.quick else 2048
    lengths = np.clip(rng.lognormal(3.5, 0.7, size=count).astype(int), 5, 200)
    data = [rng.standard_normal((L, I)).astype(np.float32) for L in lengths]
    runs, epoch_rows = {}, []
    for strategy in ("padded_global", "padded_batch", "bucketed"):
        runs[strategy], row = epoch(strategy, lengths, data, 32)
        epoch_rows.append(row)
    res = C.timed(runs, 3 if args.quick else 5, warmup=1, min_warmup_s=0, budget_s=30)
    for r in epoch_rows:
        ms = res[r["strategy"]]["median_ms"]
        r.update(epoch_ms=ms, tokens_per_s=r.pop("tokens") / ms * 1e3)
        print(f"epoch {r['strategy']:14s} {ms:9.1f} ms  {r['tokens_per_s']:9.0f} "
              f"tokens/s  padding {100 * r['padding_fraction']:.0f}%", flush=True)

    header = C.machine_header(
        "padding", args, "One process, MXNet only (fusedrnn's layers are MXNet operators).",
        batch_shape={"T": T, "N": N, "I": I, "H": H, "layers": LAYERS},
        epoch={"sequences": count, "length_min_max": [int(lengths.min()), int(lengths.max())]})
    header["workers"]["mxnet"] = C.process_info()
    C.write(args, "padding", header, batch=batch_rows, epoch=epoch_rows)


if __name__ == "__main__":
    main()
