"""The `tf-lbsgd` command line: absl flags, gin files and bindings, TF_CONFIG.

    tf-lbsgd --gin_file=fashion_mnist_default --model_dir=runs/default
    tf-lbsgd --gin_file=gin/experiments/fashion_mnist_default.gin \\
        --gin_bindings='train_lib.run.epochs = 2' --mode=train

This is the only module that defines or reads absl flags.
"""

import contextlib
import os
import re
import sys
import traceback

from absl import app
from absl import flags
from absl import logging

from tf_lbsgd import checks  # Without TensorFlow: checks flags at once.
from tf_lbsgd import cluster  # Without TensorFlow: checks TF_CONFIG at once.
from tf_lbsgd import exits  # Without TensorFlow: usable while it loads.
from tf_lbsgd import native_logging  # Imports TensorFlow only when called.
from tf_lbsgd import run_lock

DEFAULT_GIN_FILE = "experiments/fashion_mnist_default.gin"
_GIN_CONTEXT = re.compile(r"\s*In call to configurable '([^']+)'")
# A bad flag, gin setting, TF_CONFIG, model_dir or missing data set: one line
# on stderr, nothing written. (1 is Python's for a crash, 3 a divergence, 75
# a preemption.)
CONFIG_ERROR_EXIT_CODE = 2
USAGE = f"""Trains and evaluates with large-minibatch synchronous SGD.

USAGE: tf-lbsgd --model_dir=DIR [--gin_file=FILE ...] [--gin_bindings=B ...]
                [--mode=train|eval|train_and_eval|export]

The job is {DEFAULT_GIN_FILE} unless --gin_file names another: an
experiment file first, then any distribute/ or precision/ file to add, e.g.
  tf-lbsgd --model_dir=runs/bf16 --gin_file=experiments/fashion_mnist_default \\
      --gin_file=precision/mixed_bfloat16 \\
      --gin_bindings='train_lib.run.epochs = 2'
"""

_GIN_FILE = flags.DEFINE_multi_string(
    "gin_file", None,
    "Gin config file(s), applied in order: a path, or a name (with or without "
    ".gin) under the package's gin/ directory, e.g. "
    "'experiments/fashion_mnist_default'. Default: " + DEFAULT_GIN_FILE)
_GIN_BINDINGS = flags.DEFINE_multi_string(
    "gin_bindings", None,
    "Gin bindings applied after the files, e.g. "
    "--gin_bindings='train_lib.run.epochs = 2'.")
_MODEL_DIR = flags.DEFINE_string(
    "model_dir", None,
    "Directory for checkpoints, TensorBoard events (train/, validation/), "
    "operative_config.gin and metrics.json. Re-running resumes from it.")
_MODE = flags.DEFINE_enum(
    "mode", "train_and_eval", ["train", "eval", "train_and_eval", "export"],
    "What to run: train, evaluate the newest checkpoint, both, or export the "
    "newest checkpoint as a SavedModel to model_dir/export/<step>/ (a "
    "finished training run exports by itself).")
_TRACEBACK = flags.DEFINE_bool(
    "traceback", False,
    "On a configuration error, print the Python traceback before the "
    "one-line message.")


def _one_line(error):
    """The message of `error` on one line, for `tf-lbsgd: error: ...`.

    gin appends "In call to configurable 'name' (<function ...>)" lines to
    an exception raised inside a configurable; the innermost name is kept,
    short, when the message does not already say it.
    """
    lines, configurables = [], []
    for line in str(error).splitlines():
        context = _GIN_CONTEXT.match(line)
        if context:
            configurables.append(context.group(1))
        elif line.strip():
            lines.append(line.strip())
    message = " ".join(lines) or type(error).__name__
    if configurables and configurables[0] not in message:
        message += f" (in gin configurable {configurables[0]})"
    return message


def _config_error(error):
    """Prints `error` as one line (after its traceback with --traceback).

    Args:
        error: an exception, or a message.

    Returns:
        CONFIG_ERROR_EXIT_CODE.
    """
    if (isinstance(error, BaseException) and flags.FLAGS.is_parsed()
            and _TRACEBACK.value):
        traceback.print_exception(error)
    print(f"tf-lbsgd: error: {_one_line(error)}", file=sys.stderr)
    return CONFIG_ERROR_EXIT_CODE


