"""pytest plugin for tools/mxnet_suite/run.py: swaps MXNet's recurrent classes and operators
for fusedrnn's before MXNet's own test modules are imported.

Loaded by run.py as `-p swap_plugin` (this folder on PYTHONPATH). Settings come from the
environment, which run.py fills in:

  FUSEDRNN_SUITE_SWAP   comma-separated groups to swap, or "none" (MXNet's own classes):
                        layers  mxnet.gluon.rnn.LSTM / GRU / RNN -> fusedrnn.LSTM / GRU / RNN
                        cells   mxnet.gluon.rnn.LSTMCell / GRUCell / RNNCell -> fusedrnn's
                        ops     mx.sym.RNN / mx.nd.RNN -> fusedrnn.sym.RNN / fusedrnn.nd.RNN
  FUSEDRNN_SUITE_SEED   seed of numpy, mxnet and Python's random before every test (MXNet's
                        `with_seed()` tests draw their own seed from numpy's generator, so
                        they become reproducible too); "none" leaves the generators alone.

Where the names are replaced, and why not elsewhere:

- The classes are replaced in the package namespace `mxnet.gluon.rnn`, which is how MXNet's
  tests reach them (`gluon.rnn.LSTM`, `mx.gluon.rnn.LSTMCell`). The defining modules
  `mxnet.gluon.rnn.rnn_cell` / `rnn_layer` keep their own classes: their constructors call
  `super(LSTMCell, self).__init__()` with the module-global name, so rebinding it there to
  fusedrnn's subclass would make the gluon constructor call itself forever. The one place
  inside MXNet that builds cells by module attribute, `_RNNLayer._unfuse()`
  (`rnn_cell.LSTMCell(...)`, used by test_lstm_cpu_inference), sees fusedrnn's cells through
  a proxy that replaces `rnn_layer.rnn_cell`.
- `RNN` is replaced in mxnet.symbol, mxnet.symbol.op, mxnet.symbol.gen_op and the same three
  ndarray modules (mx.sym / mx.symbol and mx.nd / mx.ndarray are those modules). That covers
  the legacy `mx.rnn.FusedRNNCell.unroll` (mxnet/rnn/rnn_cell.py calls `symbol.RNN`) and
  gluon's own `F.RNN` in `_RNNLayer._forward_kernel`. fusedrnn's operators are built from
  `_fusedrnn_layer` / `_fusedrnn_params` and never call `RNN`, and fusedrnn's classes bind
  their gluon base classes when fusedrnn is imported (before the swap), so nothing recurses.
- Not swapped: numpy-mode `npx.rnn`, `gluon.contrib.rnn` cells (LSTMPCell, conv cells) and
  the legacy symbolic cells `mx.rnn.LSTMCell` etc. (the references of test_operator.py).

MXNet 1.9.1's tests import `nose.tools` (make_decorator, assert_raises, ok_); if nose is not
importable a small stand-in is installed (nose does not support Python 3.10+).
"""
import os
import random
import sys
import types
import unittest

SWAP_GROUPS = ("layers", "cells", "ops")
_LAYERS = ("LSTM", "GRU", "RNN")
_CELLS = ("LSTMCell", "GRUCell", "RNNCell")
_OP_MODULES = {"sym": ("mxnet.symbol", "mxnet.symbol.op", "mxnet.symbol.gen_op"),
               "nd": ("mxnet.ndarray", "mxnet.ndarray.op", "mxnet.ndarray.gen_op")}

# What was replaced, for the report header: (where, name, new object)
_swapped = []


def parse_groups(value):
    """The FUSEDRNN_SUITE_SWAP value as a tuple of groups (empty for "none")."""
    value = (value or "all").strip().lower()
    if value in ("none", ""):
        return ()
    if value == "all":
        return SWAP_GROUPS
    groups = tuple(g.strip() for g in value.split(",") if g.strip())
    bad = [g for g in groups if g not in SWAP_GROUPS]
    if bad:
        raise ValueError(f"unknown swap group(s) {bad}; choose from {SWAP_GROUPS}, "
                         f"'all' or 'none'")
    return groups


