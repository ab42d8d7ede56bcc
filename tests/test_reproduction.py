"""The reproduction's grid, statistics and findings
(tf_lbsgd/analysis/reproduction)."""

import dataclasses
import json
import math
import statistics

import numpy as np
import gin
import pytest
import tensorflow as tf

from tf_lbsgd import config
from tf_lbsgd import outputs
from tf_lbsgd import schedules
from tf_lbsgd.analysis.reproduction import findings
from tf_lbsgd.analysis.reproduction import grid
from tf_lbsgd.analysis.reproduction import plots
from tf_lbsgd.analysis.reproduction import report
from tf_lbsgd.analysis.reproduction import results
from tf_lbsgd.analysis.reproduction import reuse

FULL = grid.PRESETS["full"]


def _schedule_of(point, preset):
    """The schedule the CLI builds from the point's gin bindings."""
    config.parse([grid.GIN_FILE], grid.gin_bindings(point, preset))
    return schedules.build_learning_rate_schedule(
        global_batch_size=point.kn,
        steps_per_epoch=preset.steps_per_epoch(point.kn),
        total_epochs=preset.epochs)


def _expected_lr(step, kn, warmup, scaling, preset=FULL):
    """The paper's schedule written out in numpy (R1-R4)."""
    spe = 60000 / kn
    ratio = kn / preset.baseline
    peak = preset.base_lr * {"linear": ratio, "sqrt": math.sqrt(ratio),
                             "none": 1.0}[scaling]
    decays = np.sum(step >= np.floor(np.array(preset.decay_epochs) * spe
                                     + 0.5))
    after = peak * 0.1 ** decays
    warm_steps = np.floor(preset.warmup_epochs * spe + 0.5)
    if step >= warm_steps or warmup == "none":
        return after
    start = min(preset.base_lr, peak)
    if warmup == "constant":
        return start
    return start + (peak - start) * step / warm_steps


@pytest.mark.parametrize("variant", ["gradual_warmup", "no_warmup",
                                     "constant_warmup", "unscaled",
                                     "sqrt_scaling"])
def test_each_points_bindings_build_the_papers_schedule(variant):
    kn = 1024  # k = 64 workers of n = 16; 32 x the baseline's 32.
    schedule = _schedule_of(grid.Point(variant, kn, 0), FULL)
    v = grid.VARIANTS[variant]
    for step in (0, 7, 14, 29, 30, 57, 58, 117, 118, 155, 156, 175):
        np.testing.assert_allclose(
            float(schedule(step)), _expected_lr(step, kn, v.warmup, v.scaling),
            rtol=1e-5, err_msg=f"{variant} at step {step}")


def test_points_bind_n_k_seed_and_zero_gamma():
    point = grid.Point("no_zero_gamma", 2048, 2)
    config.parse([grid.GIN_FILE], grid.gin_bindings(point, FULL))
    import gin  # pylint: disable=import-outside-toplevel
    assert gin.query_parameter("resnet_cifar.bn_group_size") == 16
    assert gin.query_parameter("resnet_cifar.zero_gamma") is False
    assert gin.query_parameter("train_lib.run.global_batch_size") == 2048
    assert gin.query_parameter("train_lib.run.seed") == 2
    assert gin.query_parameter("distribute.build_strategy.kind") == "default"
    # 29.3 steps per epoch in 4 loops; the final 5 evaluations 0.1 apart.
    assert gin.query_parameter("train_lib.run.steps_per_loop") == 7
    assert gin.query_parameter("train_lib.run.eval_at_epochs") == (
        5.6, 5.7, 5.8, 5.9, 6.0)


def test_full_preset_grid():
    sweep = grid.sweep_points(FULL)
    assert [p.kn for p in sweep[:8]] == [32 * 2 ** i for i in range(8)]
    assert FULL.sizes[-1] >= 64 * FULL.baseline
    assert len(sweep) == 8 * 3 and len({p.name for p in sweep}) == 24
    ablations = grid.ablation_points(FULL, 1024)
    assert len(ablations) == 3 * 5 + 3
    assert {p.kn for p in ablations} == {1024, 32}
    assert FULL.decay_epochs == (2.0, 4.0, 5.333333)
    assert FULL.workers(4096) == 256
    assert FULL.total_steps(4096) == 88  # 6 epochs of 14.6 steps.
    layerwise = grid.layerwise_points(FULL)
    assert len(layerwise) == 3 * 2 * 8  # seeds x (LARS, LAMB) x sizes
    assert {p.variant for p in layerwise} == {"lars", "lamb"}


@pytest.mark.parametrize("variant, optimizer", [("lars", "LARS"),
                                                ("lamb", "LAMB")])
