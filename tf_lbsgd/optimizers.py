"""Momentum SGD with L2 decay and momentum correction (Goyal et al., 2017).

This module implements recipe points R5 (momentum), R6 (momentum correction,
Remark 2) and R7 (weight decay, Remark 1) of the paper (arXiv:1706.02677) as a
Keras 3 optimizer, registered with Keras (``tf_lbsgd>MomentumSGD``) so that
``model.compile``/``model.fit``, ``model.save`` and ``keras.models.load_model``
work with it without ``custom_objects``.

Notation: ``w`` weights, ``g`` the (all-reduced) gradient of the loss,
``lambda`` the L2 weight decay, ``m`` the momentum, ``eta`` the learning rate
of the current step and ``eta_old`` the rate of the previous update of the
same variable.

Weight decay (R7, Remark 1) is L2 regularisation added to the gradient, outside
backprop::

    g <- g + lambda * w        (if decays_variable(w): weight matrices and
                                conv kernels; never normalisation parameters,
                                biases only if asked)

Momentum (R5) comes in two algebraically equivalent forms, which differ only in
where ``eta`` sits (Remark 2):

* ``velocity_form='unscaled'`` -- the velocity does NOT hold ``eta``::

      u <- m * u + g
      w <- w - eta * u

  Because ``eta`` is applied after the velocity, a change of ``eta`` acts on
  the whole of ``u`` at once and this form needs **no correction**.

* ``velocity_form='scaled'`` -- the Caffe2 / Keras ``SGD`` form; the velocity
  holds ``eta``::

      v <- m * v + eta * g
      w <- w - v

  Here ``v = eta_old * u``, so after a rate change the old part of ``v`` is
  still scaled by ``eta_old``. This form **needs the momentum correction** of
  equation (9)::

      v <- m * (eta / eta_old) * v + eta * g
      w <- w - v

  Without it the scaled form is a different optimiser whenever ``eta``
  changes, which happens at every step of the gradual warmup (R2).

With the correction both forms give identical iterates (up to rounding). The
Nesterov variants are::

    unscaled:  w <- w - eta * (g + m * u_new)
    scaled:    w <- w - (m * v_new + eta * g)

and agree in the same way (``v_new = eta * u_new``).
"""

import contextlib
import numbers

import gin
import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tf_lbsgd import checks

VELOCITY_FORMS = ("unscaled", "scaled")

# Short names of the parameters of Keras' normalisation layers
# (BatchNormalization, LayerNormalization, GroupNormalization,
# RMSNormalization, WorkerBatchNorm) and of PReLU's slopes: never decayed,
# whatever their rank (LayerNormalization over two axes has 2-D gamma/beta).
_NOT_DECAYED_NAMES = frozenset(
    {"gamma", "beta", "scale", "moving_mean", "moving_variance", "alpha"})
# Names ending so are offsets (Dense, Conv, RNN cells, EinsumDense): a GRU's
# bias is 2-D, a MultiHeadAttention projection's too.
_BIAS_SUFFIX = "bias"


def _short_name(variable):
    """Returns a variable's short name without scope or TF suffixes.

    Args:
        variable: a ``keras.Variable`` (whose ``.name`` is already short, e.g.
            ``'kernel'``) or a ``tf.Variable`` (``'dense/kernel:0'``, under
            tf.distribute ``'dense/kernel/replica_1:0'``).

    Returns:
        The name as a string, e.g. ``'kernel'``.
    """
    name = str(variable.name)
    head, sep, tail = name.rpartition(":")
    if sep and tail.isdigit():
        name = head
    parts = name.split("/")
    if len(parts) > 1 and parts[-1].startswith("replica_"):
        parts = parts[:-1]
    return parts[-1]