def _install_nose_stand_in():
    try:
        import nose.tools  # noqa: F401
        return False
    except Exception:  # not installed, or broken on this Python
        pass
    tools = types.ModuleType("nose.tools")

    def make_decorator(func):
        """nose.tools.make_decorator: the wrapper takes the test's name and metadata."""
        def decorate(newfunc):
            name = func.__name__
            newfunc.__dict__.update(func.__dict__)
            newfunc.__doc__ = func.__doc__
            newfunc.__module__ = func.__module__
            newfunc.__name__ = name
            newfunc.__qualname__ = getattr(func, "__qualname__", name)
            newfunc.compat_co_firstlineno = getattr(
                func, "compat_co_firstlineno", func.__code__.co_firstlineno)
            return newfunc
        return decorate

    def ok_(expr, msg=None):
        if not expr:
            raise AssertionError(msg)

    def eq_(a, b, msg=None):
        if not a == b:
            raise AssertionError(msg or f"{a!r} != {b!r}")

    tools.make_decorator, tools.ok_, tools.eq_ = make_decorator, ok_, eq_
    # nose.tools' assert_* names: unittest.TestCase's assertX methods in pep8 spelling.
    case = unittest.TestCase("__init__")
    for attr in dir(case):
        if attr.startswith("assert") and not attr.startswith("assert_") and "_" not in attr:
            pep8 = "".join("_" + c.lower() if c.isupper() else c for c in attr)
            setattr(tools, pep8, getattr(case, attr))
    nose = types.ModuleType("nose")
    nose.tools = tools
    nose.__fusedrnn_stand_in__ = True
    sys.modules["nose"], sys.modules["nose.tools"] = nose, tools
    return True


class _ModuleProxy(types.ModuleType):
    """A module that answers some names itself and passes every other look-up on."""

    def __init__(self, module, replacements):
        super().__init__(module.__name__, module.__doc__)
        self.__dict__.update(replacements)
        self._fusedrnn_wrapped = module

    def __getattr__(self, name):
        return getattr(self.__dict__["_fusedrnn_wrapped"], name)


def _set(module, name, value):
    setattr(module, name, value)
    _swapped.append((module.__name__, name, value))


def install(groups):
    """Replaces MXNet's names in the given groups by fusedrnn's (see the module docstring)."""
    if not groups:
        return
    import importlib

    import mxnet.gluon.rnn as grnn
    import mxnet.gluon.rnn.rnn_layer as rnn_layer

    import fusedrnn

    if "layers" in groups:
        for name in _LAYERS:
            _set(grnn, name, getattr(fusedrnn, name))
    if "cells" in groups:
        for name in _CELLS:
            _set(grnn, name, getattr(fusedrnn, name))
        proxy = _ModuleProxy(rnn_layer.rnn_cell, {n: getattr(fusedrnn, n) for n in _CELLS})
        rnn_layer.rnn_cell = proxy
        _swapped.append((rnn_layer.__name__, "rnn_cell.{LSTMCell,GRUCell,RNNCell}",
                         "proxy"))
    if "ops" in groups:
        for kind, modules in _OP_MODULES.items():
            new = getattr(fusedrnn, kind).RNN
            for modname in modules:
                _set(importlib.import_module(modname), "RNN", new)
    _check_no_recursion()


def _check_no_recursion():
    """fusedrnn's classes must still sit on MXNet's own gluon classes, not on themselves."""
    import fusedrnn
    from mxnet.gluon.rnn import rnn_cell, rnn_layer

    for name in _LAYERS:
        assert getattr(rnn_layer, name) in getattr(fusedrnn, name).__mro__[1:], name
    for name in _CELLS:
        assert getattr(rnn_cell, name) in getattr(fusedrnn, name).__mro__[1:], name


def _seed_everything(seed):
    import mxnet as mx
    import numpy as np

    np.random.seed(seed)
    mx.random.seed(seed)
    random.seed(seed)


# ---- pytest hooks ---------------------------------------------------------------------------

_seed = None
_stand_in = False


def pytest_configure(config):
    global _seed, _stand_in
    _stand_in = _install_nose_stand_in()
    seed = os.environ.get("FUSEDRNN_SUITE_SEED", "0")
    _seed = None if seed.lower() == "none" else int(seed)
    install(parse_groups(os.environ.get("FUSEDRNN_SUITE_SWAP", "all")))


def pytest_report_header(config):
    import mxnet as mx

    lines = [f"mxnet {mx.__version__} ({os.path.dirname(mx.__file__)})"]
    if _swapped:
        import fusedrnn
        lines.append(f"fusedrnn {fusedrnn.__version__} ({os.path.dirname(fusedrnn.__file__)})")
        for where, name, value in _swapped:
            target = value if isinstance(value, str) else \
                f"{value.__module__}.{value.__qualname__}"
            lines.append(f"  swapped {where}.{name} -> {target}")
    else:
        lines.append("no swap: MXNet's own classes and operators")
    lines.append(f"seed before every test: {_seed}" if _seed is not None
                 else "seed: not set (MXNet's defaults)")
    if _stand_in:
        lines.append("nose: not importable, using a stand-in for nose.tools")
    return lines


def pytest_runtest_setup(item):
    if _seed is not None:
        _seed_everything(_seed)
