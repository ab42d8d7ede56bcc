"""Learning-rate scaling and per-iteration schedules: R1-R4 of docs/paper.md.

Linear scaling (R1, with the paper's sqrt and unscaled ablations), gradual and
constant warmup (R2, R3) and step decay (R4), as Keras ``LearningRateSchedule``
objects of the optimizer's iteration. Durations are in epochs, absolute from
the start of training, and become iterations only in :func:`epochs_to_steps`.
Every schedule class is registered with Keras (``tf_lbsgd>StepDecay``) and gin
(``schedules.StepDecay``), so it saves and loads without ``custom_objects``.
"""

import math

import gin
import keras
import tensorflow as tf

from tf_lbsgd import checks
# The arithmetic needs no TensorFlow (the reproduction's grid uses it without
# it); it stays public here as schedules.<name>.
from tf_lbsgd.analysis.recipe_math import SCALINGS as _SCALINGS
from tf_lbsgd.analysis.recipe_math import epochs_to_steps
from tf_lbsgd.analysis.recipe_math import scaled_learning_rate

_WARMUPS = ("gradual", "constant", "none")
_DECAYS = ("step", "cosine", "polynomial", "constant")

_LearningRateSchedule = keras.optimizers.schedules.LearningRateSchedule


# --------------------------------------------------------------------------
# Validation helpers.
# --------------------------------------------------------------------------


def _check_schedule(value):
    """TypeError unless ``value`` (a warmup's ``after``) is a schedule."""
    if not isinstance(value, _LearningRateSchedule):
        raise TypeError(
            "after must be a keras.optimizers.schedules.LearningRateSchedule, "
            f"got {value!r}")


def _float_step(step):
    """The iteration ``step`` (number, tensor or variable) as float32."""
    return tf.cast(tf.convert_to_tensor(step), tf.float32)


# --------------------------------------------------------------------------
# The scaling rule (R1); epochs_to_steps and scaled_learning_rate are
# tf_lbsgd.analysis.recipe_math's.
# --------------------------------------------------------------------------


@gin.configurable
def linear_scaling_rule(global_batch_size, base_lr=0.1, base_batch_size=256):
    """Linear scaling rule, eta = base_lr * kn / base_batch_size (R1).

    R1 (docs/paper.md; arXiv:1706.02677 Sec. 2.1): 0.1 at kn = 256 is 3.2 at
    8192. Arguments, result and errors as :func:`scaled_learning_rate`.
    """
    return scaled_learning_rate(global_batch_size, base_lr, base_batch_size,
                                scaling="linear")


# --------------------------------------------------------------------------
# Schedules after warmup (R4 and alternatives).
# --------------------------------------------------------------------------


@gin.register
@keras.saving.register_keras_serializable(package="tf_lbsgd")
class StepDecay(_LearningRateSchedule):
    """Step decay: lr = peak_lr * factor ** (number of boundaries passed).

    R4 (docs/paper.md; arXiv:1706.02677 Sec. 5.1). A boundary at iteration b
    applies from iteration b on.

    Args:
        peak_lr: Rate before the first boundary, >= 0.
        steps_per_epoch: Iterations per epoch, > 0 (may be fractional).
        boundaries_epochs: Increasing decay epochs, absolute from the start of
            training; converted with :func:`epochs_to_steps`.
        factor: Multiplier applied at each boundary, > 0.

    Raises:
        ValueError: For invalid numbers or non-increasing boundaries.
    """

    def __init__(self, peak_lr, steps_per_epoch, boundaries_epochs=(30, 60, 80),
                 factor=0.1):
        super().__init__()
        self.peak_lr = checks.non_negative("peak_lr", peak_lr)
        self.steps_per_epoch = checks.positive("steps_per_epoch", steps_per_epoch)
        self.boundaries_epochs = tuple(boundaries_epochs)
        self.factor = checks.positive("factor", factor)
        for earlier, later in zip(self.boundaries_epochs, self.boundaries_epochs[1:]):
            if not later > earlier:
                raise ValueError(
                    "boundaries_epochs must be strictly increasing, got "
                    f"{self.boundaries_epochs!r}")
        self.boundary_steps = tuple(
            epochs_to_steps(e, self.steps_per_epoch) for e in self.boundaries_epochs)
        self._values = tuple(self.peak_lr * self.factor ** i
                             for i in range(len(self.boundary_steps) + 1))

    def __call__(self, step):
        """Returns the float32 rate at iteration ``step`` (elementwise)."""
        step = _float_step(step)
        boundaries = tf.constant(self.boundary_steps, dtype=tf.float32,
                                 shape=[len(self.boundary_steps)])
        passed = tf.reduce_sum(
            tf.cast(tf.expand_dims(step, -1) >= boundaries, tf.int32), axis=-1)
        return tf.gather(tf.constant(self._values, dtype=tf.float32), passed)

    def get_config(self):
        """Returns the constructor arguments as a JSON-serialisable dict."""
        return {
            "peak_lr": self.peak_lr,
            "steps_per_epoch": self.steps_per_epoch,
            "boundaries_epochs": list(self.boundaries_epochs),
            "factor": self.factor,
        }


