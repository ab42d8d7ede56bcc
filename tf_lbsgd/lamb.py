"""LAMB: layer-wise adaptive moments past 8k (You et al., 2019; issue 20).

LAMB (arXiv:1904.00962, Algorithm 2) puts LARS' layer-wise trust ratio on
Adam's update. For each variable ``w`` with summed gradient ``g`` at step t::

    m <- b1 * m + (1 - b1) * g
    v <- b2 * v + (1 - b2) * g^2
    r  = (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    r <- r + lambda * w                       if decays(w)
    w <- w - eta * ||w|| / ||r|| * r          if adapts(w) (1 if a norm is 0)
    w <- w - eta * r                          otherwise

By default BN parameters and biases neither decay nor adapt (the variables
`optimizers.decays_variable` leaves alone), as in You et al.'s BERT and
ResNet-50 runs.

Keras 3's own ``keras.optimizers.Lamb`` does not fit the recipe: its weight
decay is decoupled (outside the trust ratio), it adapts every variable and it
sums the replicas' gradients again after the project's all-reduce. This one
takes the all-reduced gradient (``aggregate_gradients=False``), so every
replica computes the same ratios; under loss scaling `trainer.Trainer`
unscales the gradients first, and a skipped step skips everything, the step
count of the bias correction included.
"""

import gin
import keras
import tensorflow as tf
from keras import ops

from tf_lbsgd import checks
from tf_lbsgd import lars
from tf_lbsgd import optimizers


