#!/usr/bin/env python
"""Data-parallel training of a fusedrnn sequence classifier with gluon.Trainer and an MXNet
kvstore: `local` / `device` in one process, or `dist_sync` / `dist_async` across processes
(started by launch.py next to this file, or by mxnet's tools/launch.py on several machines).

The data are synthetic variable-length sequences: sample i is drawn from a generator seeded
with (seed, i), so every worker builds exactly its own shard (samples rank, rank + W, ...,
the same number on every worker) and nothing else. Each worker groups its shard into
batches of similar lengths with fusedrnn.BucketSampler and pads each batch only to its own
longest sequence (fusedrnn.pad_collate); the layer skips the padding (sequence_length).

Batch-size semantics: the loss is summed over a worker's batch, dist_sync sums the pushed
gradients of all workers on the server, and every worker passes the global batch size
(batch_size x workers) to trainer.step: the server applies the mean gradient over the
combined batch, exactly what one process would do on the concatenated batches.

Run as a server or scheduler (DMLC_ROLE set), `import mxnet` below turns the process into
that role and exits when the job ends; the rest of the file runs only on workers.
"""
import argparse
import sys
import time

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

import fusedrnn

LAYERS = {"lstm": fusedrnn.LSTM, "gru": fusedrnn.GRU, "rnn": fusedrnn.RNN}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--kvstore", default="local",
                   choices=["local", "device", "dist_sync", "dist_async"],
                   help="gluon.Trainer's kvstore; dist_* need the DMLC_* variables that "
                        "launch.py sets")
    p.add_argument("--mode", default="lstm", choices=sorted(LAYERS), help="recurrent layer")
    p.add_argument("--hidden", type=int, default=64, help="hidden size")
    p.add_argument("--layers", type=int, default=1, help="stacked recurrent layers")
    p.add_argument("--input-size", type=int, default=8, help="features per step")
    p.add_argument("--classes", type=int, default=4, help="output classes (<= input size)")
    p.add_argument("--num-samples", type=int, default=4096,
                   help="samples in the whole data set (all workers together)")
    p.add_argument("--min-len", type=int, default=1, help="shortest sequence")
    p.add_argument("--max-len", type=int, default=50, help="longest sequence")
    p.add_argument("--batch-size", type=int, default=32, help="samples per batch per worker")
    p.add_argument("--steps", type=int, default=200,
                   help="optimizer steps (the shard is revisited epoch after epoch)")
    p.add_argument("--lr", type=float, default=0.1, help="SGD learning rate")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--wd", type=float, default=0.0, help="weight decay")
    p.add_argument("--seed", type=int, default=0, help="data, shuffling and initialisation")
    p.add_argument("--init-params", metavar="FILE",
                   help="start from these parameters (save_parameters format) instead of a "
                        "seeded random initialisation")
    p.add_argument("--save-params", metavar="FILE",
                   help="save the final parameters here; '{rank}' becomes the worker's rank")
    p.add_argument("--log-interval", type=int, default=20, help="print every N steps")
    args = p.parse_args(argv)
    for name in ("hidden", "layers", "input_size", "classes", "num_samples", "min_len",
                 "batch_size", "steps", "log_interval"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer; got "
                    f"{getattr(args, name)}")
    if args.max_len < args.min_len:
        p.error(f"--max-len ({args.max_len}) must be >= --min-len ({args.min_len})")
    if args.classes > args.input_size:
        p.error(f"--classes ({args.classes}) must be <= --input-size ({args.input_size})")
    return args


def make_sample(args, index):
    """Sample `index` of the data set: (sequence [L, input_size] float32, label). The label
    is the channel (among the first `classes`) with the largest sum over time, something a
    recurrent layer has to read the whole sequence for."""
    rng = np.random.default_rng([args.seed, index])
    length = int(rng.integers(args.min_len, args.max_len + 1))
    x = rng.standard_normal((length, args.input_size)).astype(np.float32)
    return x, np.int32(np.argmax(x[:, :args.classes].sum(axis=0)))


def shard_indices(num_samples, rank, num_workers):
    """The samples of worker `rank`: every num_workers-th, the same count on every worker
    (dist_sync needs every worker to take the same number of steps)."""
    per_worker = num_samples // num_workers
    return np.arange(rank, per_worker * num_workers, num_workers)