@gin.register
@keras.saving.register_keras_serializable(package="tf_lbsgd")
class CosineDecay(_LearningRateSchedule):
    """Half-cosine decay from ``peak_lr`` at step 0 to ``final_lr`` at the end.

    lr(t) = final_lr + (peak_lr - final_lr) * (1 + cos(pi * min(t, T) / T)) / 2
    with T = epochs_to_steps(total_epochs, steps_per_epoch); constant
    ``final_lr`` after T. Not in the paper.

    Args:
        peak_lr: Rate at step 0, >= 0.
        steps_per_epoch: Iterations per epoch, > 0 (may be fractional).
        total_epochs: Length of the decay in epochs (at least one iteration).
        final_lr: Rate at and after step T, >= 0.

    Raises:
        ValueError: For invalid numbers or a decay shorter than one iteration.
    """

    def __init__(self, peak_lr, steps_per_epoch, total_epochs, final_lr=0.0):
        super().__init__()
        self.peak_lr = checks.non_negative("peak_lr", peak_lr)
        self.steps_per_epoch = checks.positive("steps_per_epoch", steps_per_epoch)
        self.total_epochs = checks.non_negative("total_epochs", total_epochs)
        self.final_lr = checks.non_negative("final_lr", final_lr)
        self.total_steps = epochs_to_steps(self.total_epochs, self.steps_per_epoch)
        if self.total_steps < 1:
            raise ValueError(
                f"total_epochs={total_epochs!r} is shorter than one iteration at "
                f"steps_per_epoch={steps_per_epoch!r}")

    def __call__(self, step):
        """Returns the float32 rate at iteration ``step`` (elementwise)."""
        total = float(self.total_steps)
        progress = tf.minimum(_float_step(step), total) / total
        cosine = 0.5 * (1.0 + tf.cos(math.pi * progress))
        return self.final_lr + (self.peak_lr - self.final_lr) * cosine

    def get_config(self):
        """Returns the constructor arguments as a JSON-serialisable dict."""
        return {
            "peak_lr": self.peak_lr,
            "steps_per_epoch": self.steps_per_epoch,
            "total_epochs": self.total_epochs,
            "final_lr": self.final_lr,
        }


@gin.register
@keras.saving.register_keras_serializable(package="tf_lbsgd")
class PolynomialDecay(_LearningRateSchedule):
    """Polynomial decay from ``peak_lr`` to ``final_lr``: LARS' schedule.

    With S = epochs_to_steps(start_epochs) and T = epochs_to_steps(
    total_epochs)::

        lr(t) = final_lr + (peak_lr - final_lr) * (1 - (t - S) / (T - S))^power

    for S <= t <= T, ``peak_lr`` before S and ``final_lr`` after T. You et
    al. (arXiv:1708.03888, Sec. 6; "poly(2)") train ImageNet past 8k with
    power 2; `build_learning_rate_schedule` starts it where the warmup ends
    (S = the warmup's length), as MLPerf's LARS ResNet-50 does. Not in
    Goyal et al.

    Args:
        peak_lr: Rate up to S, >= 0.
        steps_per_epoch: Iterations per epoch, > 0 (may be fractional).
        total_epochs: End of the decay in epochs.
        power: The exponent, > 0 (1: linear decay).
        final_lr: Rate at and after T, >= 0.
        start_epochs: Start of the decay in epochs; at or after
            total_epochs, the rate is ``peak_lr`` up to S and ``final_lr``
            after it.

    Raises:
        ValueError: For invalid numbers.
    """

    def __init__(self, peak_lr, steps_per_epoch, total_epochs, power=2.0,
                 final_lr=0.0, start_epochs=0.0):
        super().__init__()
        self.peak_lr = checks.non_negative("peak_lr", peak_lr)
        self.steps_per_epoch = checks.positive("steps_per_epoch", steps_per_epoch)
        self.total_epochs = checks.non_negative("total_epochs", total_epochs)
        self.power = checks.positive("power", power)
        self.final_lr = checks.non_negative("final_lr", final_lr)
        self.start_epochs = checks.non_negative("start_epochs", start_epochs)
        self.start_step = epochs_to_steps(self.start_epochs, self.steps_per_epoch)
        self.total_steps = epochs_to_steps(self.total_epochs, self.steps_per_epoch)

    def __call__(self, step):
        """Returns the float32 rate at iteration ``step`` (elementwise)."""
        # A run that ends before the decay starts (a test cut shorter than
        # the warmup) never decays: one iteration stands for its length.
        length = float(max(self.total_steps - self.start_step, 1))
        done = tf.clip_by_value(_float_step(step) - float(self.start_step),
                                0.0, length)
        remaining = tf.pow(1.0 - done / length, self.power)
        return self.final_lr + (self.peak_lr - self.final_lr) * remaining

    def get_config(self):
        """Returns the constructor arguments as a JSON-serialisable dict."""
        return {
            "peak_lr": self.peak_lr,
            "steps_per_epoch": self.steps_per_epoch,
            "total_epochs": self.total_epochs,
            "power": self.power,
            "final_lr": self.final_lr,
            "start_epochs": self.start_epochs,
        }


