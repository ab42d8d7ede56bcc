"""k replicas with per-replica BN == one replica with ghost BN (R8, R9).

Training k = 4 replicas of MirroredStrategy (each normalising over its own n
examples, losses divided by kn, gradients summed by the allreduce) must give
the same weights as a single replica that normalises each group of n examples
separately (ghost batch) on the whole global batch. This is what lets the
reproduction simulate hundreds of workers with one replica.
"""

import numpy as np
import orbit
import tensorflow as tf

from tf_lbsgd import distribute

from tf_lbsgd import optimizers
from tf_lbsgd import schedules
from tf_lbsgd.models.resnet_cifar import resnet_cifar
from tf_lbsgd.trainer import Trainer

K, N, STEPS = 4, 8, 6


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(K * N * STEPS, 12, 12, 1)).astype("f4")
    y = rng.integers(0, 10, size=len(x)).astype("i4")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(K * N)


def _train(strategy, bn_group_size, initial_weights):
    with strategy.scope():
        model = resnet_cifar(input_shape=(12, 12, 1), depth=8, width=8,
                             bn_group_size=bn_group_size)
        model.set_weights(initial_weights)
        schedule = schedules.GradualWarmup(
            after=schedules.ConstantLR(0.4), start_lr=0.1, warmup_epochs=1,
            steps_per_epoch=STEPS)
        optimizer = optimizers.MomentumSGD(learning_rate=schedule,
                                           aggregate_gradients=False,
                                           momentum=0.9, l2_weight_decay=1e-4)
        optimizer.build(model.trainable_variables)
        step = orbit.utils.create_global_step()
    dataset = strategy.experimental_distribute_dataset(_data())
    trainer = Trainer(strategy, model, optimizer, dataset, K * N, step)
    output = trainer.train(tf.constant(STEPS))
    assert int(step.numpy()) == STEPS
    return model, output


def test_k_replicas_equal_ghost_batch_single_replica():
    initial = resnet_cifar(input_shape=(12, 12, 1), depth=8,
                           width=8).get_weights()
    mirrored, out_k = _train(distribute.logical_cpu_strategy(K), None,
                             initial)
    ghost, out_1 = _train(tf.distribute.get_strategy(), N, initial)
    moved = 0.0
    for a, b, w0 in zip(mirrored.weights, ghost.weights, initial):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=2e-4, atol=2e-5,
                                   err_msg=a.path)
        moved = max(moved, float(np.abs(a.numpy() - w0).max()))
    assert moved > 1e-2  # The weights really trained.
    np.testing.assert_allclose(out_k["loss"], out_1["loss"],
                               rtol=1e-5)


def test_ghost_batch_of_whole_batch_differs_from_per_worker_bn():
    """Control: BN over all kn examples (synced BN) is a different model."""
    initial = resnet_cifar(input_shape=(12, 12, 1), depth=8,
                           width=8).get_weights()
    ghost, _ = _train(tf.distribute.get_strategy(), N, initial)
    full, _ = _train(tf.distribute.get_strategy(), None, initial)
    diffs = [np.abs(a.numpy() - b.numpy()).max()
             for a, b in zip(ghost.trainable_variables,
                             full.trainable_variables)]
    assert max(diffs) > 1e-4
