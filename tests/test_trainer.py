"""Trainer pieces: the paper's median statistic and the NaN guard."""

import numpy as np
import orbit
import pytest
import tensorflow as tf

from tf_lbsgd import optimizers
from tf_lbsgd.models.resnet_cifar import resnet_cifar
from tf_lbsgd.trainer import Trainer
from tf_lbsgd.trainer import median_of_final


def test_median_of_final_five():
    errors = [0.9, 0.5, 0.30, 0.26, 0.25, 0.27, 0.24, 0.40]
    assert median_of_final(errors) == np.median([0.26, 0.25, 0.27, 0.24, 0.40])
    assert median_of_final([0.3, 0.2]) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="no evaluation"):
        median_of_final([])


def test_nan_loss_stops_training_with_the_step():
    strategy = tf.distribute.get_strategy()
    model = resnet_cifar(input_shape=(8, 8, 1), depth=8, width=4)
    optimizer = optimizers.MomentumSGD(learning_rate=0.1,
                                       aggregate_gradients=False)
    optimizer.build(model.trainable_variables)
    step = orbit.utils.create_global_step()
    x = np.full((4, 8, 8, 1), np.nan, "f4")  # e.g. a corrupt input
    data = tf.data.Dataset.from_tensors((x, np.zeros(4, "i4"))).repeat()
    trainer = Trainer(strategy, model, optimizer, iter(data), 4, step)
    with pytest.raises(FloatingPointError, match="Training loss is nan at step"):
        trainer.train(tf.constant(3))
