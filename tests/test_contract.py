"""One shape and lengths contract (include/fusedrnn/contract.h) behind every binding: the same
mistake gets the same message from fusedrnn.kernels, the MXNet operator and the layers, and
a message names the argument the caller got wrong."""
import re

import mxnet as mx
import numpy as np
import pytest

import fusedrnn
from fusedrnn import kernels
from helpers import make_problem

op = mx.nd._internal._fusedrnn_layer
NAMES = ("x", "w_ih", "w_hh", "b_ih", "b_hh", "h0", "c0")


def problem32():
    return make_problem("lstm", 4, 3, 5, 6, dtype=np.float32)


def kernel_error(**changes):
    problem = problem32()
    problem.update(changes)
    with pytest.raises(ValueError) as info:
        kernels.forward("lstm", **problem)
    return str(info.value)


def op_error(extra=(), x=None, **attrs):
    problem = problem32()
    if x is not None:
        problem["x"] = x
    arrays = [mx.nd.array(problem[n]) for n in NAMES] + [mx.nd.array(e) for e in extra]
    with pytest.raises(mx.base.MXNetError) as info:
        op(*arrays, mode="lstm", **attrs)[0].asnumpy()
    return str(info.value)


def test_an_input_of_the_wrong_size_is_named_before_the_weights():
    """A layer built for C = 5 called on C = 7: the message names x and the size the weights
    expect (it used to name only w_ih, as if the weights were wrong)."""
    want = (r"x has 7 features \(shape \(4, 3, 7\)\) but the weights expect input_size 5 "
            r"\(w_ih has shape \(24, 5\); expected \(24, 7\)\)")
    assert re.search(want, kernel_error(x=np.zeros((4, 3, 7), np.float32)))
    assert re.search(want, op_error(x=np.zeros((4, 3, 7), np.float32)))
    layer = fusedrnn.LSTM(6)
    layer.initialize()
    layer(mx.nd.zeros((4, 3, 5)))
    with pytest.raises(mx.base.MXNetError, match=want):
        layer(mx.nd.zeros((4, 3, 7)))
        mx.nd.waitall()


@pytest.mark.parametrize("lengths,message", [
    ([1, 5, 2], r"lengths\[1\] = 5 is outside \[0, 4\]: lengths must be <= T "
                r"\(whole numbers in \[0, 4\]\)"),
    ([1, -1, 2], r"lengths\[1\] = -1 is outside \[0, 4\]: lengths must be >= 0"),
    ([1, 1.5, 2], r"lengths\[1\] = 1.5 is not a whole number: lengths must be whole numbers "
                  r"in \[0, 4\]"),
    ([1, np.nan, 2], r"lengths\[1\] = nan is not a whole number"),
    ([1, 2 ** 40, 2], r"lengths\[1\] = 1099511627776 is outside \[0, 4\]"),
])
def test_lengths_are_refused_in_the_same_words_everywhere(lengths, message):
    values = np.array(lengths, np.float64)
    assert re.search(message, kernel_error(lengths=values))
    assert re.search("_fusedrnn_layer: " + message, op_error([values], use_lengths=True))


def test_a_mask_value_is_refused_in_the_same_words_everywhere():
    mask = np.ones((4, 3))
    mask[2, 1] = 0.5
    message = r"mask\[2, 1\] = 0.5: mask must hold only 0 and 1"
    assert re.search(message, kernel_error(mask=mask))
    assert re.search(message, op_error([mask], use_mask=True))


def test_mask_positions_match_the_layout_of_lengths():
    """A mask whose set steps form a prefix runs exactly like the same lengths (carry aside:
    the mask also carries y over the skipped steps, compared only where both run)."""
    problem = problem32()
    del problem["lengths"]
    lengths = np.array([4, 0, 2])
    mask = np.arange(4)[:, None] < lengths[None, :]
    by_mask = kernels.forward("lstm", **problem, mask=mask)
    by_lengths = kernels.forward("lstm", **problem, lengths=lengths)
    np.testing.assert_array_equal(by_mask.hy, by_lengths.hy)
    np.testing.assert_array_equal(by_mask.y[mask], by_lengths.y[mask])
