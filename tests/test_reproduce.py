"""tools/reproduce.py end to end (the tiny preset through the real CLI),
and its library tf_lbsgd.analysis.reproduction.runner in-process."""

import dataclasses
import json
import os
import pathlib
import statistics
import subprocess
import sys

import pytest

from tf_lbsgd.analysis.reproduction import grid
from tf_lbsgd.analysis.reproduction import runner

# abspath, not resolve(): under Bazel the test file is a symlink into the
# checkout, and the tool must come from the runfiles next to it.
REPO_ROOT = pathlib.Path(os.path.abspath(__file__)).parents[1]
TOOL = str(REPO_ROOT / "tools" / "reproduce.py")
TINY = grid.PRESETS["tiny"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _reproduce(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, TOOL, "--preset=tiny", *args],
                          capture_output=True, text=True, env=env,
                          timeout=900, check=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("reproduction")
    runs, report = root / "runs", root / "docs" / "reproduction.md"
    result = _reproduce(f"--runs_dir={runs}", f"--report={report}")
    assert result.returncode == 0, result.stderr[-3000:]
    return runs, report, result


def test_sweep_then_ablations_at_the_chosen_size(tiny):
    runs, _, result = tiny
    assert sorted(os.listdir(runs)) == [
        "kn32-gradual_warmup-s0", "kn32-lars-s0", "kn64-gradual_warmup-s0",
        "kn64-lars-s0", "kn64-no_warmup-s0"]
    assert "ablations at kn = 64" in result.stdout
    with open(runs / "kn64-no_warmup-s0" / "operative_config.gin") as f:
        config = f.read()
    assert "build_learning_rate_schedule.warmup = 'none'" in config
    assert "resnet_cifar.bn_group_size = 16" in config  # n = 16, k = 4.
    assert "run.global_batch_size = 64" in config


def test_the_layerwise_optimizer_runs_at_every_size(tiny):
    runs, report, _ = tiny
    lars_variant = grid.VARIANTS["lars"]
    for kn in (32, 64):
        with open(runs / f"kn{kn}-lars-s0" / "operative_config.gin") as f:
            config = f.read()
        assert "run.optimizer_fn = @LARS" in config
        assert (f"LARS.trust_coefficient = "
                f"{lars_variant.trust_coefficient!r}") in config
        assert (f"build_learning_rate_schedule.base_lr = "
                f"{lars_variant.base_lr!r}") in config
    text = report.read_text()
    assert "## Past the limit: layer-wise adaptive rates" in text
    assert "LARS (You et al. 2017): eta" in text
    assert "| 64 | 4 | 0.05 x 2 = 0.1 |" in text
    assert "| 2.5 x sqrt(2) = 3.54 |" in text  # LARS' rate at kn = 64.
    with open(report.parent / "reproduction" / "results.json") as f:
        numbers = json.load(f)
    with open(runs / "kn64-lars-s0" / "metrics.json") as f:
        history = json.load(f)["eval"]["top1_error_history"]
    assert numbers["layerwise"]["lars"]["64"]["mean"] == pytest.approx(
        100 * statistics.median(history))
    assert len(numbers["layerwise_findings"]) == 1


def test_report_tables_and_figures(tiny):
    runs, report, _ = tiny
    text = report.read_text()
    assert text.startswith("# Goyal et al. 2017 at small scale")
    assert "python tools/reproduce.py --preset=tiny" in text
    for row in ("| baseline | 32 | 2 x 16 |", "| no warmup | 64 | 4 x 16 |",
                "| gradual warmup (R1 + R2) | 64 | 4 x 16 |"):
        assert row in text
    figures = report.parent / "reproduction"
    for name in ("fig1_error_vs_minibatch.png",
                 "fig2_training_curves_ablations.png",
                 "fig3_training_curves_minibatch.png"):
        assert f"](reproduction/{name})" in text
        data = (figures / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    with open(figures / "results.json") as f:
        numbers = json.load(f)
    # The statistic is the median of each run's final 2 evaluations (R14).
    with open(runs / "kn64-gradual_warmup-s0" / "metrics.json") as f:
        history = json.load(f)["eval"]["top1_error_history"]
    assert len(history) == 2
    assert numbers["sweep"]["64"]["mean"] == pytest.approx(
        100 * statistics.median(history))
    assert numbers["large_kn"] == 64


def test_a_second_run_trains_nothing_and_redraws(tiny, capsys):
    runs, report, _ = tiny
    logs = {p: (runs / p / "log.txt").stat().st_size for p in os.listdir(runs)}
    report.unlink()
    outcome = runner.run(TINY, str(runs), str(report), report_only=True)
    assert outcome.large_kn == 64
    assert capsys.readouterr().out.count("(finished earlier)") == 5
    assert report.read_text().startswith("# Goyal et al. 2017 at small scale")
    assert logs == {p: (runs / p / "log.txt").stat().st_size
                    for p in os.listdir(runs)}


def test_bad_requests_name_the_problem(tiny, tmp_path):
    runs, _, _ = tiny
    with pytest.raises(ValueError, match=r"--large_kn=48 is not a size of "
                       r"the sweep \[32, 64\]"):
        runner.run(TINY, str(runs), str(tmp_path / "r.md"), large_kn=48,
                 report_only=True)
    with pytest.raises(FileNotFoundError,
                       match="kn32-gradual_warmup-s0 is not finished"):
        runner.run(TINY, str(tmp_path / "empty"), str(tmp_path / "r.md"),
                 report_only=True)


def test_a_seed_outside_the_preset_is_refused(tmp_path):
    result = _reproduce("--seeds=3", "--dry_run",
                        f"--runs_dir={tmp_path / 'runs'}")
    assert result.returncode == 1
    assert ("reproduce: error: --seeds: seeds [3] are not a non-empty subset "
            "of the seeds of preset 'tiny', [0]") in result.stderr
    assert not os.path.exists(tmp_path / "runs")


def test_dry_run_prints_the_cli_commands(tmp_path, capsys):
    runner.run(TINY, str(tmp_path / "runs"), str(tmp_path / "r.md"),
               dry_run=True)
    lines = [l for l in capsys.readouterr().out.splitlines()
             if "-m tf_lbsgd" in l]
    assert len(lines) == 2 + 1 + 2  # The sweep, the ablation, LARS.
    assert "resnet_cifar.bn_group_size = 16" in lines[0]
    assert not os.listdir(tmp_path)


def test_the_report_names_the_command_without_report_only():
    argv = ["tools/reproduce.py", "--preset=full", "--report_only",
            "--report=docs/r.md", "--noreport_only"]
    assert runner.reproducing_command("tools/reproduce.py", argv) == (
        "python tools/reproduce.py --preset=full --report=docs/r.md")


def test_a_reports_runs_are_reused_without_training(tiny, tmp_path, capsys):
    _, report, _ = tiny
    recorded = report.parent / "reproduction" / "results.json"
    with open(recorded) as f:
        first = json.load(f)
    runs = tmp_path / "runs"  # Another session: the runs directory is gone.
    again = tmp_path / "again.md"
    runner.run(TINY, str(runs), str(again), report_only=True,
               reuse=[str(recorded)])
    assert capsys.readouterr().out.count("(recorded earlier)") == 5
    assert not runs.exists()
    with open(tmp_path / "again" / "results.json") as f:
        second = json.load(f)
    for part in ("sweep", "ablations", "layerwise", "findings"):
        assert second[part] == first[part]
    run = first["sweep"]["64"]["runs"][0]
    assert run["seed"] == 0 and len(run["curve"]) > 5
    assert ("train_lib.run.global_batch_size = 64" in run["bindings"])
    cpu = first["meta"]["machine"]["cpu"]
    assert run["cpu"] == cpu
    assert second["meta"]["reused"] == [
        {"file": str(recorded), "runs": 5, "cpus": {cpu: 5},
         "date": first["meta"]["date"]}]
    assert "5 runs: 0 trained on" in again.read_text()
    assert (f"; 5 recorded in `{recorded}` (trained on {cpu}; the file of "
            f"{first['meta']['date']})") in again.read_text()
    # Reused again, the runs keep the CPU they were trained on.
    second["sweep"]["32"]["runs"][0]["cpu"] = "another CPU"
    (tmp_path / "again" / "results.json").write_text(json.dumps(second))
    runner.run(TINY, str(runs), str(again), report_only=True,
               reuse=[str(tmp_path / "again" / "results.json")])
    assert "(trained 1 on another CPU, 4 on " in again.read_text()


def test_reuse_adds_only_the_missing_seeds(tiny, tmp_path, capsys):
    _, report, _ = tiny
    recorded = str(report.parent / "reproduction" / "results.json")
    two_seeds = dataclasses.replace(TINY, seeds=(0, 1))
    runner.run(two_seeds, str(tmp_path / "runs"), str(tmp_path / "r.md"),
               dry_run=True, reuse=[recorded])
    out = capsys.readouterr().out
    assert "# kn32-gradual_warmup-s0: recorded earlier" in out
    assert "# kn64-lars-s0: recorded earlier" in out
    commands = [l for l in out.splitlines() if "-m tf_lbsgd" in l]
    assert all("train_lib.run.seed = 1" in c for c in commands[:2]), commands


def test_reuse_refuses_runs_with_other_settings(tiny, tmp_path):
    _, report, _ = tiny
    recorded = str(report.parent / "reproduction" / "results.json")
    longer = dataclasses.replace(TINY, epochs=0.02)
    with pytest.raises(ValueError, match=r"kn32-gradual_warmup-s0 was "
                       r"trained with other settings than preset 'tiny'"):
        runner.run(longer, str(tmp_path / "runs"), str(tmp_path / "r.md"),
                   report_only=True, reuse=[recorded])
    result = _reproduce(f"--reuse={tmp_path / 'missing.json'}", "--dry_run")
    assert result.returncode == 1
    assert "missing.json" in result.stderr and "reproduce: error" in (
        result.stderr)
