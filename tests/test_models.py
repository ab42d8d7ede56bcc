"""R9 per-worker BN, R10 zero-gamma, R11 init; the CIFAR-style ResNet."""

import re

import numpy as np
import pytest
import tensorflow as tf

from tf_lbsgd import distribute
from tf_lbsgd import precision

from tf_lbsgd.models import layers
from tf_lbsgd.models.resnet_cifar import resnet_cifar


def _numpy_bn(x, eps=1e-5):
    axes = tuple(range(x.ndim - 1))
    mean, var = x.mean(axes), x.var(axes)
    return (x - mean) / np.sqrt(var + eps), mean, var


@pytest.mark.parametrize("fused", [True, False])
def test_batch_norm_training_matches_numpy(fused):
    x = np.random.default_rng(0).normal(2.0, 3.0, (8, 4, 4, 3)).astype("f4")
    bn = layers.WorkerBatchNorm(momentum=0.9, fused=fused)
    out = bn(x, training=True).numpy()
    expected, mean, var = _numpy_bn(x.astype("f8"))
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.1 * mean, rtol=1e-4)
    np.testing.assert_allclose(bn.moving_variance.numpy(), 0.9 + 0.1 * var,
                               rtol=1e-4)


@pytest.mark.parametrize("shape", [(8, 4, 4, 3), (2, 1, 1, 5), (1, 1, 1, 2)])
def test_fused_kernel_gives_the_unfused_gradients(shape):
    """The fused kernel (with its Bessel correction undone) against the
    unfused ops: outputs, moving statistics and all gradients."""
    x = tf.constant(np.random.default_rng(2).normal(1.0, 2.0, shape), tf.float32)
    results = []
    for fused in (True, False):
        bn = layers.WorkerBatchNorm(momentum=0.5, fused=fused,
                                    gamma_initializer="random_normal")
        bn.build(shape)
        bn.gamma.assign(np.linspace(0.5, 2.0, shape[-1]).astype("f4"))
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = bn(x, training=True)
            loss = tf.reduce_sum(out ** 3 + out)
        grads = tape.gradient(loss, [x, bn.gamma, bn.beta])
        results.append([out, bn.moving_mean, bn.moving_variance, *grads])
    for fused_value, plain_value in zip(*results):
        np.testing.assert_allclose(np.asarray(fused_value),
                                   np.asarray(plain_value),
                                   rtol=2e-5, atol=2e-4)


def test_fused_kernel_takes_bfloat16_batches_as_a_float32_copy_would():
    """A bfloat16 batch goes into the fused kernel without a float32 copy:
    output, moving statistics and gradients are those of the kernel on the
    float32 copy (the layer's path before) to bfloat16's rounding (2 units
    of its last place), and near numpy's."""
    shape = (8, 6, 6, 4)
    x = tf.cast(np.random.default_rng(3).normal(1.0, 2.0, shape), tf.bfloat16)
    gamma = np.linspace(0.5, 2.0, shape[-1]).astype("f4")
    with precision.dtype_policy("mixed_bfloat16"):
        bn = layers.WorkerBatchNorm(momentum=0.5, fused=True)
    bn.build(shape)
    bn.gamma.assign(gamma)

    def run(normalise):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = normalise(x)
            loss = tf.reduce_sum(tf.cast(out, tf.float32) ** 2)
        return [out, *tape.gradient(loss, [x, bn.gamma, bn.beta])]

    ours = run(lambda batch: bn(batch, training=True))
    statistics = [bn.moving_mean.numpy(), bn.moving_variance.numpy()]

    def float32_copy(batch):
        out, mean, variance = bn._fused(tf.cast(batch, tf.float32))  # pylint: disable=protected-access
        statistics.extend([0.5 * mean.numpy(), 0.5 + 0.5 * variance.numpy()])
        return tf.cast(out, tf.bfloat16)

    reference = run(float32_copy)
    assert ours[0].dtype == tf.bfloat16
    for got, want in zip(ours, reference):
        got, want = (np.asarray(tf.cast(value, tf.float32))
                     for value in (got, want))
        np.testing.assert_allclose(got, want, rtol=2 ** -7,
                                   atol=2 ** -7 * np.abs(want).max())
    np.testing.assert_allclose(statistics[:2], statistics[2:], rtol=1e-6)
    expected, mean, _ = _numpy_bn(np.asarray(tf.cast(x, tf.float64)))
    np.testing.assert_allclose(
        np.asarray(tf.cast(ours[0], tf.float32)), gamma * expected,
        rtol=0.02, atol=0.02)
    np.testing.assert_allclose(statistics[0], 0.5 * mean, rtol=1e-5)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_built_for_xla_picks_every_batch_norm_kernel(jit_compile):
    """Unfused ops under XLA, the fused kernel without; an explicit `fused`
    wins, and the setting ends with its block."""
    with layers.built_for_xla(jit_compile):
        model = resnet_cifar(input_shape=(8, 8, 1), depth=8, width=4)
        explicit = layers.WorkerBatchNorm(fused=jit_compile)
    norms = [layer for layer in model.layers
             if isinstance(layer, layers.WorkerBatchNorm)]
    assert len(norms) == 9
    assert [layer.fused for layer in norms] == [not jit_compile] * 9
    assert explicit.fused is jit_compile
    assert layers.WorkerBatchNorm().fused is True


