"""A one-line terminal progress display, run as an orbit train action."""

import sys
import time


def format_duration(seconds):
    """Formats seconds as 1h02m03s / 2m03s / 3s."""
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class ProgressReporter:
    """Prints step, epoch, loss, learning rate, images/sec and ETA.

    Args:
        global_step: the step variable.
        total_steps: the step training stops at.
        steps_per_epoch: iterations per epoch (may be fractional).
        stream: where to print (stdout).
    """

    def __init__(self, global_step, total_steps, steps_per_epoch,
                 stream=sys.stdout):
        self.global_step = global_step
        self.total_steps = total_steps
        self.steps_per_epoch = steps_per_epoch
        self.stream = stream
        self._start_step = None
        self._start_time = None

    def __call__(self, output):
        step = int(self.global_step.numpy())
        if self._start_step is None:
            self._start_step, self._start_time = step, time.time()
            eta = "?"
        else:
            rate = (step - self._start_step) / max(
                time.time() - self._start_time, 1e-9)
            eta = format_duration((self.total_steps - step) / max(rate, 1e-9))
        print(f"step {step}/{self.total_steps} | "
              f"epoch {step / self.steps_per_epoch:.2f} | "
              f"loss {output['train/loss']:.4f} | "
              f"top1 err {output['train/top1_error']:.4f} | "
              f"lr {output['train/learning_rate']:.4f} | "
              f"{output['train/examples_per_second']:.0f} img/s | ETA {eta}",
              file=self.stream, flush=True)
