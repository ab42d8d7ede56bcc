"""Reproduces the paper's findings at small scale: sweep, ablations, report.

Usage:
    python tools/reproduce.py --preset=quick            # < 20 min here
    python tools/reproduce.py --preset=full --report=docs/reproduction.md

Runs the grid of `tf_lbsgd.analysis.reproduction.grid` (Goyal et al. 2017's
Figures 1-3 and Table 1 on Fashion-MNIST with k simulated workers of n
examples), each point through the real trainer in its own process
(`tf_lbsgd.analysis.reproduction.runner`; this tool never imports
TensorFlow):

1. The minibatch sweep (linear scaling + gradual warmup), every seed.
2. The largest size whose sizes from the baseline up all stay within the
   preset's tolerance of the baseline error (or `--large_kn`).
3. The ablations there (no / constant warmup, eta unscaled or sqrt-scaled,
   zero-gamma off) and zero-gamma off at the baseline.
4. The report: `--report` (markdown: tables laid out as the paper's, the
   findings with verdicts), its figures in a folder beside it named after
   it (`docs/reproduction.md` -> `docs/reproduction/*.png`) and
   `results.json` there with every number.

Interrupted? Run the same command again: finished points are skipped and an
interrupted one resumes from its last checkpoint. A diverged run is recorded,
not retried; any other failure stops the tool with the point's log.
`--report_only` redraws the report from finished runs; `--dry_run` prints the
commands. `--reuse=<earlier report's results.json>` takes the runs that
report recorded as finished: add seeds to a sweep whose runs directory is
gone (another session or machine), e.g.
    python tools/reproduce.py --preset=full --seeds=0,1 \
        --reuse=docs/reproduction/results.json --report=docs/reproduction.md
"""

import dataclasses
import os
import sys

from absl import app
from absl import flags

from tf_lbsgd.analysis.reproduction import grid
from tf_lbsgd.analysis.reproduction import runner

flags.DEFINE_enum("preset", "quick", sorted(grid.PRESETS),
                  "Sizes, seeds and budget (tf_lbsgd/analysis/reproduction/"
                  "grid.py): tiny (tests), quick (< 20 min), full (the "
                  "report).")
flags.DEFINE_string("runs_dir", None, "Where the runs go; default "
                    "runs/reproduction/<preset>.")
flags.DEFINE_string("report", None, "The markdown report; default "
                    "<runs_dir>/reproduction.md.")
flags.DEFINE_integer("large_kn", None, "Run the ablations at this kn instead "
                     "of the largest size matching the baseline.")
flags.DEFINE_list("seeds", None, "Run (or report) only these seeds of the "
                  "preset, e.g. 0 or 0,1: a first pass over every size "
                  "before the other seeds; the same runs are reused later.")
flags.DEFINE_float("match_tolerance", None, "Percentage points above the "
                   "baseline error a size may lose and still match; default: "
                   "the preset's.")
flags.DEFINE_list("reuse", [], "results.json files of earlier reports: "
                  "their runs of this grid count as finished (same seed and "
                  "settings), so a sweep can add seeds in another session "
                  "or on another machine; e.g. docs/reproduction/"
                  "results.json.")
flags.DEFINE_bool("dry_run", False, "Print the commands; run nothing.")
flags.DEFINE_bool("report_only", False, "Write the report from the finished "
                  "runs; train nothing.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    # The points' logs (log.txt) keep TensorFlow's C++ errors, not its info.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    values = flags.FLAGS
    preset = grid.PRESETS[values.preset]
    if values.seeds is not None:
        try:
            preset = grid.with_seeds(preset, values.seeds)
        except ValueError as e:
            print(f"reproduce: error: --seeds: {e}", file=sys.stderr)
            return 1
    if values.match_tolerance is not None:
        preset = dataclasses.replace(
            preset, match_tolerance=values.match_tolerance)
    runs_dir = values.runs_dir or os.path.join("runs", "reproduction",
                                               preset.name)
    report_path = values.report or os.path.join(runs_dir, "reproduction.md")
    try:
        runner.run(preset, runs_dir, report_path, values.large_kn,
                   values.dry_run, values.report_only,
                   runner.reproducing_command("tools/reproduce.py", sys.argv),
                   values.reuse)
    except (runner.RunFailed, FileNotFoundError, ValueError) as e:
        print(f"reproduce: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    app.run(main)