@pytest.mark.parametrize("bn_fused", [False, True])
def test_resnet_bn_fused_overrides_the_xla_choice(bn_fused):
    with layers.built_for_xla(not bn_fused):
        model = resnet_cifar(input_shape=(8, 8, 1), depth=8, width=4,
                             bn_fused=bn_fused)
    assert {layer.fused for layer in model.layers
            if isinstance(layer, layers.WorkerBatchNorm)} == {bn_fused}


def test_ghost_batch_norm_normalises_each_group_of_n():
    x = np.random.default_rng(1).normal(0, 1, (12, 3, 3, 2)).astype("f4")
    x[4:8] += 5.0
    bn = layers.WorkerBatchNorm(group_size=4)
    out = bn(x, training=True).numpy()
    groups = [_numpy_bn(g.astype("f8")) for g in np.split(x, 3)]
    np.testing.assert_allclose(out, np.concatenate([g[0] for g in groups]),
                               rtol=1e-4, atol=1e-4)
    mean_of_means = np.mean([g[1] for g in groups], axis=0)
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.1 * mean_of_means,
                               rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fused_ghost_batches_give_the_unfused_numbers(dtype):
    """Ghost BN by the fused kernel per group (a static batch) against the
    unfused ops over the same groups: outputs, moving statistics and all
    gradients (bfloat16: to its rounding)."""
    shape, group = (12, 3, 3, 4), 4
    x = tf.cast(np.random.default_rng(4).normal(1.0, 2.0, shape)
                + np.repeat([0.0, 5.0, -3.0], group)[:, None, None, None],
                dtype)
    results = []
    for fused in (True, False):
        with precision.dtype_policy("mixed_bfloat16" if dtype == "bfloat16"
                                    else "float32"):
            bn = layers.WorkerBatchNorm(momentum=0.5, fused=fused,
                                        group_size=group)
        bn.build(shape)
        bn.gamma.assign(np.linspace(0.5, 2.0, shape[-1]).astype("f4"))
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = bn(x, training=True)
            loss = tf.reduce_sum(tf.cast(out, tf.float32) ** 3)
        grads = tape.gradient(loss, [x, bn.gamma, bn.beta])
        results.append([tf.cast(value, tf.float32) for value in
                        [out, bn.moving_mean, bn.moving_variance, *grads]])
    tolerance = 2 ** -6 if dtype == "bfloat16" else 2e-5
    for fused_value, plain_value in zip(*results):
        np.testing.assert_allclose(
            np.asarray(fused_value), np.asarray(plain_value), rtol=tolerance,
            atol=tolerance * np.abs(np.asarray(plain_value)).max())
    groups = [_numpy_bn(part) for part in
              np.split(np.asarray(tf.cast(x, tf.float64)), 3)]
    np.testing.assert_allclose(
        np.asarray(results[0][1]), 0.5 * np.mean([g[1] for g in groups], 0),
        rtol=1e-5, atol=1e-6)


def test_ghost_batch_that_is_not_whole_groups_is_refused():
    bn = layers.WorkerBatchNorm(group_size=4, name="s1b1_bn1")
    with pytest.raises(ValueError, match="s1b1_bn1: a batch of 6 examples is "
                       "not a whole number of ghost-batch groups of "
                       "group_size = 4"):
        bn(np.zeros((6, 2, 2, 3), "f4"), training=True)


def test_inference_uses_moving_statistics():
    bn = layers.WorkerBatchNorm()
    x = np.full((2, 3), 4.0, "f4")
    np.testing.assert_allclose(bn(x, training=False).numpy(),
                               x / np.sqrt(1 + 1e-5), rtol=1e-6)


