"""The gradient all-reduce of synchronous SGD, done by the training loop.

Every replica computes the gradient of its own loss (its summed per-example
loss divided by kn, R8); the sum of these over the k replicas is the gradient
of the global minibatch's mean loss. `GradientAllReduce` performs that sum
explicitly in the replica step, instead of leaving it hidden inside the Keras
optimizer, so that its packing into buckets, its wire dtype and its place in
the step are set here (the paper's systems section: per-layer-group buckets
all-reduced as backprop produces them; Horovod's optional float16
compression).
"""

import gin
import tensorflow as tf

from tf_lbsgd import distribute

COMPRESSIONS = ("none", "float16")


@gin.configurable
class GradientAllReduce:
    """Sums gradients over all replicas (every worker gets the same sum).

    The collective's implementation and timeout are the strategy's
    (`distribute.build_strategy.collective` and `.timeout_seconds`).

    Args:
        bytes_per_pack: bucket size in bytes; the gradients are packed into
            buckets of about this size, each all-reduced by its own collective
            that can start while backprop still computes the others. 0 packs
            them all into one.
        compression: `none`, or `float16` to cast float32 gradients to
            float16 for the all-reduce and back after it (half the bytes on
            the wire). The sum is formed in float16 too: a value or partial
            sum above 65504 overflows to inf and tiny ones flush to 0, which
            a loss scale guards against.

    Raises:
        ValueError: naming an unknown compression or a bad pack size.
    """

    def __init__(self, bytes_per_pack=0, compression="none"):
        if compression not in COMPRESSIONS:
            raise ValueError(f"Unknown gradient compression {compression!r}; "
                             f"expected one of {COMPRESSIONS}")
        self.compression = compression
        # Merged over the strategy's options at each call: AUTO and no
        # timeout leave the strategy's implementation and timeout in force.
        self.options = distribute.communication_options(
            bytes_per_pack=bytes_per_pack)

    def _compress(self, gradient):
        if self.compression == "float16" and gradient.dtype == tf.float32:
            return tf.cast(gradient, tf.float16)
        return gradient

    def __call__(self, gradients):
        """Returns the all-reduced sums of `gradients` (None stays None).

        Call in a replica context (inside `strategy.run`); every replica must
        call it with gradients of the same shapes and dtypes.
        """
        gradients = list(gradients)
        present = [i for i, g in enumerate(gradients) if g is not None]
        if not present:
            return gradients
        context = tf.distribute.get_replica_context()
        sent = [self._compress(gradients[i]) for i in present]
        summed = context.all_reduce(tf.distribute.ReduceOp.SUM, sent,
                                    options=self.options)
        out = list(gradients)
        for i, total in zip(present, summed):
            out[i] = tf.cast(total, gradients[i].dtype)
        return out
