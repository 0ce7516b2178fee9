"""fusedrnn's main job: train a character-level language model and sample text from it.

    python -m fusedrnn.demo                 # or: fusedrnn-demo; --help lists the options

The model is the one in the text-generation example that the Keras MXNet backend's RNN
document builds (characters in, an LSTM, a softmax over the next character, samples at several
temperatures), with the two things that document says MXNet cannot do on the CPU done here:
variable-length inputs without paying for padding, and fast training. The corpus is gathered
at run time from the running Python's standard library (the docstrings of its modules,
classes and functions, read with `ast`, nothing imported), so it exists offline on every
machine; which files it comes from is fixed by --seed and the Python version. Docstrings are
cut into sentences (prose) and lines (code, lists), each one training sequence; batches of
similar lengths come from fusedrnn.BucketSampler, and each sample's length goes to the layer,
which spends no work on the padding.

Parameter files (--save, --load) are plain Gluon files of this model: a model built on
mxnet.gluon.rnn.LSTM/GRU reads them too (`build_model(..., impl='gluon')`).
"""
import argparse
import ast
import math
import os
import platform
import re
import sys
import sysconfig
import tempfile
import time

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon, nd

try:
    from tqdm import tqdm
except ImportError as e:  # the progress bar is the demo's alone, so tqdm comes with its extra
    raise ImportError("fusedrnn.demo needs tqdm: pip install 'fusedrnn[demo]' "
                      "(or, in a clone, pip install '.[demo]')") from e

import fusedrnn

__all__ = ["VOCAB", "gather_corpus", "encode", "build_model", "evaluate", "train", "sample", "run",
           "main"]

# A fixed alphabet (newline + printable ASCII), so parameter files do not depend on the
# corpus. A sequence is "\n" + line + "\n": the model learns to start and to end a line.
VOCAB = "\n" + "".join(chr(c) for c in range(32, 127))
_INDEX = {c: i for i, c in enumerate(VOCAB)}
NEWLINE = 0
EMBED = 64
TEMPERATURES = (0.5, 0.8, 1.0)
_SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"'`])")


def _stdlib_files():
    root = sysconfig.get_paths()["stdlib"]
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        files += [os.path.join(folder, n) for n in sorted(names) if n.endswith(".py")]
    return root, files


def _docstring_lines(docstring):
    """Prose paragraphs become sentences; indented blocks, doctests and lists stay lines."""
    for paragraph in re.split(r"\n\s*\n", docstring):
        lines = [line.rstrip() for line in paragraph.strip("\n").split("\n")]
        prose = all(line and not line[0].isspace() and not line.startswith((">>>", "-", "*"))
                    for line in lines)
        if prose:
            yield from _SENTENCE_END.split(" ".join(line.strip() for line in lines))
        else:
            yield from (line for line in lines if line.strip())


def gather_corpus(max_chars, seed, max_len=160):
    """Lines of docstrings from the standard library, at most `max_len` characters of VOCAB
    each, distinct, about `max_chars` characters in all. The files are read in an order
    shuffled by `seed`, so a seed and a Python version give the same corpus.
    Returns (lines, stdlib folder, number of files read)."""
    root, files = _stdlib_files()
    order = np.random.default_rng(seed).permutation(len(files))
    lines, seen, total, used = [], set(), 0, 0
    for i in order:
        if total >= max_chars:
            break
        try:
            with open(files[i], encoding="utf-8") as f:
                tree = ast.parse(f.read())
        except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
            continue  # unreadable or not Python 3 (e.g. lib2to3's test data)
        used += 1
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                     ast.AsyncFunctionDef)):
                continue
            for line in _docstring_lines(ast.get_docstring(node) or ""):
                # Runs of spaces (indentation, aligned tables) made low-temperature samples
                # repeat spaces forever; single spaces keep the text.
                line = " ".join(line.split())
                if (2 <= len(line) <= max_len and line not in seen
                        and all(c in _INDEX and c != "\n" for c in line)):
                    seen.add(line)
                    lines.append(line)
                    total += len(line)
    return lines, root, used


def encode(text):
    return np.array([_INDEX[c] for c in text], dtype=np.int32)


