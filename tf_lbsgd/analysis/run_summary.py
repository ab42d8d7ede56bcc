"""Training runs as one markdown table, beside the paper's numbers.

One row per model_dir: ResNet depth, kn, warmup, scaling, base rate,
zero_gamma and epochs (from its `operative_config.gin`), the paper's
statistic (median top-1 error of the final 5 evaluations, R14), the final
error, images/s, training time, and the paper's error for the matching
experiment (`tf_lbsgd.paper.TOP1_ERROR`) with the difference ours - paper.
"""

import math
import os

from absl import logging

from tf_lbsgd import paper
from tf_lbsgd.analysis import run_outputs
from tf_lbsgd.analysis import tables

# Gin parameters shown in the table: run key -> selector suffix.
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


def _config(model_dir):
    """The operative config's bindings, or [] with a warning if unreadable.

    Raises:
        RunError: naming the file, if it is not a gin config.
    """
    try:
        text = run_outputs.read_operative_config(model_dir)
    except OSError as e:
        logging.warning("%s: no readable %s (%s); config columns left blank",
                        model_dir, run_outputs.OPERATIVE_CONFIG, e)
        return []
    try:
        return run_outputs.gin_bindings(text)
    except ValueError as e:
        path = os.path.join(model_dir, run_outputs.OPERATIVE_CONFIG)
        raise run_outputs.RunError(f"{path}: {e}") from None


def _number(value, what, path):
    """`value` as a float (None stays None); RunError naming the file."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise run_outputs.RunError(f"{path}: {what}={value!r} is not a number")
    return float(value)


def _errors(metrics, path):
    """(median of final 5, final) top-1 errors as fractions, maybe None."""
    evaluation = metrics.get("eval", {})
    history = evaluation.get("top1_error_history") or []
    if not isinstance(history, list):
        raise run_outputs.RunError(
            f"{path}: top1_error_history={history!r} is not a list")
    history = [_number(e, "top1_error_history entry", path) for e in history]
    if None in history:
        raise run_outputs.RunError(
            f"{path}: top1_error_history holds null entries")
    final = _number(evaluation.get("top1_error"), "top1_error", path)
    if history:
        return run_outputs.median_of_final(history), final
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
        RunError: naming the file, if metrics.json is missing or corrupt
            or operative_config.gin is not gin.
    """
    path = os.path.join(model_dir, run_outputs.METRICS)
    metrics = run_outputs.read_metrics(model_dir, missing_ok=False)
    config = _config(model_dir)
    run = {key: run_outputs.find_binding(config, selector)
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


def _check_row(row, what):
    """`row` if it is a key of paper.TOP1_ERROR; else ValueError."""
    if row not in paper.TOP1_ERROR:
        raise ValueError(f"{what}: unknown row {row!r}; known rows: "
                         f"{', '.join(sorted(paper.TOP1_ERROR))}")
    return row


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
    return _check_row(row, f"paper row of {run['name']}")


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
        _check_row(row, f"--paper_row={value!r}")
        if run in rows:
            raise ValueError(f"--paper_row={value!r}: "
                             f"{run or 'every run'} already has row "
                             f"{rows[run]!r}")
        rows[run] = row
    return rows


def _trim(value, digits):
    """`value` with `digits` decimals, trailing zeros dropped."""
    text = f"{value:.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _cell(value):
    """A table cell: None blank, floats trimmed, `|` escaped."""
    if value is None:
        return ""
    if isinstance(value, float):
        return _trim(value, 6)
    return str(value).replace("|", "\\|")


def _percent(fraction):
    """A fraction as a percentage with 2 decimals, e.g. 0.2374 -> 23.74."""
    return None if fraction is None else f"{100.0 * fraction:.2f}"


def _duration(seconds):
    """Seconds as h:mm:ss, e.g. 3725.2 -> 1:02:05."""
    if seconds is None or not math.isfinite(seconds):
        return None
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _paper(row):
    """Paper cell (`23.74 ± 0.09 (row)`) and mean; (None, None) w/o row."""
    if row is None:
        return None, None
    mean, std = paper.TOP1_ERROR[row]
    cell = f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"
    return f"{cell} ({row})", mean


def _row(run, paper_rows):
    """The table values of one run, in COLUMNS order."""
    paper_cell, paper_mean = _paper(paper_row(run, paper_rows))
    median, speed = run["median5_top1_error"], run["examples_per_second"]
    return [
        run["name"], run["depth"], run["kn"], run["warmup"], run["scaling"],
        run["base_lr"], run["zero_gamma"],
        None if run["epochs"] is None else _trim(run["epochs"], 2),
        _percent(median), _percent(run["top1_error"]),
        None if speed is None else f"{speed:.1f}",
        _duration(run["train_wall_time_s"]), paper_cell,
        None if paper_mean is None or median is None
        else f"{100.0 * median - paper_mean:+.2f}",
    ]


def format_table(runs, paper_rows=None):
    """A markdown table of `runs` (dicts from `read_run`), one row each.

    Args:
        runs: iterable of `read_run` dicts.
        paper_rows: optional explicit paper rows, see `paper_row`.

    Returns:
        The table text, ending in a newline.
    """
    return tables.markdown_table(
        COLUMNS, [_row(run, paper_rows) for run in runs], cell=_cell) + "\n"


def summarize(model_dirs, out=None, paper_rows=None):
    """Reads `model_dirs`, returns their table and writes it to `out`.

    Raises:
        ValueError: for no model_dir, or a `RunError` of one of them.
    """
    if not model_dirs:
        raise ValueError("no model_dir given")
    table = format_table([read_run(d) for d in model_dirs], paper_rows)
    if out:
        with open(out, "w", encoding="utf-8") as f:
            f.write(table)
    return table