@gin.configurable(denylist=["learning_rate", "aggregate_gradients"])
@keras.saving.register_keras_serializable(package="tf_lbsgd")
class LAMB(keras.optimizers.Optimizer):
    """Adam moments with a layer-wise trust ratio (You et al., 2019).

    Args:
        learning_rate: the global rate ``eta``: a float or a schedule (the
            project's scaling, warmup and decay apply to it).
        beta_1, beta_2: the moments' decay rates, in [0, 1).
        epsilon: ``eps`` > 0 in the denominator.
        l2_weight_decay: ``lambda`` >= 0, added to the Adam update inside
            the trust ratio (0.01 in You et al.'s BERT runs).
        decay_bias: also decay (and adapt) biases with the default rules.
        decay_rule: None for `optimizers.decays_variable`, or a callable
            ``variable -> bool``.
        adapt_rule: None to adapt exactly the variables that decay, or a
            callable ``variable -> bool``.
        aggregate_gradients: sum the gradients over replicas (Keras'
            default); False when the training loop has all-reduced them.
        name: optimizer name.
        **kwargs: passed to ``keras.optimizers.Optimizer`` (e.g.
            ``use_ema``); ``weight_decay`` is refused.

    Raises:
        ValueError: a beta outside [0, 1), a non-positive epsilon, a negative
            decay, a ``weight_decay``, ``decay_bias`` with a rule.
        TypeError: a rule that is not callable.
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-6, l2_weight_decay=0.01, decay_bias=False,
                 decay_rule=None, adapt_rule=None, aggregate_gradients=True,
                 name="lamb", **kwargs):
        beta_1 = checks.fraction("LAMB.beta_1", beta_1)
        beta_2 = checks.fraction("LAMB.beta_2", beta_2)
        epsilon = checks.positive("LAMB.epsilon", epsilon)
        l2_weight_decay = checks.non_negative("LAMB.l2_weight_decay",
                                              l2_weight_decay)
        decay_rule = optimizers._check_decay_rule(decay_rule, decay_bias)  # pylint: disable=protected-access
        if adapt_rule is not None and not callable(adapt_rule):
            raise TypeError(f"LAMB.adapt_rule must be callable or None, got "
                            f"{adapt_rule!r}")
        if kwargs.get("weight_decay") is not None:
            raise ValueError(
                f"LAMB applies its decay through l2_weight_decay, inside the "
                f"trust ratio; the decoupled Keras weight_decay would decay "
                f"twice. Got weight_decay={kwargs['weight_decay']!r}")
        super().__init__(
            learning_rate=optimizers._as_learning_rate(learning_rate),  # pylint: disable=protected-access
            name=name, **kwargs)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.l2_weight_decay = l2_weight_decay
        self.decay_bias = bool(decay_bias)
        self.decay_rule = decay_rule
        self.adapt_rule = adapt_rule
        self.aggregate_gradients = bool(aggregate_gradients)

    def decays(self, variable):
        """Whether ``lambda * w`` is added to ``variable``'s update."""
        if self.decay_rule is None:
            return optimizers.decays_variable(variable, self.decay_bias)
        return optimizers._decision(self.decay_rule, variable)  # pylint: disable=protected-access

    def adapts(self, variable):
        """Whether ``variable``'s update is scaled by its trust ratio."""
        if self.adapt_rule is None:
            return self.decays(variable)
        return optimizers._decision(self.adapt_rule, variable)  # pylint: disable=protected-access

    def _all_reduce_sum_gradients(self, grads_and_vars):
        """Keras' replica-context gradient sum, skipped when already done."""
        if not self.aggregate_gradients:
            return list(grads_and_vars)
        return super()._all_reduce_sum_gradients(grads_and_vars)

    def build(self, var_list):
        """Creates the two moments of each variable and decides its rules."""
        if self.built:
            return
        super().build(var_list)
        self._first_moments = [
            self.add_variable_from_reference(v, name="m") for v in var_list]
        self._second_moments = [
            self.add_variable_from_reference(v, name="v") for v in var_list]
        self._decays = [self.decays(v) for v in var_list]
        self._adapts = [self.adapts(v) for v in var_list]

    def update_step(self, gradient, variable, learning_rate):
        """One LAMB update of ``variable`` (the module docstring's)."""
        index = self._get_variable_index(variable)
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        if isinstance(gradient, tf.IndexedSlices):
            gradient = tf.convert_to_tensor(gradient)
        gradient = ops.cast(gradient, dtype)
        step = ops.cast(self.iterations + 1, dtype)
        beta_1 = ops.cast(self.beta_1, dtype)
        beta_2 = ops.cast(self.beta_2, dtype)
        m = self._first_moments[index]
        v = self._second_moments[index]
        self.assign(m, beta_1 * m + (1.0 - beta_1) * gradient)
        self.assign(v, beta_2 * v + (1.0 - beta_2) * ops.square(gradient))
        m_hat = m / (1.0 - ops.power(beta_1, step))
        v_hat = v / (1.0 - ops.power(beta_2, step))
        update = m_hat / (ops.sqrt(v_hat) + ops.cast(self.epsilon, dtype))
        if self._decays[index] and self.l2_weight_decay:
            update = update + ops.cast(self.l2_weight_decay, dtype) * variable
        if self._adapts[index]:
            ratio = lars.trust_ratio(tf.norm(variable), tf.norm(update),
                                     ops.cast(1.0, dtype), ops.cast(0.0, dtype))
            update = ratio * update
        self.assign_sub(variable, lr * update)

    def get_config(self):
        """The constructor arguments; rules are Keras-serialised."""
        config = super().get_config()
        config.update({
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "epsilon": self.epsilon,
            "l2_weight_decay": self.l2_weight_decay,
            "decay_bias": self.decay_bias,
            "aggregate_gradients": self.aggregate_gradients,
        })
        for key in ("decay_rule", "adapt_rule"):
            rule = getattr(self, key)
            config[key] = (None if rule is None
                           else keras.saving.serialize_keras_object(rule))
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """Rebuilds the optimizer from ``get_config()``'s dict."""
        config = dict(config)
        for key in ("decay_rule", "adapt_rule"):
            if isinstance(config.get(key), dict):
                config[key] = keras.saving.deserialize_keras_object(
                    config[key], custom_objects=custom_objects)
        return super().from_config(config, custom_objects=custom_objects)
