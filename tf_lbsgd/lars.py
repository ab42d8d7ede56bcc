"""LARS: layer-wise adaptive rate scaling past 8k (You et al., 2017; issue 20).

Beyond the paper's kn = 8k its recipe degrades (arXiv:1706.02677, Sec. 5.2,
Table 2 / Figure 1); You, Gitman and Ginsburg (arXiv:1708.03888,
Algorithm 1) scale each layer's rate by a trust ratio of its weight and
gradient norms. For each adapted variable ``w`` with summed gradient ``g``::

    local = trust * ||w|| / (||g|| + lambda * ||w||)   (1 if a norm is 0)
    g'    = local * (g + lambda * w)

and every other variable (BN parameters and biases by default: the same
variables `MomentumSGD` leaves undecayed) keeps ``g' = g`` with no decay.
The momentum update of `MomentumSGD` then applies ``g'``; the default
``velocity_form='scaled'`` without correction is Algorithm 1's
``v <- m * v + eta * g'; w <- w - v``.

The gradient is the all-reduced one (`allreduce.GradientAllReduce`, or
Keras' own sum), the same on every replica, so every replica computes the
same ratio; under loss scaling `trainer.Trainer` unscales the gradients
before the optimizer sees them, and a skipped step skips everything.
"""

import gin
import keras
import tensorflow as tf
from keras import ops

from tf_lbsgd import checks
from tf_lbsgd import optimizers


def trust_ratio(weight_norm, gradient_norm, trust_coefficient,
                l2_weight_decay):
    """You et al.'s local rate: ``trust * ||w|| / (||g|| + lambda * ||w||)``,
    or 1 when ``||w||`` or ``||g||`` is 0 (a fresh zero-initialised layer, a
    layer without gradient)."""
    ratio = trust_coefficient * weight_norm / (
        gradient_norm + l2_weight_decay * weight_norm)
    usable = tf.logical_and(weight_norm > 0, gradient_norm > 0)
    return tf.where(usable, ratio, tf.ones_like(ratio))


@gin.configurable(denylist=["learning_rate", "aggregate_gradients"])
@keras.saving.register_keras_serializable(package="tf_lbsgd")
class LARS(optimizers.MomentumSGD):
    """Momentum SGD with layer-wise adaptive rates (You et al., 2017).

    Args:
        learning_rate: the global rate ``eta`` (a float or a schedule: the
            project's linear scaling, warmup and decay apply to it).
        trust_coefficient: ``trust`` > 0; 0.001 in You et al.
        adapt_rule: None to adapt exactly the variables that decay (by
            `decay_rule`, default `optimizers.decays_variable`: kernels and
            weight matrices, not BN parameters or biases), or a callable
            ``variable -> bool``.
        velocity_form, momentum_correction: as in `MomentumSGD`; the
            defaults ('scaled', no correction) are You et al.'s update.
        **kwargs: the other arguments of `MomentumSGD` (momentum,
            l2_weight_decay, decay_rule, ...).

    Raises:
        ValueError: a trust coefficient that is not a positive number, or
            any `MomentumSGD` argument error.
        TypeError: an `adapt_rule` that is not callable.
    """

    def __init__(self, learning_rate=0.1, trust_coefficient=0.001,
                 adapt_rule=None, velocity_form="scaled",
                 momentum_correction=False, name="lars", **kwargs):
        trust_coefficient = checks.positive("LARS.trust_coefficient",
                                            trust_coefficient)
        if adapt_rule is not None and not callable(adapt_rule):
            raise TypeError(f"LARS.adapt_rule must be callable or None, got "
                            f"{adapt_rule!r}")
        super().__init__(learning_rate=learning_rate,
                         velocity_form=velocity_form,
                         momentum_correction=momentum_correction, name=name,
                         **kwargs)
        self.trust_coefficient = trust_coefficient
        self.adapt_rule = adapt_rule

    def adapts(self, variable):
        """Whether ``variable``'s rate is scaled by its trust ratio."""
        if self.adapt_rule is None:
            return self.decays(variable)
        return optimizers._decision(self.adapt_rule, variable)  # pylint: disable=protected-access

    def build(self, var_list):
        """Creates `MomentumSGD`'s slots and decides which variables adapt."""
        if self.built:
            return
        super().build(var_list)
        self._adapts = [self.adapts(v) for v in var_list]

    def update_step(self, gradient, variable, learning_rate):
        """``g' = local * (g + lambda * w)`` for an adapted variable, ``g``
        (no decay) for the others; then `MomentumSGD`'s momentum update."""
        index = self._get_variable_index(variable)
        lr = ops.cast(learning_rate, variable.dtype)
        if isinstance(gradient, tf.IndexedSlices):
            gradient = tf.convert_to_tensor(gradient)
        gradient = ops.cast(gradient, variable.dtype)
        if self._adapts[index]:
            decay = ops.cast(self.l2_weight_decay, variable.dtype)
            ratio = trust_ratio(tf.norm(variable), tf.norm(gradient),
                                ops.cast(self.trust_coefficient,
                                         variable.dtype), decay)
            gradient = ratio * (gradient + decay * variable)
        if self.velocity_form == "unscaled":
            self._unscaled_update(gradient, variable, lr, index)
        else:
            self._scaled_update(gradient, variable, lr, index)

    def get_config(self):
        """`MomentumSGD`'s config with the trust coefficient and rule."""
        config = super().get_config()
        config.update({
            "trust_coefficient": self.trust_coefficient,
            "adapt_rule": (
                None if self.adapt_rule is None
                else keras.saving.serialize_keras_object(self.adapt_rule)),
        })
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """Rebuilds the optimizer from ``get_config()``'s dict."""
        config = dict(config)
        if isinstance(config.get("adapt_rule"), dict):
            config["adapt_rule"] = keras.saving.deserialize_keras_object(
                config["adapt_rule"], custom_objects=custom_objects)
        return super().from_config(config, custom_objects=custom_objects)
