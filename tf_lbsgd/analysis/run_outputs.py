"""A run's files in its model_dir: their names, and reading them.

`tf_lbsgd.outputs` writes these files during training; this module only
reads them, with plain file I/O and gin's own parser, so that reports and
tools never start TensorFlow.
"""

import json
import os
import re
import statistics
import tokenize

from gin import config_parser

OPERATIVE_CONFIG = "operative_config.gin"
# What `--mode=eval` ran with: kept apart, so that the config the checkpoints
# were trained with is never overwritten by an evaluation's.
EVAL_OPERATIVE_CONFIG = "operative_config_eval.gin"
METRICS = "metrics.json"
# TensorBoard's runs in a model_dir (Keras' convention: the same tags in
# both, so the curves overlay): the training loops' scalars, and the
# evaluations'. The HParams session is in model_dir itself.
TRAIN_SUMMARY_DIR = "train"
VALIDATION_SUMMARY_DIR = "validation"


class RunError(ValueError):
    """A model_dir whose metrics cannot be read; the message names the file."""


def median_of_final(errors, count=5):
    """The paper's statistic (R14): median error of the final `count` evals.

    Goyal et al. 2017 (Sec. 5.1) report "the median error of the final 5
    epochs" of each run, which is robust to the epoch-to-epoch noise.

    Args:
        errors: per-evaluation errors, oldest first.
        count: how many final evaluations to take (all if fewer), >= 1.

    Returns:
        The median as a float.

    Raises:
        ValueError: if `errors` is empty or `count` < 1.
    """
    if count < 1:
        raise ValueError(f"count={count} must be >= 1")
    if len(errors) == 0:  # pylint: disable=g-explicit-length-test
        raise ValueError(f"errors={list(errors)!r} is empty: no evaluation "
                         f"has run yet")
    return float(statistics.median(list(errors)[-count:]))


def read_metrics(model_dir, missing_ok=True):
    """The metrics.json of `model_dir` as a dict.

    Args:
        model_dir: a training run's model_dir.
        missing_ok: return {} when there is no metrics.json (an earlier run
            that never wrote one); else raise `RunError`.

    Returns:
        The JSON object.

    Raises:
        RunError: naming the file, if it is not a JSON object with an object
            `eval` (or is missing and not `missing_ok`).
    """
    path = os.path.join(model_dir, METRICS)
    if not missing_ok and not os.path.isdir(model_dir):
        raise RunError(f"{model_dir} is not a directory (no {path})")
    try:
        with open(path, encoding="utf-8") as f:
            metrics = json.load(f)
    except FileNotFoundError:
        if missing_ok:
            return {}
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


class _References(config_parser.ParserDelegate):
    """Keeps `@configurable` and `%MACRO` references as their text."""

    def configurable_reference(self, scoped_configurable_name, evaluate):
        return f"@{scoped_configurable_name}" + ("()" if evaluate else "")

    def macro(self, macro_name):
        return f"%{macro_name}"


def gin_bindings(text):
    """Every binding of gin config `text`, in order, through gin's parser.

    Args:
        text: gin config text, e.g. an `operative_config.gin`.

    Returns:
        A list of (key, value): key `[scope/]selector.arg`, value the
        Python value (references such as `@resnet_imagenet` or `%X` as
        strings). Imports and includes are skipped.

    Raises:
        ValueError: with gin's message, naming the line, for text that is
            not gin.
    """
    bindings = []
    try:
        for statement in config_parser.ConfigParser(text, _References()):
            if isinstance(statement, config_parser.BindingStatement):
                scope = f"{statement.scope}/" if statement.scope else ""
                key = f"{scope}{statement.selector}.{statement.arg_name}"
                bindings.append((key, statement.value))
    except (SyntaxError, tokenize.TokenError) as e:
        raise ValueError(f"not a gin config: {e}") from None
    return bindings


def find_binding(bindings, name):
    """The value bound to `name` in `gin_bindings`' list, or None if unbound.

    `name` matches a key equal to it or ending in `.name` or `/name`, so
    `build_learning_rate_schedule.warmup` finds
    `schedules.build_learning_rate_schedule.warmup = 'gradual'`, and
    `depth` finds `resnet_imagenet.depth = 50`. The last binding wins, as
    in gin.

    Args:
        bindings: (key, value) pairs from `gin_bindings`.
        name: selector suffix such as `run.epochs`.

    Returns:
        The value, or None if no binding matches `name`.

    Raises:
        ValueError: if `name` is empty or not a dotted identifier.
    """
    if not re.fullmatch(r"[\w.]+", name or "") or name.startswith("."):
        raise ValueError(f"name={name!r} is not a gin parameter selector")
    value = None
    for key, bound in bindings:
        if key == name or key.endswith(("." + name, "/" + name)):
            value = bound
    return value


def gin_value(text, name):
    """`find_binding` in gin config `text` (see there and `gin_bindings`)."""
    return find_binding(gin_bindings(text), name)


def read_operative_config(model_dir, name=OPERATIVE_CONFIG):
    """The text of `model_dir`/`name`.

    Raises:
        OSError: if the file is missing or unreadable.
    """
    with open(os.path.join(model_dir, name), encoding="utf-8") as f:
        return f.read()