@gin.register
@keras.saving.register_keras_serializable(package="tf_lbsgd")
class ConstantLR(_LearningRateSchedule):
    """A constant rate ``peak_lr`` at every iteration.

    Args:
        peak_lr: The rate, >= 0.

    Raises:
        ValueError: If ``peak_lr`` is negative or not a finite number.
    """

    def __init__(self, peak_lr):
        super().__init__()
        self.peak_lr = checks.non_negative("peak_lr", peak_lr)

    def __call__(self, step):
        """Returns the float32 rate at iteration ``step`` (elementwise)."""
        return tf.fill(tf.shape(_float_step(step)), tf.constant(self.peak_lr, tf.float32))

    def get_config(self):
        """Returns the constructor arguments as a JSON-serialisable dict."""
        return {"peak_lr": self.peak_lr}


# --------------------------------------------------------------------------
# Warmup wrappers (R2, R3).
# --------------------------------------------------------------------------


class _Warmup(_LearningRateSchedule):
    """A warmup phase, then ``after``; arguments as :class:`GradualWarmup`."""

    def __init__(self, after, start_lr, warmup_epochs, steps_per_epoch):
        super().__init__()
        _check_schedule(after)
        self.after = after
        self.start_lr = checks.non_negative("start_lr", start_lr)
        self.warmup_epochs = checks.non_negative("warmup_epochs", warmup_epochs)
        self.steps_per_epoch = checks.positive("steps_per_epoch", steps_per_epoch)
        self.warmup_steps = epochs_to_steps(self.warmup_epochs, self.steps_per_epoch)

    def _warmup_lr(self, step):
        """Returns the float32 warmup rate at float32 ``step`` (< W)."""
        raise NotImplementedError

    def __call__(self, step):
        """Returns the float32 rate at iteration ``step`` (elementwise)."""
        after_lr = tf.cast(self.after(step), tf.float32)
        if self.warmup_steps == 0:
            return after_lr
        step = _float_step(step)
        return tf.where(step < float(self.warmup_steps), self._warmup_lr(step), after_lr)

    def get_config(self):
        """Returns the constructor arguments; ``after`` is Keras-serialised."""
        return {
            "after": keras.saving.serialize_keras_object(self.after),
            "start_lr": self.start_lr,
            "warmup_epochs": self.warmup_epochs,
            "steps_per_epoch": self.steps_per_epoch,
        }

    @classmethod
    def from_config(cls, config):
        """Rebuilds the schedule from :meth:`get_config`'s dict.

        The nested ``after`` is deserialised; an unregistered class of it is
        found through Keras' ``custom_objects``.
        """
        config = dict(config)
        if isinstance(config["after"], dict):
            config["after"] = keras.saving.deserialize_keras_object(config["after"])
        return cls(**config)


@gin.register
@keras.saving.register_keras_serializable(package="tf_lbsgd")
class GradualWarmup(_Warmup):
    """Gradual (linear) warmup into another schedule (R2, docs/paper.md).

    With W = epochs_to_steps(warmup_epochs, steps_per_epoch), lr(t) =
    start_lr + (after(W) - start_lr) * t / W for t < W, then after(t).

    Args:
        after: Post-warmup schedule, evaluated at the absolute iteration (its
            boundaries count from the start of training).
        start_lr: Rate at iteration 0, >= 0.
        warmup_epochs: Warmup length in epochs, >= 0 (0: no warmup).
        steps_per_epoch: Iterations per epoch, > 0 (may be fractional).

    Raises:
        TypeError: If ``after`` is not a ``LearningRateSchedule``.
        ValueError: For invalid numbers.
    """

    def _warmup_lr(self, step):
        """Returns the float32 warmup rate at float32 ``step`` (< W)."""
        end_lr = tf.cast(self.after(tf.constant(self.warmup_steps)), tf.float32)
        fraction = step / float(self.warmup_steps)
        return self.start_lr + (end_lr - self.start_lr) * fraction


