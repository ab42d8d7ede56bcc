"""tf_lbsgd.analysis: TensorFlow-free, and its one table and JSON writer."""

import json
import pkgutil
import subprocess
import sys

import numpy as np
import pytest

from tf_lbsgd import analysis
from tf_lbsgd.analysis import tables


def test_no_module_of_the_package_imports_tensorflow():
    modules = [f"tf_lbsgd.analysis.{m.name}"
               for m in pkgutil.iter_modules(analysis.__path__)]
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            "    assert 'tensorflow' not in sys.modules, name\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]


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