def worker_batches(args, rank, num_workers):
    """The batches worker `rank` trains on, in order: (x [N, T, C], lengths [N], labels [N])
    NDArrays, T the batch's own longest sequence; exactly args.steps of them."""
    shard = [make_sample(args, int(i)) for i in shard_indices(args.num_samples, rank,
                                                               num_workers)]
    if len(shard) < args.batch_size:
        raise ValueError(f"--batch-size {args.batch_size} exceeds the {len(shard)} samples "
                         f"of a worker's shard (--num-samples {args.num_samples} over "
                         f"{num_workers} workers)")
    # A fixed batch size on every step: trainer.step's batch size cannot change under
    # dist_sync (the optimizer, rescale_grad included, lives on the server).
    sampler = fusedrnn.BucketSampler([len(x) for x, _ in shard], args.batch_size,
                                     last_batch="discard", seed=[args.seed, rank])
    loader = gluon.data.DataLoader(shard, batch_sampler=sampler,
                                   batchify_fn=fusedrnn.pad_collate)
    done = 0
    while True:
        for batch in loader:
            yield batch
            done += 1
            if done == args.steps:
                return


class Classifier(gluon.Block):
    """A fusedrnn recurrent stack over variable-length NTC batches; the last layer's final
    state (after each sample's last valid step) feeds a dense layer."""

    def __init__(self, args, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.rnn = LAYERS[args.mode](args.hidden, num_layers=args.layers, layout="NTC",
                                         input_size=args.input_size)
            self.out = gluon.nn.Dense(args.classes, in_units=args.hidden)

    def forward(self, x, lengths):
        _, states = self.rnn(x, self.rnn.begin_state(batch_size=x.shape[0]),
                             sequence_length=lengths)
        return self.out(states[0][-1])


def build_model(args):
    net = Classifier(args)
    if args.init_params:
        net.load_parameters(args.init_params)
    else:
        mx.random.seed(args.seed)
        net.initialize(mx.init.Xavier())
    return net


def main(argv=None):
    args = parse_args(argv)
    if args.kvstore.startswith("dist"):
        kv = mx.kv.create(args.kvstore)
        rank, num_workers = kv.rank, kv.num_workers
    else:
        kv, rank, num_workers = args.kvstore, 0, 1
    tag = f"[rank {rank}/{num_workers}]"
    net = build_model(args)
    trainer = gluon.Trainer(net.collect_params(), "sgd",
                            {"learning_rate": args.lr, "momentum": args.momentum,
                             "wd": args.wd}, kvstore=kv)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    global_batch = args.batch_size * num_workers

    start = time.perf_counter()
    first_step_done = None
    total_loss = correct = seen = 0.0
    for step, (x, lengths, labels) in enumerate(worker_batches(args, rank, num_workers), 1):
        with autograd.record():
            logits = net(x, lengths)
            loss = loss_fn(logits, labels)
        loss.backward()
        trainer.step(global_batch)
        total_loss += loss.sum().asscalar()
        correct += (logits.argmax(axis=1) == labels.astype("float32")).sum().asscalar()
        seen += x.shape[0]
        if step == 1:
            first_step_done = time.perf_counter()
        if step % args.log_interval == 0 or step == args.steps:
            print(f"{tag} step {step}: loss {total_loss / seen:.4f}, accuracy "
                  f"{correct / seen:.3f}, padded length {x.shape[1]}", flush=True)
            total_loss = correct = seen = 0.0
    mx.nd.waitall()
    end = time.perf_counter()
    # The first step includes the kvstore's initialisation: leave it out of the rate.
    rate = (args.steps - 1) / (end - first_step_done) if args.steps > 1 else float("nan")
    print(f"{tag} done: {args.steps} steps in {end - start:.2f} s, {rate:.2f} steps/s after "
          f"the first ({rate * global_batch:.0f} samples/s over all workers)", flush=True)
    if args.save_params:
        net.save_parameters(args.save_params.replace("{rank}", str(rank)))


if __name__ == "__main__":
    sys.exit(main())
