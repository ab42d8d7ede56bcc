"""Summarizes training runs as a markdown table next to the paper's numbers.

Usage:
    python tools/summarize_runs.py [--out=table.md] \\
        [--paper_row=NAME | --paper_row=RUN=NAME ...] DIR [DIR ...]

Each DIR is a model_dir written by `tf_lbsgd` training: it must hold
`metrics.json`; its `operative_config.gin` is optional (without it the
config columns are blank and a warning is logged). The table, one row per
run in argument order, is printed and, with `--out`, also written to a file.

Columns: run name (the dir basename), ResNet depth, kn (global batch size),
warmup kind, learning-rate scaling, base rate, zero_gamma, epochs trained,
the paper's statistic (median top-1 error of the final 5 evaluations, in %,
recomputed from `eval.top1_error_history`; falling back to
`eval.median5_top1_error`, then `eval.top1_error`, when there is no
history), the final top-1 error in %, images/s, training wall time
(h:mm:ss), the top-1 error the paper reports for the matching experiment
(`tf_lbsgd.paper.TOP1_ERROR`) and the difference ours - paper in
percentage points.

A run matches a paper row by its dir basename (e.g. a model_dir named
`resnet50_kn8k` matches the experiment `gin/experiments/imagenet/
resnet50_kn8k.gin`) or explicitly by `--paper_row`: `--paper_row=NAME` for
every run, `--paper_row=RUN=NAME` for the run whose basename is RUN (the
flag may repeat; RUN=NAME wins over a bare NAME, which wins over the
basename). Without a match the paper columns are blank.

Bad runs: a missing, unreadable or corrupt `metrics.json` (not JSON, not an
object, a non-numeric error history) raises `RunError` naming the file; the
command line prints that error and exits with status 1 without writing a
table, so that a summary never silently omits a run.

Tests import this file by its path (it is not in a package):
    spec = importlib.util.spec_from_file_location("summarize_runs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
Importing it defines no flags and does not import TensorFlow.
"""

import ast
import json
import math
import os
import re
import statistics
import sys

from absl import app
from absl import flags
from absl import logging

from tf_lbsgd import paper

METRICS = "metrics.json"
OPERATIVE_CONFIG = "operative_config.gin"

# Gin parameters shown in the table: column key -> selector suffix.
GIN_PARAMETERS = {
    "depth": "depth",
    "warmup": "build_learning_rate_schedule.warmup",
    "scaling": "build_learning_rate_schedule.scaling",
    "base_lr": "build_learning_rate_schedule.base_lr",
    "zero_gamma": "zero_gamma",
    "config_epochs": "run.epochs",
}

COLUMNS = (
    "run", "depth", "kn", "warmup", "scaling", "base lr", "zero_gamma",
    "epochs", "median5 top-1 err %", "final top-1 err %", "images/s",
    "train time", "paper top-1 err %", "ours - paper",
)

_BINDING = re.compile(r"^\s*([\w./]+)\s*=\s*(.*)$")


class RunError(ValueError):
    """A model_dir whose metrics cannot be read; the message names the file."""


def median_of_final(errors, count=5):
    """The paper's statistic: median of the final `count` errors.

    Goyal et al. 2017 (Sec. 5.1) report the median error of the final 5
    epochs of each run.

    Args:
        errors: sequence of per-evaluation errors, oldest first.
        count: how many final evaluations to take (all if fewer), >= 1.

    Returns:
        The median as a float.

    Raises:
        ValueError: if `errors` is empty or `count` < 1.
    """
    if count < 1:
        raise ValueError(f"count={count} must be >= 1")
    if not errors:
        raise ValueError(f"errors={errors!r} is empty: no evaluation to "
                         f"take the median of")
    return float(statistics.median(list(errors)[-count:]))


def _bracket_depth(text):
    """Net count of open brackets in `text`, ignoring quoted strings."""
    depth, quote = 0, None
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#":
            break
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
    return depth


def _literal(text):
    """Python value of a gin value text; the stripped text if not a literal.

    Trailing `# comments` are dropped; references such as `@resnet_imagenet`
    or `%CONSTANT` come back as strings.
    """
    text = text.strip()
    candidates = [text] + [text[:i] for i, c in enumerate(text) if c == "#"]
    for candidate in candidates:
        try:
            return ast.literal_eval(candidate.strip())
        except (ValueError, SyntaxError):
            continue
    return text.split("#", 1)[0].strip()


def _selector_matches(selector, name):
    """Whether gin `selector` (maybe with a module or scope) ends in name."""
    return selector == name or selector.endswith(("." + name, "/" + name))


