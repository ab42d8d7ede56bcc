"""A run's outputs read back and summarized (tf_lbsgd.analysis.run_outputs,
run_summary), and tools/summarize_runs.py, on fabricated model_dirs."""

import json
import os
import pathlib
import statistics
import subprocess
import sys

import pytest

from tf_lbsgd import paper
from tf_lbsgd.analysis import run_outputs
from tf_lbsgd.analysis import run_summary

# abspath, not resolve(): under Bazel the test file is a symlink into the
# checkout, and the tool must come from the runfiles next to it.
REPO_ROOT = pathlib.Path(os.path.abspath(__file__)).parents[1]
TOOL_PATH = REPO_ROOT / "tools" / "summarize_runs.py"

HISTORY_8K = [0.40, 0.30, 0.2410, 0.2385, 0.2402, 0.2390, 0.2378]
HISTORY_FASHION = [0.2, 0.1, 0.09, 0.085, 0.08]

CONFIG_8K = """\
# Parameters for build_learning_rate_schedule:
# ==============================================================================
schedules.build_learning_rate_schedule.base_lr = 0.1
schedules.build_learning_rate_schedule.decay_epochs = (30,
    60, 80)
schedules.build_learning_rate_schedule.scaling = 'linear'
schedules.build_learning_rate_schedule.warmup = 'gradual'  # R2

# Parameters for resnet_imagenet:
resnet_imagenet.depth = 50
resnet_imagenet.zero_gamma = True

train_lib.run.epochs = 90
train_lib.run.model_fn = @resnet_imagenet
"""

CONFIG_FASHION = """\
build_learning_rate_schedule.base_lr = 0.4
build_learning_rate_schedule.scaling = 'sqrt'
build_learning_rate_schedule.warmup = 'none'
resnet_cifar.depth = 8
resnet_cifar.zero_gamma = False
run.epochs = 5
"""


def _metrics(history, kn, median5=None, wall=3725.2, speed=12345.678):
    evaluation = {"top1_accuracy": 1 - history[-1], "top1_error": history[-1],
                  "top5_error": 0.07, "loss": 1.0, "examples": 50000,
                  "median5_top1_error": median5, "top1_error_history": history}
    return {"global_step": 100, "epochs": 90.0004, "global_batch_size": kn,
            "num_replicas": 8, "train_wall_time_s": wall,
            "examples_per_second": speed, "skipped_images": 0,
            "eval": evaluation}


def _model_dir(parent, name, metrics, config=None):
    model_dir = parent / name
    model_dir.mkdir()
    (model_dir / "metrics.json").write_text(json.dumps(metrics))
    if config is not None:
        (model_dir / "operative_config.gin").write_text(config)
    return model_dir


@pytest.fixture
def runs(tmp_path):
    """Three model_dirs: a paper row, an unmatched run, a run w/o history."""
    no_history = _metrics([0.5], 256, median5=0.3)
    del no_history["eval"]["top1_error_history"]
    return [
        _model_dir(tmp_path, "resnet50_kn8k", _metrics(HISTORY_8K, 8192),
                   CONFIG_8K),
        _model_dir(tmp_path, "fashion", _metrics(HISTORY_FASHION, 256),
                   CONFIG_FASHION),
        _model_dir(tmp_path, "bare", no_history),
    ]


def _rows(table):
    """Table body rows as dicts column -> cell."""
    lines = table.strip().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert lines[1].startswith("|---")
    return {cells[0]: dict(zip(header, cells)) for cells in
            ([c.strip() for c in line.strip("|").split("|")]
             for line in lines[2:])}


def test_median_of_final():
    assert run_outputs.median_of_final(HISTORY_8K) == statistics.median(
        HISTORY_8K[-5:])
    assert run_outputs.median_of_final([3.0, 1.0], count=5) == 2.0
    assert run_outputs.median_of_final([9.0, 1.0, 2.0], count=1) == 2.0
    with pytest.raises(ValueError, match="empty"):
        run_outputs.median_of_final([])
    with pytest.raises(ValueError, match="count=0"):
        run_outputs.median_of_final([1.0], count=0)


