"""fusedrnn: fast, exact fused LSTM / GRU / RNN kernels for Apache MXNet on the CPU."""
import ctypes as _ctypes
import os as _os

import scipy_openblas32 as _openblas

# The extension finds libscipy_openblas.so through its rpath when both packages sit in the
# same site-packages; loading it here first also covers other layouts (the library's soname
# carries no version, so the loader then reuses this copy).
_ctypes.CDLL(_os.path.join(_openblas.get_lib_dir(), _openblas.get_library(fullname=True)),
             mode=_ctypes.RTLD_GLOBAL)

from . import _C, kernels, reference  # noqa: E402
from ._results import ForwardResult, Gradients  # noqa: E402
from .bucketing import BucketSampler, pad_collate  # noqa: E402
from .padding import Padded, pad_sequences  # noqa: E402


def _load_operators():
    """Registers fusedrnn's MXNet operators (the extension is also an MXNet operator library).
    MXNet refuses to load the same operators a third time, so this runs once per process."""
    import mxnet

    mxnet.library.load(_os.path.abspath(_C.__file__), verbose=False)


_load_operators()

from . import nd, sym  # noqa: E402  (need the operators)
from .cells import (GRUCell, LSTMCell, RNNCell, VariationalDropoutCell,  # noqa: E402
                    ZoneoutCell)
from .layers import GRU, LSTM, RNN, choose_unroll  # noqa: E402

__version__ = "0.1.0"
__all__ = ["kernels", "reference", "nd", "sym", "LSTM", "GRU", "RNN", "LSTMCell", "GRUCell",
           "RNNCell", "ZoneoutCell", "VariationalDropoutCell", "choose_unroll", "pad_sequences",
           "Padded", "BucketSampler", "pad_collate", "ForwardResult",
           "Gradients"]
