"""tf_lbsgd.lamb.LAMB against a numpy reference of You et al.'s Algorithm 2
(issue 20): a changing rate, an adapted and decayed kernel and an excluded
bias, on one device and on 2 replicas (tests/quadratic_problem.py); and why
Keras' own Lamb is not it."""

import keras
import numpy as np
import pytest

import quadratic_problem as problem
from tf_lbsgd import lamb

STEPS = 6
BETA_1, BETA_2, EPS = 0.9, 0.99, 1e-6
LAMBDA = 0.05
START, SLOPE = 0.05, 0.02


def _reference(steps=STEPS):
    """Algorithm 2 of arXiv:1904.00962 in float64: the kernel adapted and
    decayed, the bias neither."""
    params = {"kernel": problem.KERNEL0.copy(), "bias": problem.BIAS0.copy()}
    moments = {k: [np.zeros_like(v), np.zeros_like(v)]
               for k, v in params.items()}
    for t in range(1, steps + 1):
        eta = START + SLOPE * (t - 1)
        grads = dict(zip(("kernel", "bias"), problem.numpy_gradients(
            params["kernel"], params["bias"])))
        for key, w in params.items():
            m, v = moments[key]
            m = BETA_1 * m + (1 - BETA_1) * grads[key]
            v = BETA_2 * v + (1 - BETA_2) * grads[key] ** 2
            moments[key] = [m, v]
            r = (m / (1 - BETA_1 ** t)) / (np.sqrt(v / (1 - BETA_2 ** t))
                                           + EPS)
            if key == "kernel":
                r = r + LAMBDA * w
                r = np.linalg.norm(w) / np.linalg.norm(r) * r
            params[key] = w - eta * r
    return params["kernel"], params["bias"]


def _optimizer(**kwargs):
    return lamb.LAMB(problem.Ramp(START, SLOPE), beta_1=BETA_1,
                     beta_2=BETA_2, epsilon=EPS, l2_weight_decay=LAMBDA,
                     **kwargs)


def test_one_device_follows_algorithm_2():
    optimizer = _optimizer()
    kernel, bias = problem.train_one_device(optimizer, STEPS)
    expected_kernel, expected_bias = _reference()
    np.testing.assert_allclose(kernel, expected_kernel, rtol=2e-5)
    np.testing.assert_allclose(bias, expected_bias, rtol=2e-5)
    assert optimizer._adapts == [True, False]  # pylint: disable=protected-access
    assert optimizer._decays == [True, False]  # pylint: disable=protected-access


def test_two_replicas_match_one_device():
    kernels, bias = problem.train_two_replicas(_optimizer, STEPS)
    expected_kernel, expected_bias = _reference()
    for replica_kernel in kernels:
        np.testing.assert_allclose(replica_kernel, expected_kernel, rtol=2e-5)
    np.testing.assert_allclose(bias, expected_bias, rtol=2e-5)


def test_keras_lamb_is_another_algorithm():
    """Keras 3's Lamb decays outside the ratio and adapts the bias too: on
    the same problem it ends elsewhere, which is why the project has its
    own."""
    kernel, _ = problem.train_one_device(keras.optimizers.Lamb(
        problem.Ramp(START, SLOPE), beta_1=BETA_1, beta_2=BETA_2,
        epsilon=EPS, weight_decay=LAMBDA), STEPS)
    expected_kernel, _ = _reference()
    assert not np.allclose(kernel, expected_kernel, rtol=1e-3)


def test_rules_choose_the_variables():
    kernel = keras.Variable(problem.KERNEL0.astype("f4"), name="kernel")
    bias = keras.Variable(problem.BIAS0.astype("f4"), name="bias")
    optimizer = lamb.LAMB(0.1, decay_rule=lambda v: True,
                          adapt_rule=lambda v: "bias" in v.name)
    optimizer.build([kernel, bias])
    assert optimizer._decays == [True, True]  # pylint: disable=protected-access
    assert optimizer._adapts == [False, True]  # pylint: disable=protected-access


@pytest.mark.parametrize("kwargs, name", [
    ({"beta_1": 1.0}, "LAMB.beta_1"), ({"beta_2": -0.1}, "LAMB.beta_2"),
    ({"epsilon": 0.0}, "LAMB.epsilon"),
    ({"l2_weight_decay": -1.0}, "LAMB.l2_weight_decay"),
    ({"weight_decay": 0.01}, "weight_decay=0.01"),
])
def test_bad_settings_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        lamb.LAMB(0.1, **kwargs)


def test_config_round_trip():
    optimizer = lamb.LAMB(0.002, beta_2=0.98, l2_weight_decay=0.02,
                          aggregate_gradients=False)
    config = optimizer.get_config()
    assert lamb.LAMB.from_config(config).get_config() == config
    assert config["l2_weight_decay"] == 0.02
    assert not config["aggregate_gradients"]