def test_layerwise_points_bind_their_optimizer_and_rate(variant, optimizer):
    point = grid.Point(variant, 1024, 1)
    bindings = grid.gin_bindings(point, FULL)
    assert f"train_lib.run.optimizer_fn = @{optimizer}" in bindings
    base = grid.VARIANTS[variant].base_lr
    assert (f"schedules.build_learning_rate_schedule.base_lr = {base!r}"
            in bindings)
    assert f"schedules.build_learning_rate_schedule.scaling = 'sqrt'" in (
        bindings)
    assert FULL.peak_lr(variant, 1024) == pytest.approx(base * 32 ** 0.5)
    config.parse([grid.GIN_FILE], bindings)
    optimizer_fn = gin.query_parameter("train_lib.run.optimizer_fn")
    built = optimizer_fn.scoped_configurable_fn(learning_rate=0.1,
                                                aggregate_gradients=False)
    assert type(built).__name__ == optimizer


def test_a_subset_of_seeds_keeps_the_run_names():
    first = grid.with_seeds(FULL, ["0"])
    assert first.seeds == (0,) and first.sizes == FULL.sizes
    assert grid.sweep_points(first)[0].name == "kn32-gradual_warmup-s0"
    with pytest.raises(ValueError, match=r"seeds \[7\] are not a non-empty "
                       r"subset of the seeds of preset 'full', \[0, 1, 2\]"):
        grid.with_seeds(FULL, ["7"])
    with pytest.raises(ValueError, match="seed 'x' is not an integer"):
        grid.with_seeds(FULL, ["x"])


@pytest.mark.parametrize("changes,message", [
    ({"sizes": (64, 32)}, "ascending"),
    ({"sizes": (32, 40)}, r"sizes \[40\] are not multiples of n = 16"),
    ({"ablations": ("no_warmups",)}, "unknown ablations"),
    ({"layerwise": ("adam",)}, "unknown layer-wise variants"),
    ({"seeds": ()}, "has no seeds"),
    ({"final_eval_spacing": 0.5}, "before the last decay at 5.33333"),
])
def test_bad_presets_are_refused_naming_the_value(changes, message):
    values = dict(name="bad", sizes=(32, 64), seeds=(0,), epochs=6)
    values.update(changes)
    with pytest.raises(ValueError, match=message):
        grid.Preset(**values)


def _summary(*errors):
    return results.Summary([results.RunResult(diverged=e is None, error=e)
                            for e in errors])


def test_summary_is_mean_and_sample_std_of_the_seeds():
    summary = _summary(8.0, 8.5, 9.5, None)
    assert summary.diverged == 1
    assert summary.mean == pytest.approx(np.mean([8.0, 8.5, 9.5]))
    assert summary.std == pytest.approx(np.std([8.0, 8.5, 9.5], ddof=1))
    assert _summary(8.0).std is None and _summary(None).mean is None
    delta, stderr = results.difference(_summary(9.0, 10.0), _summary(8.0, 8.5))
    assert delta == pytest.approx(9.5 - 8.25)
    assert stderr == pytest.approx(math.sqrt(0.5 / 2 + 0.125 / 2))


def test_largest_matching_size_stops_at_the_first_mismatch():
    sweep = {32: _summary(8.0, 8.2), 64: _summary(8.1, 8.3),
             128: _summary(8.6, 8.4), 256: _summary(9.5, 9.1),
             512: _summary(8.1, 8.2)}  # Back within tolerance: not counted.
    assert results.largest_matching_size(sweep, 0.5) == (128, True)
    sweep[64] = _summary(8.0, None)  # A diverged seed never matches.
    assert results.largest_matching_size(sweep, 0.5) == (64, False)
    with pytest.raises(ValueError, match="a size above the baseline"):
        results.largest_matching_size({32: _summary(8.0)}, 0.5)


def test_curve_gap_interpolates_the_reference_after_warmup():
    reference = [(0.0, 90.0), (1.0, 20.0), (2.0, 10.0)]
    curve = [(0.5, 80.0), (1.5, 16.0), (2.0, 11.0)]
    # From epoch 1: |16 - 15| and |11 - 10|.
    assert results.curve_gap(curve, reference, 1.0) == pytest.approx(1.0)
    assert results.curve_gap(curve, reference, 2.5) is None


# The tag of today's runs, and the one of runs written before the tags lost
# their train/ prefix (a reproduction resumed over older runs reads both).
@pytest.mark.parametrize("prefix", ["", "train/"], ids=["tag", "old_tag"])
def test_training_curve_reads_event_files_and_the_last_write_wins(tmp_path,
                                                                   prefix):
    writer = tf.summary.create_file_writer(str(tmp_path / "train"))
    with writer.as_default():
        for step, error in ((10, 0.5), (20, 0.3), (20, 0.25), (30, 0.2)):
            tf.summary.scalar(f"{prefix}top1_error", error, step=step)
            tf.summary.scalar(f"{prefix}loss", 1.0, step=step)
            tf.summary.scalar("top5_error", 0.9, step=step)  # Not read.
    writer.close()
    curve = results.training_curve(str(tmp_path), steps_per_epoch=20)
    np.testing.assert_allclose(curve, [(0.5, 50.0), (1.0, 25.0), (1.5, 20.0)],
                               rtol=1e-6)