def build_model(cell="lstm", hidden=256, layers=2, impl="fusedrnn"):
    """The language model: embedding -> `layers`-layer LSTM or GRU -> softmax over VOCAB.
    impl 'fusedrnn' uses fusedrnn.LSTM/GRU, 'gluon' mxnet.gluon.rnn.LSTM/GRU; both have the
    same parameters, so either reads the other's files."""
    if impl not in ("fusedrnn", "gluon"):
        raise ValueError(f"impl must be 'fusedrnn' or 'gluon'; got {impl!r}")
    if cell not in ("lstm", "gru"):
        raise ValueError(f"cell must be 'lstm' or 'gru'; got {cell!r}")
    return CharModel(cell, hidden, layers, impl)


class CharModel(gluon.Block):
    def __init__(self, cell, hidden, layers, impl, **kwargs):
        super().__init__(**kwargs)
        self.impl = impl
        library = fusedrnn if impl == "fusedrnn" else gluon.rnn
        layer = library.LSTM if cell == "lstm" else library.GRU
        with self.name_scope():
            self.embedding = gluon.nn.Embedding(len(VOCAB), EMBED)
            self.rnn = layer(hidden, num_layers=layers, layout="NTC", input_size=EMBED)
            self.output = gluon.nn.Dense(len(VOCAB), flatten=False, in_units=hidden)

    def forward(self, x, states=None, lengths=None):
        """x [N, T] character ids, post-padded to the longest of `lengths` [N].
        Returns (logits [N, T, len(VOCAB)], states)."""
        if states is None:
            states = self.rnn.begin_state(x.shape[0], ctx=x.context)
        embedded = self.embedding(x)
        if lengths is not None and self.impl == "fusedrnn":
            out, states = self.rnn(embedded, states, sequence_length=lengths)
        else:
            # gluon.rnn on the CPU ignores sequence_length (apache/mxnet#19323) and computes
            # the padding. The padding comes after each sample's steps, so the outputs at
            # valid steps, the only ones the loss reads, are the same; only the time differs.
            out, states = self.rnn(embedded, states)
        return self.output(out), states


def _batch(sequences, indices):
    """Post-padded inputs and targets [N, T], lengths [N] and the loss mask [N, T]."""
    padded = fusedrnn.pad_sequences([sequences[i] for i in indices], padding="post",
                                    truncating="post", return_lengths=True)
    inputs, targets = padded.array[:, :-1], padded.array[:, 1:]
    lengths = padded.lengths - 1
    mask = np.arange(inputs.shape[1])[None, :] < lengths[:, None]
    return (nd.array(inputs), nd.array(targets), nd.array(lengths, dtype="int32"),
            nd.array(mask), int(lengths.sum()))


def _summed_nll(model, inputs, targets, lengths, mask):
    logits, _ = model(inputs, None, lengths)
    nll = -nd.pick(nd.log_softmax(logits), targets, axis=-1)
    return (nll * mask).sum()


def evaluate(model, sequences, batch_size=256):
    """Mean negative log-likelihood per character (nats) of `sequences`, no training."""
    order = np.argsort([len(s) for s in sequences], kind="stable")
    total, tokens = 0.0, 0
    for start in range(0, len(order), batch_size):
        inputs, targets, lengths, mask, n = _batch(sequences, order[start:start + batch_size])
        total += _summed_nll(model, inputs, targets, lengths, mask).asscalar()
        tokens += n
    return total / max(tokens, 1)


