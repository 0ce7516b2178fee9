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