def decays_variable(variable, decay_bias=False):
    """The default weight-decay rule: does L2 decay apply to ``variable``?

    The paper (R7, Remark 1) decays the weights of conv and fully connected
    layers with ``lambda = 1e-4`` and not the batch-norm parameters
    ``gamma``/``beta``. For any Keras model this generalises, as timm and
    big_vision do ("no decay on 1-D parameters"), to::

        decays(non-trainable variable)                     = False
        decays(name ends with 'bias', any rank)            = decay_bias
        decays(gamma, beta, scale, moving_*, alpha)        = False
        decays(any other variable of rank >= 2)            = True
        decays(any other variable of rank 0 or 1)          = False

    So every weight matrix and convolution kernel is decayed (``kernel`` of
    Dense, Conv*, DepthwiseConv*, EinsumDense, RNN cells, ``depthwise_kernel``
    and ``pointwise_kernel`` of SeparableConv*, ``recurrent_kernel``,
    ``embeddings``), and no normalisation parameter (BatchNormalization,
    LayerNormalization even over several axes, GroupNormalization,
    RMSNormalization, ``WorkerBatchNorm``), no PReLU slope and no per-channel
    vector is. The paper's ResNets decay exactly their conv and dense kernels.
    Pass ``MomentumSGD(decay_rule=...)`` to decide otherwise.

    Args:
        variable: a ``keras.Variable`` (or ``tf.Variable``); its short name,
            rank and ``trainable`` flag are read.
        decay_bias: whether biases are decayed too.

    Returns:
        True if ``g <- g + lambda * w`` is applied to this variable.
    """
    if not getattr(variable, "trainable", True):
        return False
    name = _short_name(variable)
    if name.endswith(_BIAS_SUFFIX):
        return bool(decay_bias)
    if name in _NOT_DECAYED_NAMES:
        return False
    return len(variable.shape) >= 2


def _describe(variable):
    """A variable's path (Keras) or name (TF), for error messages."""
    return getattr(variable, "path", None) or str(variable.name)


def _check_decay_rule(decay_rule, decay_bias):
    """Returns ``decay_rule`` (None or a callable), or raises if unusable."""
    if decay_rule is None:
        return None
    if not callable(decay_rule):
        raise TypeError(
            "decay_rule must be a callable variable -> bool (or None for "
            f"optimizers.decays_variable); got decay_rule={decay_rule!r}")
    if decay_bias:
        raise ValueError(
            "decay_bias=True applies to the default rule only and would be "
            f"ignored by decay_rule={decay_rule!r}; let the rule decide "
            "biases, or drop decay_rule")
    return decay_rule


def _decision(decay_rule, variable):
    """Calls ``decay_rule(variable)``; raises unless it returns a bool."""
    decided = decay_rule(variable)
    if not isinstance(decided, (bool, np.bool_)):
        raise TypeError(
            f"decay_rule {decay_rule!r} returned {decided!r} for variable "
            f"{_describe(variable)!r}; it must return True or False")
    return bool(decided)


def momentum_correction_factor(lr_new, lr_old):
    """Momentum correction factor ``c`` of Remark 2, equation (9).

    For the scaled velocity form ``v <- m * c * v + eta_new * g`` with::

        c = eta_new / eta_old    if eta_old != 0
        c = 1                    if eta_old == 0

    ``eta_old == 0`` means the velocity has never been updated (first step,
    ``v == 0``, so any ``c`` gives the same result) or was last updated with a
    zero rate (then ``v`` holds no memory of ``u`` and nothing can rescale it).

    Args:
        lr_new: the learning rate ``eta_new`` of this update (scalar).
        lr_old: the learning rate ``eta_old`` the velocity was last updated
            with (scalar).

    Returns:
        The scalar factor ``c``, in the dtype of ``lr_old``.
    """
    lr_old = ops.convert_to_tensor(lr_old)
    lr_new = ops.cast(lr_new, lr_old.dtype)
    old_is_zero = ops.equal(lr_old, 0)
    safe_old = ops.where(old_is_zero, ops.ones_like(lr_old), lr_old)
    return ops.where(old_is_zero, ops.ones_like(lr_old), lr_new / safe_old)


def _check_no_decoupled_decay(kwargs):
    """Refuses the base class's decoupled ``weight_decay`` (R7 is L2)."""
    weight_decay = kwargs.get("weight_decay")
    if weight_decay is not None:
        raise ValueError(
            "MomentumSGD applies L2 decay through l2_weight_decay (R7); the "
            "decoupled Keras weight_decay would decay twice. Got "
            f"weight_decay={weight_decay!r}")


