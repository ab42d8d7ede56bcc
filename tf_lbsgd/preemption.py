"""Preemption: a SIGTERM on any worker makes every worker save and stop.

A scheduler that reclaims a machine sends SIGTERM and, after a grace period,
SIGKILL. Python only runs signal handlers between TensorFlow calls, so the
handler just raises a flag; after every training loop (every
`steps_per_loop` steps, a point all workers reach together) the workers sum
their flags with one all-reduce of a scalar. If any worker was signalled,
all of them see it at the same global step, save a checkpoint of that step,
and exit with `PREEMPTED_EXIT_CODE`; re-running the same command resumes
exactly there (the input stream's position is derived from the step).
This is what `tf.distribute.experimental.PreemptionCheckpointHandler` does,
but it works with orbit's loop and checkpoint manager and with every
strategy, single-host ones included.
"""

import signal

import tensorflow as tf

# EX_TEMPFAIL: "try again later". tools/launch_local.py knows this code.
PREEMPTED_EXIT_CODE = 75


class Preempted(Exception):
    """Raised on every worker when any worker was asked to stop."""

    def __init__(self, step):
        super().__init__(f"preempted at step {step}")
        self.step = step


class PreemptionWatcher:
    """Watches for SIGTERM; an orbit train action that raises `Preempted`.

    Create it in the main thread (signal handlers can only be installed
    there) and pass it in `orbit.Controller(train_actions=[...])`; `close()`
    puts the previous handlers back.

    Args:
        strategy: the run's strategy (the flag is summed over its replicas).
        global_step: the step variable, reported in `Preempted`.
        signals: the signals that mean "save and stop".
    """

    def __init__(self, strategy, global_step, signals=(signal.SIGTERM,)):
        self.strategy = strategy
        self.global_step = global_step
        self.received = None
        self._previous = {sig: signal.signal(sig, self._on_signal)
                          for sig in signals}
        self._any = tf.function(self._sum_over_replicas)

    def _on_signal(self, signum, frame):
        del frame
        self.received = signal.Signals(signum).name

    def _sum_over_replicas(self, flag):
        per_replica = self.strategy.run(tf.identity, args=(flag,))
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica,
                                    axis=None)

    def requested(self):
        """Whether any worker was signalled (a collective: call on all)."""
        flag = tf.constant(1.0 if self.received else 0.0)
        return float(self._any(flag)) > 0

    def __call__(self, output):
        del output
        if self.requested():
            raise Preempted(int(self.global_step.numpy()))

    def close(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
