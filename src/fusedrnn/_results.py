"""Result records shared by the kernel wrapper and the NumPy reference."""
from collections import namedtuple

# y [T, N, P]; hy [N, P]; cy [N, H] (LSTM only, else None); reserve: the training buffer that
# backward needs (None for inference and for the reference implementation).
ForwardResult = namedtuple("ForwardResult", ["y", "hy", "cy", "reserve"])

# Gradients of a one-layer, one-direction recurrence. dc0 is None unless mode == 'lstm';
# dw_hr is None unless the LSTM has a projection.
Gradients = namedtuple(
    "Gradients", ["dx", "dw_ih", "dw_hh", "db_ih", "db_hh", "dh0", "dc0", "dw_hr"])

MODES = ("lstm", "gru", "rnn_tanh", "rnn_relu")
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
