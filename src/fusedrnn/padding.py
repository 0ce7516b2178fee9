"""Padding variable-length sequences into one array, as Keras 2 does, plus the valid lengths
that fusedrnn's layers take to skip the padding.

`pad_sequences` behaves exactly like `keras.preprocessing.sequence.pad_sequences` (Keras 2 /
keras-preprocessing 1.1): sequences of scalars or of equal-shaped vectors, empty sequences,
`maxlen` None (the longest) or an integer, padding and truncating 'pre' or 'post', the same
errors. `pad_sequences(..., return_lengths=True)` also returns each row's valid length and
which side holds the data.
"""
import numbers
from collections import namedtuple

import numpy as np

__all__ = ["pad_sequences", "Padded"]

class Padded(namedtuple("Padded", ["array", "lengths", "padding"])):
    """array: the padded batch [num_samples, maxlen, ...]; lengths: int64 [num_samples], the
    number of valid steps in each row; padding: 'pre' (data at the end of each row) or 'post'
    (data at the start). Post-padded: pass `lengths` as a layer's `sequence_length`; either
    side: pass `mask`."""
    __slots__ = ()

    @property
    def mask(self):
        """[num_samples, maxlen] bools, True where a row holds data: a layer's `mask` for
        layout 'NTC' (transpose it for 'TNC')."""
        if self.padding not in ("pre", "post"):
            raise ValueError(f"padding must be 'pre' or 'post'; got {self.padding!r}")
        maxlen = self.array.shape[1] if self.array.ndim > 1 else 0
        lengths = np.asarray(self.lengths)
        if lengths.shape != self.array.shape[:1] or (lengths.size and not (
                lengths.min() >= 0 and lengths.max() <= maxlen)):
            raise ValueError(f"lengths must hold one length in [0, {maxlen}] per row of array")
        steps, lengths = np.arange(maxlen), lengths[:, None]
        return steps >= maxlen - lengths if self.padding == "pre" else steps < lengths


def pad_sequences(sequences, maxlen=None, dtype="int32", padding="pre", truncating="pre",
                  value=0.0, return_lengths=False):
    """Pads (and truncates) `sequences` to a [num_samples, maxlen, ...] array of `dtype`.

    padding / truncating: 'pre' pads or cuts at the start of each sequence, 'post' at the end.
    value: the padding value. With return_lengths=True the result is Padded(array, lengths,
    padding).
    """
    if not hasattr(sequences, "__len__"):
        raise ValueError("`sequences` must be iterable.")
    # (Keras fails later on these, with NumPy's messages and the same exception types.)
    if maxlen is not None:
        if not isinstance(maxlen, numbers.Integral):
            raise TypeError(f"maxlen must be None or a non-negative integer; got {maxlen!r}")
        if maxlen < 0:
            raise ValueError(f"maxlen must be None or a non-negative integer; got {maxlen!r}")
    lengths, sample_shape, found = [], (), False
    for seq in sequences:
        try:
            lengths.append(len(seq))
        except TypeError:
            raise ValueError("`sequences` must be a list of iterables. Found non-iterable: "
                             + str(seq)) from None
        if not found and len(seq):
            # The first non-empty sequence fixes the shape of one step.
            sample_shape = np.asarray(seq).shape[1:]
            found = True
    if maxlen is None:
        maxlen = int(np.max(lengths)) if lengths else 0
    textual = np.issubdtype(dtype, np.str_) or np.issubdtype(dtype, np.unicode_)
    if isinstance(value, str) and dtype != object and not textual:
        raise ValueError("`dtype` {} is not compatible with `value`'s type: {}\nYou should set "
                         "`dtype=object` for variable length strings."
                         .format(dtype, type(value)))
    out = np.full((len(sequences), maxlen) + sample_shape, value, dtype=dtype)
    valid = np.zeros(len(sequences), dtype=np.int64)
    for row, seq in enumerate(sequences):
        if not len(seq):
            continue
        # Keras slices with seq[-maxlen:] for 'pre', so maxlen = 0 keeps the whole sequence
        # (and then fails to fit it): the same here.
        if truncating == "pre":
            kept = seq[-maxlen:]
        elif truncating == "post":
            kept = seq[:maxlen]
        else:
            raise ValueError('Truncating type "%s" not understood' % truncating)
        kept = np.asarray(kept, dtype=dtype)
        if kept.shape[1:] != sample_shape:
            raise ValueError("Shape of sample %s of sequence at position %s is different from "
                             "expected shape %s" % (kept.shape[1:], row, sample_shape))
        if padding == "post":
            out[row, :len(kept)] = kept
        elif padding == "pre":
            out[row, -len(kept):] = kept
        else:
            raise ValueError('Padding type "%s" not understood' % padding)
        valid[row] = len(kept)
    return Padded(out, valid, padding) if return_lengths else out
