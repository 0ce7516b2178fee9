"""tools/mxnet_suite/run.py (MXNet's own RNN tests with fusedrnn swapped in), checked on a small
stand-in for MXNet's tests/python/unittest folder: the swap reaches what MXNet's tests use,
nothing recurses, --no-swap leaves MXNet alone, --compare lists the tests that only pass with
MXNet's classes, and arguments after `--` reach pytest."""
import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

RUN = os.path.join(os.path.dirname(__file__), os.pardir, "tools", "mxnet_suite", "run.py")
_spec = importlib.util.spec_from_file_location("fusedrnn_mxnet_suite_run", RUN)
_run = importlib.util.module_from_spec(_spec)
sys.path.insert(0, os.path.dirname(RUN))  # run.py imports swap_plugin next to it
_spec.loader.exec_module(_run)
OPERATOR_TESTS = _run.OPERATOR_TESTS

COMMON = """
import os, sys
sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), '../common/'))
import models
from nose.tools import make_decorator, assert_raises

def with_seed():
    def helper(test):
        @make_decorator(test)
        def wrapped(*args, **kwargs):
            test(*args, **kwargs)
        return wrapped
    return helper
"""

GLUON = """
import mxnet as mx
from mxnet import gluon
from common import with_seed

def swapped():
    import sys
    return "fusedrnn" in sys.modules and gluon.rnn.LSTM is sys.modules["fusedrnn"].LSTM

def test_always():
    pass

@with_seed()
def test_only_stock():
    assert not swapped()

def test_classes():
    import fusedrnn
    classes = [gluon.rnn.LSTM, gluon.rnn.GRU, gluon.rnn.RNN,
               gluon.rnn.LSTMCell, gluon.rnn.GRUCell, gluon.rnn.RNNCell]
    ops = [mx.sym.RNN, mx.symbol.RNN, mx.nd.RNN, mx.ndarray.RNN]
    if swapped():
        assert classes == [fusedrnn.LSTM, fusedrnn.GRU, fusedrnn.RNN, fusedrnn.LSTMCell,
                           fusedrnn.GRUCell, fusedrnn.RNNCell]
        assert ops == [fusedrnn.sym.RNN] * 2 + [fusedrnn.nd.RNN] * 2
    else:
        assert not any(c.__module__.startswith("fusedrnn") for c in classes + ops)
    # constructing and running them must not recurse into gluon's constructors
    for cls in classes:
        cls(4)
    cells = gluon.rnn.LSTM(4, num_layers=2)._unfuse()
    assert all(type(c) is gluon.rnn.LSTMCell for c in cells._children.values())
    x = mx.nd.ones((3, 2, 5))
    layer = gluon.rnn.LSTM(4)
    layer.initialize()
    assert layer(x).shape == (3, 2, 4)
    out = mx.nd.RNN(x, mx.nd.ones((4 * 4 * (5 + 4 + 2),)), mx.nd.zeros((1, 2, 4)),
                    mx.nd.zeros((1, 2, 4)), state_size=4, num_layers=1, mode="lstm")
    assert out.shape == (3, 2, 4)
"""

OPERATOR = """
def _ok():
    pass

for _name in {names!r}:
    globals()[_name] = _ok
"""


@pytest.fixture(scope="module")
def fake_unittest(tmp_path_factory):
    root = tmp_path_factory.mktemp("mxnet") / "tests" / "python"
    (root / "common").mkdir(parents=True)
    (root / "common" / "models.py").write_text("")
    unit = root / "unittest"
    unit.mkdir()
    (unit / "common.py").write_text(textwrap.dedent(COMMON))
    (unit / "test_gluon_rnn.py").write_text(textwrap.dedent(GLUON))
    (unit / "test_operator.py").write_text(OPERATOR.format(names=list(OPERATOR_TESTS)))
    return str(unit)


def run(*args):
    proc = subprocess.run([sys.executable, RUN, *args], capture_output=True, text=True,
                          timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


def test_swapped(fake_unittest):
    code, out = run(fake_unittest)
    assert code == 1, out  # test_only_stock fails
    assert "swapped: 1 failed, 16 passed" in out, out
    assert "swapped mxnet.gluon.rnn.LSTMCell -> fusedrnn.cells.LSTMCell" in out, out


def test_compare_and_pass_through(fake_unittest):
    code, out = run(fake_unittest, "--compare", "--only", "gluon", "--", "-q", "-k",
                    "stock or classes")
    assert code == 1, out
    assert "no swap: MXNet's own classes and operators" not in out  # -q: no header
    assert "stock  : 2 passed (test_gluon_rnn.py: 2 of 2 passed)" in out, out
    assert "swapped: 1 failed, 1 passed" in out, out
    assert "pass with MXNet, not with fusedrnn: 1\n  test_gluon_rnn.py::test_only_stock" in out, out
    assert "test_always" not in out, out


def test_bad_folder(tmp_path):
    code, out = run(str(tmp_path))
    assert code != 0 and "not MXNet's tests/python/unittest folder" in out, out