def train(model, train_seqs, val_seqs, epochs, batch_size, seed, lr=4e-3, label="",
          progress=True):
    """Trains `model` with Adam on bucketed batches (fusedrnn.BucketSampler seeded by `seed`,
    so two models trained with the same seed see the same batches in the same order).

    Returns a dict: batch_loss (training loss of every batch, nats per character),
    epoch_loss (their mean over each epoch), batch_tokens (real characters per batch),
    batch_seconds (training time per batch), val_loss (validation loss before training and
    after each epoch), tokens, seconds, tokens_per_s, padding (the share of padded positions
    in the last epoch's batches)."""
    trainer = gluon.Trainer(model.collect_params(), "adam",
                            {"learning_rate": lr, "clip_gradient": 5.0})
    sampler = fusedrnn.BucketSampler([len(s) for s in train_seqs], batch_size, seed=seed)
    log = dict(batch_loss=[], batch_tokens=[], batch_seconds=[], epoch_loss=[],
               val_loss=[evaluate(model, val_seqs)], padding=0.0)
    for epoch in range(1, epochs + 1):
        bar = tqdm(sampler, total=len(sampler), desc=f"{label}epoch {epoch}/{epochs}",
                   unit="batch", leave=True, disable=not progress, dynamic_ncols=True)
        smooth, tokens, seconds = None, 0, 0.0
        for indices in bar:
            inputs, targets, lengths, mask, n = _batch(train_seqs, indices)
            start = time.perf_counter()
            with autograd.record():
                loss = _summed_nll(model, inputs, targets, lengths, mask) / n
            loss.backward()
            trainer.step(1)
            value = loss.asscalar()  # waits for the step, so the time below is real
            elapsed = time.perf_counter() - start
            log["batch_loss"].append(value)
            log["batch_tokens"].append(n)
            log["batch_seconds"].append(elapsed)
            tokens, seconds = tokens + n, seconds + elapsed
            smooth = value if smooth is None else 0.95 * smooth + 0.05 * value
            bar.set_postfix_str(f"loss {smooth:.3f}, {tokens / seconds:,.0f} characters/s")
        bar.close()
        log["padding"] = sampler.padding_fraction
        log["val_loss"].append(evaluate(model, val_seqs))
        log["epoch_loss"].append(float(np.mean(log["batch_loss"][-len(sampler):])))
        print(f"{label}epoch {epoch}: training loss {log['epoch_loss'][-1]:.3f}, "
              f"validation loss {log['val_loss'][-1]:.3f} "
              f"({log['val_loss'][-1] / math.log(2):.2f} bits/char), "
              f"{tokens / max(seconds, 1e-9):,.0f} characters/s", flush=True)
    log["tokens"] = int(sum(log["batch_tokens"]))
    log["seconds"] = float(sum(log["batch_seconds"]))
    log["tokens_per_s"] = log["tokens"] / log["seconds"] if log["seconds"] else 0.0
    return log


def sample(model, length, temperatures=TEMPERATURES, prompt="", seed=0):
    """Generates `length` characters after `prompt` at each temperature (one row each, all in
    one batch), a step at a time through the layer with its states. After a newline a row
    starts afresh, as every training sequence did. Returns one string per temperature."""
    rng = np.random.default_rng(seed)
    rows = len(temperatures)
    temps = np.asarray(temperatures, dtype=np.float64)[:, None]
    start = np.tile(encode("\n" + prompt), (rows, 1))
    logits, states = model(nd.array(start))
    last = logits[:, -1, :].asnumpy().astype(np.float64)
    out = [[] for _ in range(rows)]
    for _ in range(length):
        z = last / temps
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        chosen = np.array([rng.choice(len(VOCAB), p=row) for row in p])
        for row, c in enumerate(chosen):
            out[row].append(VOCAB[c])
        keep = nd.array((chosen != NEWLINE).astype(np.float32)).reshape((1, rows, 1))
        states = [s * keep for s in states]
        logits, states = model(nd.array(chosen[:, None]), states)
        last = logits[:, -1, :].asnumpy().astype(np.float64)
    return [prompt + "".join(chars) for chars in out]


def _positive(name):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = -1
        if value < 1:
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer; got {text!r}")
        return value
    return parse


def _non_negative(text):
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer; got {text!r}")
    return value


def _learning_rate(text):
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a positive number; got {text!r}")
    return value


