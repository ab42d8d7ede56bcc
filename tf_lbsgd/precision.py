"""Numeric precision of a run: float32, mixed float16 or mixed bfloat16.

`dtype_policy` sets the Keras dtype policy while the model is built:
under `mixed_float16` / `mixed_bfloat16` layers compute in 16 bits while their
variables stay float32; the models keep batch-norm statistics, the logits and
the loss in float32 (`models.layers.WorkerBatchNorm`, the float32 classifier,
`losses.per_example_cross_entropy`).

float16 has a narrow exponent, so its small gradients underflow: with
`mixed_float16` the optimizer is wrapped in Keras 3's dynamic
`LossScaleOptimizer` (`with_loss_scaling`). The train step multiplies the
global-batch loss (R8) by the scale, all-reduces the scaled gradients, and
the wrapper checks the *summed* gradients for inf/NaN: a non-finite value on
any replica is non-finite in the sum on every replica, so every replica skips
the step and halves the scale together. Otherwise it divides the gradients by
the scale and the inner `MomentumSGD` adds the L2 decay (R7) in float32 to the
unscaled gradient. bfloat16 has float32's exponent range and needs no scaling.
"""

import contextlib

import gin
import keras

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


@contextlib.contextmanager
def dtype_policy(precision):
    """Builds the layers created inside under the Keras policy `precision`.

    The global policy is put back on exit: a model keeps the policy it was
    built with, and nothing else in the process is affected.

    Raises:
        ValueError: naming an unknown precision.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}; expected one of "
                         f"{PRECISIONS}")
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


@gin.configurable(denylist=["optimizer"])
def with_loss_scaling(optimizer, initial_scale=2.0 ** 15,
                      dynamic_growth_steps=2000):
    """Wraps `optimizer` in a dynamic `keras.optimizers.LossScaleOptimizer`.

    Args:
        optimizer: the inner optimizer (built with aggregate_gradients=False
            when the training loop all-reduces).
        initial_scale: the first loss scale (2^15, as Keras and Model Garden).
        dynamic_growth_steps: double the scale after this many finite steps
            in a row; any non-finite step halves it.

    Raises:
        ValueError: for a non-positive scale or step count.
    """
    if not initial_scale > 0:
        raise ValueError(f"initial_scale must be positive, got {initial_scale!r}")
    if int(dynamic_growth_steps) != dynamic_growth_steps or dynamic_growth_steps < 1:
        raise ValueError(f"dynamic_growth_steps must be a positive integer, got "
                         f"{dynamic_growth_steps!r}")
    return keras.optimizers.LossScaleOptimizer(
        optimizer, initial_scale=float(initial_scale),
        dynamic_growth_steps=int(dynamic_growth_steps))


def loss_scale(optimizer):
    """The current loss scale of `optimizer` (1.0 without loss scaling)."""
    scale = getattr(optimizer, "dynamic_scale", None)
    return 1.0 if scale is None else float(scale.numpy())
