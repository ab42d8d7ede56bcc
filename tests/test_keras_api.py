"""The recipe's pieces in plain Keras: compile, fit, save, load (issue 16).

`MomentumSGD`, the schedules and `WorkerBatchNorm` are registered with Keras,
so a model using them saves and loads without `custom_objects`, and
`model.fit` on k replicas trains exactly as the project's own loop does.
"""

import keras
import numpy as np
import orbit
import tensorflow as tf

from tf_lbsgd import distribute
from tf_lbsgd import optimizers
from tf_lbsgd import schedules
from tf_lbsgd.models.layers import WorkerBatchNorm
from tf_lbsgd.trainer import Trainer

K, N, STEPS = 2, 8, 5
SHAPE, CLASSES = (8, 8, 1), 10


def _model():
    """A tiny CNN with per-worker BN (R9): conv, BN, ReLU, pool, dense."""
    images = keras.Input(SHAPE)
    x = keras.layers.Conv2D(8, 3, use_bias=False, name="conv")(images)
    x = keras.layers.ReLU()(WorkerBatchNorm(name="bn")(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(images, keras.layers.Dense(CLASSES, name="logits")(x))


def _schedule():
    """Gradual warmup over 2 steps into a step decay at step 4 (R2, R4)."""
    return schedules.GradualWarmup(
        schedules.StepDecay(0.8, steps_per_epoch=2.0, boundaries_epochs=(2,)),
        start_lr=0.1, warmup_epochs=1, steps_per_epoch=2.0)


def _dataset():
    """STEPS global batches of K * N examples, always in the same order."""
    rng = np.random.default_rng(0)
    images = rng.normal(size=(K * N * STEPS,) + SHAPE).astype("f4")
    labels = rng.integers(0, CLASSES, size=len(images)).astype("i4")
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(K * N)


def _compile(model, **optimizer_kwargs):
    model.compile(
        optimizer=optimizers.MomentumSGD(_schedule(), l2_weight_decay=1e-3,
                                         **optimizer_kwargs),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False)


def test_optimizer_round_trips_through_keras_serialize():
    opt = optimizers.MomentumSGD(_schedule(), momentum=0.8, nesterov=True,
                                 velocity_form="scaled", decay_bias=True,
                                 l2_weight_decay=5e-4, clipnorm=2.0)
    config = keras.optimizers.serialize(opt)
    assert config["registered_name"] == "tf_lbsgd>MomentumSGD"
    clone = keras.optimizers.deserialize(config)
    assert type(clone) is optimizers.MomentumSGD
    assert clone.get_config() == opt.get_config()
    steps = tf.range(8)
    np.testing.assert_array_equal(clone._learning_rate(steps),  # pylint: disable=protected-access
                                  opt._learning_rate(steps))  # pylint: disable=protected-access


def test_saved_model_loads_without_custom_objects(tmp_path):
    keras.utils.set_random_seed(0)
    model = _model()
    _compile(model)
    data = _dataset()
    model.fit(data.take(3), shuffle=False, verbose=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)  # No custom_objects.
    assert isinstance(loaded.get_layer("bn"), WorkerBatchNorm)
    assert isinstance(loaded.optimizer, optimizers.MomentumSGD)
    assert isinstance(loaded.optimizer._learning_rate, schedules.GradualWarmup)  # pylint: disable=protected-access
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    images = next(iter(data))[0]
    np.testing.assert_array_equal(loaded.predict(images, verbose=0),
                                  model.predict(images, verbose=0))
    # The optimizer's state came too: the next steps are the same.
    assert int(loaded.optimizer.iterations.numpy()) == 3
    model.fit(data.skip(3), shuffle=False, verbose=0)
    loaded.fit(data.skip(3), shuffle=False, verbose=0)
    for want, got in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(got.numpy(), want.numpy(),
                                      err_msg=want.path)


def _train_with_trainer(strategy, initial):
    """STEPS steps of the project's loop: loss / kn, explicit allreduce."""
    with strategy.scope():
        model = _model()
        model.set_weights(initial)
        optimizer = optimizers.MomentumSGD(_schedule(), l2_weight_decay=1e-3,
                                           aggregate_gradients=False)
        optimizer.build(model.trainable_variables)
        step = orbit.utils.create_global_step()
    dataset = strategy.experimental_distribute_dataset(_dataset())
    Trainer(strategy, model, optimizer, dataset, K * N, step).train(
        tf.constant(STEPS))
    return model


def _train_with_fit(strategy, initial):
    """STEPS steps of model.fit: the mean loss over the global batch (Keras
    divides each replica's mean by k) and the gradients summed by Keras."""
    with strategy.scope():
        model = _model()
        model.set_weights(initial)
        _compile(model)  # aggregate_gradients=True: Keras' allreduce.
    model.fit(_dataset(), epochs=1, shuffle=False, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == STEPS
    return model


def test_fit_on_two_replicas_trains_as_the_trainer():
    strategy = distribute.logical_cpu_strategy(K)
    keras.utils.set_random_seed(0)
    initial = _model().get_weights()
    trained = _train_with_trainer(strategy, initial)
    fitted = _train_with_fit(strategy, initial)
    moved = 0.0
    # Every weight, the BN moving statistics too (per-replica BN in both).
    for want, got, start in zip(trained.weights, fitted.weights, initial):
        # Measured: bit-identical (0.0) with k = 2, n = 8.
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6,
                                   atol=1e-7, err_msg=want.path)
        moved = max(moved, float(np.abs(want.numpy() - start).max()))
    assert moved > 1e-2  # They really trained.
    assert _replicas_apart(strategy, fitted) == []


def _replicas_apart(strategy, model):
    """Paths of the trainable variables whose replica copies differ."""
    apart = []
    for variable in model.trainable_variables:
        copies = strategy.experimental_local_results(variable.value)
        if not all(np.array_equal(c.numpy(), copies[0].numpy())
                   for c in copies):
            apart.append(variable.path)
    return apart


def test_fit_without_keras_allreduce_trains_replicas_apart():
    """Control: MomentumSGD(aggregate_gradients=False) belongs to the
    Trainer; under fit each replica would apply its own gradient."""
    strategy = distribute.logical_cpu_strategy(K)
    with strategy.scope():
        model = _model()
        _compile(model, aggregate_gradients=False)
    model.fit(_dataset().take(1), shuffle=False, verbose=0)
    assert "conv/kernel" in _replicas_apart(strategy, model)
