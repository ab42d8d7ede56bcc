"""How `tf-lbsgd` ends when it is stopped: exit codes and a prompt exit.

SIGTERM (a scheduler reclaiming the machine) ends a run with
`PREEMPTED_EXIT_CODE`, Ctrl-C (SIGINT) with `INTERRUPTED_EXIT_CODE`. Once
training has started, `preemption.PreemptionWatcher` saves a checkpoint
first; before that, `stop_on_signals` makes either signal raise `Stopped`
(there is nothing to save yet). A non-finite loss ends a run with
`DIVERGED_EXIT_CODE`. This module does not import TensorFlow, so
the CLI can use it while TensorFlow is still being imported.
"""

import os
import signal
import sys

# Training stopped on a non-finite loss: a sweep driver
# (tf_lbsgd.analysis.reproduction.runner) records such a run as diverged.
DIVERGED_EXIT_CODE = 3
# EX_TEMPFAIL: "try again later". tools/launch_local.py knows this code.
PREEMPTED_EXIT_CODE = 75
# EX_UNAVAILABLE: a multi-worker run lost a peer (a collective timed out,
# heartbeats stopped); its checkpoints are kept and a re-run resumes.
LOST_PEER_EXIT_CODE = 69
# 128 + SIGINT: what a shell reports for a program stopped by Ctrl-C.
INTERRUPTED_EXIT_CODE = 130

SIGINT_NAME = signal.Signals.SIGINT.name


def exit_code(signal_name):
    """The exit code of a run stopped by `signal_name` (e.g. "SIGTERM")."""
    return (INTERRUPTED_EXIT_CODE if signal_name == SIGINT_NAME
            else PREEMPTED_EXIT_CODE)


def stop_verb(signal_name):
    """ "interrupted" (Ctrl-C) or "preempted" (SIGTERM), for messages."""
    return "interrupted" if signal_name == SIGINT_NAME else "preempted"


class Stopped(BaseException):
    """SIGTERM or SIGINT arrived while `stop_on_signals`' handlers were on.

    A BaseException, like KeyboardInterrupt, so that no `except Exception`
    on the way swallows it.

    Attributes:
        signal_name: "SIGTERM" or "SIGINT".
        exit_code: the code to exit with.
    """

    def __init__(self, signal_name):
        super().__init__(f"{stop_verb(signal_name)} by {signal_name}")
        self.signal_name = signal_name
        self.exit_code = exit_code(signal_name)


def _raise_stopped(signum, frame):
    del frame
    raise Stopped(signal.Signals(signum).name)


def stop_on_signals():
    """Makes SIGTERM and SIGINT raise `Stopped` (call in the main thread).

    Python runs the handler between two bytecodes of the main thread, so
    the exception comes from wherever that thread is.
    """
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _raise_stopped)


def exit_now(code):
    """Flushes stdout and stderr and ends the process with `code` at once.

    It skips the interpreter's teardown on purpose: TensorFlow's can hang
    (one run of 64 replicas deadlocked in a tf.data iterator's destructor
    and ignored SIGTERM for 11 minutes), and a watchdog thread could not
    end such a hang with the right code, since Python stops its threads
    once finalization begins. Call it only when everything that must last
    is written (checkpoints and metrics.json are written synchronously;
    summary writers must be flushed first).

    Args:
        code: the process' exit code.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # Closed or broken: nothing to keep.
            pass
    os._exit(code)  # pylint: disable=protected-access