def make_parser():
    p = argparse.ArgumentParser(
        prog="fusedrnn-demo",
        description="Train a character-level language model on docstrings of the Python "
                    "standard library with fusedrnn's fused LSTM/GRU (variable-length lines, "
                    "bucketed, lengths passed to the layer), then sample text from it.")
    p.add_argument("--cell", choices=("lstm", "gru"), default="lstm", help="default: lstm")
    p.add_argument("--epochs", type=_non_negative, default=3,
                   help="passes over the corpus (0: only sample, e.g. after --load); default 3")
    p.add_argument("--hidden", type=_positive("--hidden"), default=256,
                   help="hidden units per layer; default 256")
    p.add_argument("--layers", type=_positive("--layers"), default=2,
                   help="recurrent layers; default 2")
    p.add_argument("--seed", type=_non_negative, default=0,
                   help="seeds the corpus, the weights, the batches and the samples; default 0")
    p.add_argument("--corpus-chars", type=_positive("--corpus-chars"), default=1_000_000,
                   help="characters of docstrings to gather (Python 3.11's standard library has "
                        "about 1.4 million); default 1000000")
    p.add_argument("--batch-size", type=_positive("--batch-size"), default=32,
                   help="sequences per batch; default 32")
    p.add_argument("--lr", type=_learning_rate, default=4e-3,
                   help="Adam's learning rate; default 0.004")
    p.add_argument("--sample-chars", type=_non_negative, default=300,
                   help="characters to sample at each temperature; default 300")
    p.add_argument("--prompt", default="", help="text the samples start with")
    p.add_argument("--threads", type=_positive("--threads"), default=None,
                   help="threads for fusedrnn and MXNet's operators; default: "
                        "OMP_NUM_THREADS if set, else every core this process may use")
    p.add_argument("--compare", action="store_true",
                   help="also train the same model with mxnet.gluon.rnn on the same batches "
                        "and print both side by side")
    p.add_argument("--plot", metavar="FILE.png", help="write the loss curves to this PNG")
    p.add_argument("--save", metavar="FILE", help="write the trained parameters here")
    p.add_argument("--load", metavar="FILE",
                   help="start from these parameters (a file written by --save, or by a "
                        "gluon.rnn model of the same shape)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _check_output(parser, option, path):
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        parser.error(f"argument {option}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or os.path.isdir(path):
        parser.error(f"argument {option}: cannot write {path}")


def _check_args(parser, args):
    """Everything that can be checked before minutes of training is checked here."""
    if args.plot is not None:
        if not args.plot.lower().endswith(".png"):
            parser.error(f"argument --plot: the file name must end in .png; got {args.plot!r}")
        _check_output(parser, "--plot", args.plot)
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            parser.error("argument --plot: needs matplotlib (pip install matplotlib)")
    if args.save is not None:
        _check_output(parser, "--save", args.save)
    if args.load is not None and not (os.path.isfile(args.load)
                                      and os.access(args.load, os.R_OK)):
        parser.error(f"argument --load: cannot read {args.load}")
    bad = sorted(set(args.prompt) - set(VOCAB[1:]))
    if bad:
        parser.error(f"argument --prompt: characters outside printable ASCII: {bad}")


def _set_threads(threads):
    if threads is None:
        threads = fusedrnn.kernels.get_num_threads()
    fusedrnn.kernels.set_num_threads(threads)
    # MXNet's own operators (embedding, dense, softmax, gluon.rnn) default to half the cores.
    import ctypes
    mx.base.check_call(mx.base._LIB.MXSetNumOMPThreads(ctypes.c_int(threads)))
    return threads


def _load(parser, model, path):
    try:
        model.load_parameters(path, ctx=mx.cpu())
    except (mx.MXNetError, AssertionError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        parser.error(f"argument --load: cannot load {path} into a {model.describe}: {first}")


def _plot(path, logs):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_tok, ax_time) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for name, log in logs.items():
        loss = np.asarray(log["batch_loss"])
        tokens = np.cumsum(log["batch_tokens"])
        seconds = np.cumsum(log["batch_seconds"])
        window = max(1, len(loss) // 50)
        smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
        line, = ax_tok.plot(tokens[window - 1:], smooth, label=f"{name}, training")
        ax_time.plot(seconds[window - 1:], smooth, color=line.get_color(), label=name)
        epochs = len(log["val_loss"]) - 1
        if epochs:
            ends = np.cumsum([0] + [len(loss) // epochs] * epochs)
            ax_tok.plot([tokens[max(e - 1, 0)] if e else 0 for e in ends], log["val_loss"],
                        "o--", color=line.get_color(), label=f"{name}, validation")
    ax_tok.set(xlabel="characters trained on", ylabel="loss (nats per character)",
               title="loss by characters")
    ax_time.set(xlabel="training seconds", title="loss by time")
    for ax in (ax_tok, ax_time):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(argv=None):
    """The demo with command-line arguments `argv`; returns a dict with the parsed args, the
    training logs by implementation ('fusedrnn', and 'gluon' with --compare), the samples,
    the trained fusedrnn model and the encoded training and validation sequences.
    Bad arguments exit through argparse (SystemExit 2) with a message naming the option."""
    parser = make_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    threads = _set_threads(args.threads)

    t0 = time.perf_counter()
    lines, root, files = gather_corpus(args.corpus_chars, args.seed)
    if len(lines) < 2:
        parser.error(f"argument --corpus-chars: {args.corpus_chars} characters give "
                     f"{len(lines)} lines; need at least 2")
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(lines))
    n_val = max(1, len(lines) // 20)
    sequences = [encode("\n" + line + "\n") for line in lines]
    val_seqs = [sequences[i] for i in order[:n_val]]
    train_seqs = [sequences[i] for i in order[n_val:]]
    lengths = np.array([len(s) - 1 for s in train_seqs])
    print(f"corpus: {len(lines):,} lines, {sum(map(len, lines)):,} characters of docstrings "
          f"from {files} files of Python {platform.python_version()}'s standard library "
          f"({root}), in {time.perf_counter() - t0:.1f} s; lines of {lengths.min()}-"
          f"{lengths.max()} characters (median {int(np.median(lengths))}); "
          f"{len(train_seqs):,} for training, {len(val_seqs):,} for validation", flush=True)

    def new_model(impl):
        mx.random.seed(args.seed)
        model = build_model(args.cell, args.hidden, args.layers, impl)
        model.describe = (f"{args.layers}-layer {args.cell.upper()} with {args.hidden} hidden "
                          f"units (--cell {args.cell} --hidden {args.hidden} "
                          f"--layers {args.layers})")
        model.initialize(mx.init.Xavier(), ctx=mx.cpu())
        return model

    model = new_model("fusedrnn")
    if args.load:
        _load(parser, model, args.load)
    size = sum(p.data().size for p in model.collect_params().values())
    layer = f"{type(model.rnn).__module__.split('.')[0]}.{type(model.rnn).__name__}"
    print(f"model: embedding {EMBED} -> {model.describe.split(' (')[0]} ({layer}) -> softmax "
          f"over {len(VOCAB)} characters; {size:,} parameters"
          + (f", loaded from {args.load}" if args.load else "")
          + f"; {threads} threads", flush=True)

    initial = None
    if args.compare:
        # Both models start from the same weights: the file that --load read, or these.
        initial = os.path.join(tempfile.mkdtemp(prefix="fusedrnn-demo-"), "initial.params")
        model.save_parameters(initial)

    logs = {}
    logs["fusedrnn"] = train(model, train_seqs, val_seqs, args.epochs, args.batch_size,
                             args.seed, args.lr, label="fusedrnn " if args.compare else "",
                             progress=not args.no_progress)
    if args.compare:
        reference = new_model("gluon")
        reference.load_parameters(initial, ctx=mx.cpu())
        os.remove(initial)
        os.rmdir(os.path.dirname(initial))
        logs["gluon"] = train(reference, train_seqs, val_seqs, args.epochs, args.batch_size,
                              args.seed, args.lr, label="gluon.rnn ",
                              progress=not args.no_progress)
        _print_comparison(args, logs)
    if args.epochs:
        print(f"padding in the last epoch's batches: {100 * logs['fusedrnn']['padding']:.1f}% "
              f"(BucketSampler)")

    if args.save:
        model.save_parameters(args.save)
        print(f"saved the parameters to {args.save}")
    if args.plot:
        _plot(args.plot, logs)
        print(f"wrote the loss curves to {args.plot}")

    texts = sample(model, args.sample_chars, prompt=args.prompt, seed=args.seed)
    for temperature, text in zip(TEMPERATURES, texts):
        print(f"\n----- sample, temperature {temperature} -----\n{text}")
    return dict(args=args, logs=logs, samples=texts, model=model, train_seqs=train_seqs,
                val_seqs=val_seqs)


def _print_comparison(args, logs):
    name = args.cell.upper()
    rows = [("", f"fusedrnn.{name}", f"gluon.rnn.{name}")]
    f, g = logs["fusedrnn"], logs["gluon"]
    rows.append(("training characters/s", f"{f['tokens_per_s']:,.0f}",
                 f"{g['tokens_per_s']:,.0f}"))
    rows.append(("training seconds", f"{f['seconds']:.1f}", f"{g['seconds']:.1f}"))
    if args.epochs:
        rows.append(("last epoch's training loss", f"{f['epoch_loss'][-1]:.4f}",
                     f"{g['epoch_loss'][-1]:.4f}"))
    rows.append(("final validation loss", f"{f['val_loss'][-1]:.4f}",
                 f"{g['val_loss'][-1]:.4f}"))
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    print()
    for r in rows:
        print(f"{r[0]:<{width[0]}}   {r[1]:>{width[1]}}   {r[2]:>{width[2]}}")
    if f["seconds"] and g["seconds"]:
        print(f"fusedrnn trains {g['seconds'] / f['seconds']:.2f}x as fast on the same batches "
              f"(gluon.rnn computes the padding too, and on the CPU ignores sequence_length)")


def main(argv=None):
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
