"""The training loss and its normalisation across replicas (R8, Remark 3).

The loss is the softmax cross-entropy of sparse integer labels, optionally
label-smoothed (`SoftmaxCrossEntropy`, configurable in gin); each replica
divides its summed loss by the global batch (`global_batch_loss`).
"""

import gin
import tensorflow as tf


def check_label_smoothing(label_smoothing):
    """Raises ValueError unless 0 <= `label_smoothing` < 1.

    Raises:
        ValueError: naming the value.
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got "
                         f"{label_smoothing!r}; 0 turns smoothing off, 0.1 is "
                         f"the usual value (Szegedy et al. 2016)")


def per_example_cross_entropy(labels, logits, label_smoothing=0.0):
    """Softmax cross-entropy per example, computed in float32.

    With label smoothing eps over C classes the target of an example with
    label y is (1 - eps) * onehot(y) + eps / C (Szegedy et al. 2016, as
    `keras.losses.CategoricalCrossentropy(label_smoothing=eps)`), so its loss
    is (1 - eps) * (-log p_y) + eps * mean_c(-log p_c).

    Args:
        labels: [n] integer class indices (sparse labels).
        logits: [n, C] unnormalised scores, any float dtype.
        label_smoothing: eps in [0, 1); 0 is the plain cross-entropy.

    Returns:
        [n] float32 losses.

    Raises:
        ValueError: if label_smoothing is outside [0, 1).
    """
    check_label_smoothing(label_smoothing)
    labels = tf.cast(labels, tf.int32)
    logits = tf.cast(logits, tf.float32)
    if label_smoothing == 0.0:
        return tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=labels, logits=logits)
    log_probs = tf.nn.log_softmax(logits)
    label_nll = -tf.gather(log_probs, labels, axis=1, batch_dims=1)
    uniform_nll = -tf.reduce_mean(log_probs, axis=1)
    return (1.0 - label_smoothing) * label_nll + label_smoothing * uniform_nll


@gin.configurable
class SoftmaxCrossEntropy:
    """The per-example training loss, chosen in gin (default: no smoothing).

    E.g. `SoftmaxCrossEntropy.label_smoothing = 0.1`. Called as
    `loss(labels, logits)`, it returns `per_example_cross_entropy`'s [n]
    float32 losses.

    Args:
        label_smoothing: eps in [0, 1) (see `per_example_cross_entropy`).

    Raises:
        ValueError: if label_smoothing is outside [0, 1).
    """

    def __init__(self, label_smoothing=0.0):
        check_label_smoothing(label_smoothing)
        self.label_smoothing = float(label_smoothing)

    def __call__(self, labels, logits):
        return per_example_cross_entropy(labels, logits, self.label_smoothing)

    def __repr__(self):
        return f"SoftmaxCrossEntropy(label_smoothing={self.label_smoothing})"


def global_batch_loss(per_example_loss, global_batch_size):
    """One replica's share of the global-batch mean loss.

    R8 (docs/paper.md; arXiv:1706.02677 Sec. 3, Remark 3): each worker's loss
    is its summed per-example loss divided by the global minibatch kn, not by
    its own n, because the allreduce that follows *sums* the workers' gradients:

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