def _missing_directories(path):
    """The directories that creating `path` makes, deepest first."""
    if "://" in path:  # Remote (gs://...): not created by os.makedirs.
        return []
    missing, path = [], os.path.abspath(path)
    while not os.path.lexists(path):
        missing.append(path)
        path = os.path.dirname(path)
    return missing


def _remove_if_empty(directories):
    """Removes `directories` (deepest first) while they are empty."""
    for directory in directories:
        try:
            os.rmdir(directory)
        except FileNotFoundError:
            continue
        except OSError:  # Not empty: something was written, keep it.
            return


def _check_job_defined(unbound, gin_files):
    """Refuses gin files that define no job (no data, model or epochs).

    Raises:
        ValueError: naming the unbound settings and how --gin_file composes.
    """
    if unbound:
        raise ValueError(
            f"--gin_file {' '.join(gin_files)} does not define "
            f"{', '.join(unbound)}: --gin_file replaces the default job "
            f"({DEFAULT_GIN_FILE}), so name an experiment file first and add "
            f"a distribute or precision file after it, e.g. "
            f"--gin_file=experiments/fashion_mnist_default "
            f"--gin_file=precision/mixed_bfloat16")


def main(argv):
    if len(argv) > 1:
        return _config_error(f"unexpected arguments {argv[1:]}; flags are "
                             f"--name=value (see --help)")
    if not _MODEL_DIR.value:
        return _config_error("--model_dir is required (see --help)")
    try:
        checks.writable_directory("--model_dir", _MODEL_DIR.value)
    except ValueError as e:
        return _config_error(e)
    # Quiet by default: the progress and evaluation lines and the summary
    # are printed, absl's WARNING logs and Python's warnings still show.
    # --verbosity=0 (or -v 0) brings back absl INFO logs (orbit's messages
    # among them) and TensorFlow's C++ logs (whose errors, e.g. "failed call
    # to cuInit" on a host without GPUs, are noise, or come back as the
    # Python exception reported); TF_CPP_MIN_LOG_LEVEL set in the
    # environment is kept, and covers absl's C++ log too (native_logging).
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
        os.environ.setdefault(native_logging.ENV_VAR, "3")
    try:  # Before TensorFlow's slow import: a bad TF_CONFIG fails at once.
        tf_config = cluster.validate_tf_config()
    except ValueError as e:
        return _config_error(e)
    # Imported here so that --help does not start TensorFlow.
    from tf_lbsgd import config  # pylint: disable=g-import-not-at-top
    from tf_lbsgd import preemption  # pylint: disable=g-import-not-at-top
    from tf_lbsgd import progress  # pylint: disable=g-import-not-at-top
    from tf_lbsgd import train_lib  # pylint: disable=g-import-not-at-top
    # TensorFlow is loaded: absl's C++ log (XLA's "Compiled cluster using
    # XLA!") follows TF_CPP_MIN_LOG_LEVEL as TensorFlow's own does.
    native_logging.apply_tf_cpp_min_log_level()
    gin_files = _GIN_FILE.value or [DEFAULT_GIN_FILE]
    try:
        config.parse(gin_files, _GIN_BINDINGS.value)
        _check_job_defined(config.unbound_required(train_lib.run), gin_files)
    except (ValueError, FileNotFoundError) as e:
        return _config_error(e)
    new_directories = _missing_directories(_MODEL_DIR.value)
    # One run per model_dir: the chief holds its lock, released before any
    # exit path below runs (exits.exit_now skips the interpreter's unwinding).
    lock = (run_lock.hold(_MODEL_DIR.value)
            if cluster.is_chief_task(tf_config) else contextlib.nullcontext())
    try:
        with lock, train_lib.exit_follows_run():
            metrics = train_lib.run(_MODEL_DIR.value, mode=_MODE.value)
    except run_lock.ModelDirLocked as e:  # Another run holds model_dir.
        return _config_error(e)
    except preemption.Preempted as e:  # SIGTERM or Ctrl-C, on any worker.
        if _MODE.value == "eval":
            outcome = "evaluation abandoned; re-run the same command to evaluate"
        else:
            outcome = (f"checkpoint saved in {_MODEL_DIR.value}; re-run the "
                       f"same command to resume")
        # Not str(e): gin appends the configurable's name to it.
        print(f"tf-lbsgd: {e.verb} at step {e.step}: {outcome}",
              file=sys.stderr)
        # Saved and said: exit without the teardown, which can hang.
        exits.exit_now(e.exit_code)
    except FloatingPointError as e:  # The last good checkpoint is kept.
        print(f"tf-lbsgd: diverged: {e}", file=sys.stderr)
        exits.exit_now(exits.DIVERGED_EXIT_CODE)
    # Missing data, a bad setting, a value of the wrong type in a binding.
    except (FileNotFoundError, ValueError, TypeError) as e:
        _remove_if_empty(new_directories)  # Made before the error was seen.
        return _config_error(e)
    # Last, anything else: a multi-worker run that lost a peer is one line.
    except Exception as e:  # pylint: disable=broad-except
        lost = lost_peer_message(e, _MODEL_DIR.value)
        if lost is None:
            raise
        print(f"tf-lbsgd: error: {lost}", file=sys.stderr)
        # The peers are gone: the teardown would wait for them.
        exits.exit_now(exits.LOST_PEER_EXIT_CODE)
    print(progress.final_summary(metrics, _MODEL_DIR.value))
    # Everything is written: exit without the interpreter's teardown, where
    # TensorFlow's destructor of the input pipeline waited ~3 minutes (seen
    # in 2 of 3 runs of the quick check) or, with 64 replicas, deadlocked.
    exits.exit_now(0)


