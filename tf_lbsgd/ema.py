"""The exponential moving average of the weights, for evaluation and export.

Keras 3 optimizers keep it when built with ``use_ema=True`` (after every
step ``a <- ema_momentum * a + (1 - ema_momentum) * w`` for each trainable
weight ``w``, ``a = w`` at the first step); in gin, e.g.
``MomentumSGD.use_ema = True`` and ``MomentumSGD.ema_momentum = 0.999``.
The averages are optimizer variables, so checkpoints keep them and a resumed
run continues them. Training always updates the raw weights; `EmaWeights`
puts the averages into the model for an evaluation and takes them out again,
and for the export and the model a run returns keeps them in, as
``model.fit`` does at its end (``Optimizer.finalize_variable_values``).
"""

import tensorflow as tf


def uses_ema(optimizer):
    """Whether ``optimizer`` (or the one a loss-scaling optimizer wraps)
    keeps an exponential moving average of the weights."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    return bool(getattr(inner, "use_ema", False))


class EmaWeights:
    """Swaps the optimizer's moving averages in and out of the model.

    The swap exchanges each weight's value with its average's, in place:
    no copy of the model is kept (ResNet-50's would be 100 MB), and doing it
    twice puts everything back. Build it after the optimizer; call its
    methods in cross-replica context (between `strategy.run` calls). The
    replicas' copies of a weight are equal (synchronous SGD), so any one of
    them is the value put into all.

    Args:
        model: the Keras model the optimizer trains.
        optimizer: the optimizer, built with ``use_ema=True`` (or the
            loss-scaling optimizer around it).
    """

    def __init__(self, model, optimizer):
        inner = getattr(optimizer, "inner_optimizer", optimizer)
        if not uses_ema(inner):
            raise ValueError(f"optimizer {inner.name!r} keeps no moving "
                             f"average of the weights (use_ema=False)")
        self._weights = list(model.trainable_variables)
        self._averages = list(inner._model_variables_moving_average)  # pylint: disable=protected-access
        if len(self._averages) != len(self._weights):
            raise ValueError(
                f"the optimizer averages {len(self._averages)} variables but "
                f"the model trains {len(self._weights)}: build the optimizer "
                f"on model.trainable_variables")
        self.swapped_in = False

    def _exchange(self):
        for weight, average in zip(self._weights, self._averages):
            raw = tf.identity(weight.value)
            weight.assign(average.value)
            average.assign(raw)
        self.swapped_in = not self.swapped_in

    def swap_in(self):
        """Puts the averages into the model (and the raw weights aside)."""
        if not self.swapped_in:
            self._exchange()

    def swap_out(self):
        """Puts the raw weights back (nothing if they are in)."""
        if self.swapped_in:
            self._exchange()

    def keep_in(self):
        """Puts the averages into the model for good (the export, the
        returned model): the raw weights are then only in the checkpoint."""
        self.swap_out()
        for weight, average in zip(self._weights, self._averages):
            weight.assign(average.value)