def parse_gin_value(text, name):
    """The value bound to `name` in gin config text, or None if unbound.

    `name` matches a selector equal to it or ending in `.name` or `/name`,
    so `build_learning_rate_schedule.warmup` finds both
    `schedules.build_learning_rate_schedule.warmup = 'gradual'` and
    `build_learning_rate_schedule.warmup = 'gradual'`, and `depth` finds
    `resnet_imagenet.depth = 50`. The last binding wins, as in gin. Values
    are Python literals (strings, numbers, booleans, None, tuples, lists,
    possibly spanning lines); anything else comes back as its text.

    Args:
        text: gin config text, e.g. an `operative_config.gin`.
        name: selector suffix such as `run.epochs`.

    Returns:
        The parsed value, or None if no line binds `name`.

    Raises:
        ValueError: if `name` is empty or not a dotted identifier.
    """
    if not re.fullmatch(r"[\w.]+", name or "") or name.startswith("."):
        raise ValueError(f"name={name!r} is not a gin parameter selector")
    lines = text.splitlines()
    value = None
    index = 0
    while index < len(lines):
        match = _BINDING.match(lines[index])
        index += 1
        if not match or lines[index - 1].lstrip().startswith("#"):
            continue
        raw = match.group(2)
        while _bracket_depth(raw) > 0 and index < len(lines):
            raw += "\n" + lines[index]
            index += 1
        if _selector_matches(match.group(1), name):
            value = _literal(raw)
    return value


def _load_metrics(model_dir):
    """The metrics.json dict of `model_dir`; RunError naming the file."""
    path = os.path.join(model_dir, METRICS)
    if not os.path.isdir(model_dir):
        raise RunError(f"{model_dir} is not a directory (no {path})")
    try:
        with open(path, encoding="utf-8") as f:
            metrics = json.load(f)
    except FileNotFoundError:
        raise RunError(f"{path} does not exist: is {model_dir} a model_dir "
                       f"of a finished run?") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunError(f"{path} is not readable JSON: {e}") from None
    if not isinstance(metrics, dict):
        raise RunError(f"{path} holds a {type(metrics).__name__}, not a JSON "
                       f"object")
    if not isinstance(metrics.get("eval", {}), dict):
        raise RunError(f"{path}: 'eval' is {metrics['eval']!r}, not an object")
    return metrics


def _load_config(model_dir):
    """The operative_config.gin text of `model_dir`, or '' with a warning."""
    path = os.path.join(model_dir, OPERATIVE_CONFIG)
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        logging.warning("%s: no readable %s (%s); config columns left blank",
                        model_dir, OPERATIVE_CONFIG, e)
        return ""


def _number(value, what, path):
    """`value` as a float (None stays None); RunError naming the file."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RunError(f"{path}: {what}={value!r} is not a number")
    return float(value)


def _errors(metrics, path):
    """(median of final 5, final) top-1 errors as fractions, maybe None."""
    evaluation = metrics.get("eval", {})
    history = evaluation.get("top1_error_history") or []
    if not isinstance(history, list):
        raise RunError(f"{path}: top1_error_history={history!r} is not a list")
    history = [_number(e, "top1_error_history entry", path) for e in history]
    if None in history:
        raise RunError(f"{path}: top1_error_history holds null entries")
    final = _number(evaluation.get("top1_error"), "top1_error", path)
    if history:
        return median_of_final(history), final
    median = _number(evaluation.get("median5_top1_error"),
                     "median5_top1_error", path)
    return (final if median is None else median), final


def read_run(model_dir):
    """Reads one run's metrics and config.

    Args:
        model_dir: a training run's model_dir.

    Returns:
        A dict with keys `name` (dir basename), `model_dir`, `depth`, `kn`,
        `warmup`, `scaling`, `base_lr`, `zero_gamma`, `epochs` (trained,
        from metrics; else the configured `run.epochs`), `median5_top1_error`
        and `top1_error` (fractions), `examples_per_second`,
        `train_wall_time_s`, `num_replicas`; missing values are None.

    Raises:
        RunError: if metrics.json is missing or corrupt (names the file).
    """
    path = os.path.join(model_dir, METRICS)
    metrics = _load_metrics(model_dir)
    config = _load_config(model_dir)
    run = {key: parse_gin_value(config, selector)
           for key, selector in GIN_PARAMETERS.items()}
    median, final = _errors(metrics, path)
    epochs = _number(metrics.get("epochs"), "epochs", path)
    run.update(
        name=os.path.basename(os.path.normpath(model_dir)),
        model_dir=model_dir,
        kn=metrics.get("global_batch_size"),
        epochs=run["config_epochs"] if epochs is None else epochs,
        median5_top1_error=median,
        top1_error=final,
        examples_per_second=_number(metrics.get("examples_per_second"),
                                    "examples_per_second", path),
        train_wall_time_s=_number(metrics.get("train_wall_time_s"),
                                  "train_wall_time_s", path),
        num_replicas=metrics.get("num_replicas"),
    )
    return run


def paper_row(run, paper_rows=None):
    """The paper.TOP1_ERROR key of `run`, or None.

    Args:
        run: a `read_run` dict.
        paper_rows: optional dict run name -> row name; the key None gives a
            row for every run not named.

    Raises:
        ValueError: for an explicit row name not in paper.TOP1_ERROR.
    """
    paper_rows = paper_rows or {}
    row = paper_rows.get(run["name"], paper_rows.get(None))
    if row is None:
        return run["name"] if run["name"] in paper.TOP1_ERROR else None
    if row not in paper.TOP1_ERROR:
        raise ValueError(f"paper row {row!r} is unknown; known rows: "
                         f"{', '.join(sorted(paper.TOP1_ERROR))}")
    return row


def _trim(value, digits):
    """`value` with `digits` decimals, trailing zeros dropped."""
    text = f"{value:.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _format_value(value):
    """A config value as table text (strings unquoted, None blank)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return _trim(value, 6)
    return str(value)


