"""`models.conv.Conv2D`: 1x1 convolutions differentiated as matmuls."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_lbsgd import precision
from tf_lbsgd.models import conv
from tf_lbsgd.models import resnet_imagenet


def _gradients(layer, x):
    """(output, d loss / d input, d loss / d kernel) for a fixed loss."""
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * _upstream(y.shape))
    dx, dw = tape.gradient(loss, [x, layer.kernel])
    return (np.asarray(y, np.float64), np.asarray(dx, np.float64),
            np.asarray(dw, np.float64))


def _upstream(shape):
    """A fixed upstream gradient dL/dy of `shape`."""
    return tf.constant(np.random.default_rng(1).normal(size=shape), tf.float32)


def _numpy_pointwise(x, kernel, dy):
    """y, dx, dw of y = x @ kernel over the channels, in float64."""
    matrix = kernel[0, 0]
    return (np.einsum("nhwc,co->nhwo", x, matrix),
            np.einsum("nhwo,co->nhwc", dy, matrix),
            np.einsum("nhwc,nhwo->co", x, dy)[None, None])


@pytest.mark.parametrize("matmul_gradients", [True, False])
def test_pointwise_gradients_match_numpy_in_float32(matmul_gradients):
    x = np.random.default_rng(0).normal(size=(3, 5, 4, 6)).astype("f4")
    layer = conv.Conv2D(7, 1, use_bias=False,
                        matmul_gradients=matmul_gradients)
    layer.build(x.shape)
    assert layer.takes_matmul_gradients() is matmul_gradients
    y, dx, dw = _gradients(layer, x)
    dy = _upstream(y.shape).numpy().astype("f8")
    for got, want in zip((y, dx, dw), _numpy_pointwise(
            x.astype("f8"), layer.kernel.numpy().astype("f8"), dy)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_bfloat16_takes_matmul_gradients_that_match_the_convolutions():
    """Under mixed_bfloat16 a 1x1 layer takes the matmuls by default; its
    gradients agree with numpy and with Keras' own Conv2D to bfloat16's
    rounding (8 bits of mantissa)."""
    x = np.random.default_rng(0).normal(size=(4, 6, 6, 16)).astype("f4")
    with precision.dtype_policy("mixed_bfloat16"):
        ours = conv.Conv2D(32, 1, use_bias=False)
        keras_conv = keras.layers.Conv2D(32, 1, use_bias=False)
    ours.build(x.shape)
    keras_conv.build(x.shape)
    keras_conv.kernel.assign(ours.kernel)
    assert ours.takes_matmul_gradients()
    got, want = _gradients(ours, x), _gradients(keras_conv, x)
    kernel = ours.kernel.numpy().astype("f8")
    exact = _numpy_pointwise(x.astype("f8"), kernel,
                             _upstream(got[0].shape).numpy().astype("f8"))
    for ours_value, keras_value, numpy_value in zip(got, want, exact):
        scale = np.abs(numpy_value).max()
        assert np.abs(ours_value - numpy_value).max() < 0.02 * scale
        assert np.abs(ours_value - keras_value).max() < 0.02 * scale


@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=3), dict(kernel_size=1, strides=2),
    dict(kernel_size=1, dilation_rate=2), dict(kernel_size=1, groups=2)])
def test_other_convolutions_keep_keras_gradients(kwargs):
    with precision.dtype_policy("mixed_bfloat16"):
        layer = conv.Conv2D(4, matmul_gradients=True, **kwargs)
    layer.build((2, 8, 8, 4))
    assert not layer.takes_matmul_gradients()


def test_float32_keeps_the_convolution_by_default():
    layer = conv.Conv2D(4, 1)
    layer.build((2, 8, 8, 4))
    assert not layer.takes_matmul_gradients()


def test_config_round_trip():
    layer = conv.Conv2D(5, 1, matmul_gradients=False, name="c")
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, conv.Conv2D)
    assert restored.matmul_gradients is False
    assert restored.filters == 5


def test_resnet50_takes_matmuls_for_its_33_stride_1_pointwise_convs():
    """Each of the 16 bottlenecks' 1x1 conv1 and conv3, and the first
    block's stride-1 projection."""
    with precision.dtype_policy("mixed_bfloat16"):
        model = resnet_imagenet.resnet_imagenet(input_shape=(32, 32, 3),
                                                num_classes=10)
    takes = [layer.name for layer in model.layers
             if isinstance(layer, conv.Conv2D)
             and layer.takes_matmul_gradients()]
    assert len(takes) == 33
    assert "s1b1_proj" in takes and "s2b1_proj" not in takes
