"""Imports a script of tools/ by its path (tools/ is not a package)."""

import importlib.util
import os
import pathlib

# abspath, not resolve(): under Bazel the test file is a symlink into the
# checkout, and the tools must come from the runfiles next to it.
REPO_ROOT = pathlib.Path(os.path.abspath(__file__)).parents[1]


def load_tool(name):
    """Returns the module of tools/<name>.py."""
    spec = importlib.util.spec_from_file_location(
        name, REPO_ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
