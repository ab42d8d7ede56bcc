"""Losses: R8's per-replica normalisation and the label-smoothed loss.

R8 (Remark 3): per-replica loss = summed per-example loss / global batch.
"""

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_lbsgd import distribute

from tf_lbsgd import losses


def _model_and_batch(seed=0, batch=32, dim=5, classes=4):
    rng = np.random.default_rng(seed)
    w = tf.Variable(rng.normal(size=(dim, classes)).astype(np.float32))
    x = rng.normal(size=(batch, dim)).astype(np.float32)
    y = rng.integers(0, classes, size=batch).astype(np.int32)
    return w, x, y


@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_summed_replica_gradients_equal_global_mean_gradient(k):
    w, x, y = _model_and_batch()
    with tf.GradientTape() as tape:
        reference = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(y, x @ w))
    expected = tape.gradient(reference, w).numpy()
    total = np.zeros_like(expected)
    for xs, ys in zip(np.split(x, k), np.split(y, k)):
        with tf.GradientTape() as tape:
            per_example = losses.per_example_cross_entropy(ys, xs @ w)
            loss = losses.global_batch_loss(per_example, len(x))
        total += tape.gradient(loss, w).numpy()
    np.testing.assert_allclose(total, expected, rtol=1e-5, atol=1e-7)


def test_dividing_by_local_batch_would_be_k_times_too_large():
    w, x, y = _model_and_batch()
    k = 4
    local = sum(
        losses.global_batch_loss(losses.per_example_cross_entropy(ys, xs @ w),
                                 len(xs)).numpy()
        for xs, ys in zip(np.split(x, k), np.split(y, k)))
    glob = sum(
        losses.global_batch_loss(losses.per_example_cross_entropy(ys, xs @ w),
                                 len(x)).numpy()
        for xs, ys in zip(np.split(x, k), np.split(y, k)))
    np.testing.assert_allclose(local, k * glob, rtol=1e-5)


def test_allreduce_of_replica_losses_under_mirrored_strategy():
    w0, x, y = _model_and_batch(seed=1)
    k = 4
    strategy = distribute.logical_cpu_strategy(k)
    with strategy.scope():
        w = tf.Variable(w0.numpy())
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(len(x))
    xb, yb = next(iter(strategy.experimental_distribute_dataset(dataset)))

    @tf.function
    def step(xb, yb):
        def replica_fn(xs, ys):
            with tf.GradientTape() as tape:
                loss = losses.global_batch_loss(
                    losses.per_example_cross_entropy(ys, xs @ w), len(x))
            grad = tape.gradient(loss, w)
            return tf.distribute.get_replica_context().all_reduce("sum", grad)
        return strategy.run(replica_fn, args=(xb, yb))

    grad = strategy.experimental_local_results(step(xb, yb))[0].numpy()
    # Independent reference: numpy softmax cross-entropy gradient of the mean.
    logits = x @ w0.numpy()
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    np.testing.assert_allclose(grad, x.T @ p / len(x), rtol=1e-4, atol=1e-6)


def test_rejects_non_positive_global_batch():
    with pytest.raises(ValueError, match="global_batch_size must be positive"):
        losses.global_batch_loss(tf.ones([3]), 0)


# --- Label smoothing (Szegedy et al. 2016) ---------------------------------

def _smoothed_targets(labels, classes, eps):
    """(1 - eps) * onehot + eps / C, in float64."""
    return (1.0 - eps) * np.eye(classes)[labels] + eps / classes


def _numpy_smoothed_cross_entropy(labels, logits, eps):
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    targets = _smoothed_targets(labels, logits.shape[1], eps)
    return -(targets * log_probs).sum(axis=1)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.4])
def test_smoothed_cross_entropy_matches_numpy_and_keras(eps):
    w, x, y = _model_and_batch(classes=7)
    logits = (x @ w.numpy()) * 3.0  # Confident logits: smoothing matters.
    got = losses.per_example_cross_entropy(y, logits, eps).numpy()
    assert got.dtype == np.float32 and got.shape == (len(y),)
    np.testing.assert_allclose(
        got, _numpy_smoothed_cross_entropy(y, logits, eps), rtol=1e-5,
        atol=1e-6)
    keras_loss = keras.losses.CategoricalCrossentropy(
        from_logits=True, label_smoothing=eps, reduction=None)
    np.testing.assert_allclose(
        got, keras_loss(np.eye(7, dtype="f4")[y], logits).numpy(),
        rtol=1e-5, atol=1e-6)
    if eps:  # It is not the plain loss.
        plain = losses.per_example_cross_entropy(y, logits).numpy()
        assert np.abs(got - plain).max() > 1e-2


def test_smoothed_gradient_is_softmax_minus_smoothed_targets():
    _, x, y = _model_and_batch(classes=4)
    logits = tf.constant(x[:, :4].astype(np.float16))  # Mixed-precision logits.
    with tf.GradientTape() as tape:
        tape.watch(logits)
        loss = tf.reduce_sum(losses.per_example_cross_entropy(y, logits, 0.2))
    assert loss.dtype == tf.float32
    z = x[:, :4].astype(np.float16).astype(np.float64)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(tape.gradient(loss, logits).numpy(),
                               p - _smoothed_targets(y, 4, 0.2), atol=2e-3)


def test_no_smoothing_is_todays_loss_exactly():
    w, x, y = _model_and_batch()
    logits = x @ w.numpy()
    today = tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits).numpy()
    np.testing.assert_array_equal(
        losses.per_example_cross_entropy(y, logits).numpy(), today)
    np.testing.assert_array_equal(
        losses.SoftmaxCrossEntropy()(y, logits).numpy(), today)


def test_label_smoothing_set_in_gin():
    gin.parse_config("SoftmaxCrossEntropy.label_smoothing = 0.25")
    loss = losses.SoftmaxCrossEntropy()
    assert loss.label_smoothing == 0.25
    w, x, y = _model_and_batch()
    np.testing.assert_allclose(
        loss(y, x @ w.numpy()).numpy(),
        _numpy_smoothed_cross_entropy(y, x @ w.numpy(), 0.25), rtol=1e-5)


@pytest.mark.parametrize("eps", [-0.1, 1.0, 1.5, float("nan")])
def test_rejects_label_smoothing_outside_zero_one(eps):
    with pytest.raises(ValueError, match=f"label_smoothing must be in "
                                         rf"\[0, 1\), got {eps}"):
        losses.SoftmaxCrossEntropy(label_smoothing=eps)
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        losses.per_example_cross_entropy([0], [[1.0, 2.0]], eps)
