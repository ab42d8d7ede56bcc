"""What the reproduction's runs measured: per run, then over seeds.

A run's model_dir holds what every `tf_lbsgd` run writes (metrics.json with
the evaluation history, TensorBoard event files in train/ with `top1_error` per
loop) and, from `tools/reproduce.py`, `run.json` (its wall time) or
`diverged.json` (the trainer stopped on a non-finite loss).
"""

import dataclasses
import json
import math
import os
import statistics

import numpy as np

from tf_lbsgd.analysis import event_files
from tf_lbsgd.analysis.run_outputs import TRAIN_SUMMARY_DIR
from tf_lbsgd.analysis.run_outputs import median_of_final
from tf_lbsgd.analysis.run_outputs import read_metrics

# The training top-1 error's tag in model_dir/train/; runs written before
# the tags lost their train/ prefix used the second.
TRAIN_ERROR_TAGS = ("top1_error", "train/top1_error")
RUN_INFO = "run.json"
DIVERGED = "diverged.json"


@dataclasses.dataclass
class RunResult:
    """One finished (or diverged) run.

    Attributes:
        diverged: the loss became non-finite; `error` is None then.
        error: the paper's statistic in %: the median top-1 error of the
            final `final_evals` evaluations (R14).
        errors: every evaluation's top-1 error in %, oldest first.
        curve: (epochs, training top-1 error %) per training loop.
        wall_seconds: the run's wall time (start-up and evaluations too).
        train_seconds: training time alone (metrics.json).
        images_per_second: training throughput.
        seed: the run's seed (set by the runner; reports record it).
        bindings: the gin bindings it was trained with (as `seed`).
        cpu: the CPU it was trained on (as `seed`).
    """
    diverged: bool
    error: float = None
    errors: list = dataclasses.field(default_factory=list)
    curve: list = dataclasses.field(default_factory=list)
    wall_seconds: float = None
    train_seconds: float = None
    images_per_second: float = None
    seed: int = None
    bindings: list = None
    cpu: str = None


def recorded_wall_seconds(model_dir):
    """The wall seconds `run.json` records for `model_dir`, or None."""
    path = os.path.join(model_dir, RUN_INFO)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)["wall_seconds"]


def training_curve(model_dir, steps_per_epoch):
    """(epoch, training top-1 error %) of every loop, from the event files.

    A resumed run logs the loops after its checkpoint again; the last
    value written for a step wins. A file cut short by a killed run is read
    up to its last whole record.
    """
    directory = os.path.join(model_dir, TRAIN_SUMMARY_DIR)
    for tag in TRAIN_ERROR_TAGS:
        by_step = event_files.read_scalars(directory, tag)
        if by_step:
            break
    return [(step / steps_per_epoch, 100.0 * by_step[step])
            for step in sorted(by_step)]


def is_finished(model_dir, total_steps):
    """Whether the run in `model_dir` trained all `total_steps` or diverged."""
    if os.path.exists(os.path.join(model_dir, DIVERGED)):
        return True
    metrics = read_metrics(model_dir)
    return (metrics.get("global_step") == total_steps
            and bool(metrics.get("eval", {}).get("top1_error_history")))


def read_run(model_dir, steps_per_epoch, final_evals):
    """The `RunResult` of a finished run.

    Raises:
        FileNotFoundError: naming `model_dir` if it holds no finished run.
    """
    curve = training_curve(model_dir, steps_per_epoch)
    wall = recorded_wall_seconds(model_dir)
    if os.path.exists(os.path.join(model_dir, DIVERGED)):
        return RunResult(diverged=True, curve=curve, wall_seconds=wall)
    metrics = read_metrics(model_dir)
    history = metrics.get("eval", {}).get("top1_error_history")
    if not history:
        raise FileNotFoundError(f"{model_dir} holds no finished run (no "
                                f"evaluation in its metrics.json)")
    errors = [100.0 * e for e in history]
    return RunResult(
        diverged=False, error=median_of_final(errors, final_evals),
        errors=errors, curve=curve, wall_seconds=wall,
        train_seconds=metrics.get("train_wall_time_s"),
        images_per_second=metrics.get("examples_per_second"))


@dataclasses.dataclass
class Summary:
    """One point over its seeds: the paper's mean +- std of the statistic.

    Attributes:
        runs: the seeds' `RunResult`s.
        mean, std: over the runs that did not diverge (std None below 2).
        diverged: how many runs diverged.
    """
    runs: list

    @property
    def errors(self):
        return [r.error for r in self.runs if not r.diverged]

    @property
    def diverged(self):
        return sum(r.diverged for r in self.runs)

    @property
    def mean(self):
        return statistics.mean(self.errors) if self.errors else None

    @property
    def std(self):
        errors = self.errors
        return statistics.stdev(errors) if len(errors) > 1 else None

    def mean_curve(self):
        """The seeds' training curves averaged loop by loop (same steps)."""
        curves = [r.curve for r in self.runs if r.curve and not r.diverged]
        if not curves:
            return []
        length = min(len(c) for c in curves)
        return [(curves[0][i][0],
                 statistics.mean(c[i][1] for c in curves))
                for i in range(length)]


def difference(a, b):
    """(mean_a - mean_b, its standard error) of two summaries.

    The standard error is sqrt(s_a^2 / n_a + s_b^2 / n_b), None when either
    side has fewer than two runs; the difference is None when either
    diverged in every run.
    """
    if a.mean is None or b.mean is None:
        return None, None
    if a.std is None or b.std is None:
        return a.mean - b.mean, None
    return a.mean - b.mean, math.sqrt(a.std ** 2 / len(a.errors)
                                      + b.std ** 2 / len(b.errors))


def matches(summary, baseline, tolerance):
    """Whether `summary` matches the baseline: no run diverged and its mean
    error is at most `tolerance` percentage points above the baseline's."""
    delta, _ = difference(summary, baseline)
    return not summary.diverged and delta is not None and delta <= tolerance


def largest_matching_size(sweep, tolerance):
    """The largest kn whose sizes from the baseline up all match it.

    Args:
        sweep: {kn: Summary} of the minibatch sweep; the smallest kn is the
            baseline.
        tolerance: percentage points, as in `matches`.

    Returns:
        (kn, matched): the largest matching kn above the baseline and True;
        or, when no larger size matches, the smallest size above the
        baseline and False (the ablations need a large minibatch).

    Raises:
        ValueError: if the sweep has fewer than two sizes.
    """
    sizes = sorted(sweep)
    if len(sizes) < 2:
        raise ValueError(f"the sweep needs a size above the baseline, got "
                         f"{sizes}")
    baseline = sweep[sizes[0]]
    chosen = None
    for kn in sizes[1:]:
        if not matches(sweep[kn], baseline, tolerance):
            break
        chosen = kn
    return (chosen, True) if chosen else (sizes[1], False)


def curve_gap(curve, reference, from_epoch):
    """Mean |curve - reference| in percentage points from `from_epoch` on.

    The reference is interpolated at the curve's epochs, as the paper
    compares the training curves of a large minibatch with the baseline's
    (Figure 2: "after warmup ... training curves match closely").
    Returns None when no point of `curve` lies within the reference's span
    after `from_epoch`.
    """
    if not curve or not reference:
        return None
    ref_x, ref_y = np.array(reference).T
    points = [(x, y) for x, y in curve if from_epoch <= x <= ref_x[-1]]
    if not points:
        return None
    x, y = np.array(points).T
    return float(np.mean(np.abs(y - np.interp(x, ref_x, ref_y))))
