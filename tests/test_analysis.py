"""tf_lbsgd.analysis: TensorFlow-free; its table and JSON writer, event-file
reader and machine description."""

import glob
import json
import os
import pathlib
import pkgutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_lbsgd import analysis
from tf_lbsgd.analysis import event_files
from tf_lbsgd.analysis import machine
from tf_lbsgd.analysis import tables

# abspath, not resolve(): under Bazel the test file is a symlink into the
# checkout, and the tool must come from the runfiles next to it.
REPRODUCE = str(pathlib.Path(os.path.abspath(__file__)).parents[1] / "tools"
                / "reproduce.py")
# Imports every module of the package, then runs tools/reproduce.py --dry_run
# in the same process; names the first step that brought TensorFlow in.
_WITHOUT_TENSORFLOW = """
import importlib, runpy, sys
for name in {modules!r}:
    importlib.import_module(name)
    assert 'tensorflow' not in sys.modules, name
sys.argv = [{tool!r}, '--preset=quick', '--dry_run', '--runs_dir=runs']
try:
    runpy.run_path({tool!r}, run_name='__main__')
except SystemExit as e:
    assert not e.code, f'exit code {{e.code}}'
assert 'tensorflow' not in sys.modules, 'tools/reproduce.py --dry_run'
"""


def test_the_package_and_reproduce_dry_run_do_not_import_tensorflow(
        tmp_path):
    modules = [m.name for m in pkgutil.walk_packages(
        analysis.__path__, prefix="tf_lbsgd.analysis.")]
    assert "tf_lbsgd.analysis.reproduction.runner" in modules
    code = _WITHOUT_TENSORFLOW.format(modules=modules, tool=REPRODUCE)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                            text=True, timeout=120, check=False, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    # The quick preset's sweep (3 sizes), its 5 ablations at the largest size
    # and zero-gamma off at the baseline.
    assert result.stdout.count(" -m tf_lbsgd ") == 3 + 5 + 1
    assert not os.listdir(tmp_path)


def test_markdown_table_formats_and_aligns():
    text = tables.markdown_table(["kn", "error", "note"],
                                 [[256, 0.23456, None], [8192, 1234.5, "x"]],
                                 align="rrl")
    assert text.splitlines() == [
        "| kn | error | note |", "|---:|---:|---|",
        "| 256 | 0.235 |  |", "| 8192 | 1234 | x |"]
    with pytest.raises(ValueError, match="2 cells, the header 3"):
        tables.markdown_table(["a", "b", "c"], [[1, 2]])
    with pytest.raises(ValueError, match="align 'r'"):
        tables.markdown_table(["a", "b"], [], align="r")


def test_write_json_takes_numpy_values(tmp_path):
    path = tables.write_json(str(tmp_path / "sub" / "out.json"),
                             {"a": np.float32(0.5), "b": np.arange(3)})
    with open(path, encoding="utf-8") as f:
        assert json.load(f) == {"a": 0.5, "b": [0, 1, 2]}
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["out.json"]
    with pytest.raises(TypeError, match="not JSON serialisable"):
        tables.jsonable(object())


def _write_scalars(directory, values, tag="top1_error",
                   write=tf.summary.scalar):
    """Writes (step, value) pairs with tf.summary; returns the file's path."""
    writer = tf.summary.create_file_writer(str(directory))
    with writer.as_default():
        for step, value in values:
            write(tag, value, step=step)
    writer.close()
    (path,) = glob.glob(str(directory / event_files.EVENT_FILE_PATTERN))
    return path


def test_crc32c_of_the_standard_check_string():
    assert event_files.crc32c(b"123456789") == 0xE3069283  # RFC 3720 B.4.


def test_events_are_those_tensorflow_reads(tmp_path):
    path = _write_scalars(tmp_path, [(10, 0.5), (20, 0.3), (20, 0.25)])
    ours = [e.SerializeToString() for e in event_files.read_events(path)]
    assert ours == [e.SerializeToString()
                    for e in tf.compat.v1.train.summary_iterator(path)]
    assert len(ours) == 1 + 3  # The file's version, then the scalars.
    assert event_files.read_scalars(str(tmp_path), "top1_error") == {
        10: 0.5, 20: 0.25}  # The last write of a step wins.


def test_a_record_cut_short_ends_the_file(tmp_path):
    path = _write_scalars(tmp_path, [(1, 0.5), (2, 0.25), (3, 0.125)])
    with open(path, "rb") as f:
        data = f.read()
    last = 16 + len(list(tf.compat.v1.train.summary_iterator(path))[-1]
                    .SerializeToString())
    # Within the data's checksum, the data, and the header of the last record.
    for cut in (1, 7, last - 6):
        with open(path, "wb") as f:
            f.write(data[:-cut])
        assert event_files.read_scalars(str(tmp_path), "top1_error") == {
            1: 0.5, 2: 0.25}, f"{cut} bytes cut"


def test_a_damaged_record_is_an_error_naming_the_file(tmp_path):
    path = _write_scalars(tmp_path, [(1, 0.5)])
    with open(path, "rb") as f:
        data = bytearray(f.read())
    data[-6] ^= 0x01  # In the last record's data.
    with open(path, "wb") as f:
        f.write(data)
    with pytest.raises(ValueError, match=r"events\.out\.tfevents\..*: the "
                       r"record at byte \d+ is corrupt \(its data's checksum"):
        event_files.read_scalars(str(tmp_path), "top1_error")


def test_scalar_value_reads_tf1_summaries_and_refuses_vectors(tmp_path):
    summary = tf.compat.v1.Summary(value=[
        tf.compat.v1.Summary.Value(tag="loss", simple_value=1.5)])
    assert event_files.scalar_value(summary.value[0]) == 1.5
    path = _write_scalars(tmp_path, [(1, tf.constant([0.5, 0.25]))],
                          tag="pair", write=tf.summary.write)
    with pytest.raises(ValueError, match="summary 'pair' holds 2 values"):
        event_files.read_scalars(os.path.dirname(path), "pair")


def test_machine_info_names_the_versions_without_importing_them(tmp_path):
    info = machine.machine_info()
    assert info["tensorflow"] == tf.__version__
    assert info["keras"] == keras.__version__
    assert info["cores"] == os.cpu_count() and info["cpu"]
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU @ 2.0GHz\n")
    assert machine.cpu_model(str(cpuinfo)) == "Some CPU @ 2.0GHz"
    assert machine.installed_version("no-such-distribution") == (
        machine.NOT_INSTALLED)
