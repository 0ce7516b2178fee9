"""fusedrnn.pad_sequences against keras_preprocessing.sequence.pad_sequences (Keras 2)."""
import itertools

import numpy as np
import pytest

import fusedrnn

keras_pad = pytest.importorskip("keras_preprocessing.sequence").pad_sequences

BATTERY = {
    "scalars": [[1, 2, 3], [4], [], [5, 6, 7, 8, 9]],
    "floats": [[0.5, 1.5], [2.5, 3.5, 4.5]],
    "vectors": [np.arange(6).reshape(3, 2), np.arange(2).reshape(1, 2), np.zeros((0, 2))],
    "all_empty": [[], []],
    "no_sequences": [],
    "numpy_rows": list(np.arange(12).reshape(3, 4)),
    "strings": [["a", "b"], ["c"]],
}


def outcome(fn, *args, **kw):
    try:
        return "ok", fn(*args, **kw)
    except ValueError as e:
        return "error", str(e)


@pytest.mark.parametrize("padding,truncating", list(itertools.product(["pre", "post"],
                                                                      ["pre", "post"])))
@pytest.mark.parametrize("maxlen", [None, 0, 1, 2, 6])
@pytest.mark.parametrize("case", list(BATTERY))
def test_matches_keras(case, maxlen, padding, truncating):
    seqs = BATTERY[case]
    kw = dict(maxlen=maxlen, padding=padding, truncating=truncating)
    if case == "strings":
        kw.update(dtype=object, value="?")
    elif case == "floats":
        kw.update(dtype="float32", value=-1.0)
    if case == "no_sequences" and maxlen is None:
        pytest.skip("Keras takes np.max of no lengths (numpy's own error)")
    want, got = outcome(keras_pad, seqs, **kw), outcome(fusedrnn.pad_sequences, seqs, **kw)
    assert got[0] == want[0], (got, want)
    if want[0] == "ok":
        assert got[1].dtype == want[1].dtype and got[1].shape == want[1].shape
        np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("args,kw", [
    ((5,), {}),
    (([1, 2], 3),  {}),
    (([[1, 2], [[1, 2]]],), {}),
    (([[1, 2]],), {"padding": "middle"}),
    (([[1, 2, 3]],), {"maxlen": 2, "truncating": "both"}),
    (([[1, 2]],), {"value": "x"}),
])
def test_errors_match_keras(args, kw):
    want = outcome(keras_pad, *args, **kw)
    got = outcome(fusedrnn.pad_sequences, *args, **kw)
    assert want[0] == "error" and got == want


@pytest.mark.parametrize("padding", ["pre", "post"])
def test_lengths_with_the_padded_array(padding):
    res = fusedrnn.pad_sequences([[1, 2, 3], [4], [], [5, 6, 7, 8]], maxlen=3, padding=padding,
                                 truncating="post", return_lengths=True)
    np.testing.assert_array_equal(res.lengths, [3, 1, 0, 3])
    assert res.padding == padding
    np.testing.assert_array_equal(
        res.array, keras_pad([[1, 2, 3], [4], [], [5, 6, 7, 8]], maxlen=3, padding=padding,
                             truncating="post"))
    want_mask = [[1, 1, 1], [0, 0, 1], [0, 0, 0], [1, 1, 1]] if padding == "pre" else \
        [[1, 1, 1], [1, 0, 0], [0, 0, 0], [1, 1, 1]]
    np.testing.assert_array_equal(res.mask, np.array(want_mask, bool))


def test_padded_mask_feeds_a_layer_like_lengths():
    """Pre-padded sequences with Padded.mask give the states post-padded ones give with
    their lengths."""
    import mxnet as mx
    rng = np.random.default_rng(0)
    seqs = [rng.standard_normal((n, 3)).astype(np.float32) for n in (4, 1, 3)]
    layer = fusedrnn.GRU(5, layout="NTC", input_size=3)
    layer.initialize()
    pre = fusedrnn.pad_sequences(seqs, dtype="float32", return_lengths=True)
    post = fusedrnn.pad_sequences(seqs, dtype="float32", padding="post", return_lengths=True)
    _, by_mask = layer(mx.nd.array(pre.array), layer.begin_state(3),
                       mask=mx.nd.array(pre.mask))
    _, by_len = layer(mx.nd.array(post.array), layer.begin_state(3),
                      sequence_length=mx.nd.array(post.lengths))
    np.testing.assert_allclose(by_mask[0].asnumpy(), by_len[0].asnumpy(), rtol=1e-6)
