r"""Starts the K worker processes of a multi-worker TensorFlow job on this host.

    tf-lbsgd-launch-local --workers K [--cores-per-worker C] \
        [--grace-seconds S] -- <command and its args>
    tf-lbsgd-launch-local --workers 2 --cores-per-worker 1 -- \
        tf-lbsgd --gin_file=... --model_dir=runs/mw

(`python tools/launch_local.py ...` in a source checkout is the same.) The
command after `--` runs unchanged in every worker; worker i gets a TF_CONFIG
naming K free localhost ports and task index i (worker 0 is the chief). With
--cores-per-worker C, worker i is pinned to C cores and told to use C
threads. Worker output is merged onto stdout as "[worker i] ...".

Exit code: 0 when all workers exit 0; 75 (PREEMPTED_EXIT_CODE) when all exit
0 or 75 and at least one was preempted (re-run the command to resume from its
checkpoint); 1 when a worker fails, after the others are sent SIGTERM and,
--grace-seconds later, SIGKILL; 2 for bad arguments. A SIGTERM or SIGINT to
the launcher is forwarded to all workers as SIGTERM (a second one kills them).
"""

import os
import sys

from absl import app
from absl import flags

from tf_lbsgd import launch
from tf_lbsgd.scripts import usage

USAGE_ERROR_EXIT_CODE = 2

_WORKERS = flags.DEFINE_integer("workers", None, "K: how many workers to start.")
_CORES_PER_WORKER = flags.DEFINE_integer(
    "cores-per-worker", None, "Pin each worker to C cores and C threads.")
_GRACE_SECONDS = flags.DEFINE_float(
    "grace-seconds", 10.0, "Seconds from SIGTERM to SIGKILL when stopping.")
flags.DEFINE_alias("cores_per_worker", "cores-per-worker")
flags.DEFINE_alias("grace_seconds", "grace-seconds")
flags.mark_flag_as_required("workers")


def _usage_error(message):
    """Prints `message` as the launcher's error and exits 2."""
    print(f"{os.path.basename(sys.argv[0])}: error: {message} (see --help)",
          file=sys.stderr)
    sys.exit(USAGE_ERROR_EXIT_CODE)


def _parse_flags(argv):
    """Parses the flags before `--`; returns [program] + the worker command."""
    split = argv.index("--") if "--" in argv else len(argv)
    usage.exit_if_help(argv[1:split])
    try:
        unparsed = flags.FLAGS(argv[:split])
    except flags.Error as e:
        _usage_error(e)
    if len(unparsed) > 1:
        _usage_error(f"unexpected arguments {unparsed[1:]}; put the worker "
                     f"command after --")
    return argv[:1] + argv[split + 1:]


def main(argv):
    try:
        launch.check_options(_WORKERS.value, _CORES_PER_WORKER.value,
                             _GRACE_SECONDS.value)
        command = launch.resolve_command(argv[1:])
    except ValueError as e:
        _usage_error(e)
    return launch.run(command, _WORKERS.value, _CORES_PER_WORKER.value,
                      _GRACE_SECONDS.value)


def run():
    """Console-script entry point (`tf-lbsgd-launch-local`)."""
    usage.adopt_as_main(__doc__,
                        (_WORKERS, _CORES_PER_WORKER, _GRACE_SECONDS))
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
