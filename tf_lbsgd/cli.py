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
    except preemption.Preempted as e:
        print(f"tf-lbsgd: preempted at step {e.step}: checkpoint saved in "
              f"{_MODEL_DIR.value}; "
              f"re-run the same command to resume", file=sys.stderr)
        return preemption.PREEMPTED_EXIT_CODE
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
    app.run(main)


if __name__ == "__main__":
    run()