def test_read_run_takes_the_median_of_the_final_evaluations(tmp_path):
    outputs.write_metrics(str(tmp_path), {
        "global_step": 44, "train_wall_time_s": 12.0,
        "examples_per_second": 2000.0,
        "eval": {"top1_error_history": [0.5, 0.12, 0.095, 0.09, 0.1, 0.092,
                                        0.091]}})
    with open(tmp_path / results.RUN_INFO, "w") as f:
        json.dump({"wall_seconds": 30.0}, f)
    run = results.read_run(str(tmp_path), 7.3, final_evals=5)
    assert run.error == pytest.approx(
        100 * statistics.median([0.095, 0.09, 0.1, 0.092, 0.091]))
    assert run.wall_seconds == 30.0 and not run.diverged
    assert results.is_finished(str(tmp_path), 44)
    assert not results.is_finished(str(tmp_path), 45)
    with pytest.raises(FileNotFoundError, match="holds no finished run"):
        results.read_run(str(tmp_path / "missing"), 7.3, 5)


def test_a_diverged_run_is_finished_without_an_error(tmp_path):
    with open(tmp_path / results.DIVERGED, "w") as f:
        json.dump({"log_tail": "nan"}, f)
    assert results.is_finished(str(tmp_path), 44)
    assert results.read_run(str(tmp_path), 7.3, 5).diverged


@pytest.mark.parametrize("delta,stderr,paper,expected", [
    (1.0, 0.3, 1.1, "agrees"),
    (0.4, 0.3, 1.1, "same direction, within noise"),
    (-1.0, 0.3, 1.1, "disagrees"),
    (-0.2, 0.3, 1.1, "no clear difference"),
    (0.5, None, 1.1, "same direction (one seed: noise unknown)"),
    (None, None, 1.1, "not measured (every run diverged)"),
])
def test_verdicts(delta, stderr, paper, expected):
    assert findings.verdict(delta, stderr, paper) == expected


def _outcome():
    sweep = {32: _summary(8.0, 8.2), 64: _summary(8.1, 8.3),
             128: _summary(9.9, 10.1)}
    for kn, summary in sweep.items():
        for run in summary.runs:
            run.curve = [(0.5, 30.0 + kn / 32), (1.0, 12.0 + kn / 64)]
    preset = grid.Preset("test", sizes=(32, 64, 128), seeds=(0, 1), epochs=1,
                         warmup_epochs=0.25, final_evals=1)
    return findings.Outcome(
        preset=preset, sweep=sweep, large_kn=64, large_matched=True,
        ablations={"no_warmup": _summary(9.0, 9.4),
                   "unscaled": _summary(20.0, None)},
        baseline_ablations={})


def test_findings_compare_with_the_papers_differences():
    found = {f.claim: f for f in findings.all_findings(_outcome())}
    holds = found["Linear scaling + gradual warmup keep the baseline's error "
                  "up to a large minibatch (within 0.5 pp here)"]
    assert holds.ours == "up to kn = 64 = 2x the baseline"
    assert holds.verdict == "partly: matches, but to a smaller multiple"
    rises = found["Past that size the error rises"]
    # Both stds are 0.141: standard error sqrt(0.02 / 2 + 0.02 / 2).
    assert rises.ours == "kn = 128: +1.90 pp +- 0.14"
    no_warmup = found["Without warmup the large minibatch is worse than with "
                      "gradual warmup"]
    # 9.2 - 8.2 = +1.0 with standard error sqrt(0.08/2 + 0.02/2) = 0.22.
    assert no_warmup.ours == "+1.00 pp +- 0.22" and no_warmup.verdict == "agrees"
    assert no_warmup.paper.startswith("+1.10 pp")
    unscaled = found["The rate not scaled (eta of the baseline) is far worse"]
    assert unscaled.ours == "+11.80 pp"  # One seed left: no standard error.


