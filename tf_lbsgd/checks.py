"""Checks of settings and of the environment, without TensorFlow.

The value checks are the ones the configurable entry points (schedules,
optimizer, models, data, batch sizes) share: each raises ValueError naming
the setting and the value. `writable_directory` runs in the command line
before it spends seconds importing TensorFlow, so that a bad --model_dir is
reported at once, with one line naming it.
"""

import math
import os
import tempfile

_PROBE_BYTES = 4096  # One page: a full disk refuses it, an empty file not.


def positive_int(name, value):
    """Returns `value`; ValueError naming `name` unless a positive int (not
    a bool)."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def finite_number(name, value):
    """`float(value)`; ValueError naming `name` unless a finite number."""
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(result):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return result


def non_negative(name, value):
    """`value` as a float; ValueError naming it unless finite and >= 0."""
    result = finite_number(name, value)
    if result < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return result


def positive(name, value):
    """`value` as a float; ValueError naming it unless finite and > 0."""
    result = finite_number(name, value)
    if result <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return result


def fraction(name, value):
    """`value` as a float; ValueError naming it unless in [0, 1)."""
    result = finite_number(name, value)
    if not 0.0 <= result < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return result


def one_of(name, value, allowed):
    """`value`; ValueError naming `name`, `value` and `allowed` unless it is
    one of them."""
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; expected one of "
                         f"{', '.join(map(repr, allowed))}")
    return value


def _nearest_existing(path):
    """`path` or its closest ancestor that exists."""
    while not os.path.lexists(path):
        path = os.path.dirname(path)
    return path


def _write_probe(directory):
    """Writes, syncs and removes one page in `directory`; raises OSError."""
    fd, probe = tempfile.mkstemp(prefix=".tf_lbsgd_write_probe_",
                                 dir=directory)
    try:
        os.write(fd, b"\0" * _PROBE_BYTES)
        os.fsync(fd)  # A full disk may only say so when the data is written.
    finally:
        os.close(fd)
        os.unlink(probe)


def writable_directory(name, path):
    """Checks that `path` is, or can be made, a directory one can write to.

    Nothing is left behind: a missing directory is not created, the probe
    file written in it (or in the ancestor where it would be created) is
    removed. Remote paths (`gs://...`) are not checked here.

    Args:
        name: the setting, e.g. `--model_dir`.
        path: the directory.

    Raises:
        ValueError: naming `path` when it, or an ancestor, is not a
            directory (a file), or when a file cannot be written there
            (read-only, permission denied, disk full), with the reason.
    """
    if "://" in path:
        return
    target = os.path.abspath(path)
    existing = _nearest_existing(target)
    if existing == target and not os.path.isdir(existing):
        raise ValueError(f"{name} {path} exists and is not a directory")
    if not os.path.isdir(existing):
        raise ValueError(f"{name} {path} cannot be created: {existing} is "
                         f"not a directory")
    try:
        _write_probe(existing)
    except OSError as e:
        problem = "is not writable" if existing == target else (
            "cannot be created")
        raise ValueError(f"{name} {path} {problem}: cannot write a file in "
                         f"{existing} ({e.strerror or e})") from e
