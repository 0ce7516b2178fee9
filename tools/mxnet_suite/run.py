#!/usr/bin/env python3
"""Runs MXNet 1.9.1's own RNN tests with MXNet's recurrent classes and operators swapped for
fusedrnn's (project issue 13).

MXNet's test code is not part of this project: get it from the apache/mxnet repository at tag
1.9.1 (tests/python/unittest, plus tests/python/common, which unittest/common.py imports):

    git clone --depth 1 --branch 1.9.1 https://github.com/apache/mxnet /tmp/mxnet
    # or, from any clone:  git -C MXNET archive 1.9.1 tests/python | tar -x -C /tmp/mxnet
    python tools/mxnet_suite/run.py /tmp/mxnet/tests/python/unittest

What runs: all of test_gluon_rnn.py, and the RNN tests of test_operator.py (OPERATOR_TESTS
below), under pytest in a subprocess, with swap_plugin.py (next to this file) loaded before
the test modules import. The plugin replaces mxnet.gluon.rnn.LSTM/GRU/RNN/LSTMCell/GRUCell/
RNNCell by fusedrnn's and mx.sym.RNN / mx.nd.RNN by fusedrnn.sym.RNN / fusedrnn.nd.RNN (see its
docstring for exactly where). The tests run in a temporary working directory (some write
files) and nothing is written into the MXNet folder.

Usage:
    run.py UNITTEST_DIR                       swap everything (layers, cells, ops)
    run.py UNITTEST_DIR --no-swap             MXNet's own classes: the baseline
    run.py UNITTEST_DIR --swap layers         only the layers: fusedrnn.LSTM is then compared
                                              with MXNet's own cells (an independent check)
    run.py UNITTEST_DIR --compare             both, then a table of tests that pass with MXNet
                                              and fail with the swap
    run.py UNITTEST_DIR --only gluon -- -k lstm -x     extra pytest arguments after `--`

Exit status: pytest's (0 when every selected test passed); with --compare, 1 if any test
passes with MXNet's classes but not with the swap.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from swap_plugin import parse_groups  # noqa: E402

GLUON_FILE = "test_gluon_rnn.py"
OPERATOR_FILE = "test_operator.py"
# The RNN tests of test_operator.py named in issue 13.
OPERATOR_TESTS = (
    "test_rnn_with_new_param",
    "test_lstm_sym", "test_lstm_bidirectional", "test_lstm_dropout",
    "test_gru_sym", "test_gru_bidirectional", "test_gru_dropout",
    "test_rnntanh_sym", "test_rnntanh_bidirectional", "test_rnntanh_dropout",
    "test_rnnrelu_sym", "test_rnnrelu_bidirectional", "test_rnnrelu_dropout",
    "test_RNN_float64",
)

PYTEST_INI = """\
[pytest]
# Written by fusedrnn's tools/mxnet_suite/run.py, so that no ini file of the MXNet tree applies.
filterwarnings =
    ignore::DeprecationWarning
    ignore::SyntaxWarning
"""


def _test_ids(unittest_dir, only):
    ids = []
    if only in ("all", "gluon"):
        ids.append(os.path.join(unittest_dir, GLUON_FILE))
    if only in ("all", "operator"):
        ids += [os.path.join(unittest_dir, OPERATOR_FILE) + "::" + t for t in OPERATOR_TESTS]
    return ids


def _check_dir(unittest_dir):
    missing = [f for f in (GLUON_FILE, OPERATOR_FILE, "common.py")
               if not os.path.isfile(os.path.join(unittest_dir, f))]
    if missing:
        sys.exit(f"{unittest_dir}: not MXNet's tests/python/unittest folder (no {missing[0]})")
    models = os.path.join(unittest_dir, os.pardir, "common", "models.py")
    if not os.path.isfile(models):
        sys.exit(f"{os.path.normpath(models)} is missing: unittest/common.py imports it; "
                 f"extract tests/python/common next to tests/python/unittest")


def run_pytest(unittest_dir, groups, only, seed, pytest_args, label, keep_dir=None):
    """Runs pytest once; returns (exit code, {test id: outcome}). Without keep_dir the
    working directory is a temporary one, removed afterwards."""
    if keep_dir is None:
        with tempfile.TemporaryDirectory(prefix=f"mxnet-suite-{label}-") as work:
            return run_pytest(unittest_dir, groups, only, seed, pytest_args, label, work)
    work = keep_dir
    os.makedirs(work, exist_ok=True)
    ini = os.path.join(work, "pytest.ini")
    with open(ini, "w") as f:
        f.write(PYTEST_INI)
    junit = os.path.join(work, "results.xml")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([HERE] + ([env["PYTHONPATH"]]
                                                  if env.get("PYTHONPATH") else []))
    env["FUSEDRNN_SUITE_SWAP"] = ",".join(groups) or "none"
    env["FUSEDRNN_SUITE_SEED"] = "none" if seed is None else str(seed)
    cmd = [sys.executable, "-m", "pytest", "-p", "swap_plugin", "-p", "no:cacheprovider",
           "-c", ini, "--rootdir", unittest_dir, f"--junitxml={junit}", "-rfEs",
           *_test_ids(unittest_dir, only), *pytest_args]
    print(f"\n===== {label}: swap={env['FUSEDRNN_SUITE_SWAP']} (working directory {work})",
          flush=True)
    code = subprocess.call(cmd, cwd=work, env=env)
    return code, _outcomes(junit)


def _outcomes(junit):
    """{test id: 'passed' | 'failed' | 'error' | 'skipped'} from pytest's JUnit XML."""
    if not os.path.isfile(junit):
        return {}
    results = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        module = case.get("classname", "").rsplit(".", 1)[-1]
        name = f"{module}.py::{case.get('name')}"
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
                if outcome == "skipped" and child.get("type") == "pytest.xfail":
                    outcome = "xfailed"
        results[name] = outcome if results.get(name, "passed") == "passed" else results[name]
    return results


