"""pytest_test: a py_test that runs one file of tests/ through pytest."""

def pytest_test(name, size, srcs, deps, **kwargs):
    """The py_test :name running tests/<name>.py (first of srcs) through pytest.

    The shared runner tests/bazel_pytest_main.py is its main, the test file
    its argument, and :test_support (conftest.py, pytest.ini) a dependency.

    Args:
      name: the test file's name without .py, e.g. "test_schedules".
      size: Bazel's size ("small", "medium", "large", "enormous").
      deps: the targets its code imports or runs.
      srcs: the test file tests/<name>.py, then other files of tests/ it
        imports.
      **kwargs: other py_test attributes (data, tags, ...).
    """
    test_file = "tests/%s.py" % name
    if not srcs or srcs[0] != test_file:
        fail("pytest_test %s: srcs must start with %s" % (name, test_file))
    native.py_test(
        name = name,
        size = size,
        srcs = ["tests/bazel_pytest_main.py"] + srcs,
        main = "tests/bazel_pytest_main.py",
        args = [test_file],
        deps = deps + [":test_support"],
        **kwargs
    )
