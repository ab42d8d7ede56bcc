"""Per-worker batch normalisation (R9, docs/paper.md), with a ghost-batch mode.

Keras 3's `BatchNormalization` keeps its moving statistics in variables with
aggregation NONE: under a `tf.distribute` strategy every replica then keeps its
own diverging copy and a checkpoint saves replica 0's. `WorkerBatchNorm` keeps
them as SyncOnRead variables aggregated by MEAN (the tf.keras 2 behaviour): each
replica updates its own copy from its own batch, and reading or saving them
outside the replica context averages over replicas.

Whether its training step uses the fused BN kernel is decided when the layer
is built: `built_for_xla(jit_compile)` around the model's construction picks
the kernel that is faster with or without XLA.
"""

import contextlib

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tf_lbsgd")
class WorkerBatchNorm(keras.layers.Layer):
    """Batch normalisation with statistics over each worker's n examples (R9).

    R9 (docs/paper.md) (Goyal et al. 2017, Sec. 5.1): "BN statistics are computed per
    worker and not across workers"; the loss being optimised depends on n, so n
    is held fixed (32) whatever the number of workers k. Under a
    `tf.distribute` strategy each replica normalises with the moments of its own
    per-replica batch; no collective communication happens in the forward pass.

    Ghost mode (`group_size=n`): in training, a batch of B = k*n examples is cut
    into k consecutive groups of n and each group is normalised with its own
    moments. One replica running this on the global batch computes exactly what
    k replicas of plain per-worker BN compute (see tests/test_equivalence.py),
    which makes simulating hundreds of workers cheap.

    Training output: y = gamma * (x - mu_g) / sqrt(var_g + eps) + beta, with
    mu_g, var_g the (biased) moments over the group's examples and spatial axes.
    Moving statistics: m <- momentum * m + (1 - momentum) * mean over groups of
    mu_g (likewise for the variance); reading them averages over replicas.

    Args:
        momentum: Moving-average momentum (0.9 as in the paper's Caffe2 code).
        epsilon: Variance epsilon (1e-5).
        gamma_initializer: Initializer of the scale (zeros for R10).
        group_size: None for plain per-replica BN, or n for ghost batches.
        fused: in training, normalise NHWC batches with the fused kernel
            (ghost batches of a static size: one call per group); None (the
            default) for the kernel chosen by the enclosing `built_for_xla`
            (fused unless compiled with XLA). The fused kernel takes
            bfloat16 batches without a float32 copy.
    """

    def __init__(self, momentum=0.9, epsilon=1e-5, gamma_initializer="ones",
                 group_size=None, fused=None, **kwargs):
        super().__init__(**kwargs)
        if group_size is not None and group_size <= 0:
            raise ValueError(f"group_size must be positive, got {group_size}")
        self.momentum = momentum
        self.epsilon = epsilon
        self.gamma_initializer = keras.initializers.get(gamma_initializer)
        self.group_size = group_size
        self.fused = not _xla_build[-1] if fused is None else bool(fused)

    def build(self, input_shape):
        shape = (input_shape[-1],)
        self.gamma = self.add_weight(shape=shape, name="gamma",
                                     initializer=self.gamma_initializer,
                                     autocast=False)
        self.beta = self.add_weight(shape=shape, name="beta",
                                    initializer="zeros", autocast=False)
        self.moving_mean = self._moving_statistic(shape, "moving_mean", "zeros")
        self.moving_variance = self._moving_statistic(shape, "moving_variance",
                                                      "ones")

    def _moving_statistic(self, shape, name, initializer):
        with keras.name_scope(self.name, caller=self):
            variable = keras.Variable(
                initializer=keras.initializers.get(initializer), shape=shape,
                dtype="float32", trainable=False, autocast=False, name=name,
                aggregation="mean", synchronization="on_read")
        self._track_variable(variable)
        return variable

    def _moments(self, x):
        """Moments per group of `group_size` examples, shape [groups, C]."""
        channels = x.shape[-1]
        group = self.group_size or tf.shape(x)[0]
        grouped = tf.reshape(x, [-1, group * tf.reduce_prod(tf.shape(x)[1:-1]),
                                 channels])
        return tf.nn.moments(grouped, axes=[1], keepdims=True)

    def _normalise_groups(self, x, mean, variance):
        shape = tf.shape(x)
        grouped = tf.reshape(x, [tf.shape(mean)[0], -1, x.shape[-1]])
        out = tf.nn.batch_normalization(grouped, mean, variance, self.beta,
                                        self.gamma, self.epsilon)
        return tf.reshape(out, shape)

    def _fused(self, x):
        """Per-replica BN of an NHWC batch in one fused kernel (training).

        `FusedBatchNormV3` normalises with the biased batch variance but
        returns it with Bessel's correction m / (m - 1), m the examples x
        pixels per channel; it is undone here, so the moving statistics are
        the same as the unfused path's. One kernel forward and one backward
        instead of a dozen elementwise passes over the activations (oneDNN's
        on a CPU, cuDNN's on a GPU).
        """
        out, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            x, self.gamma, self.beta, epsilon=self.epsilon,
            data_format="NHWC", is_training=True)
        count = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float32)
        return out, mean, variance * (count - 1.0) / count

    def _fused_groups(self, x, groups):
        """Ghost BN by the fused kernel, one call per group of n examples.

        Splitting along the batch shares the input's memory (TensorFlow's
        Split on the first axis makes no copy), so the cost over one fused
        call is the concatenation of the outputs. The moments returned are
        the means over the groups, as the unfused path keeps them.
        """
        outs, means, variances = [], [], []
        for part in tf.split(x, groups, axis=0):
            out, mean, variance = self._fused(part)
            outs.append(out)
            means.append(mean)
            variances.append(variance)
        return (tf.concat(outs, axis=0), tf.add_n(means) / groups,
                tf.add_n(variances) / groups)

    def _static_groups(self, inputs):
        """Groups of `group_size` in the batch if its size is static (1
        without ghost batches); None for a dynamic batch.

        Raises:
            ValueError: for a static batch that is not whole groups.
        """
        if self.group_size is None:
            return 1
        batch = inputs.shape[0]
        if batch is None:
            return None
        if batch % self.group_size:
            raise ValueError(
                f"{self.name}: a batch of {batch} examples is not a whole "
                f"number of ghost-batch groups of group_size = "
                f"{self.group_size}")
        return batch // self.group_size

    def call(self, inputs, training=None):
        groups = self._static_groups(inputs) if training else None
        if training and self.fused and groups and inputs.shape.rank == 4:
            # bfloat16 batches go in as they are: the kernel computes in
            # float32 inside and returns float32 moments; the numbers are
            # those of a float32 copy to bfloat16's rounding, without two
            # casts over the activations each way (tests/test_models.py).
            x = (inputs if inputs.dtype == tf.bfloat16
                 else tf.cast(inputs, tf.float32))
            out, mean, variance = (self._fused(x) if groups == 1
                                   else self._fused_groups(x, groups))
            self._update_moving(self.moving_mean, mean)
            self._update_moving(self.moving_variance, variance)
            return tf.cast(out, self.compute_dtype)
        x = tf.cast(inputs, tf.float32)
        if training:
            mean, variance = self._moments(x)
            self._update_moving(self.moving_mean, tf.reduce_mean(mean, [0, 1]))
            self._update_moving(self.moving_variance,
                                tf.reduce_mean(variance, [0, 1]))
            out = self._normalise_groups(x, mean, variance)
        else:
            out = tf.nn.batch_normalization(
                x, self.moving_mean.value, self.moving_variance.value,
                self.beta, self.gamma, self.epsilon)
        return tf.cast(out, self.compute_dtype)

    def _update_moving(self, variable, value):
        variable.assign(variable * self.momentum + value * (1.0 - self.momentum))

    def get_config(self):
        """Returns the constructor arguments (Keras-registered as
        ``tf_lbsgd>WorkerBatchNorm``: saved models load without
        ``custom_objects``)."""
        config = super().get_config()
        config.update(momentum=self.momentum, epsilon=self.epsilon,
                      gamma_initializer=keras.initializers.serialize(
                          self.gamma_initializer),
                      group_size=self.group_size, fused=self.fused)
        return config