def _summary(label, outcomes):
    counts = {}
    for outcome in outcomes.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    by_file = {}
    for name, outcome in outcomes.items():
        f = name.split("::")[0]
        passed, total = by_file.get(f, (0, 0))
        by_file[f] = (passed + (outcome == "passed"), total + 1)
    files = ", ".join(f"{f}: {p} of {t} passed" for f, (p, t) in sorted(by_file.items()))
    print(f"{label}: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) +
          (f" ({files})" if files else ""))


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Arguments after `--` go to pytest (e.g. -- -k lstm -x -q).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("unittest_dir", help="MXNet 1.9.1's tests/python/unittest folder")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--swap", default="all", metavar="GROUPS",
                      help="what to replace by fusedrnn's: 'all' (default), 'none', or a "
                           "comma-separated list of layers, cells, ops")
    mode.add_argument("--no-swap", action="store_true",
                      help="run with MXNet's own classes (the baseline); same as --swap none")
    mode.add_argument("--compare", action="store_true",
                      help="run with --no-swap, then with --swap all, and list the tests "
                           "that pass with MXNet's classes but not with fusedrnn's")
    parser.add_argument("--only", choices=("all", "gluon", "operator"), default="all",
                        help="test_gluon_rnn.py, the test_operator.py RNN tests, or both")
    parser.add_argument("--seed", default="0",
                        help="seed numpy, mxnet and random before each test (default 0); "
                             "'none' leaves MXNet's test seeding as it is")
    parser.add_argument("--workdir", help="keep the tests' working directory and pytest's "
                                          "JUnit XML (results.xml) there, in a subfolder per "
                                          "run (default: a temporary directory, removed)")
    args = parser.parse_args(argv)

    unittest_dir = os.path.abspath(args.unittest_dir)
    _check_dir(unittest_dir)
    seed = None if args.seed.lower() == "none" else int(args.seed)
    try:
        groups = () if args.no_swap else parse_groups(args.swap)
    except ValueError as e:
        parser.error(str(e))

    def workdir(label):
        return os.path.join(args.workdir, label) if args.workdir else None

    if not args.compare:
        label = "stock" if not groups else "swapped" if set(groups) == set(
            parse_groups("all")) else "swapped-" + "+".join(groups)
        code, outcomes = run_pytest(unittest_dir, groups, args.only, seed, extra, label,
                                    workdir(label))
        _summary(label, outcomes)
        return code

    _, stock = run_pytest(unittest_dir, (), args.only, seed, extra, "stock", workdir("stock"))
    _, swapped = run_pytest(unittest_dir, parse_groups("all"), args.only, seed, extra,
                            "swapped", workdir("swapped"))
    print("\n===== comparison (MXNet's classes vs fusedrnn's)")
    names = sorted(set(stock) | set(swapped))
    width = max((len(n) for n in names), default=10)
    print(f"{'test':<{width}}  {'stock':<8} {'swapped':<8}")
    for name in names:
        print(f"{name:<{width}}  {stock.get(name, '-'):<8} {swapped.get(name, '-'):<8}")
    _summary("stock  ", stock)
    _summary("swapped", swapped)
    regressions = [n for n in names
                   if stock.get(n) == "passed" and swapped.get(n) != "passed"]
    out_of_scope = [n for n in names if stock.get(n) != "passed"]
    print(f"out of scope (do not pass with MXNet itself here): {len(out_of_scope)}" +
          "".join(f"\n  {n}: {stock.get(n)}" for n in out_of_scope))
    print(f"pass with MXNet, not with fusedrnn: {len(regressions)}" +
          "".join(f"\n  {n}: {swapped.get(n, '-')}" for n in regressions))
    return 1 if regressions else 0


if __name__ == "__main__":
    sys.exit(main())
