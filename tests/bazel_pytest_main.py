"""`main` of every py_test in BUILD: runs the test files given as arguments
through pytest and exits with pytest's status.

The tests are pytest-style (plain functions, fixtures, tests/conftest.py), so
a py_test that merely executed its file would run none of them. Bazel starts
this script from the runfiles tree (the working directory is the workspace's
runfiles directory, where BUILD's srcs, data and deps are); pytest then finds
conftest.py and pytest.ini there.

Before pytest starts, only the runfiles may provide this project's code:
- Python puts the directory of this script's *real* path (the source tree's
  tests/) first on sys.path; that entry is dropped;
- the venv's editable install of tf_lbsgd (a meta path finder mapping
  `tf_lbsgd` to the source tree) is removed, so that a module missing from a
  target's deps fails here as it would for a real Bazel dependency.
Subprocesses (`python -m tf_lbsgd`, tools/launch_local.py) inherit Bazel's
PYTHONPATH, which puts the runfiles first too.
"""

import os
import sys


def _runfiles_only():
    real_dir = os.path.dirname(os.path.realpath(__file__))
    if real_dir != os.path.dirname(os.path.abspath(__file__)):
        sys.path[:] = [p for p in sys.path if os.path.abspath(p) != real_dir]
    sys.meta_path[:] = [
        finder for finder in sys.meta_path
        if not getattr(finder, "__module__", "").startswith("__editable__")]


def main(argv):
    _runfiles_only()
    tmp = os.environ.get("TEST_TMPDIR")
    if tmp:
        # Bazel's test environment has no HOME; ~/.keras and
        # ~/tensorflow_datasets then live in the test's private directory.
        os.environ.setdefault("HOME", tmp)
    import pytest  # pylint: disable=g-import-not-at-top
    # -rfEs: the log lists skips with their reasons too (a dependency
    # missing from BUILD shows up as a skip under pytest.importorskip).
    args = list(argv) + ["-p", "no:cacheprovider", "-rfEs"]
    if tmp:
        args += ["--basetemp", os.path.join(tmp, "pytest")]
    xml = os.environ.get("XML_OUTPUT_FILE")
    if xml:
        args += ["--junitxml", xml]
    return pytest.main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