@contextlib.contextmanager
def built_for_xla(jit_compile):
    """Builds the `WorkerBatchNorm(fused=None)` layers created inside for a
    training step compiled with XLA (`jit_compile`) or not.

    Without XLA the fused kernel is faster; with XLA the unfused ops are,
    since XLA fuses them with their neighbours (README, "Performance").
    """
    _xla_build.append(bool(jit_compile))
    try:
        yield
    finally:
        _xla_build.pop()


_xla_build = [False]  # The innermost `built_for_xla` setting last.


class ReplicaStatistics:
    """Keeps the replicas' BN moving statistics one model between loops.

    Each replica updates its own copy of a `WorkerBatchNorm`'s moving mean
    and variance from its own n examples (R9), and a checkpoint saves their
    average (SyncOnRead, MEAN). `sync()`, called before each training loop
    and each evaluation, replaces every copy by that average, computed as
    the checkpoint computes it, unless the copies are alike already (a fresh
    or just restored model, or no training since the last sync). So:

    - an evaluation scores exactly the model a checkpoint of this step holds
      (and `--mode=eval` scores), not k per-replica variants of it;
    - a run resumed from any loop boundary continues with the same moving
      statistics as the uninterrupted run, bit for bit.

    Training is unchanged: the moving statistics are only used for
    inference. Every worker must call `sync()` at the same points (reading
    the average is a collective across workers).

    Args:
        model: a Keras model, built under the strategy's scope.
    """

    def __init__(self, model):
        self._variables = [
            statistic.value  # The distributed variable under Keras' wrapper.
            for layer in model._flatten_layers()  # pylint: disable=protected-access
            if isinstance(layer, WorkerBatchNorm)
            for statistic in (layer.moving_mean, layer.moving_variance)]
        self._alike = True  # A fresh or restored model: every copy alike.

    def trained(self):
        """Notes that training has updated the copies apart."""
        self._alike = False

    def sync(self):
        """Gives every copy the average a checkpoint saves (if they differ).

        Returns:
            Whether the copies were synchronised now.
        """
        if self._alike:
            return False
        for variable in self._variables:
            variable.assign(variable.read_value())
        self._alike = True
        return True



class SyncReplicaStatistics(keras.callbacks.Callback):
    """`ReplicaStatistics` for `model.fit`: one model after training.

    Under a strategy of k replicas, `model.fit` leaves each replica's copy of
    the `WorkerBatchNorm` moving statistics (R9) its own; `model.predict` and
    `model.evaluate` would then score each part of a batch with another
    copy, unlike the saved model (which holds their average). This callback
    gives every copy that average before each validation pass and at the end
    of training, as the project's own loop does (`ReplicaStatistics`):

        model.fit(..., callbacks=[tf_lbsgd.SyncReplicaStatistics()])
    """

    def on_train_begin(self, logs=None):
        self._statistics = ReplicaStatistics(self.model)

    def _sync(self):
        self._statistics.trained()
        self._statistics.sync()

    def on_test_begin(self, logs=None):
        if getattr(self, "_statistics", None) is not None:
            self._sync()

    def on_train_end(self, logs=None):
        self._sync()
        self._statistics = None
