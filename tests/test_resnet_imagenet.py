"""R15 ImageNet ResNet v1.5: size, compute, strides, R10 gamma, R11 init."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_lbsgd.models import flops
from tf_lbsgd.models.layers import WorkerBatchNorm
from tf_lbsgd.models.resnet_imagenet import resnet_imagenet

RESNET50_BLOCKS = (3, 4, 6, 3)
WIDTHS = (64, 128, 256, 512)


@pytest.fixture(scope="module")
def model50():
    return resnet_imagenet()


@pytest.fixture
def mixed_float16_policy():
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


def _closed_form_parameters(blocks_per_stage, num_classes=1000):
    """Trainable parameters from the architecture table, by hand."""
    total = 7 * 7 * 3 * 64 + 2 * 64  # stem conv + BN
    in_channels = 64
    for width, blocks in zip(WIDTHS, blocks_per_stage):
        out_channels = 4 * width
        for block in range(blocks):
            total += in_channels * width + 2 * width  # 1x1 conv + BN
            total += 9 * width * width + 2 * width  # 3x3 conv + BN
            total += width * out_channels + 2 * out_channels  # 1x1 + BN
            if block == 0:
                total += in_channels * out_channels + 2 * out_channels
            in_channels = out_channels
    return total + in_channels * num_classes + num_classes


def _closed_form_multiply_adds(blocks_per_stage, num_classes=1000):
    """Conv + FC multiply-adds at 224x224 from the architecture table."""
    total = 112 * 112 * 7 * 7 * 3 * 64  # stem conv; max pool -> 56
    size, in_channels = 56, 64
    for stage, (width, blocks) in enumerate(zip(WIDTHS, blocks_per_stage)):
        out_channels = 4 * width
        for block in range(blocks):
            out_size = size // 2 if stage > 0 and block == 0 else size
            total += size * size * in_channels * width  # 1x1, before stride
            total += out_size * out_size * 9 * width * width  # strided 3x3
            total += out_size * out_size * width * out_channels
            if block == 0:
                total += out_size * out_size * in_channels * out_channels
            size, in_channels = out_size, out_channels
    return total + in_channels * num_classes


def _gammas(model, name_filter):
    return {layer.name: layer.gamma.numpy() for layer in model.layers
            if isinstance(layer, WorkerBatchNorm) and name_filter(layer.name)}


def _is_last_bn(name):
    return name.endswith("_bn3")


def test_resnet50_parameter_count(model50):
    assert flops.parameter_count(model50) == 25_557_032
    assert _closed_form_parameters(RESNET50_BLOCKS) == 25_557_032


def test_resnet50_multiply_adds_at_224(model50):
    macs = flops.multiply_adds(model50)
    assert macs == pytest.approx(4.09e9, rel=0.01)
    assert macs == _closed_form_multiply_adds(RESNET50_BLOCKS)


def test_resnet50_stage_shapes(model50):
    last_blocks = [f"s{s + 1}b{b}_out" for s, b in enumerate(RESNET50_BLOCKS)]
    shapes = [tuple(model50.get_layer(n).output.shape) for n in last_blocks]
    assert shapes == [(None, 56, 56, 256), (None, 28, 28, 512),
                      (None, 14, 14, 1024), (None, 7, 7, 2048)]
    assert tuple(model50.get_layer("avg_pool").output.shape) == (None, 2048)
    assert tuple(model50.output.shape) == (None, 1000)


def test_resnet101_parameter_count():
    # The built model's count is asserted by tests/test_gin_configs.py
    # (the resnet101 experiment), which builds it anyway.
    assert _closed_form_parameters((3, 4, 23, 3)) == 44_549_160


def test_unsupported_depth_is_named():
    with pytest.raises(ValueError, match="34"):
        resnet_imagenet(depth=34)


def test_v1_5_stride_is_on_the_3x3_conv(model50):
    assert model50.get_layer("s2b1_conv2").strides == (2, 2)
    assert model50.get_layer("s2b1_conv2").kernel_size == (3, 3)
    assert model50.get_layer("s2b1_conv1").strides == (1, 1)
    assert model50.get_layer("s2b1_conv3").strides == (1, 1)
    assert model50.get_layer("s2b1_proj").strides == (2, 2)
    assert model50.get_layer("stem_conv").strides == (2, 2)
    assert all(not layer.use_bias for layer in model50.layers
               if isinstance(layer, keras.layers.Conv2D))


def test_zero_gamma_on_the_last_bn_of_each_block(model50):
    last = _gammas(model50, _is_last_bn)
    others = _gammas(model50, lambda name: not _is_last_bn(name))
    assert len(last) == sum(RESNET50_BLOCKS) == 16
    assert all(np.all(g == 0.0) for g in last.values())
    assert others and all(np.all(g == 1.0) for g in others.values())


def test_zero_gamma_false_keeps_all_gammas_at_one():
    model = resnet_imagenet(input_shape=(32, 32, 3), num_classes=10,
                     zero_gamma=False)
    gammas = _gammas(model, lambda name: True)
    assert len(gammas) == 1 + 3 * 16 + 4
    assert all(np.all(g == 1.0) for g in gammas.values())


def test_bn_uses_paper_momentum_and_epsilon(model50):
    bn = model50.get_layer("s3b2_bn1")
    assert (bn.momentum, bn.epsilon) == (0.9, 1e-5)


def test_he_and_classifier_init(model50):
    classifier = model50.get_layer("classifier")
    assert classifier.kernel.numpy().std() == pytest.approx(0.01, rel=0.02)
    assert np.all(classifier.bias.numpy() == 0.0)
    for name in ("stem_conv", "s4b2_conv2"):
        kernel = model50.get_layer(name).kernel.numpy()
        kh, kw, _, out_channels = kernel.shape
        expected = np.sqrt(2.0 / (kh * kw * out_channels))
        assert kernel.std() == pytest.approx(expected, rel=0.03), name
        assert abs(kernel.mean()) < 0.05 * expected, name


def test_mixed_float16_keeps_float32_logits_and_variables(
        mixed_float16_policy):
    model = resnet_imagenet(input_shape=(32, 32, 3), num_classes=10)
    assert model.get_layer("s1b1_conv1").compute_dtype == "float16"
    assert model.output.dtype == "float32"
    assert all(v.dtype == "float32" for v in model.variables)
    logits = model(tf.zeros([1, 32, 32, 3]), training=False)
    assert logits.dtype == tf.float32


def test_tiny_forward_backward_is_finite():
    model = resnet_imagenet(input_shape=(64, 64, 3), num_classes=10)
    images = tf.random.stateless_normal([2, 64, 64, 3], seed=[1, 2])
    labels = tf.constant([3, 7])
    with tf.GradientTape() as tape:
        logits = model(images, training=True)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels, logits))
    grads = tape.gradient(loss, model.trainable_variables)
    assert logits.shape == (2, 10)
    assert np.isfinite(loss.numpy())
    assert all(g is not None and np.all(np.isfinite(g.numpy()))
               for g in grads)
    # Zero gamma (R10): every block starts as the identity, but the
    # classifier and the last BN gammas still get a gradient.
    assert np.any(grads[-2].numpy() != 0.0)
