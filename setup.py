"""Builds fusedrnn's C++ extension by running CMake; CMakeLists.txt says how to compile it and
pyproject.toml holds the metadata and build requirements.

`pip install .`, `pip install -e .` and `pip wheel .` all come through here. Environment:
CMAKE_ARGS (extra -D options, e.g. "-DFUSEDRNN_SANITIZE=address;undefined"),
CMAKE_BUILD_PARALLEL_LEVEL (compile jobs; default: the number of CPUs), CMAKE_GENERATOR.
"""
import os
import shlex
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent.resolve()


class CMakeExtension(Extension):
    """A module that CMakeLists.txt builds: setuptools compiles no sources of its own."""

    def __init__(self, name, target):
        super().__init__(name, sources=[])
        self.target = target


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        # Where setuptools expects the module: build/lib.*/fusedrnn for a wheel (an editable
        # install copies it from there into src/fusedrnn).
        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_dir = Path(self.build_temp).resolve() / ext.name
        build_dir.mkdir(parents=True, exist_ok=True)
        # A kept cache would carry over the last build's options (say a sanitizer from
        # CMAKE_ARGS) and tool paths (an isolated build's environment, deleted since): configure
        # afresh each time; the object files stay, so an unchanged build recompiles nothing.
        (build_dir / "CMakeCache.txt").unlink(missing_ok=True)
        configure = ["cmake", "-S", str(ROOT), "-B", str(build_dir),
                     f"-DPython_EXECUTABLE={sys.executable}",
                     f"-DCMAKE_BUILD_TYPE={'Debug' if self.debug else 'Release'}",
                     f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
                     *shlex.split(os.environ.get("CMAKE_ARGS", ""))]
        build = ["cmake", "--build", str(build_dir), "--target", ext.target]
        if "CMAKE_BUILD_PARALLEL_LEVEL" not in os.environ:
            build += ["-j", str(self.parallel or os.cpu_count() or 1)]
        subprocess.run(configure, check=True)
        subprocess.run(build, check=True)


# The same module is the MXNet operator library (fusedrnn/__init__.py loads it into MXNet).
setup(ext_modules=[CMakeExtension("fusedrnn._C", target="_C")],
      cmdclass={"build_ext": CMakeBuild})