def test_per_replica_statistics_are_not_synced_and_moving_stats_average():
    """R9: each replica normalises with its own moments (no cross-replica BN)."""
    k = 4
    strategy = distribute.logical_cpu_strategy(k)
    with strategy.scope():
        bn = layers.WorkerBatchNorm(momentum=0.0)
        bn.build((None, 2))
    x = np.random.default_rng(2).normal(0, 1, (16, 2)).astype("f4")
    x += np.repeat(np.arange(k), 4)[:, None].astype("f4") * 10
    dist = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices(x).batch(16))
    out = strategy.run(tf.function(lambda b: bn(b, training=True)),
                       args=(next(iter(dist)),))
    out = np.concatenate([o.numpy()
                          for o in strategy.experimental_local_results(out)])
    shards = np.split(x.astype("f8"), k)
    np.testing.assert_allclose(
        out, np.concatenate([_numpy_bn(s)[0] for s in shards]), atol=1e-3)
    np.testing.assert_allclose(bn.moving_mean.numpy(),
                               np.mean([s.mean(0) for s in shards], 0),
                               rtol=1e-4)


def test_bad_group_size():
    with pytest.raises(ValueError, match="group_size must be positive, got 0"):
        layers.WorkerBatchNorm(group_size=0)


def _bns(model):
    return [l for l in model.layers if isinstance(l, layers.WorkerBatchNorm)]


@pytest.mark.parametrize("zero_gamma", [True, False])
def test_zero_gamma_on_the_last_bn_of_each_block(zero_gamma):
    model = resnet_cifar(depth=14, width=8, zero_gamma=zero_gamma)
    last = [l for l in _bns(model) if l.name.endswith("_bn2")]
    assert len(last) == 6  # 3 stages x 2 blocks
    for bn in _bns(model):
        expected = 0.0 if (zero_gamma and bn in last) else 1.0
        np.testing.assert_array_equal(bn.gamma.numpy(), expected)


def test_he_init_and_classifier_init():
    model = resnet_cifar(depth=20, width=16)
    conv = model.get_layer("s3b1_conv2").kernel.numpy()  # 3x3x64x64
    fan_out = 3 * 3 * 64
    assert abs(conv.std() / np.sqrt(2.0 / fan_out) - 1) < 0.03
    assert abs(conv.mean()) < 0.01
    classifier = model.get_layer("classifier")
    dense = classifier.kernel.numpy()
    assert abs(dense.std() / 0.01 - 1) < 0.15
    np.testing.assert_array_equal(classifier.bias.numpy(), 0.0)


def _expected_params(depth, width, channels=1, classes=10):
    """Independent count: conv kernels, BN gamma+beta, projections, FC."""
    blocks = (depth - 2) // 6
    total = 9 * channels * width + 2 * width  # stem conv + BN
    cin = width
    for stage in range(3):
        c = width * 2 ** stage
        for block in range(blocks):
            total += 9 * cin * c + 9 * c * c + 4 * c
            if cin != c:
                total += cin * c + 2 * c
            cin = c
    return total + cin * classes + classes


@pytest.mark.parametrize("depth,width", [(8, 16), (20, 16), (14, 8)])
def test_parameter_count(depth, width):
    model = resnet_cifar(depth=depth, width=width)
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    assert trainable == _expected_params(depth, width)
    assert model(np.zeros((2, 28, 28, 1), "f4")).shape == (2, 10)


def test_depth_must_be_6n_plus_2():
    with pytest.raises(ValueError, match="resnet_cifar.depth must be 6n.2 .*"
                                         "got 10"):
        resnet_cifar(depth=10)


@pytest.mark.parametrize("argument,value,message", [
    ("width", "wide", "resnet_cifar.width must be a positive integer, got "
                      "'wide'"),
    ("width", 0, "resnet_cifar.width must be a positive integer, got 0"),
    ("depth", "20", "resnet_cifar.depth must be a positive integer, got "
                    "'20'"),
    ("zero_gamma", "yes", "resnet_cifar.zero_gamma must be True or False, "
                          "got 'yes'"),
    ("bn_group_size", 0, "resnet_cifar.bn_group_size must be a positive "
                         "integer, got 0"),
    ("stem_stride", 1.5, "resnet_cifar.stem_stride must be a positive "
                         "integer, got 1.5"),
    ("bn_fused", "no", "resnet_cifar.bn_fused must be None, True or False, "
                       "got 'no'"),
])
def test_bad_arguments_are_named(argument, value, message):
    arguments = dict(input_shape=(8, 8, 1), depth=8, width=4)
    arguments[argument] = value
    with pytest.raises(ValueError, match=re.escape(message)):
        resnet_cifar(**arguments)