def _as_learning_rate(learning_rate):
    """Turns a numeric rate into a float (Keras refuses ints, numpy)."""
    if (isinstance(learning_rate, numbers.Real)
            and not isinstance(learning_rate, bool)):
        return float(learning_rate)
    return learning_rate


def _slot_name(reference, suffix):
    """Names a slot like ``add_variable_from_reference`` does."""
    if hasattr(reference, "path"):
        return f"{reference.path.replace('/', '_')}_{suffix}"
    base = str(reference.name).replace("/", "_").replace(":", "_")
    return f"{base}_{suffix}"


def _handle(variable):
    """The resource handle of a Keras or TF variable (under tf.distribute,
    in an update call, the copy of the replica being updated)."""
    if isinstance(variable, keras.Variable):
        variable = variable.value
    return variable.handle


@gin.configurable(denylist=["learning_rate", "aggregate_gradients"])
@keras.saving.register_keras_serializable(package="tf_lbsgd")
class MomentumSGD(keras.optimizers.Optimizer):
    """SGD with momentum, L2 weight decay and momentum correction.

    Each step, for each variable ``w`` with gradient ``g`` and rate ``eta``::

        g <- g + lambda * w                   if decays(w)            (R7)

    then, for ``velocity_form='unscaled'`` (no correction needed)::

        u <- m * u + g
        w <- w - eta * u                      (plain)
        w <- w - eta * (g + m * u)            (Nesterov, u the new value)

    or, for ``velocity_form='scaled'`` (the Caffe2 / Keras SGD form)::

        c = eta / eta_old  (eta_old == 0 -> 1)  if momentum_correction
        c = 1                                   otherwise
        v <- m * c * v + eta * g                 (Remark 2, eq. (9))
        w <- w - v                              (plain)
        w <- w - (m * v + eta * g)              (Nesterov, v the new value)

    ``eta_old`` is a per-variable scalar slot holding the rate the velocity was
    last updated with, so the correction is exact whatever supplies the rate
    (a schedule, an assignment to the rate variable, skipped steps such as a
    loss-scale overflow).

    Weight decay and replicas: under ``tf.distribute`` Keras 3's TF optimizer
    all-reduces (sums) the per-replica gradients *before* calling
    ``update_step``, which then runs once per step on each copy of the
    variable with the same summed gradient. Adding ``lambda * w`` inside
    ``update_step`` therefore counts the decay exactly once per step, whatever
    the number of replicas (adding it to each replica's loss instead would
    count it k times). Each replica's loss must be its summed per-example loss
    divided by the global batch (R8) for the summed gradient to be the
    gradient of the mean loss. With ``aggregate_gradients=False`` the
    optimizer takes gradients that the training loop has already summed
    (``allreduce.GradientAllReduce``, which controls packing and compression)
    and does not all-reduce them again; everything else is unchanged.

    Under a distribution strategy, build the optimizer inside
    ``strategy.scope()`` (e.g. ``optimizer.build(model.trainable_variables)``)
    before the first ``strategy.run``: slots cannot be created in a replica
    context.

    Args:
        learning_rate: float, a
            ``keras.optimizers.schedules.LearningRateSchedule`` or a
            zero-argument callable.
        momentum: ``m`` in [0, 1); 0.9 in the paper.
        nesterov: use Nesterov momentum.
        velocity_form: ``'unscaled'`` (``eta`` outside the velocity) or
            ``'scaled'`` (velocity holds ``eta``).
        momentum_correction: apply ``c = eta / eta_old`` in the scaled form;
            ignored by the unscaled form, which needs none.
        l2_weight_decay: ``lambda`` >= 0, added to the gradient; 1e-4 in the
            paper, whatever kn.
        decay_bias: also decay biases (default rule only).
        aggregate_gradients: sum the gradients over replicas in
            ``apply_gradients`` (Keras' default); False when the caller has
            already all-reduced them.
        decay_rule: None for ``decays_variable`` (every weight matrix and
            kernel, no normalisation parameter, biases as ``decay_bias``
            says), or a callable ``variable -> bool`` deciding which
            variables are decayed, called once per variable when the
            optimizer is built; in gin, a configurable function
            (``optimizers.MomentumSGD.decay_rule = @my_rule``). To save and load the optimizer without
            ``custom_objects``, register the callable with
            ``keras.saving.register_keras_serializable``.
        name: optimizer name.
        **kwargs: passed to ``keras.optimizers.Optimizer`` (e.g. ``clipnorm``);
            ``weight_decay`` (decoupled decay) is refused.

    Raises:
        ValueError: on an unknown ``velocity_form``, ``momentum`` outside
            [0, 1), a negative ``l2_weight_decay``, a ``weight_decay`` or
            ``decay_bias=True`` with a ``decay_rule``.
        TypeError: if ``decay_rule`` is not callable.
    """

    def __init__(self,
                 learning_rate=0.1,
                 momentum=0.9,
                 nesterov=False,
                 velocity_form="unscaled",
                 momentum_correction=True,
                 l2_weight_decay=1e-4,
                 decay_bias=False,
                 aggregate_gradients=True,
                 decay_rule=None,
                 name="momentum_sgd",
                 **kwargs):
        momentum = checks.fraction("momentum", momentum)
        velocity_form = checks.one_of("velocity_form", velocity_form,
                                      VELOCITY_FORMS)
        l2_weight_decay = checks.non_negative("l2_weight_decay",
                                              l2_weight_decay)
        decay_rule = _check_decay_rule(decay_rule, decay_bias)
        _check_no_decoupled_decay(kwargs)
        super().__init__(
            learning_rate=_as_learning_rate(learning_rate), name=name, **kwargs)
        self.momentum = momentum
        self.nesterov = bool(nesterov)
        self.velocity_form = velocity_form
        self.momentum_correction = bool(momentum_correction)
        self.l2_weight_decay = l2_weight_decay
        self.decay_bias = bool(decay_bias)
        self.aggregate_gradients = bool(aggregate_gradients)
        self.decay_rule = decay_rule

    def decays(self, variable):
        """Whether this optimizer adds ``lambda * w`` to ``variable``'s gradient.

        Args:
            variable: a ``keras.Variable`` (or ``tf.Variable``).

        Returns:
            ``decay_rule(variable)``, or ``decays_variable(variable,
            decay_bias)`` without a rule.

        Raises:
            TypeError: if the rule returns something other than a bool.
        """
        if self.decay_rule is None:
            return decays_variable(variable, self.decay_bias)
        return _decision(self.decay_rule, variable)

    # Keras 3 has no public switch for this (tf.keras 2 had
    # `apply_gradients(experimental_aggregate_gradients=False)`).
    def _all_reduce_sum_gradients(self, grads_and_vars):
        """Keras' replica-context gradient sum, skipped when already done."""
        if not self.aggregate_gradients:
            return list(grads_and_vars)
        return super()._all_reduce_sum_gradients(grads_and_vars)

    @property
    def _tracks_velocity_rate(self):
        """Whether the per-variable ``eta_old`` slots are needed."""
        return self.velocity_form == "scaled" and self.momentum_correction

    def build(self, var_list):
        """Creates the velocity slots (and ``eta_old`` slots if needed).

        Args:
            var_list: the trainable ``keras.Variable``s to optimise.
        """
        if self.built:
            return
        super().build(var_list)
        self._velocities = [
            self.add_variable_from_reference(v, name="velocity")
            for v in var_list
        ]
        self._decays = [self.decays(v) for v in var_list]
        self._velocity_rates = []
        if self._tracks_velocity_rate:
            self._velocity_rates = [
                self._add_rate_slot(v) for v in var_list
            ]

    def _add_rate_slot(self, reference):
        """Adds a scalar slot, initially 0, for ``eta_old`` of ``reference``."""
        with self._colocated_with(reference):
            return self.add_variable(
                shape=(),
                initializer="zeros",
                dtype=reference.dtype,
                name=_slot_name(reference, "velocity_rate"),
            )

    def _colocated_with(self, reference):
        """Colocates new slots with ``reference`` under tf.distribute."""
        strategy = getattr(self, "_distribution_strategy", None)
        if strategy is None:
            return contextlib.nullcontext()
        if isinstance(reference, keras.Variable):
            reference = reference.value
        return strategy.extended.colocate_vars_with(reference)

    def update_step(self, gradient, variable, learning_rate):
        """Applies one update to ``variable`` (see the class docstring).

        Args:
            gradient: the all-reduced gradient of ``variable``.
            variable: the variable (under tf.distribute, one replica's copy,
                a ``tf.Variable`` named e.g. ``kernel/replica_1:0``; the decay
                decision is therefore made at build time from the Keras
                variable).
            learning_rate: ``eta`` for this step.
        """
        index = self._get_variable_index(variable)
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = self._l2_regularised(gradient, variable, index)
        if self.velocity_form == "unscaled":
            self._unscaled_update(gradient, variable, lr, index)
        else:
            self._scaled_update(gradient, variable, lr, index)

    def _l2_regularised(self, gradient, variable, index):
        """Returns ``g + lambda * w`` if the variable decays, else ``g``."""
        if isinstance(gradient, tf.IndexedSlices):
            gradient = tf.convert_to_tensor(gradient)
        gradient = ops.cast(gradient, variable.dtype)
        if not self._decays[index] or self.l2_weight_decay == 0.0:
            return gradient
        decay = ops.cast(self.l2_weight_decay, variable.dtype)
        return gradient + decay * variable

    def _unscaled_update(self, gradient, variable, lr, index):
        """``u <- m*u + g``; ``w <- w - eta*u`` (Nesterov ``eta*(g + m*u)``).

        One fused kernel (`ResourceApplyMomentum`), not a chain of ops:
        written as ops, ``m*u + (g + lambda*w)`` is a sum of three terms that
        grappler's arithmetic optimiser re-associates, and it did so
        differently for different replicas of a MirroredStrategy, whose
        copies of the decayed weights then drifted apart (~1e-8 in 10 steps)
        although every replica applied the same summed gradient. The kernel
        fixes the order of the arithmetic on every replica.
        """
        velocity = self._velocities[index]
        tf.raw_ops.ResourceApplyMomentum(
            var=_handle(variable), accum=_handle(velocity), lr=lr,
            grad=gradient, momentum=ops.cast(self.momentum, variable.dtype),
            use_nesterov=self.nesterov)

    def _scaled_update(self, gradient, variable, lr, index):
        """``v <- m*c*v + eta*g``; ``w <- w - v`` (Nesterov ``m*v + eta*g``)."""
        velocity = self._velocities[index]
        m = ops.cast(self.momentum, variable.dtype)
        carried = m
        if self._tracks_velocity_rate:
            rate = self._velocity_rates[index]
            carried = m * momentum_correction_factor(lr, rate)
            self.assign(rate, lr)
        new_velocity = carried * velocity + lr * gradient
        self.assign(velocity, new_velocity)
        if self.nesterov:
            step = m * new_velocity + lr * gradient
        else:
            step = new_velocity
        self.assign_sub(variable, step)

    def get_config(self):
        """Returns the constructor arguments (base ones included).

        A ``learning_rate`` schedule and a ``decay_rule`` are Keras-serialised
        (``keras.saving.serialize_keras_object``); ``from_config`` rebuilds
        them.
        """
        config = super().get_config()
        config.update({
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "velocity_form": self.velocity_form,
            "momentum_correction": self.momentum_correction,
            "l2_weight_decay": self.l2_weight_decay,
            "decay_bias": self.decay_bias,
            "aggregate_gradients": self.aggregate_gradients,
            "decay_rule": (
                None if self.decay_rule is None
                else keras.saving.serialize_keras_object(self.decay_rule)),
        })
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """Rebuilds the optimizer from ``get_config()``'s dict.

        Args:
            config: the dict of ``get_config``.
            custom_objects: optional names of unregistered classes and
                functions (a schedule, a ``decay_rule``).

        Returns:
            A new ``MomentumSGD``.
        """
        config = dict(config)
        if isinstance(config.get("decay_rule"), dict):
            config["decay_rule"] = keras.saving.deserialize_keras_object(
                config["decay_rule"], custom_objects=custom_objects)
        return super().from_config(config, custom_objects=custom_objects)
