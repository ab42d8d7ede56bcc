"""Stopping cleanly: SIGTERM or Ctrl-C saves the current step and exits.

A scheduler that reclaims a machine sends SIGTERM and, after a grace period
(30 s under Kubernetes), SIGKILL; a user at a terminal presses Ctrl-C
(SIGINT). Either one asks the run to stop at the next safe point, save a
checkpoint of the step it reached, and exit (`PREEMPTED_EXIT_CODE` after
SIGTERM, `INTERRUPTED_EXIT_CODE` after Ctrl-C); re-running the same command
resumes exactly there (the input stream's position is derived from the step).

The safe points:
- after every training loop (`steps_per_loop` steps run in one
  `tf.function`; the weights are consistent between loops), a point all
  workers reach together: the workers sum their flags with one all-reduce
  of a scalar, so if any worker was signalled all of them stop at the same
  global step. A signal that arrives during a loop waits for its end (the
  first loop includes the trace and compilation). An evaluation due at that
  step is left to the re-run (`PENDING_EVAL_KEY`);
- between two batches of an evaluation: the evaluation is abandoned (its
  partial sums are never reported; the checkpoint of its step was saved
  before it) and the re-run does it first (`PENDING_EVAL_KEY`). In one
  process the flag is read directly; across processes
  (`MultiWorkerMirroredStrategy` with several workers) the decision is the
  same all-reduce, made every `MULTI_WORKER_EVAL_CHECK_EVERY` batches: a
  worker that left the evaluation alone would leave the others in a
  collective it never joins (tried: the other worker failed in the
  all-reduce of the evaluation's sums).

Python runs signal handlers only in the main thread and only between
TensorFlow calls, so a compilation or a loop would delay them. The watcher
therefore learns of a signal from a thread of its own that reads the
interpreter's wakeup file descriptor (`signal.set_wakeup_fd`), written by the
C-level handler the moment the signal arrives: the flag is raised at once,
Ctrl-C is acknowledged at once, and a second Ctrl-C quits at once without
saving (exit 130), whatever the main thread is doing.

This is what `tf.distribute.experimental.PreemptionCheckpointHandler` does,
but it works with orbit's loop and checkpoint manager and with every
strategy, single-host ones included.
"""

import os
import signal
import sys
import threading

import tensorflow as tf

from tf_lbsgd import exits

PREEMPTED_EXIT_CODE = exits.PREEMPTED_EXIT_CODE  # After SIGTERM.
INTERRUPTED_EXIT_CODE = exits.INTERRUPTED_EXIT_CODE  # After Ctrl-C.
# Evaluation batches between two collective checks across worker processes
# (one all-reduce of a scalar each; in one process every batch is checked).
MULTI_WORKER_EVAL_CHECK_EVERY = 10

# The metrics.json key of the step whose evaluation a stop abandoned, or
# left undone when it came at the end of the loop before that evaluation
# (the re-run evaluates that step first).
PENDING_EVAL_KEY = "pending_eval_step"

_SIGINT = exits.SIGINT_NAME


class Preempted(Exception):
    """Raised on every worker when any worker was asked to stop.

    Attributes:
        verb: "preempted" (SIGTERM) or "interrupted" (Ctrl-C).
        step: the global step the run stopped at (its checkpoint is saved).
        signal_name: this worker's signal ("SIGTERM", "SIGINT"), or
            "SIGTERM" when another worker was signalled.
        eval_pending: whether the evaluation of `step` is still to be done
            (abandoned, or due at this step and not started); the re-run
            does it first.
        exit_code: `PREEMPTED_EXIT_CODE`, or `INTERRUPTED_EXIT_CODE` after
            Ctrl-C.
    """

    def __init__(self, step, signal_name="SIGTERM", eval_pending=False):
        self.verb = exits.stop_verb(signal_name)
        super().__init__(f"{self.verb} at step {step}")
        self.step = step
        self.signal_name = signal_name
        self.eval_pending = eval_pending
        self.exit_code = exits.exit_code(signal_name)


def _ignore(signum, frame):
    """The Python-level handler: the watcher's thread does the work."""
    del signum, frame


