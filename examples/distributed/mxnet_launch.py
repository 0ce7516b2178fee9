#!/usr/bin/env python
"""Runs mxnet's own tools/launch.py (shipped in the mxnet wheel; same arguments, see --help),
the launcher for several machines, on Python >= 3.9.

The dmlc_tracker that mxnet 1.9.1 bundles calls threading.Thread.isAlive, which Python 3.9
removed: tools/launch.py then dies with an AttributeError right after starting the scheduler,
which it leaves running. This restores the old name and runs tools/launch.py unchanged.

    python mxnet_launch.py -n 2 -s 2 -H hosts --launcher ssh python train.py --kvstore dist_sync
"""
import importlib.util
import os
import runpy
import sys
import threading

if not hasattr(threading.Thread, "isAlive"):
    threading.Thread.isAlive = threading.Thread.is_alive

# Found without importing mxnet: the launcher needs none of it, and dmlc_tracker forks.
spec = importlib.util.find_spec("mxnet")
if spec is None:
    sys.exit("mxnet_launch.py: mxnet is not installed")
LAUNCH = os.path.join(spec.submodule_search_locations[0], "tools", "launch.py")

if __name__ == "__main__":
    sys.argv[0] = LAUNCH
    runpy.run_path(LAUNCH, run_name="__main__")
