"""TF_CPP_MIN_LOG_LEVEL for the lines TensorFlow logs through absl's C++ log.

TensorFlow 2.20 logs some lines through absl's C++ logging, which ignores
TF_CPP_MIN_LOG_LEVEL: XLA's `Compiled cluster using XLA!`, after absl's
`WARNING: All log messages before absl::InitializeLog() is called are
written to STDERR`. absl's minimum log level numbers severities as
TF_CPP_MIN_LOG_LEVEL does (0 INFO, 1 WARNING, 2 ERROR, 3 FATAL);
`apply_tf_cpp_min_log_level` sets it to the variable's value, through the
absl of TensorFlow's framework library (found by its exported symbol, whose
name carries absl's version).
"""

import ctypes
import functools
import glob
import os
import re
import struct

ENV_VAR = "TF_CPP_MIN_LOG_LEVEL"
# absl::SetMinLogLevel(absl::LogSeverityAtLeast), with or without absl's
# versioned inline namespace (e.g. lts_20250127 in TensorFlow 2.20).
_SET_MIN_LOG_LEVEL = re.compile(
    rb"_ZN4absl(?:\d+lts_\d+)?14SetMinLogLevelENS\d*_18LogSeverityAtLeastE")
_MIN_LOG_LEVEL = re.compile(rb"_ZN4absl(?:\d+lts_\d+)?11MinLogLevelEv")
_SHT_DYNSYM = 11


def _dynamic_symbol_names(path):
    """The names in the dynamic symbol table of ELF64 little-endian library
    `path` (its .dynstr section), or b"" for another kind of file."""
    with open(path, "rb") as f:
        header = f.read(64)
        if header[:4] != b"\x7fELF" or header[4:6] != b"\x02\x01":
            return b""
        (section_offset,) = struct.unpack_from("<Q", header, 0x28)
        entry_size, count = struct.unpack_from("<HH", header, 0x3A)
        f.seek(section_offset)
        sections = f.read(entry_size * count)
        for index in range(count):
            (kind,) = struct.unpack_from("<I", sections, index * entry_size + 4)
            if kind == _SHT_DYNSYM:
                (strings,) = struct.unpack_from(
                    "<I", sections, index * entry_size + 0x28)
                offset, size = struct.unpack_from(
                    "<QQ", sections, strings * entry_size + 0x18)
                f.seek(offset)
                return f.read(size)
    return b""


def _framework_library():
    """TensorFlow's framework library (it holds absl's log state), or None."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    paths = sorted(glob.glob(os.path.join(tf.sysconfig.get_lib(),
                                          "libtensorflow_framework.so*")))
    return paths[0] if paths else None


def _absl_function(library, names, pattern, restype, argtypes):
    match = pattern.search(names)
    if match is None:
        return None
    try:
        function = getattr(library, match.group().decode())
    except AttributeError:  # Named (e.g. imported) but not defined here.
        return None
    function.restype, function.argtypes = restype, argtypes
    return function


@functools.lru_cache(maxsize=None)
def absl_log_level_functions():
    """absl's SetMinLogLevel and MinLogLevel in TensorFlow's framework.

    Imports TensorFlow. Looked up once (a 13 MB table of names, 50 ms).

    Returns:
        (set_min_log_level(level), min_log_level() -> level), or None where
        they are not found (no framework library, not ELF, another name).
    """
    path = _framework_library()
    if path is None:
        return None
    names = _dynamic_symbol_names(path)
    library = ctypes.CDLL(path)  # Loaded already: the same handle.
    setter = _absl_function(library, names, _SET_MIN_LOG_LEVEL, None,
                            [ctypes.c_int])
    getter = _absl_function(library, names, _MIN_LOG_LEVEL, ctypes.c_int, [])
    return (setter, getter) if setter and getter else None


def apply_tf_cpp_min_log_level(environ=None):
    """Sets absl's C++ minimum log level to TF_CPP_MIN_LOG_LEVEL.

    Call it after TensorFlow is imported (it imports it otherwise) and
    before the lines to hide are logged: the XLA line comes with the first
    compiled cluster, not at import.

    Args:
        environ: the environment; None for os.environ.

    Returns:
        The level set (0-3), or None: the variable is unset or not an
        integer, or absl's function was not found in this TensorFlow.
    """
    value = (os.environ if environ is None else environ).get(ENV_VAR, "")
    try:
        level = min(max(int(value), 0), 3)
    except ValueError:
        return None
    functions = absl_log_level_functions()
    if functions is None:
        return None
    set_min_log_level, _ = functions
    set_min_log_level(level)
    return level
