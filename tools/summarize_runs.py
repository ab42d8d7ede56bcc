"""Summarizes training runs as a markdown table next to the paper's numbers.

Usage:
    python tools/summarize_runs.py [--out=table.md] \\
        [--paper_row=NAME | --paper_row=RUN=NAME ...] DIR [DIR ...]

Each DIR is a model_dir written by `tf_lbsgd` training: it must hold
`metrics.json`; its `operative_config.gin` is optional (without it the
config columns are blank and a warning is logged). The table, one row per
run in argument order, is printed and, with `--out`, also written to a file;
its columns are described in `tf_lbsgd.analysis.run_summary`.

A run matches a paper row by its dir basename (a model_dir named
`resnet50_kn8k` matches `gin/experiments/imagenet/resnet50_kn8k.gin`) or by
`--paper_row`: `NAME` for every run, `RUN=NAME` for the run whose basename
is RUN (RUN=NAME wins over NAME, which wins over the basename). Without a
match the paper columns are blank.

A missing or corrupt `metrics.json` is an error naming the file: the tool
exits with status 1 without writing a table, so that a summary never
silently omits a run. Runs without TensorFlow.
"""

import sys

from absl import app
from absl import flags

from tf_lbsgd import paper
from tf_lbsgd.analysis import run_summary

flags.DEFINE_string("out", None, "Also write the markdown table here.")
flags.DEFINE_multi_string(
    "paper_row", [], "Paper row for the runs: NAME for every run or RUN=NAME "
    "for the run whose dir basename is RUN. Default: the run's dir basename "
    "if it is a row. Rows: " + ", ".join(sorted(paper.TOP1_ERROR)))


def main(argv):
    if len(argv) < 2:
        raise app.UsageError("give at least one model_dir")
    try:
        paper_rows = run_summary.parse_paper_rows(flags.FLAGS.paper_row)
        table = run_summary.summarize(argv[1:], flags.FLAGS.out, paper_rows)
    except (ValueError, OSError) as e:
        print(f"summarize_runs: error: {e}", file=sys.stderr)
        return 1
    print(table, end="")
    return 0


if __name__ == "__main__":
    app.run(main)