# TensorFlow's words for a collective or the coordination service giving up
# on a peer: a collective timeout, missed heartbeats, a refused connection.
_LOST_PEER_ERRORS = ("DeadlineExceededError", "UnavailableError",
                     "AbortedError", "CancelledError")
_LOST_PEER_WORDS = ("Collective", "heartbeat", "CoordinationService")


def lost_peer_message(error, model_dir):
    """One line for a multi-worker run that lost a peer, or None when
    `error` is something else.

    A collective that waited longer than its timeout
    (`distribute.build_strategy.timeout_seconds`), or the coordination
    service's heartbeats that stopped: a peer's host is down, its link cut
    or its process dead. The run's checkpoints are kept; the newest one is
    named.
    """
    name = type(error).__name__
    text = str(error)
    if name not in _LOST_PEER_ERRORS or not any(
            word in text for word in _LOST_PEER_WORDS):
        return None
    reason = next((line.strip() for line in text.splitlines()
                   if "aborted by" in line or "unhealthy" in line),
                  text.splitlines()[0].strip() if text else name)
    reason = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", reason)
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    newest = tf.train.latest_checkpoint(model_dir)
    newest = os.path.basename(newest) if newest else None
    kept = (f"the newest checkpoint, {newest}, is kept in {model_dir}"
            if newest else f"no checkpoint was saved in {model_dir} yet")
    return (f"the workers lost a peer ({name}: {reason}): its host is down, "
            f"its link cut or its process dead (a collective gives up after "
            f"distribute.build_strategy.timeout_seconds); {kept}; re-run the "
            f"same command on every worker to resume")


def _parse_flags(argv):
    """absl's flag parsing, with this tool's help and one-line errors.

    `--help` (and `-h`, `--helpshort`) lists this module's flags under
    `USAGE` (absl lists those of the main module, here `__main__.py` or the
    console script, which defines none), `--helpfull` all flags; both exit
    0 (absl exits 1). A bad flag exits with CONFIG_ERROR_EXIT_CODE and one
    line.
    """
    sys.modules["__main__"].__doc__ = USAGE
    for flag in (_MODEL_DIR, _GIN_FILE, _GIN_BINDINGS, _MODE, _TRACEBACK):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0],
                                                 flags.FLAGS[flag.name])
    options = argv[1:argv.index("--")] if "--" in argv else argv[1:]
    if {"-h", "--help", "--helpshort"} & set(options):  # absl exits 1.
        app.usage(shorthelp=True, writeto_stdout=True, exitcode=0)
    if "--helpfull" in options:
        app.usage(writeto_stdout=True, exitcode=0)
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        sys.exit(_config_error(f"{_one_line(e)} (see --help)"))


def run():
    """Console-script entry point."""
    # Until training installs its watcher (preemption.PreemptionWatcher,
    # which saves at the next safe point), SIGTERM and Ctrl-C stop at once
    # with one line: nothing is saved yet.
    exits.stop_on_signals()
    try:
        app.run(main, flags_parser=_parse_flags)
    except exits.Stopped as stop:
        print(f"tf-lbsgd: {exits.stop_verb(stop.signal_name)} before "
              f"training started: nothing saved; re-run the same command to "
              f"start", file=sys.stderr)
        exits.exit_now(stop.exit_code)


if __name__ == "__main__":
    run()
