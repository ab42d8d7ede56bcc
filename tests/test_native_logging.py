"""TF_CPP_MIN_LOG_LEVEL applied to absl's C++ log of the installed
TensorFlow (the CLI's stderr without XLA's line: tests/test_cli_e2e.py)."""

import pytest

from tf_lbsgd import native_logging


@pytest.fixture
def absl_level():
    """absl's (setter, getter); the level is restored afterwards."""
    functions = native_logging.absl_log_level_functions()
    # A TensorFlow whose absl is not found shows XLA's line again: look for
    # `nm -D --defined-only libtensorflow_framework.so.2 | grep MinLogLevel`.
    assert functions is not None, "absl's SetMinLogLevel not found"
    setter, getter = functions
    before = getter()
    yield getter
    setter(before)


@pytest.mark.parametrize("value,level", [("0", 0), ("2", 2), ("3", 3),
                                         ("7", 3), ("-1", 0)])
def test_the_variable_sets_absls_minimum_level(absl_level, value, level):
    environ = {native_logging.ENV_VAR: value}
    assert native_logging.apply_tf_cpp_min_log_level(environ) == level
    assert absl_level() == level


@pytest.mark.parametrize("environ", [{}, {native_logging.ENV_VAR: "quiet"}])
def test_unset_or_not_a_number_changes_nothing(absl_level, environ):
    before = absl_level()
    assert native_logging.apply_tf_cpp_min_log_level(environ) is None
    assert absl_level() == before


def test_a_file_that_is_not_elf_has_no_symbols(tmp_path):
    path = tmp_path / "libfake.so"
    path.write_bytes(b"#!/bin/sh\n" + bytes(100))
    assert native_logging._dynamic_symbol_names(str(path)) == b""  # pylint: disable=protected-access
