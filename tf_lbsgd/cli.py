"""The `tf-lbsgd` command line: absl flags, gin files and bindings, TF_CONFIG.

    tf-lbsgd --gin_file=fashion_mnist_default --model_dir=runs/default
    tf-lbsgd --gin_file=gin/experiments/fashion_mnist_default.gin \\
        --gin_bindings='train_lib.run.epochs = 2' --mode=train

This is the only module that defines or reads absl flags.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging

from tf_lbsgd import exits  # Without TensorFlow: usable while it loads.

DEFAULT_GIN_FILE = "experiments/fashion_mnist_default.gin"

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
    "Directory for checkpoints, TensorBoard events (train/, eval/), "
    "operative_config.gin and metrics.json. Re-running resumes from it.")
_MODE = flags.DEFINE_enum("mode", "train_and_eval",
                          ["train", "eval", "train_and_eval"],
                          "What to run.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not _MODEL_DIR.value:
        raise app.UsageError("--model_dir is required")
    # Quiet by default: the progress line and orbit's summaries are printed;
    # --verbosity=0 (or -v 0) brings back absl INFO logs.
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    # Imported here so that --help does not start TensorFlow.
    from tf_lbsgd import config  # pylint: disable=g-import-not-at-top
    from tf_lbsgd import distribute  # pylint: disable=g-import-not-at-top
    from tf_lbsgd import preemption  # pylint: disable=g-import-not-at-top
    from tf_lbsgd import train_lib  # pylint: disable=g-import-not-at-top
    from tf_lbsgd import trainer  # pylint: disable=g-import-not-at-top
    try:
        distribute.validate_tf_config()
        config.parse(_GIN_FILE.value or [DEFAULT_GIN_FILE], _GIN_BINDINGS.value)
    except (ValueError, FileNotFoundError) as e:
        print(f"tf-lbsgd: error: {e}", file=sys.stderr)
        return 2
    os.makedirs(_MODEL_DIR.value, exist_ok=True)
    try:
        metrics = train_lib.run(_MODEL_DIR.value, mode=_MODE.value)
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
        return trainer.DIVERGED_EXIT_CODE
    except (FileNotFoundError, ValueError) as e:  # Missing data, bad setting.
        logging.exception("tf-lbsgd failed")
        print(f"tf-lbsgd: error: {e}", file=sys.stderr)
        return 1
    print(f"metrics: {metrics}")
    return 0


def run():
    """Console-script entry point."""
    # Until training installs its watcher (preemption.PreemptionWatcher,
    # which saves at the next safe point), SIGTERM and Ctrl-C stop at once
    # with one line: nothing is saved yet.
    exits.stop_on_signals()
    try:
        app.run(main)
    except exits.Stopped as stop:
        print(f"tf-lbsgd: {exits.stop_verb(stop.signal_name)} before "
              f"training started: nothing saved; re-run the same command to "
              f"start", file=sys.stderr)
        exits.exit_now(stop.exit_code)


if __name__ == "__main__":
    run()
