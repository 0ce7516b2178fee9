"""Batches of similar-length sequences for gluon.data.DataLoader, so that each batch pads only
to its own longest sequence, and a collate function that pads and returns the lengths.

    sampler = BucketSampler(lengths, batch_size=32)
    loader = gluon.data.DataLoader(dataset, batch_sampler=sampler, batchify_fn=pad_collate)
    for batch, lengths in loader: ...         # batch [N, T_batch, ...] (NTC), post-padded
"""
import numpy as np
import mxnet as mx

from . import _checks
from .padding import pad_sequences

__all__ = ["BucketSampler", "pad_collate"]


class BucketSampler(mx.gluon.data.Sampler):
    """Yields lists of dataset indices whose sequences have similar lengths.

    lengths: the length of every sample. Each epoch the samples are sorted by length (ties
    and, with `num_buckets`, neighbouring lengths broken at random), cut into batches of
    `batch_size`, and the batches are shuffled; so every batch holds similar lengths and the
    order still changes from epoch to epoch. last_batch: 'keep' or 'discard' the smaller
    batch. `padding_fraction` is the share of padded positions in the last epoch's batches
    (0 when every batch holds equal lengths).
    """

    def __init__(self, lengths, batch_size, shuffle=True, last_batch="keep", seed=None,
                 num_buckets=None):
        lengths = np.asarray(lengths)
        if lengths.ndim != 1 or (lengths.size and (lengths.min() < 0 or
                                                  not np.issubdtype(lengths.dtype, np.integer))):
            raise ValueError("lengths must be a 1-D sequence of non-negative integers")
        _checks.positive_int("batch_size", batch_size)
        _checks.positive_int("num_buckets", num_buckets, none_ok=True)
        if last_batch not in ("keep", "discard"):
            raise ValueError(f"last_batch must be 'keep' or 'discard'; got {last_batch!r}")
        self._lengths = lengths
        self._batch_size = int(batch_size)
        self._shuffle = shuffle
        self._last_batch = last_batch
        self._rng = np.random.default_rng(seed)
        self._num_buckets = num_buckets
        self.padding_fraction = 0.0

    def _batches(self):
        n = len(self._lengths)
        key = self._lengths.astype(np.float64)
        if self._shuffle and self._num_buckets:
            # Coarser sorting: lengths within one bucket width mix at random.
            width = max(1.0, (key.max() - key.min() + 1) / self._num_buckets) if n else 1.0
            key = np.floor((key - key.min()) / width) if n else key
        tie = self._rng.random(n) if self._shuffle else np.arange(n)
        order = np.lexsort((tie, key))
        batches = [order[i:i + self._batch_size] for i in range(0, n, self._batch_size)]
        if batches and len(batches[-1]) < self._batch_size and self._last_batch == "discard":
            batches.pop()
        if self._shuffle:
            self._rng.shuffle(batches)
        return batches

    def __iter__(self):
        batches = self._batches()
        padded = sum(len(b) * int(self._lengths[b].max()) for b in batches if len(b))
        real = sum(int(self._lengths[b].sum()) for b in batches)
        self.padding_fraction = 1.0 - real / padded if padded else 0.0
        for b in batches:
            yield [int(i) for i in b]

    def __len__(self):
        full, rest = divmod(len(self._lengths), self._batch_size)
        return full + (1 if rest and self._last_batch == "keep" else 0)


def pad_collate(samples, dtype="float32", value=0.0):
    """Batchify function: pads the sequences of a batch (post-padding, to the batch's longest)
    and returns (batch [N, T, ...], lengths [N]) as NDArrays; samples that are tuples
    (sequence, label, ...) also give the stacked remaining fields after the lengths."""
    if not samples:
        raise ValueError("pad_collate got an empty batch")
    tuples = isinstance(samples[0], tuple)
    if any(isinstance(s, tuple) != tuples or (tuples and len(s) != len(samples[0]))
           for s in samples):
        raise ValueError("samples must all be sequences, or all tuples (sequence, label, ...) "
                         "of one length")
    seqs = [s[0] if tuples else s for s in samples]
    padded = pad_sequences([np.asarray(s) for s in seqs], dtype=dtype, padding="post",
                           truncating="post", value=value, return_lengths=True)
    out = [mx.nd.array(padded.array, dtype=dtype), mx.nd.array(padded.lengths, dtype="int32")]
    if tuples:
        for i in range(1, len(samples[0])):
            out.append(mx.nd.array(np.stack([np.asarray(s[i]) for s in samples])))
    return tuple(out)
