"""tf_lbsgd.lars.LARS against a numpy reference of You et al.'s Algorithm 1
(issue 20): a changing rate, an adapted kernel and an excluded bias, on one
device and on 2 replicas."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_lbsgd import lars

STEPS = 6
MOMENTUM = 0.9
LAMBDA = 1e-2
TRUST = 0.1  # Larger than You et al.'s 0.001, so that the ratio shows.
_A = np.array([[0.5, 1.0], [2.0, 0.3]])  # Loss 0.5 * sum(A * (w - T)^2).
_T = np.array([[1.0, -2.0], [0.5, 3.0]])
_KERNEL0 = np.array([[0.3, 0.7], [-1.2, 0.4]])
_BIAS0 = np.array([0.2, -0.1])
_BIAS_T = np.array([1.0, 1.0])


class _Ramp(keras.optimizers.schedules.LearningRateSchedule):
    """eta_t = 0.5 + 0.25 t: a rate that changes every step."""

    def __call__(self, step):
        return 0.5 + 0.25 * tf.cast(step, tf.float32)

    def get_config(self):
        return {}


def _reference(steps=STEPS):
    """Algorithm 1 of arXiv:1708.03888 in float64: the kernel adapted and
    decayed, the bias neither; v <- m v + eta g'; w <- w - v."""
    kernel, bias = _KERNEL0.copy(), _BIAS0.copy()
    v_kernel, v_bias = np.zeros_like(kernel), np.zeros_like(bias)
    for t in range(steps):
        eta = 0.5 + 0.25 * t
        g = _A * (kernel - _T)
        local = TRUST * np.linalg.norm(kernel) / (
            np.linalg.norm(g) + LAMBDA * np.linalg.norm(kernel))
        v_kernel = MOMENTUM * v_kernel + eta * local * (g + LAMBDA * kernel)
        kernel = kernel - v_kernel
        v_bias = MOMENTUM * v_bias + eta * (bias - _BIAS_T)
        bias = bias - v_bias
    return kernel, bias


def _variables():
    return (keras.Variable(_KERNEL0.astype("f4"), name="kernel"),
            keras.Variable(_BIAS0.astype("f4"), name="bias"))


def _loss(kernel, bias):
    return (0.5 * tf.reduce_sum(_A.astype("f4") * tf.square(
        kernel - _T.astype("f4"))) + 0.5 * tf.reduce_sum(
            tf.square(bias - _BIAS_T.astype("f4"))))


def _optimizer():
    return lars.LARS(_Ramp(), trust_coefficient=TRUST, momentum=MOMENTUM,
                     l2_weight_decay=LAMBDA)


def test_one_device_follows_algorithm_1():
    kernel, bias = _variables()
    optimizer = _optimizer()
    for _ in range(STEPS):
        with tf.GradientTape() as tape:
            loss = _loss(kernel, bias)
        grads = tape.gradient(loss, [kernel.value, bias.value])
        optimizer.apply_gradients(zip(grads, [kernel, bias]))
    expected_kernel, expected_bias = _reference()
    np.testing.assert_allclose(kernel.numpy(), expected_kernel, rtol=1e-5)
    np.testing.assert_allclose(bias.numpy(), expected_bias, rtol=1e-5)
    assert optimizer._adapts == [True, False]  # pylint: disable=protected-access
    # Without the trust ratio the kernel would have moved elsewhere.
    assert not np.allclose(kernel.numpy(), _KERNEL0, atol=1e-3)


def test_two_replicas_match_one_device():
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    strategy = tf.distribute.MirroredStrategy(
        devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
    with strategy.scope():
        kernel, bias = _variables()
        optimizer = _optimizer()
        optimizer.build([kernel, bias])

    def replica_step():
        # Each replica's loss is half of the whole: the summed gradient is
        # the whole loss's gradient, as with loss / kn (R8).
        with tf.GradientTape() as tape:
            loss = _loss(kernel, bias) / 2
        grads = tape.gradient(loss, [kernel.value, bias.value])
        optimizer.apply_gradients(zip(grads, [kernel, bias]))

    @tf.function
    def step():
        strategy.run(replica_step)

    for _ in range(STEPS):
        step()
    expected_kernel, expected_bias = _reference()
    for replica_kernel in strategy.experimental_local_results(kernel):
        np.testing.assert_allclose(replica_kernel.numpy(), expected_kernel,
                                   rtol=1e-5)
    np.testing.assert_allclose(bias.numpy(), expected_bias, rtol=1e-5)


def test_trust_ratio_is_one_where_a_norm_is_zero():
    ratios = lars.trust_ratio(tf.constant([0.0, 2.0, 2.0]),
                              tf.constant([1.0, 0.0, 3.0]), 0.5, 0.5)
    np.testing.assert_allclose(ratios.numpy(), [1.0, 1.0, 0.5 * 2 / 4])


def test_an_adapt_rule_chooses_the_variables():
    kernel, bias = _variables()
    optimizer = lars.LARS(0.1, adapt_rule=lambda v: "bias" in v.name)
    optimizer.build([kernel, bias])
    assert optimizer._adapts == [False, True]  # pylint: disable=protected-access


@pytest.mark.parametrize("value", [0, -1e-3, float("nan"), float("inf")])
def test_a_bad_trust_coefficient_is_named(value):
    with pytest.raises(ValueError, match="LARS.trust_coefficient"):
        lars.LARS(0.1, trust_coefficient=value)


def test_config_round_trip():
    optimizer = lars.LARS(0.2, trust_coefficient=0.02, momentum=0.8,
                          l2_weight_decay=5e-4)
    config = optimizer.get_config()
    assert lars.LARS.from_config(config).get_config() == config
    assert config["trust_coefficient"] == 0.02
    assert config["velocity_form"] == "scaled"