def _format_percent(fraction):
    """A fraction as a percentage with 2 decimals, e.g. 0.2374 -> 23.74."""
    return "" if fraction is None else f"{100.0 * fraction:.2f}"


def _format_duration(seconds):
    """Seconds as h:mm:ss, e.g. 3725.2 -> 1:02:05."""
    if seconds is None or not math.isfinite(seconds):
        return ""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _format_paper(row):
    """Paper cell (`23.74 ± 0.09`) and mean, or ('', None) without a row."""
    if row is None:
        return "", None
    mean, std = paper.TOP1_ERROR[row]
    cell = f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"
    return f"{cell} ({row})", mean


def _row_cells(run, paper_rows):
    """The table cells of one run, in COLUMNS order."""
    paper_cell, paper_mean = _format_paper(paper_row(run, paper_rows))
    median = run["median5_top1_error"]
    diff = ("" if paper_mean is None or median is None
            else f"{100.0 * median - paper_mean:+.2f}")
    speed = run["examples_per_second"]
    return [
        run["name"], _format_value(run["depth"]), _format_value(run["kn"]),
        _format_value(run["warmup"]), _format_value(run["scaling"]),
        _format_value(run["base_lr"]), _format_value(run["zero_gamma"]),
        "" if run["epochs"] is None else _trim(run["epochs"], 2),
        _format_percent(median), _format_percent(run["top1_error"]),
        "" if speed is None else f"{speed:.1f}",
        _format_duration(run["train_wall_time_s"]), paper_cell, diff,
    ]


def format_table(runs, paper_rows=None):
    """A markdown table of `runs` (dicts from `read_run`), one row each.

    Args:
        runs: iterable of `read_run` dicts.
        paper_rows: optional explicit paper rows, see `paper_row`.

    Returns:
        The table text, ending in a newline.
    """
    lines = ["| " + " | ".join(COLUMNS) + " |",
             "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for run in runs:
        cells = [c.replace("|", "\\|") for c in _row_cells(run, paper_rows)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parse_paper_rows(values):
    """`--paper_row` values (`NAME` or `RUN=NAME`) as a dict for paper_row.

    Raises:
        ValueError: for an empty part or a NAME not in paper.TOP1_ERROR, or
            two bare NAMEs.
    """
    rows = {}
    for value in values or []:
        run, row = None, value
        if "=" in value:
            run, _, row = value.rpartition("=")
        if not row or run == "":
            raise ValueError(f"--paper_row={value!r}: expected NAME or "
                             f"RUN=NAME")
        if row not in paper.TOP1_ERROR:
            known = ", ".join(sorted(paper.TOP1_ERROR))
            raise ValueError(f"--paper_row={value!r}: unknown row {row!r}; "
                             f"known rows: {known}")
        if run in rows:
            raise ValueError(f"--paper_row={value!r}: "
                             f"{run or 'every run'} already has row "
                             f"{rows[run]!r}")
        rows[run] = row
    return rows


def summarize(model_dirs, out=None, paper_rows=None):
    """Reads `model_dirs`, returns their table and writes it to `out`."""
    if not model_dirs:
        raise ValueError("no model_dir given")
    table = format_table([read_run(d) for d in model_dirs], paper_rows)
    if out:
        with open(out, "w", encoding="utf-8") as f:
            f.write(table)
    return table


def define_flags(flag_values=flags.FLAGS):
    """Defines the command-line flags of this tool in `flag_values`."""
    flags.DEFINE_string("out", None, "Also write the markdown table here.",
                        flag_values=flag_values)
    flags.DEFINE_multi_string(
        "paper_row", [], "Paper row for the runs: NAME for every run or "
        "RUN=NAME for the run whose dir basename is RUN. Default: the run's "
        "dir basename if it is a row. Rows: "
        + ", ".join(sorted(paper.TOP1_ERROR)), flag_values=flag_values)


def main(argv):
    """Entry point for `app.run`: argv[1:] are the model_dirs."""
    if len(argv) < 2:
        raise app.UsageError("give at least one model_dir")
    try:
        paper_rows = parse_paper_rows(flags.FLAGS.paper_row)
        table = summarize(argv[1:], flags.FLAGS.out, paper_rows)
    except (ValueError, OSError) as e:
        print(f"summarize_runs: error: {e}", file=sys.stderr)
        return 1
    print(table, end="")
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
