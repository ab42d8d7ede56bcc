"""R8 (Remark 3): per-replica loss = summed per-example loss / global batch."""

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
