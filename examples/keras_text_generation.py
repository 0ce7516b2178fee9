"""The Keras MXNet backend's text-generation model on fused ops, without a global maxlen.

The model of keras-mxnet's RNN document (../shared/seed/using_rnn_with_mxnet_backend.md, after
Keras' lstm_text_generation example): characters in, LSTM(128), a softmax over the next
character, RMSprop(lr=0.01), samples at several temperatures. That document asks for a fixed
`input_shape`, `unroll=True` and every input padded to one maxlen; here the LSTM is
fusedrnn.keras.LSTM (unchanged Keras code after fusedrnn.keras.patch() would do the same) on
`input_shape=(None,)`, and each batch is only as long as its longest input: inputs of similar
lengths are batched together (fusedrnn.BucketSampler), post-padded with 0, which
Embedding(mask_zero=True) masks, and the fused layer skips.

The corpus is the demo's (python -m fusedrnn.demo): docstring lines of the running Python's
standard library, gathered offline. Each line, framed by newlines, gives one training input per
`--step` characters: the line up to there, and the character after it as the target.

    python examples/keras_text_generation.py [--epochs 1] [--compare] [--help]

--compare also trains stock keras-mxnet's LSTM (unroll=True, inputs padded to the longest one)
from the same weights on the same batches, and prints both side by side. The gates are Keras
2.2.4's default, hard_sigmoid (--gate sigmoid for the other kind).
"""
import argparse
import time
import warnings

import numpy as np
from tqdm import tqdm

import fusedrnn
import fusedrnn.keras as fk  # before keras: it sets up what keras-mxnet needs on Python 3.11
import keras
import mxnet as mx
from fusedrnn.demo import TEMPERATURES, VOCAB, encode, gather_corpus

CHARS = len(VOCAB)  # ids 1..CHARS; 0 pads


def make_samples(lines, step):
    """(inputs: arrays of ids, targets: ids) from every line."""
    inputs, targets = [], []
    for line in lines:
        ids = encode("\n" + line + "\n") + 1
        for end in range(1, len(ids), step):
            inputs.append(ids[:end])
            targets.append(ids[end])
    return inputs, np.array(targets)


def pad(sequences, length):
    """Post-padded with 0 to `length`, keeping the last `length` ids of a longer one."""
    out = np.zeros((len(sequences), length), dtype="float32")
    for row, ids in enumerate(sequences):
        ids = ids[-length:]
        out[row, :len(ids)] = ids
    return out


def build(fused, hidden, gate, maxlen=None):
    lstm = fk.LSTM(hidden, recurrent_activation=gate) if fused else keras.layers.LSTM(
        hidden, recurrent_activation=gate, unroll=True)
    model = keras.models.Sequential([
        keras.layers.Embedding(CHARS + 1, 64, mask_zero=True,
                               input_shape=(None if fused else maxlen,)),
        lstm, keras.layers.Dense(CHARS, activation="softmax")])
    model.compile(keras.optimizers.RMSprop(lr=0.01), "categorical_crossentropy")
    return model


def sample(model, length, rng, maxlen=None):
    """One line per temperature, a character at a time from the whole prefix (as Keras'
    example does), all temperatures in one batch; a row ends at a newline."""
    rows = [np.array([1])] * len(TEMPERATURES)  # "\n"
    done = [False] * len(rows)
    for _ in range(length):
        longest = max(len(r) for r in rows)
        probs = model.predict_on_batch(pad(rows, maxlen or longest)).astype("float64")
        for k, temperature in enumerate(TEMPERATURES):
            if done[k]:
                continue
            p = np.exp(np.log(probs[k] + 1e-12) / temperature)
            c = rng.choice(CHARS, p=p / p.sum()) + 1
            rows[k] = np.append(rows[k], c)
            done[k] = c == 1
        if all(done):
            break
    return ["".join(VOCAB[c - 1] for c in r[1:]).rstrip("\n") for r in rows]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--corpus-chars", type=int, default=100_000)
    p.add_argument("--max-line", type=int, default=120, help="longest corpus line")
    p.add_argument("--step", type=int, default=3, help="characters between training inputs")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--gate", default="hard_sigmoid", help="recurrent_activation")
    p.add_argument("--sample-length", type=int, default=120)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compare", action="store_true",
                   help="also train stock keras-mxnet (unroll=True, padded to one maxlen)")
    args = p.parse_args()

    lines, root, files = gather_corpus(args.corpus_chars, args.seed, args.max_line)
    inputs, targets = make_samples(lines, args.step)
    lengths = np.array([len(x) for x in inputs])
    maxlen = int(lengths.max())
    print(f"{len(lines)} lines from {files} files under {root}; {len(inputs)} inputs of "
          f"1 to {maxlen} characters (mean {lengths.mean():.0f})")
    np.random.seed(args.seed)
    fused = build(True, args.hidden, args.gate)
    models = {"fused": fused}
    if args.compare:
        weights = fused.get_weights()  # before another model: keras-mxnet syncs the last one
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            models["stock"] = build(False, args.hidden, args.gate, maxlen)
        models["stock"].set_weights(weights)
    onehot = np.eye(CHARS, dtype="float32")
    sampler = fusedrnn.BucketSampler(lengths, args.batch_size, seed=args.seed)
    for epoch in range(1, args.epochs + 1):
        loss = {name: [] for name in models}
        seconds = {name: 0.0 for name in models}
        bar = tqdm(sampler, total=len(sampler), desc=f"epoch {epoch}/{args.epochs}",
                   unit="batch", dynamic_ncols=True)
        for indices in bar:
            batch = [inputs[i] for i in indices]
            y = onehot[targets[indices] - 1]
            for name, model in models.items():
                x = pad(batch, maxlen if name == "stock" else max(len(b) for b in batch))
                t0 = time.perf_counter()
                loss[name].append(float(model.train_on_batch(x, y)))
                # train_on_batch returns with the loss, before the backward pass and the
                # update are done: the next model's batch would wait for them.
                mx.nd.waitall()
                seconds[name] += time.perf_counter() - t0
            bar.set_postfix({f"{name} loss": f"{np.mean(v[-50:]):.3f}"
                             for name, v in loss.items()})
        for name in models:
            print(f"  {name}: loss {np.mean(loss[name]):.3f}, "
                  f"{1e3 * seconds[name] / len(sampler):.1f} ms per batch")
    if args.compare:
        print(f"  fused is {seconds['stock'] / seconds['fused']:.1f}x faster than stock "
              f"(last epoch); stock pads every input to {maxlen} characters")
    rng = np.random.default_rng(args.seed)
    for name, model in models.items():
        print(f"\nSamples ({name}), temperatures {TEMPERATURES}:")
        for temperature, text in zip(TEMPERATURES, sample(
                model, args.sample_length, rng, maxlen if name == "stock" else None)):
            print(f"  {temperature}: {text}")


if __name__ == "__main__":
    main()
