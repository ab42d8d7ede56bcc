"""The problem the layer-wise optimizers' tests solve (test_lars, test_lamb).

A 2x2 kernel (adapted and decayed by default) and a 2-vector bias (neither)
under the loss 0.5 * sum(A * (kernel - T)^2) + 0.5 * ||bias - BIAS_T||^2,
with a rate that changes every step; trained on one device or on 2 replicas
of a MirroredStrategy, each replica's loss half of the whole (loss / kn, R8).
"""

import keras
import numpy as np
import tensorflow as tf

A = np.array([[0.5, 1.0], [2.0, 0.3]])
T = np.array([[1.0, -2.0], [0.5, 3.0]])
KERNEL0 = np.array([[0.3, 0.7], [-1.2, 0.4]])
BIAS0 = np.array([0.2, -0.1])
BIAS_T = np.array([1.0, 1.0])


class Ramp(keras.optimizers.schedules.LearningRateSchedule):
    """eta_t = start + slope * t: a rate that changes every step."""

    def __init__(self, start, slope):
        self.start, self.slope = start, slope

    def __call__(self, step):
        return self.start + self.slope * tf.cast(step, tf.float32)

    def get_config(self):
        return {"start": self.start, "slope": self.slope}


def numpy_gradients(kernel, bias):
    """The float64 gradients of the loss."""
    return A * (kernel - T), bias - BIAS_T


def _variables():
    return (keras.Variable(KERNEL0.astype("f4"), name="kernel"),
            keras.Variable(BIAS0.astype("f4"), name="bias"))


def _loss(kernel, bias):
    return (0.5 * tf.reduce_sum(A.astype("f4") * tf.square(
        kernel - T.astype("f4"))) + 0.5 * tf.reduce_sum(
            tf.square(bias - BIAS_T.astype("f4"))))


def train_one_device(optimizer, steps):
    """Returns the optimizer's (kernel, bias) after `steps` steps."""
    kernel, bias = _variables()
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss = _loss(kernel, bias)
        grads = tape.gradient(loss, [kernel.value, bias.value])
        optimizer.apply_gradients(zip(grads, [kernel, bias]))
    return kernel.numpy(), bias.numpy()


def train_two_replicas(optimizer_fn, steps):
    """Returns ([each replica's kernel], bias) after `steps` steps of the
    optimizer `optimizer_fn()` on 2 replicas."""
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    strategy = tf.distribute.MirroredStrategy(
        devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
    with strategy.scope():
        kernel, bias = _variables()
        optimizer = optimizer_fn()
        optimizer.build([kernel, bias])

    def replica_step():
        with tf.GradientTape() as tape:
            loss = _loss(kernel, bias) / 2
        grads = tape.gradient(loss, [kernel.value, bias.value])
        optimizer.apply_gradients(zip(grads, [kernel, bias]))

    @tf.function
    def step():
        strategy.run(replica_step)

    for _ in range(steps):
        step()
    return ([k.numpy() for k in strategy.experimental_local_results(kernel)],
            bias.numpy())
