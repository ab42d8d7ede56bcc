"""Mixed precision in the custom loop, under 2 replicas of MirroredStrategy.

float16 with dynamic loss scaling against float32, an overflow injected into
one replica's gradient, the scale's growth, bfloat16, and XLA on and off.
"""

import keras
import numpy as np
import orbit
import pytest
import tensorflow as tf

from tf_lbsgd import distribute
from tf_lbsgd import lamb
from tf_lbsgd import lars
from tf_lbsgd import optimizers
from tf_lbsgd import precision
from tf_lbsgd.models import layers
from tf_lbsgd.models.resnet_cifar import resnet_cifar
from tf_lbsgd.trainer import Trainer

K, N = 2, 8  # replicas, examples per replica
SHAPE = (8, 8, 1)


@pytest.fixture(scope="module")
def strategy():
    return distribute.logical_cpu_strategy(K)


@pytest.fixture(scope="module")
def initial_weights():
    keras.utils.set_random_seed(1)
    return resnet_cifar(input_shape=SHAPE, depth=8, width=4).get_weights()


def _batches(steps, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(steps * K * N,) + SHAPE).astype("f4")
    y = rng.integers(0, 10, size=len(x)).astype("i4")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(K * N)


class _OverflowOnReplica1(Trainer):
    """Puts an inf into replica 1's gradient while `inject` is set."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        with self.strategy.scope():
            self.inject = tf.Variable(False, trainable=False)

    def _forward_backward(self, images, labels):
        logits, loss, grads = super()._forward_backward(images, labels)
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        poison = tf.logical_and(self.inject, tf.equal(replica, 1))
        grads[0] = grads[0] + tf.where(poison, np.inf, 0.0)
        return logits, loss, grads


# The optimizers past 8k (issue 20) under loss scaling, beside MomentumSGD.
LAYERWISE = {
    "lars": lambda: lars.LARS(learning_rate=2.0, trust_coefficient=0.01,
                              aggregate_gradients=False),
    "lamb": lambda: lamb.LAMB(learning_rate=0.01, aggregate_gradients=False),
}


def _trainer(strategy, initial, policy="float32", loss_scaling=False,
             growth_steps=2000, jit_compile=False, steps=4, cls=Trainer,
             optimizer_fn=None):
    with strategy.scope():
        with precision.dtype_policy(policy), layers.built_for_xla(jit_compile):
            model = resnet_cifar(input_shape=SHAPE, depth=8, width=4)
        model.set_weights(initial)
        optimizer = (optimizer_fn() if optimizer_fn else
                     optimizers.MomentumSGD(learning_rate=0.1, momentum=0.9,
                                            l2_weight_decay=1e-4,
                                            aggregate_gradients=False))
        if loss_scaling:
            optimizer = precision.with_loss_scaling(
                optimizer, initial_scale=2.0 ** 10,
                dynamic_growth_steps=growth_steps)
        optimizer.build(model.trainable_variables)
        step = orbit.utils.create_global_step()
    dataset = strategy.experimental_distribute_dataset(_batches(steps))
    return cls(strategy, model, optimizer, dataset, K * N, step,
               jit_compile=jit_compile)


def _values(variables):
    return [np.array(v.numpy()) for v in variables]


def test_dtype_policy_is_scoped_and_checked():
    before = keras.mixed_precision.global_policy().name
    with precision.dtype_policy("mixed_bfloat16"):
        layer = keras.layers.Dense(2)
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    assert keras.mixed_precision.global_policy().name == before
    assert layer.compute_dtype == "bfloat16"
    with pytest.raises(ValueError, match="'float8'"):
        with precision.dtype_policy("float8"):
            pass


def test_with_loss_scaling_checks_its_settings():
    inner = optimizers.MomentumSGD(0.1, aggregate_gradients=False)
    with pytest.raises(ValueError, match="initial_scale must be positive"):
        precision.with_loss_scaling(inner, initial_scale=0)
    with pytest.raises(ValueError, match="dynamic_growth_steps"):
        precision.with_loss_scaling(inner, dynamic_growth_steps=0)
    assert precision.loss_scale(inner) == 1.0


def test_float16_step_matches_float32(strategy, initial_weights):
    reference = _trainer(strategy, initial_weights, steps=1)
    reference.train(tf.constant(1))
    half = _trainer(strategy, initial_weights, "mixed_float16",
                    loss_scaling=True, steps=1)
    half.train(tf.constant(1))
    assert all(v.dtype == "float32" for v in half.model.weights)
    for w0, a, b in zip(initial_weights, _values(reference.model.weights),
                        _values(half.model.weights)):
        # float16 keeps 11 significant bits (relative rounding 4.9e-4); the
        # forward and backward of a depth-8 net compound a few of them, so
        # each weight's update agrees to ~1e-2 of the largest update in the
        # tensor; a step with the wrong scale (x1024) or a missing unscale
        # would be off by orders of magnitude.
        update = np.abs(a - w0).max()
        np.testing.assert_allclose(b - w0, a - w0, atol=2e-2 * update + 1e-7)
    assert int(half.skipped_steps.numpy()) == 0


@pytest.mark.parametrize("name", sorted(LAYERWISE))
def test_layerwise_float16_step_matches_float32(strategy, initial_weights,
                                                name):
    """The trust ratios see the unscaled gradients: the float16 step of
    LARS / LAMB is the float32 one (to float16's rounding)."""
    reference = _trainer(strategy, initial_weights, steps=1,
                         optimizer_fn=LAYERWISE[name])
    reference.train(tf.constant(1))
    half = _trainer(strategy, initial_weights, "mixed_float16",
                    loss_scaling=True, steps=1, optimizer_fn=LAYERWISE[name])
    half.train(tf.constant(1))
    for w0, a, b in zip(initial_weights, _values(reference.model.weights),
                        _values(half.model.weights)):
        # Per tensor, as a whole: LAMB's first step is g / (|g| + eps) per
        # element, which float16 rounding moves for the odd gradient near
        # eps. Without the unscale LARS would move the BN parameters and
        # biases (plain momentum SGD) 1024 times too far; LAMB's update is
        # almost invariant to the scale, so for it this checks the rest.
        wanted = np.linalg.norm(a - w0)
        assert np.linalg.norm((b - w0) - (a - w0)) <= 0.05 * wanted + 1e-6


@pytest.mark.parametrize("name", [None] + sorted(LAYERWISE))
def test_overflow_on_one_replica_skips_the_step_everywhere(strategy,
                                                           initial_weights,
                                                           name):
    trainer = _trainer(strategy, initial_weights, "mixed_float16",
                       loss_scaling=True, steps=4, cls=_OverflowOnReplica1,
                       optimizer_fn=LAYERWISE.get(name))
    trainer.inject.assign(True)
    # Trainable weights and optimizer slots, the step count too (LAMB's bias
    # correction reads it); the BN moving statistics are forward-pass state
    # and update on a skipped step too (as with Keras' fit and PyTorch's
    # GradScaler).
    variables = (trainer.model.trainable_variables
                 + trainer.optimizer.inner_optimizer.variables)
    before = {id(v): [np.array(x) for x in
                      strategy.experimental_local_results(v)]
              for v in variables}
    output = trainer.train(tf.constant(1))
    for v in variables:
        if id(v) in before:  # On both replicas' copies.
            for old, new in zip(before[id(v)],
                                strategy.experimental_local_results(v)):
                np.testing.assert_array_equal(np.array(new), old,
                                              err_msg=v.path)
    assert output["loss_scale"] == 2.0 ** 9  # Halved.
    assert output["skipped_steps"] == 1
    assert int(trainer.global_step.numpy()) == 1
    trainer.inject.assign(False)
    output = trainer.train(tf.constant(3))  # Training goes on.
    assert output["skipped_steps"] == 1
    assert output["loss_scale"] == 2.0 ** 9
    assert np.isfinite(output["loss"])
    moved = [np.abs(a - b).max() for a, b in
             zip(_values(trainer.model.trainable_variables),
                 [w for w, v in zip(initial_weights, trainer.model.weights)
                  if v.trainable])]
    assert max(moved) > 1e-3


def test_skips_are_counted_in_the_given_checkpointed_variable(strategy):
    with strategy.scope():
        counter = tf.Variable(0, dtype=tf.int64, trainable=False)
        model = resnet_cifar(input_shape=SHAPE, depth=8, width=4)
        optimizer = optimizers.MomentumSGD(0.1, aggregate_gradients=False)
        step = orbit.utils.create_global_step()
    trainer = Trainer(strategy, model, optimizer, iter([]), K * N, step,
                      skipped_steps=counter)
    assert trainer.skipped_steps is counter  # A zero-valued one, too.


def test_scale_grows_after_the_configured_finite_steps(strategy,
                                                       initial_weights):
    trainer = _trainer(strategy, initial_weights, "mixed_float16",
                       loss_scaling=True, growth_steps=2, steps=3)
    assert trainer.train(tf.constant(1))["loss_scale"] == 2.0 ** 10
    assert trainer.train(tf.constant(1))["loss_scale"] == 2.0 ** 11
    assert trainer.train(tf.constant(1))["loss_scale"] == 2.0 ** 11


def test_bfloat16_trains_with_float32_weights(strategy, initial_weights):
    trainer = _trainer(strategy, initial_weights, "mixed_bfloat16", steps=1)
    # One batch over and over: the loss must fall. Finite (9 = 1 + 8 steps):
    # destroying a multi-device iterator of an endless dataset can hang.
    trainer.train_dataset = strategy.experimental_distribute_dataset(
        _batches(1).repeat(9))
    first = trainer.train(tf.constant(1))["loss"]
    later = trainer.train(tf.constant(8))
    assert later["loss"] < first - 0.1
    assert trainer.model.layers[1].compute_dtype == "bfloat16"
    assert all(v.dtype == "float32" for v in trainer.model.weights)
    assert later["loss_scale"] == 1.0


def test_xla_and_no_xla_give_the_same_weights(strategy, initial_weights):
    """Without XLA batch norm runs the fused kernel, with it unfused ops."""
    runs = []
    for jit in (False, True):
        trainer = _trainer(strategy, initial_weights, jit_compile=jit, steps=3)
        norms = [layer for layer in trainer.model.layers
                 if isinstance(layer, layers.WorkerBatchNorm)]
        assert norms and all(layer.fused != jit for layer in norms)
        trainer.train(tf.constant(3))
        runs.append(_values(trainer.model.weights))
    moved = max(np.abs(a - w).max() for a, w in zip(runs[0], initial_weights))
    assert moved > 1e-3
    for a, b in zip(*runs):  # XLA fuses and reorders float32 arithmetic.
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
