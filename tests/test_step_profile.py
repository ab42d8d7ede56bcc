"""tf_lbsgd.analysis.op_profile (a trace by kind of op) and a tiny run of
tools/profile_train_step.py on a real profiler trace."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from tf_lbsgd.analysis import op_profile

REPO_ROOT = pathlib.Path(os.path.abspath(__file__)).parents[1]


@pytest.mark.parametrize("op_type, kind", [
    ("_MklNativeConv2DBackpropFilter", "conv backward: weights"),
    ("Conv2DBackpropInput", "conv backward: input"),
    ("_MklNativeConv2D", "conv forward"),
    ("_MklMatMul", "matmul"),
    ("_MklNativeFusedBatchNormGradV3", "batch norm"),
    ("_MklNativeFusedBatchNormEx", "batch norm"),
    ("Cast", "cast"), ("ReluGrad", "relu"), ("AddN", "adds"),
    ("ResourceApplyMomentum", "optimizer update"),
    ("_MklNativeMaxPoolGrad", "pooling"), ("Pad", "layout and copies"),
    ("SparseSoftmaxCrossEntropyWithLogits", "loss and metrics"),
    ("Dataset", "other")])
def test_kinds_of_op_types(op_type, kind):
    assert op_profile.kind_of(op_type) == kind


def test_ops_under_the_optimizers_scope_are_its_update():
    name = "while/body/_1/momentum_sgd/add_44"
    assert op_profile.kind_of("AddV2", name, "momentum_sgd") == (
        "optimizer update")
    assert op_profile.kind_of("AddV2", name) == "adds"


def _table(rows):
    """A framework_op_stats DataTable (the columns it has, in its order)."""
    labels = ["Rank", "Host/device", "Operation Type", "Operation Name",
              "#Occurrences", "Total time (us)", "Total self-time (us)"]
    return [{"cols": [{"label": label} for label in labels],
             "rows": [{"c": [{"v": 1}, {"v": "Host"}, {"v": op_type},
                             {"v": name}, {"v": float(count)},
                             {"v": 2 * micros}, {"v": micros}]}
                      for op_type, name, count, micros in rows]}]


def test_breakdown_sums_self_times_per_step_by_kind():
    rows = op_profile.rows_of_table(_table([
        ("IDLE", "IDLE", 1, 9e9),
        ("_MklNativeConv2D", "m/a/Conv2D", 2, 6000.0),
        ("Conv2D", "m/b/Conv2D", 2, 2000.0),
        ("Relu", "m/relu", 2, 1000.0),
        ("AddV2", "t/momentum_sgd/add", 2, 1000.0)]))
    assert [row["type"] for row in rows] == [
        "_MklNativeConv2D", "Conv2D", "Relu", "AddV2"]  # No IDLE.
    kinds = op_profile.breakdown(rows, steps=2, update_scope="momentum_sgd")
    assert [kind["kind"] for kind in kinds] == [
        "conv forward", "relu", "optimizer update"]
    conv = kinds[0]
    assert conv["ms_per_step"] == pytest.approx(4.0)  # 8,000 us / 2 steps.
    assert conv["share"] == pytest.approx(0.8)
    assert conv["op_types"] == [("_MklNativeConv2D", 3.0), ("Conv2D", 1.0)]
    table = op_profile.breakdown_table(kinds, step_ms=4.5)
    assert "| conv forward | 4 | 80.0% | _MklNativeConv2D 3, Conv2D 1 |" in (
        table)
    assert table.startswith("step: 4 ms wall; ops: 5 ms of op time")


def test_breakdown_needs_a_step():
    with pytest.raises(ValueError, match="steps must be at least 1, got 0"):
        op_profile.breakdown([], steps=0)


def test_find_trace_names_the_directory_it_searched(tmp_path):
    with pytest.raises(FileNotFoundError, match="plugins/profile"):
        op_profile.find_trace(str(tmp_path))


def test_tiny_profile_of_two_precisions(tmp_path):
    out = tmp_path / "profile.json"
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tools" / "profile_train_step.py"),
         "--model=small", "--precision=float32,mixed_bfloat16", "--steps=2",
         "--batch=16", "--replicas=2", f"--logdir={tmp_path / 'traces'}",
         f"--out_json={out}"],
        capture_output=True, text=True, timeout=600, check=False,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(out.read_text())
    assert [profile["precision"] for profile in payload["profiles"]] == [
        "float32", "mixed_bfloat16"]
    for profile in payload["profiles"]:
        trace = pathlib.Path(profile["trace"])
        assert trace.is_file()
        assert trace.is_relative_to(tmp_path / "traces" / profile["precision"])
        kinds = {kind["kind"]: kind for kind in profile["kinds"]}
        for kind in ("conv forward", "conv backward: weights", "batch norm",
                     "optimizer update"):
            assert kinds[kind]["ms_per_step"] > 0, kind
        assert sum(kind["share"] for kind in kinds.values()) == (
            pytest.approx(1.0))
        assert profile["step_ms"] > 0 and profile["traced_ms"] > 0
        assert f"{profile['precision']} (untraced loop" in result.stdout
    assert payload["threads"]["reason"] == "set: TensorFlow's default"
    bf16 = {kind["kind"] for kind in payload["profiles"][1]["kinds"]}
    assert "cast" in bf16  # Variables are float32, the compute bfloat16.


def test_bad_precision_is_a_usage_error():
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tools" / "profile_train_step.py"),
         "--precision=float8"], capture_output=True, text=True, timeout=120,
        check=False)
    assert result.returncode == 1
    assert "--precision: unknown precision 'float8'" in result.stderr