def test_gin_value():
    assert run_outputs.gin_value(
        CONFIG_8K, "build_learning_rate_schedule.warmup") == "gradual"
    assert run_outputs.gin_value(
        CONFIG_FASHION, "build_learning_rate_schedule.warmup") == "none"
    assert run_outputs.gin_value(CONFIG_8K, "depth") == 50
    assert run_outputs.gin_value(CONFIG_8K, "zero_gamma") is True
    assert run_outputs.gin_value(CONFIG_8K, "run.epochs") == 90
    assert run_outputs.gin_value(CONFIG_FASHION, "run.epochs") == 5
    assert run_outputs.gin_value(CONFIG_8K, "decay_epochs") == (30, 60, 80)
    assert run_outputs.gin_value(CONFIG_8K, "model_fn") == "@resnet_imagenet"
    assert run_outputs.gin_value(CONFIG_8K, "momentum") is None
    # Suffixes match at a dot only; the last binding wins.
    assert run_outputs.gin_value("a.xdepth = 1\n", "depth") is None
    assert run_outputs.gin_value("a.depth = 1\nb.depth = 2\n", "depth") == 2
    with pytest.raises(ValueError, match="'a b'"):
        run_outputs.gin_value(CONFIG_8K, "a b")


def test_gin_bindings_reads_scopes_references_and_blocks():
    text = ("import tf_lbsgd.schedules\n"
            "train/run.epochs = 3\n"
            "run.model_fn = @train/resnet_cifar()\n"
            "run.lr = %BASE_LR\n"
            "resnet_cifar:\n  depth = 20\n  width = 16\n")
    assert run_outputs.gin_bindings(text) == [
        ("train/run.epochs", 3), ("run.model_fn", "@train/resnet_cifar()"),
        ("run.lr", "%BASE_LR"), ("resnet_cifar.depth", 20),
        ("resnet_cifar.width", 16)]
    assert run_outputs.gin_value(text, "run.epochs") == 3
    for bad in ("depth = (1,\n", "depth 1\n"):
        with pytest.raises(ValueError, match="not a gin config"):
            run_outputs.gin_bindings(bad)


def test_read_run(runs):
    run = run_summary.read_run(str(runs[0]))
    assert run["name"] == "resnet50_kn8k"
    assert (run["depth"], run["kn"], run["warmup"], run["scaling"],
            run["base_lr"], run["zero_gamma"]) == (50, 8192, "gradual",
                                                   "linear", 0.1, True)
    assert run["median5_top1_error"] == pytest.approx(
        statistics.median(HISTORY_8K[-5:]))
    assert run["top1_error"] == HISTORY_8K[-1]
    bare = run_summary.read_run(str(runs[2]) + "/")
    assert bare["name"] == "bare"
    assert bare["median5_top1_error"] == 0.3  # median5 fallback
    assert bare["depth"] is None and bare["warmup"] is None


def test_format_table(runs):
    table = run_summary.format_table(
        [run_summary.read_run(str(d)) for d in runs])
    rows = _rows(table)
    assert list(rows) == ["resnet50_kn8k", "fashion", "bare"]
    ours = 100 * statistics.median(HISTORY_8K[-5:])
    row = rows["resnet50_kn8k"]
    assert row["median5 top-1 err %"] == f"{ours:.2f}" == "23.90"
    assert row["final top-1 err %"] == "23.78"
    assert row["paper top-1 err %"] == "23.74 ± 0.09 (resnet50_kn8k)"
    assert row["ours - paper"] == f"{ours - 23.74:+.2f}" == "+0.16"
    assert (row["depth"], row["kn"], row["warmup"], row["scaling"],
            row["base lr"], row["zero_gamma"], row["epochs"]) == (
                "50", "8192", "gradual", "linear", "0.1", "True", "90")
    assert row["images/s"] == "12345.7"
    assert row["train time"] == "1:02:05"
    fashion = rows["fashion"]
    assert fashion["median5 top-1 err %"] == "9.00"
    assert fashion["warmup"] == "none" and fashion["zero_gamma"] == "False"
    assert fashion["paper top-1 err %"] == fashion["ours - paper"] == ""
    assert rows["bare"]["median5 top-1 err %"] == "30.00"
    assert rows["bare"]["final top-1 err %"] == "50.00"


