"""The layers' and cells' constructors: gluon's signatures, read by tools and users, and clear
errors for arguments gluon would take but the classes cannot run."""
import inspect

import mxnet as mx
import pytest

import fusedrnn

PAIRS = [(fusedrnn.LSTM, mx.gluon.rnn.LSTM), (fusedrnn.GRU, mx.gluon.rnn.GRU),
         (fusedrnn.RNN, mx.gluon.rnn.RNN), (fusedrnn.LSTMCell, mx.gluon.rnn.LSTMCell),
         (fusedrnn.GRUCell, mx.gluon.rnn.GRUCell), (fusedrnn.RNNCell, mx.gluon.rnn.RNNCell)]
EXTRAS = {"use_sequence_length", "unroll", "reset_after", "prefix", "params"}


@pytest.mark.parametrize("ours,gluons", PAIRS, ids=lambda c: c.__module__ + "." + c.__name__)
def test_signature_is_gluons_plus_keyword_options(ours, gluons):
    mine = list(inspect.signature(ours).parameters.values())
    theirs = [p for p in inspect.signature(gluons).parameters.values()
              if p.kind != p.VAR_KEYWORD]
    assert [(p.name, p.default, p.kind) for p in mine[:len(theirs)]] == \
        [(p.name, p.default, p.kind) for p in theirs]
    rest = mine[len(theirs):]
    assert all(p.kind == p.KEYWORD_ONLY and p.name in EXTRAS for p in rest), rest


def test_positional_and_keyword_calls_reach_gluon():
    layer = fusedrnn.LSTM(8, 2, "NTC", 0.5, True, 5, projection_size=4, prefix="x_")
    assert (layer._hidden_size, layer._num_layers, layer._layout, layer._dropout,
            layer._dir, layer._input_size, layer._projection_size, layer.prefix) == \
        (8, 2, "NTC", 0.5, 2, 5, 4, "x_")
    rnn = fusedrnn.RNN(8, 1, "tanh", "NTC", use_sequence_length=True, unroll=False)
    assert (rnn._mode, rnn._layout, rnn._use_sequence_length, rnn._unroll) == \
        ("rnn_tanh", "NTC", True, False)
    gru = fusedrnn.GRUCell(8, None, None, "zeros", "zeros", 5, "g_", reset_after=False)
    assert (gru._input_size, gru.prefix, gru._reset_after) == (5, "g_", False)


@pytest.mark.parametrize("make,pattern", [
    (lambda: fusedrnn.LSTM(4, layout="BTC"), "layout must be 'TNC' or 'NTC'; got 'BTC'"),
    (lambda: fusedrnn.GRU(4, dropout=1.5), r"dropout must be a number in \[0, 1\]"),
    (lambda: fusedrnn.RNN(4, input_size=-1), "input_size must be a non-negative integer"),
    (lambda: fusedrnn.RNN(4, activation="sigmoid"), "activation must be 'tanh' or 'relu'"),
    (lambda: fusedrnn.LSTM(4, projection_size=-1), "projection_size must be a positive"),
    (lambda: fusedrnn.LSTM(4, state_clip_min=-1), "state_clip_min and state_clip_max must"),
    (lambda: fusedrnn.LSTMCell(0), "hidden_size must be a positive integer"),
    (lambda: fusedrnn.GRUCell("8"), "hidden_size must be a positive integer"),
    (lambda: fusedrnn.RNNCell(-1), "hidden_size must be a positive integer"),
])
def test_bad_arguments_are_named(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()
