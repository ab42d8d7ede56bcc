"""tf_lbsgd.lars.LARS against a numpy reference of You et al.'s Algorithm 1
(issue 20): a changing rate, an adapted kernel and an excluded bias, on one
device and on 2 replicas (tests/quadratic_problem.py)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import quadratic_problem as problem
from tf_lbsgd import lars

STEPS = 6
MOMENTUM = 0.9
LAMBDA = 1e-2
TRUST = 0.1  # Larger than You et al.'s 0.001, so that the ratio shows.
START, SLOPE = 0.5, 0.25


def _reference(steps=STEPS):
    """Algorithm 1 of arXiv:1708.03888 in float64: the kernel adapted and
    decayed, the bias neither; v <- m v + eta g'; w <- w - v."""
    kernel, bias = problem.KERNEL0.copy(), problem.BIAS0.copy()
    v_kernel, v_bias = np.zeros_like(kernel), np.zeros_like(bias)
    for t in range(steps):
        eta = START + SLOPE * t
        g, g_bias = problem.numpy_gradients(kernel, bias)
        local = TRUST * np.linalg.norm(kernel) / (
            np.linalg.norm(g) + LAMBDA * np.linalg.norm(kernel))
        v_kernel = MOMENTUM * v_kernel + eta * local * (g + LAMBDA * kernel)
        kernel = kernel - v_kernel
        v_bias = MOMENTUM * v_bias + eta * g_bias
        bias = bias - v_bias
    return kernel, bias


def _optimizer():
    return lars.LARS(problem.Ramp(START, SLOPE), trust_coefficient=TRUST,
                     momentum=MOMENTUM, l2_weight_decay=LAMBDA)


def test_one_device_follows_algorithm_1():
    optimizer = _optimizer()
    kernel, bias = problem.train_one_device(optimizer, STEPS)
    expected_kernel, expected_bias = _reference()
    np.testing.assert_allclose(kernel, expected_kernel, rtol=1e-5)
    np.testing.assert_allclose(bias, expected_bias, rtol=1e-5)
    assert optimizer._adapts == [True, False]  # pylint: disable=protected-access
    # Without the trust ratio the kernel would have moved elsewhere.
    assert not np.allclose(kernel, problem.KERNEL0, atol=1e-3)


def test_two_replicas_match_one_device():
    kernels, bias = problem.train_two_replicas(_optimizer, STEPS)
    expected_kernel, expected_bias = _reference()
    for replica_kernel in kernels:
        np.testing.assert_allclose(replica_kernel, expected_kernel, rtol=1e-5)
    np.testing.assert_allclose(bias, expected_bias, rtol=1e-5)


def test_trust_ratio_is_one_where_a_norm_is_zero():
    ratios = lars.trust_ratio(tf.constant([0.0, 2.0, 2.0]),
                              tf.constant([1.0, 0.0, 3.0]), 0.5, 0.5)
    np.testing.assert_allclose(ratios.numpy(), [1.0, 1.0, 0.5 * 2 / 4])


def test_an_adapt_rule_chooses_the_variables():
    kernel = keras.Variable(problem.KERNEL0.astype("f4"), name="kernel")
    bias = keras.Variable(problem.BIAS0.astype("f4"), name="bias")
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
