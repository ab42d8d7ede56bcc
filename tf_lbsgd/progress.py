"""What a run shows on the terminal.

One line per training loop (`ProgressReporter`, an orbit train action), one
per evaluation (`EvalReporter`, an orbit eval action), a few lines at the end
(`final_summary`); orbit's own messages go to the absl log only
(`orbit_prints_to_log`).
"""

import contextlib
import os
import re
import shlex
import sys
import time

from absl import logging
from orbit import controller as orbit_controller
from orbit import runner as orbit_runner
import tensorflow as tf

from tf_lbsgd.analysis import run_outputs

# The evaluator's `top{k}_error` keys, k = 1, 5, ...
_TOP_K_ERROR = re.compile(r"top(\d+)_error")
_LABEL_WIDTH = len("TensorBoard: ")


def format_duration(seconds):
    """Formats seconds as 1h02m03s / 2m03s / 3s."""
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _format_seconds(seconds):
    """6.0s under a minute, 2m03s above (format_duration)."""
    return f"{seconds:.1f}s" if seconds < 60 else format_duration(seconds)


def _top_k_errors(output):
    """The (k, error) of `output`'s `top{k}_error` keys, by k."""
    found = ((_TOP_K_ERROR.fullmatch(key), value)
             for key, value in output.items())
    return sorted((int(match.group(1)), float(value))
                  for match, value in found if match)


class _LineReporter:
    """An orbit action printing one line of " | "-separated fields."""

    def __init__(self, global_step, steps_per_epoch, stream, clock):
        self.global_step = global_step
        self.steps_per_epoch = steps_per_epoch
        self.stream = stream
        self.clock = clock

    def _step_and_epoch(self):
        step = int(self.global_step.numpy())
        return step, f"epoch {step / self.steps_per_epoch:.2f}"

    def _print(self, fields):
        print(" | ".join(fields), file=self.stream or sys.stdout, flush=True)


class ProgressReporter(_LineReporter):
    """Prints one line per training loop, as an orbit train action.

        step 4/5 | epoch 0.02 | loss 2.2111 | top1 err 0.7656 | lr 0.3932 |
        631 img/s | ETA 21s   (on one line)

    The ETA is "?" after the first loop (which traces the step) and then
    comes from the steps per second since that loop, evaluations included.

    Args:
        global_step: the step variable.
        total_steps: the step training stops at.
        steps_per_epoch: iterations per epoch (may be fractional).
        stream: where to print; None for sys.stdout at each print.
        clock: seconds, for the ETA (time.monotonic).
    """

    def __init__(self, global_step, total_steps, steps_per_epoch,
                 stream=None, clock=time.monotonic):
        super().__init__(global_step, steps_per_epoch, stream, clock)
        self.total_steps = total_steps
        self._start_step = None
        self._start_time = None

    def _eta(self, step):
        now = self.clock()
        if self._start_step is None:
            self._start_step, self._start_time = step, now
            return "?"
        rate = (step - self._start_step) / max(now - self._start_time, 1e-9)
        return format_duration((self.total_steps - step) / max(rate, 1e-9))

    def __call__(self, output):
        """Prints the line of a loop.

        Args:
            output: the Trainer's dict: `loss`, `top1_error`,
                `learning_rate`, `examples_per_second`.
        """
        step, epoch = self._step_and_epoch()
        self._print([
            f"step {step}/{self.total_steps}", epoch,
            f"loss {float(output['loss']):.4f}",
            f"top1 err {float(output['top1_error']):.4f}",
            f"lr {float(output['learning_rate']):.4f}",
            f"{float(output['examples_per_second']):.0f} img/s",
            f"ETA {self._eta(step)}"])


class _TimedEvaluator(orbit_runner.AbstractEvaluator):
    """An orbit evaluator that tells `on_start` when an evaluation begins."""

    def __init__(self, evaluator, on_start):
        super().__init__(name="timed_evaluator")
        self.evaluator = evaluator
        self._on_start = on_start

    def evaluate(self, num_steps):
        self._on_start()
        return self.evaluator.evaluate(num_steps)


class EvalReporter(_LineReporter):
    """Prints one line per evaluation, as an orbit eval action.

        validation at step 5 | epoch 0.02 | loss 2.2584 | top1 err 0.7761 |
        top5 err 0.3202 | 10000 examples | 6.0s   (on one line)

    The evaluation's time is printed when orbit's Controller was given
    `timing(evaluator)` instead of the evaluator.

    Args:
        global_step: the step variable.
        steps_per_epoch: iterations per epoch (may be fractional).
        stream: where to print; None for sys.stdout at each print.
        clock: seconds, for the evaluation's time (time.monotonic).
    """

    def __init__(self, global_step, steps_per_epoch, stream=None,
                 clock=time.monotonic):
        super().__init__(global_step, steps_per_epoch, stream, clock)
        self._started = None

    def timing(self, evaluator):
        """`evaluator` (an `orbit.AbstractEvaluator`), timed for this line.

        Args:
            evaluator: what orbit's Controller would evaluate with, or None.

        Returns:
            An `orbit.AbstractEvaluator` to give the Controller instead
            (None for None).
        """
        if evaluator is None:
            return None
        return _TimedEvaluator(evaluator, self._start)

    def _start(self):
        self._started = self.clock()

    def __call__(self, output):
        """Prints the line of an evaluation.

        Args:
            output: the Evaluator's dict: `loss`, `top{k}_error` for each k,
                `examples`.
        """
        step, epoch = self._step_and_epoch()
        fields = [f"validation at step {step}", epoch,
                  f"loss {float(output['loss']):.4f}"]
        fields += [f"top{k} err {error:.4f}"
                   for k, error in _top_k_errors(output)]
        fields.append(f"{int(output['examples'])} examples")
        if self._started is not None:
            fields.append(_format_seconds(self.clock() - self._started))
            self._started = None
        self._print(fields)


