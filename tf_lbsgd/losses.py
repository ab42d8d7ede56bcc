"""Loss normalisation across replicas (PAPER.md R8, Remark 3)."""

import tensorflow as tf


def per_example_cross_entropy(labels, logits):
    """Softmax cross-entropy per example, computed in float32."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(labels, tf.int32), logits=tf.cast(logits, tf.float32))


def global_batch_loss(per_example_loss, global_batch_size):
    """One replica's share of the global-batch mean loss (R8, Remark 3).

    PAPER.md R8 (Goyal et al. 2017, Remark 3): each worker's loss is its summed
    per-example loss divided by the global minibatch kn, not by its own n,
    because the allreduce that follows *sums* the workers' gradients:

        sum_j grad( sum_{x in B_j} l(x) / kn ) = grad( mean_{x in B} l(x) ).

    Args:
        per_example_loss: [n] losses of this replica's examples.
        global_batch_size: kn, the minibatch summed over all replicas.

    Returns:
        A float32 scalar.
    """
    if global_batch_size <= 0:
        raise ValueError(f"global_batch_size must be positive, got "
                         f"{global_batch_size}")
    total = tf.reduce_sum(tf.cast(per_example_loss, tf.float32))
    return total / tf.cast(global_batch_size, tf.float32)
