"""A profile of chosen training steps, for TensorBoard's Profile tab.

`profile_steps = (first, last)` traces the training steps first to last
(step t is the t-th training step: the one after which the global step is
t) with `tf.profiler.experimental`, into <logdir>/plugins/profile/<time>/,
where TensorBoard's profile plugin finds it (logdir: model_dir/train/).
orbit runs `steps_per_loop` steps in one call, so a trace starts before the
loop that runs `first` (or a step before it) and stops after the loop that
runs `last`: the range is rounded outward to whole loops, and includes what
happens between them (the loop's summaries, checkpoints, evaluations).
"""

import numbers

from absl import logging
import tensorflow as tf


def check_profile_steps(profile_steps, name="train_lib.run.profile_steps"):
    """Checks a `profile_steps` setting.

    Args:
        profile_steps: None (no profile), or a pair of ints (first, last)
            with 1 <= first <= last.
        name: the setting's name in the error message.

    Returns:
        None, or (first, last) as a tuple of ints.

    Raises:
        ValueError: naming the setting and its value otherwise.
    """
    if profile_steps is None:
        return None
    steps = (tuple(profile_steps) if isinstance(profile_steps, (tuple, list))
             else ())
    if (len(steps) != 2 or not all(isinstance(step, numbers.Integral)
                                   and not isinstance(step, bool)
                                   for step in steps)
            or not 1 <= steps[0] <= steps[1]):
        raise ValueError(
            f"{name} must be None (no profile) or a pair of training steps "
            f"(first, last) with 1 <= first <= last, such as (10, 20), got "
            f"{profile_steps!r}")
    return int(steps[0]), int(steps[1])


class StepProfiler:
    """Traces a range of training steps; an orbit train action.

    Call `start_if_due` before the first training loop, pass the object as
    a train action (it stops the trace after the loop that ran the last
    step, and starts it before the loop that runs the first), and `close`
    it when training stops, however it stops: a trace still open is
    stopped and written then.

    Args:
        logdir: the summary dir the profile goes under (model_dir/train).
        profile_steps: (first, last), or None to profile nothing (every
            method then does nothing); see `check_profile_steps`.
        steps_per_loop: the training steps orbit runs per loop.
        global_step: the step variable.

    Raises:
        ValueError: for a bad `profile_steps` (`check_profile_steps`).
    """

    def __init__(self, logdir, profile_steps, steps_per_loop, global_step):
        self.logdir = logdir
        self.steps = check_profile_steps(profile_steps)
        self.steps_per_loop = steps_per_loop
        self.global_step = global_step
        self.tracing = False

    def _due(self, step):
        """Whether the loop after `step` may run a step of the range: it
        runs steps step + 1 up to step + steps_per_loop (fewer before an
        evaluation or the end)."""
        first, last = self.steps
        return step + 1 <= last and step + self.steps_per_loop >= first

    def start_if_due(self):
        """Starts tracing if the next loop may run a step of the range."""
        if (self.steps is None or self.tracing
                or not self._due(int(self.global_step.numpy()))):
            return
        try:
            tf.profiler.experimental.start(self.logdir)
        except tf.errors.AlreadyExistsError as error:  # The user's own.
            logging.warning("profile_steps %s: not traced, another profiler "
                            "is running (%s)", self.steps, error)
            self.steps = None
            return
        self.tracing = True
        logging.info("Profiling steps %s into %s", self.steps, self.logdir)

    def __call__(self, output):
        """After a training loop: stops after the range, or starts before
        it. `output` (the loop's) is not used."""
        del output
        if (self.tracing
                and int(self.global_step.numpy()) >= self.steps[1]):
            self.close()
        else:
            self.start_if_due()

    def close(self):
        """Stops an open trace and writes it; nothing if none is open."""
        if not self.tracing:
            return
        self.tracing = False
        try:
            tf.profiler.experimental.stop()
        except tf.errors.OpError as error:  # Not worth a run, nor a masked
            # exception when training stopped with one.
            logging.warning("profile_steps %s: the trace was not written "
                            "(%s)", self.steps, error)
            return
        logging.info("Profile of steps %s written under %s", self.steps,
                     self.logdir)