def _orbit_log(message):
    """orbit's `_log` without its print: the absl log (INFO) only."""
    logging.info(message)


# Log records name orbit's line that logged, not this function.
logging.ABSLLogger.register_frame_to_skip(__file__, _orbit_log.__name__)


@contextlib.contextmanager
def orbit_prints_to_log():
    """Sends orbit's Controller messages to the absl log only, not stdout.

    orbit's Controller prints each message it logs: `train | step ... |
    output: {...}`, ` eval | ... DictWrapper({...})`, `restoring or
    initializing model...`, `saved checkpoint to ...`. Inside this context
    they go to the absl log at INFO only (on stderr with `--verbosity=0`);
    orbit's own function is restored on exit. Warnings orbit logs are left
    as they are.

    Yields:
        None.
    """
    previous = getattr(orbit_controller, "_log", None)
    if previous is None:  # Another orbit: its messages print as they do.
        logging.warning("orbit.controller has no _log; its messages stay "
                        "on stdout")
        yield
        return
    orbit_controller._log = _orbit_log  # pylint: disable=protected-access
    try:
        yield
    finally:
        orbit_controller._log = previous  # pylint: disable=protected-access


def _label(name):
    return f"{name}:".ljust(_LABEL_WIDTH)


def _training_line(metrics):
    workers = metrics.get("workers") or {}
    where = f"on {metrics['num_replicas']} replicas"
    if workers.get("workers_per_replica", 1) > 1:
        where = f"({workers['reason']})"
    parts = [f"step {metrics['global_step']} "
             f"(epoch {metrics['epochs']:.3g})",
             f"global batch {metrics['global_batch_size']} {where}",
             f"{format_duration(metrics['train_wall_time_s'])} training time"]
    if metrics.get("examples_per_second"):
        parts.append(f"{metrics['examples_per_second']:.0f} images/s")
    if metrics.get("xla"):
        parts.append(f"XLA {'on' if metrics['xla']['jit_compile'] else 'off'}"
                     f" ({metrics['xla']['reason']})")
    threads = metrics.get("cpu_threads")
    if threads and (threads["inter_op"] or threads["intra_op"]):
        parts.append(f"{threads['intra_op'] or 'all'} thread(s) per op "
                     f"({threads['reason']})")
    for key, what in (("skipped_steps", "steps skipped (loss scale)"),
                      ("skipped_images", "images skipped (unreadable)")):
        if metrics.get(key):
            parts.append(f"{metrics[key]} {what}")
    return _label("Training") + ", ".join(parts)


def _validation_line(evaluation):
    if not evaluation:
        return _label("Validation") + "none"
    top1_error = evaluation["top1_error"]
    parts = [f"top-1 error {top1_error:.4f} "
             f"(accuracy {100 * (1 - top1_error):.2f}%)"]
    parts += [f"top-{k} error {error:.4f}"
              for k, error in _top_k_errors(evaluation) if k != 1]
    history = evaluation.get("top1_error_history") or []
    if len(history) > 1 and "median5_top1_error" in evaluation:
        parts.append(f"median of the last {min(len(history), 5)} top-1 "
                     f"errors {evaluation['median5_top1_error']:.4f}")
    parts.append(f"loss {evaluation['loss']:.4f}")
    where = f"{int(evaluation['examples'])} examples"
    steps = evaluation.get("evaluated_steps") or []
    if steps and steps[-1] is not None:
        where += f" at step {steps[-1]}"
    return _label("Validation") + ", ".join(parts) + f" ({where})"


def _export_path(model_dir, step):
    """model_dir/export/<step> if written; the newest export if the step is
    unknown; else None."""
    export_dir = os.path.join(model_dir, "export")  # train_lib.EXPORT_DIR
    if step is not None:
        path = os.path.join(export_dir, str(step))
        return path if tf.io.gfile.isdir(path) else None
    if not tf.io.gfile.isdir(export_dir):
        return None
    steps = [int(name.rstrip("/")) for name in tf.io.gfile.listdir(export_dir)
             if name.rstrip("/").isdigit()]
    return os.path.join(export_dir, str(max(steps))) if steps else None


def final_summary(metrics, model_dir):
    """The lines a finished run prints: results, then where its outputs are.

        Training:    step 5 (epoch 0.0213), global batch 256 on 8 ...
        Validation:  top-1 error 0.7761 (accuracy 22.39%), top-5 ...
        Checkpoints: runs/x (newest: ckpt-5)
        Export:      runs/x/export/5
        TensorBoard: tensorboard --logdir=runs/x
        Metrics:     runs/x/metrics.json

    Args:
        metrics: what `train_lib.run` returns (the metrics.json schema); {}
            when there is no record (e.g. exporting a run without one).
        model_dir: the run's directory.

    Returns:
        The lines, joined by newlines (no trailing newline).
    """
    lines = []
    if metrics:
        lines += [_training_line(metrics),
                  _validation_line(metrics.get("eval"))]
    step = metrics.get("global_step")
    checkpoint = tf.train.latest_checkpoint(model_dir)
    newest = os.path.basename(checkpoint) if checkpoint else "none"
    export = _export_path(model_dir, step)
    if export is None:
        export = "none" if step is None else f"none for step {step}"
    lines += [
        _label("Checkpoints") + f"{model_dir} (newest: {newest})",
        _label("Export") + export,
        _label("TensorBoard") + f"tensorboard --logdir={shlex.quote(model_dir)}",
    ]
    metrics_path = os.path.join(model_dir, run_outputs.METRICS)
    if tf.io.gfile.exists(metrics_path):
        lines.append(_label("Metrics") + metrics_path)
    return "\n".join(lines)
