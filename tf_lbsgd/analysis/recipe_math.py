"""The recipe's arithmetic without TensorFlow: epochs to iterations, R1.

`tf_lbsgd.schedules` builds the Keras schedules on these (and exports them
under its own name: `schedules.epochs_to_steps`); the reproduction's grid
uses them without starting TensorFlow.
"""

import math

from tf_lbsgd import checks

SCALINGS = ("linear", "sqrt", "none")


def epochs_to_steps(epochs, steps_per_epoch):
    """Iterations in ``epochs``, rounded to the nearest (halves up).

    Args:
        epochs: Duration in epochs, >= 0 (may be fractional).
        steps_per_epoch: Iterations per epoch, > 0 (may be fractional, e.g.
            ``1281167 / 8192``: no partial batch is dropped).

    Returns:
        The number of iterations as a Python int.

    Raises:
        ValueError: For a negative or non-finite ``epochs`` or a
            ``steps_per_epoch`` that is not a positive number.
    """
    epochs = checks.non_negative("epochs", epochs)
    steps_per_epoch = checks.positive("steps_per_epoch", steps_per_epoch)
    return int(math.floor(epochs * steps_per_epoch + 0.5))


def scaled_learning_rate(global_batch_size, base_lr=0.1, base_batch_size=256,
                         scaling="linear"):
    """Scales a reference learning rate to a minibatch size (R1, docs/paper.md).

    Args:
        global_batch_size: Total minibatch size kn over all workers, > 0.
        base_lr: Learning rate for ``base_batch_size``, >= 0.
        base_batch_size: Reference minibatch size, > 0.
        scaling: ``'linear'`` (``base_lr * kn / base_batch_size``, the rule),
            ``'sqrt'`` (``base_lr * sqrt(kn / base_batch_size)``) or
            ``'none'`` (``base_lr``): the paper's ablations.

    Returns:
        The scaled learning rate as a Python float.

    Raises:
        ValueError: For an unknown ``scaling`` or an invalid number.
    """
    checks.one_of("scaling", scaling, SCALINGS)
    ratio = (checks.positive("global_batch_size", global_batch_size)
             / checks.positive("base_batch_size", base_batch_size))
    base_lr = checks.non_negative("base_lr", base_lr)
    if scaling == "linear":
        return base_lr * ratio
    if scaling == "sqrt":
        return base_lr * math.sqrt(ratio)
    return base_lr