@gin.register
@keras.saving.register_keras_serializable(package="tf_lbsgd")
class ConstantWarmup(_Warmup):
    """Constant warmup into another schedule (R3, the paper's ablation).

    lr(t) = start_lr for t < W, then after(t): a jump at t = W. Arguments and
    errors as :class:`GradualWarmup`.
    """

    def _warmup_lr(self, step):
        """Returns the float32 warmup rate at float32 ``step`` (< W)."""
        return tf.fill(tf.shape(step), tf.constant(self.start_lr, tf.float32))


# --------------------------------------------------------------------------
# The full recipe.
# --------------------------------------------------------------------------


def _build_decay(decay, peak_lr, steps_per_epoch, decay_epochs, decay_factor,
                 total_epochs, decay_power, warmup_epochs):
    """The post-warmup schedule named by ``decay``, starting at ``peak_lr``."""
    if decay == "step":
        return StepDecay(peak_lr, steps_per_epoch, tuple(decay_epochs), decay_factor)
    if decay == "cosine":
        return CosineDecay(peak_lr, steps_per_epoch, total_epochs)
    if decay == "polynomial":
        return PolynomialDecay(peak_lr, steps_per_epoch, total_epochs,
                               power=decay_power, start_epochs=warmup_epochs)
    return ConstantLR(peak_lr)


@gin.configurable
def build_learning_rate_schedule(global_batch_size, steps_per_epoch, base_lr=0.1,
                                 base_batch_size=256, scaling="linear",
                                 warmup="gradual", warmup_epochs=5.0, decay="step",
                                 decay_epochs=(30, 60, 80), decay_factor=0.1,
                                 total_epochs=90.0, decay_power=2.0,
                                 warmup_start_lr=None):
    """Builds the paper's learning-rate schedule (R1-R4, docs/paper.md).

    The peak rate is :func:`scaled_learning_rate`; warmup starts at
    ``base_lr`` (or at the peak when kn is below the reference batch). The
    defaults at kn = 8192 on ImageNet: 0.1 at step 0, 3.2 after the 5 warmup
    epochs, then 0.32, 0.032 and 0.0032 from epochs 30, 60 and 80.

    Args:
        global_batch_size: Total minibatch size kn over all workers, > 0.
        steps_per_epoch: Iterations per epoch, > 0 (may be fractional).
        base_lr: Rate for ``base_batch_size`` and warmup start rate.
        base_batch_size: Reference minibatch size (256 in the paper).
        scaling: ``'linear'`` (R1), ``'sqrt'`` or ``'none'``.
        warmup: ``'gradual'`` (R2), ``'constant'`` (R3) or ``'none'``.
        warmup_epochs: Warmup length in epochs.
        decay: ``'step'`` (R4), ``'cosine'``, ``'polynomial'`` (LARS' poly
            decay from the end of the warmup, :class:`PolynomialDecay`) or
            ``'constant'``.
        decay_epochs: Step-decay boundaries in epochs.
        decay_factor: Step-decay multiplier.
        total_epochs: Training length in epochs (end of the cosine and
            polynomial decays).
        decay_power: The polynomial decay's exponent (2 in You et al.).
        warmup_start_lr: The rate the warmup starts from; None for the
            paper's ``base_lr`` (R2). The TF reference LARS recipes warm up
            from 0.

    Returns:
        A Keras ``LearningRateSchedule`` evaluated per iteration.

    Raises:
        ValueError: For an unknown ``scaling``, ``warmup`` or ``decay`` (the
            message lists the allowed ones) or an invalid number.
    """
    checks.one_of("scaling", scaling, _SCALINGS)
    checks.one_of("warmup", warmup, _WARMUPS)
    checks.one_of("decay", decay, _DECAYS)
    peak_lr = scaled_learning_rate(global_batch_size, base_lr, base_batch_size, scaling)
    after = _build_decay(decay, peak_lr, steps_per_epoch, decay_epochs, decay_factor,
                         total_epochs, decay_power,
                         warmup_epochs if warmup != "none" else 0.0)
    # Below the reference batch the scaled rate is under base_lr: there is
    # nothing to warm up to, so warmup starts (and stays) at the peak rate.
    start_lr = min(base_lr, peak_lr)
    if warmup_start_lr is not None:
        start_lr = checks.non_negative("warmup_start_lr", warmup_start_lr)
    if warmup == "gradual":
        return GradualWarmup(after, start_lr, warmup_epochs, steps_per_epoch)
    if warmup == "constant":
        return ConstantWarmup(after, start_lr, warmup_epochs, steps_per_epoch)
    return after