def test_explicit_paper_row(runs):
    run = run_summary.read_run(str(runs[1]))
    rows = run_summary.parse_paper_rows(["fashion=resnet101_kn8k"])
    row = _rows(run_summary.format_table([run], rows))["fashion"]
    assert row["paper top-1 err %"] == "22.36 (resnet101_kn8k)"
    assert row["ours - paper"] == "-13.36"
    every_run = run_summary.parse_paper_rows(["resnet50_kn256"])
    assert run_summary.paper_row(run, every_run) == "resnet50_kn256"
    with pytest.raises(ValueError, match="'resnet50_kn9k'"):
        run_summary.parse_paper_rows(["resnet50_kn9k"])


def test_paper_values():
    assert len(paper.TOP1_ERROR) == 13
    assert paper.TOP1_ERROR["resnet50_kn256"] == (23.60, 0.12)
    assert paper.TOP1_ERROR["resnet50_kn8k_unscaled"] == (41.67, 0.10)
    assert paper.TOP1_ERROR["resnet50_kn8k_no_zero_gamma"][0] == 24.11
    assert paper.TOP1_ERROR["resnet50_kn256_no_zero_gamma"][0] == 23.84
    folder = REPO_ROOT / "gin" / "experiments" / "imagenet"
    experiments = {p.stem for p in folder.glob("*.gin")}
    if experiments:
        assert set(paper.TOP1_ERROR) <= experiments


def test_bad_dirs(tmp_path):
    with pytest.raises(run_outputs.RunError, match="nowhere"):
        run_summary.read_run(str(tmp_path / "nowhere"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(run_outputs.RunError,
                       match=r"empty/metrics\.json does not"):
        run_summary.read_run(str(empty))
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "metrics.json").write_text('{"eval": {')
    with pytest.raises(run_outputs.RunError, match=r"corrupt/metrics\.json"):
        run_summary.read_run(str(corrupt))
    (corrupt / "metrics.json").write_text(
        json.dumps({"eval": {"top1_error_history": [0.1, "x"]}}))
    with pytest.raises(run_outputs.RunError, match=r"metrics\.json.*'x'"):
        run_summary.read_run(str(corrupt))
    (corrupt / "metrics.json").write_text("{}")
    (corrupt / "operative_config.gin").write_text("depth = [1,\n")
    with pytest.raises(run_outputs.RunError,
                       match=r"corrupt/operative_config\.gin: not a gin"):
        run_summary.read_run(str(corrupt))


def _cli(*args):
    return subprocess.run([sys.executable, str(TOOL_PATH), *map(str, args)],
                          cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=60, check=False)


def test_cli(runs, tmp_path):
    out = tmp_path / "table.md"
    result = _cli("--out", out, "--paper_row=bare=resnet50_kn256", *runs)
    assert result.returncode == 0, result.stderr
    assert out.read_text() == result.stdout
    rows = _rows(result.stdout)
    assert rows["resnet50_kn8k"]["ours - paper"] == "+0.16"
    assert rows["bare"]["ours - paper"] == "+6.40"
    bad = _cli(runs[0], tmp_path / "missing")
    assert bad.returncode == 1
    assert "missing" in bad.stderr and "metrics.json" in bad.stderr
    assert bad.stdout == ""