def _spans_processes(strategy):
    """Whether other Python processes run replicas of `strategy` (and make
    their own decisions, so a decision to stop must be collective)."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    spec = strategy.cluster_resolver.cluster_spec()
    return sum(spec.num_tasks(job) for job in spec.jobs
               if job in ("chief", "worker")) > 1


class PreemptionWatcher:
    """Watches for SIGTERM and Ctrl-C; stops the run at the next safe point.

    Create it in the main thread (signal handlers can only be installed
    there), pass it in `orbit.Controller(train_actions=[...])` (it raises
    `Preempted` after a training loop) and call
    `check_between_eval_batches` before each evaluation batch; `close()`
    puts the previous handlers back.

    A first SIGINT prints one line on `stream` saying that the run stops at
    the next safe point and that a second Ctrl-C quits at once; the second
    SIGINT prints one more and exits the process with
    `INTERRUPTED_EXIT_CODE`, saving nothing.

    Args:
        strategy: the run's strategy (the flag is summed over its replicas).
        global_step: the step variable, reported in `Preempted`.
        signals: the signals that mean "save and stop".
        stream: where the Ctrl-C messages go (default: sys.stderr).
    """

    def __init__(self, strategy, global_step,
                 signals=(signal.SIGTERM, signal.SIGINT), stream=None):
        self.strategy = strategy
        self.global_step = global_step
        self.stream = stream
        self.received = None  # The name of the first signal.
        self._any = tf.function(self._sum_over_replicas)
        self._multi_process = _spans_processes(strategy)
        self._eval_batches = 0
        self._signals = {int(sig) for sig in signals}
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        self._previous = {sig: signal.signal(sig, _ignore) for sig in signals}
        self._previous_wakeup_fd = signal.set_wakeup_fd(
            self._write_fd, warn_on_full_buffer=False)
        self._thread = threading.Thread(target=self._watch, daemon=True,
                                        name="tf-lbsgd-signal-watcher")
        self._thread.start()

    def _watch(self):
        """Reads the signal numbers the C-level handler writes, until EOF."""
        while True:
            data = os.read(self._read_fd, 64)
            if not data:
                return
            for signum in data:
                if signum in self._signals:
                    self._on_signal(signal.Signals(signum).name)

    def _on_signal(self, name):
        if self.received is None:
            self.received = name
            if name == _SIGINT:
                self._say("interrupted: stopping at the next safe point to "
                          "save a checkpoint (press Ctrl-C again to quit at "
                          "once without saving)")
        elif name == _SIGINT:  # The user's escape hatch.
            self._say("interrupted again: quitting without saving")
            exits.exit_now(INTERRUPTED_EXIT_CODE)

    def _say(self, message):
        print(f"tf-lbsgd: {message}", file=self.stream or sys.stderr,
              flush=True)

    def _sum_over_replicas(self, flag):
        per_replica = self.strategy.run(tf.identity, args=(flag,))
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica,
                                    axis=None)

    def requested(self):
        """Whether any worker was signalled (a collective: call on all)."""
        flag = tf.constant(1.0 if self.received else 0.0)
        return float(self._any(flag)) > 0

    def _preempted(self, eval_pending=False):
        return Preempted(int(self.global_step.numpy()),
                         self.received or signal.Signals.SIGTERM.name,
                         eval_pending=eval_pending)

    def __call__(self, output):
        """The train action: raises `Preempted` if any worker was signalled.

        Raises:
            Preempted: at the current step, on every worker.
        """
        del output
        if self.requested():
            raise self._preempted()

    def check_between_eval_batches(self):
        """Abandons the evaluation in progress if a stop was requested.

        Call it before every evaluation batch, on every worker. In one
        process it reads this process' flag; across processes it is a
        collective every `MULTI_WORKER_EVAL_CHECK_EVERY` calls (the workers
        run the same number of batches, so they decide together).

        Raises:
            Preempted: with `eval_pending=True`, at the current step.
        """
        if self._multi_process:
            self._eval_batches += 1
            if self._eval_batches % MULTI_WORKER_EVAL_CHECK_EVERY:
                return
            stop = self.requested()
        else:
            stop = self.received is not None
        if stop:
            raise self._preempted(eval_pending=True)

    def close(self):
        """Puts the previous signal handlers back and stops the thread."""
        if not self._previous:
            return
        signal.set_wakeup_fd(self._previous_wakeup_fd)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
        os.close(self._write_fd)  # The thread reads EOF and returns.
        self._thread.join(timeout=5)
        os.close(self._read_fd)