def test_layerwise_findings_name_the_sizes_a_layerwise_rate_rescues():
    outcome = _outcome()  # Baseline 8.1; linear scaling fails at 128 only.
    outcome.layerwise = {
        "lars": {32: _summary(8.3, 8.5), 64: _summary(8.9, 9.1),
                 128: _summary(8.4, 8.6)},
        "lamb": {32: _summary(8.0, 8.2), 64: _summary(8.1, 8.3),
                 128: _summary(11.0, 11.2)}}
    lars, lamb = findings.layerwise_findings(outcome)
    assert lars.claim.startswith("LARS (You et al. 2017) keeps the error "
                                 "within 0.5 pp")
    assert lars.ours == "kn = 128: +0.40 pp +- 0.14"
    assert lars.verdict == ("yes at kn = 128 (and it misses the baseline at "
                            "kn = 64, where linear scaling matches)")
    assert lamb.ours == "kn = 128: +3.00 pp +- 0.14"
    assert lamb.verdict == "no"
    table = report.layerwise_table(outcome)
    assert ("| 128 | 8 | 0.05 x 4 = 0.2 | 10.00 +- 0.14 | +1.90 (no) | "
            "2.5 x sqrt(4) = 5 | 8.50 +- 0.14 | +0.40 |") in table


def test_the_scaling_finding_reads_the_sweep_not_the_ablation_size():
    outcome = _outcome()
    outcome.large_kn, outcome.large_matched = 128, False  # --large_kn=128
    holds = findings.scaling_findings(outcome)[0]
    assert holds.ours == "up to kn = 64 = 2x the baseline"


@pytest.mark.parametrize("finals, top", [
    ([], 40.0), ([8.9, 25.3], 40.0), ([8.9, 30.5], 50.0), ([45.5], 60.0),
    ([99.0], 100.0)])
def test_error_axis_rises_to_keep_a_failed_curve_in_view(finals, top):
    assert plots.error_axis_top(finals) == top


def test_report_tables_hold_every_row():
    outcome = _outcome()
    table = report.table_1(outcome)
    for row in ("| baseline | 32 | 2 x 16 | 0.05 | 8.10 +- 0.14 |",
                "| no warmup | 64 | 4 x 16 | 0.05 x 2 = 0.1 | 9.20 +- 0.28 |",
                "| eta not scaled | 64 | 4 x 16 | 0.05 | 20.00 (1/2 diverged)"):
        assert row in table
    assert "| 24.84 +- 0.37 | +1.24 |" in table
    sweep = report.sweep_table(outcome)
    assert "| 128 | 8 | 0.05 x 4 = 0.2 | 468.8 | 469 | 10.00 +- 0.14 | +1.90 " \
           "| no |" in sweep
    assert report.eta_text(FULL, "sqrt_scaling", 2048) == (
        "0.05 x sqrt(64) = 0.4")



def _old_results_json(runs_per_point):
    """A results.json as reports wrote it before runs kept their seeds."""
    preset = dict(vars(grid.PRESETS["tiny"]), seeds=[0, 1])
    run = {"error": 9.0, "diverged": False, "errors": [9.1, 9.0],
           "wall_seconds": 10.0, "images_per_second": 100.0}
    summary = {"mean": 9.0, "std": None, "diverged": 0,
               "runs": [dict(run, error=9.0 + i)
                        for i in range(runs_per_point)]}
    return {"meta": {"date": "2026-12-03", "machine": {"cpu": "AMD EPYC"}},
            "preset": preset, "large_kn": 64,
            "sweep": {"32": summary, "64": summary},
            "ablations": {"no_warmup": summary}, "baseline_ablations": {},
            "layerwise": {"lars": {"32": summary}}}


def test_runs_recorded_without_seeds_take_their_presets_order(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_old_results_json(2)))
    recorded = reuse.read_recorded(str(path))
    assert len(recorded.runs) == 8
    assert {r.cpu for r in recorded.runs.values()} == {"AMD EPYC"}
    old_preset = dataclasses.replace(grid.PRESETS["tiny"], seeds=(0, 1))
    point = grid.Point("no_warmup", 64, 1)
    run = recorded.runs[point]
    assert run.seed == 1 and run.error == 10.0
    assert run.cpu == "AMD EPYC"  # The report's, for runs without their own.
    assert run.bindings == grid.gin_bindings(point, old_preset)
    reusable, _ = reuse.reusable_runs([str(path)], grid.PRESETS["tiny"])
    assert sorted(p.name for p in reusable) == [
        "kn32-gradual_warmup-s0", "kn32-lars-s0", "kn64-gradual_warmup-s0",
        "kn64-no_warmup-s0"]  # Seed 1 is not the tiny preset's.


def test_recorded_runs_that_cannot_be_told_apart_are_refused(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_old_results_json(1)))
    with pytest.raises(ValueError, match=r"1 runs at kn = 32 \(gradual_"
                       r"warmup\) for seeds \[0, 1\]; cannot tell their "
                       r"seeds"):
        reuse.read_recorded(str(path))
    path.write_text("{\"sweep\": {}}")
    with pytest.raises(ValueError, match="is not a results.json of tools/"
                       "reproduce.py"):
        reuse.read_recorded(str(path))
    path.write_text("not json")
    with pytest.raises(ValueError, match="is not JSON"):
        reuse.read_recorded(str(path))
