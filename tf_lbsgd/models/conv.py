"""A Conv2D whose 1x1 gradients are matrix products in bfloat16 (issue 19).

A 1x1, stride-1 convolution of an NHWC batch is a matrix product:
y[NHW, O] = x[NHW, C] @ w[C, O], so its gradients are two more,
dx = dy @ w^T and dw = x^T @ dy. TensorFlow computes them with its
convolution kernels instead (oneDNN's on a CPU). On a CPU with AMX those
run the bfloat16 weight gradient (`Conv2DBackpropFilter`) at 150-380
GFLOP/s, while the same product as a matmul runs at 600-1,170 (measured on
2 cores of an Intel Xeon with AMX, 2026-12-03, ResNet-50's 1x1 shapes at
batch 16; README "Precision"). In float32 the two are level, so the layer
takes the matmuls only when it computes in bfloat16 (or when told to).

The forward pass, the variables, their names and the saved model are
`keras.layers.Conv2D`'s: checkpoints and exports of either layer are the
same. Gradients are the same products, summed in another order: they agree
with the convolution's to bfloat16 rounding (tests/test_conv.py).
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tf_lbsgd")
class Conv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` with matmul gradients for 1x1 kernels.

    Args:
        matmul_gradients: None (the default) to take them when the layer
            computes in bfloat16; True or False to always or never take
            them. Only 1x1, stride-1, undilated, ungrouped convolutions of
            channels-last batches have them; the others are unchanged.
        **kwargs: `keras.layers.Conv2D`'s arguments.
    """

    def __init__(self, *args, matmul_gradients=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.matmul_gradients = matmul_gradients

    def _is_pointwise(self):
        return (tuple(self.kernel_size) == (1, 1)
                and tuple(self.strides) == (1, 1)
                and tuple(self.dilation_rate) == (1, 1)
                and self.groups == 1
                and self.data_format == "channels_last")

    def takes_matmul_gradients(self):
        """Whether this layer's gradients are matmuls (see the class)."""
        if not self._is_pointwise():
            return False
        if self.matmul_gradients is None:
            return self.compute_dtype == "bfloat16"
        return bool(self.matmul_gradients)

    def convolution_op(self, inputs, kernel):
        if not self.takes_matmul_gradients():
            return super().convolution_op(inputs, kernel)
        # The kernel's value (a float32 variable is read, a mixed one cast):
        # the custom gradient is a function of tensors.
        return pointwise_conv(inputs, tf.convert_to_tensor(kernel))

    def get_config(self):
        config = super().get_config()
        config["matmul_gradients"] = self.matmul_gradients
        return config


@tf.custom_gradient
def pointwise_conv(x, kernel):
    """A 1x1, stride-1 convolution of NHWC `x` by `kernel` [1, 1, C, O],
    differentiated as matrix products (see the module)."""
    channels, filters = kernel.shape[-2], kernel.shape[-1]
    matrix = tf.reshape(kernel, [channels, filters])
    y = tf.nn.conv2d(x, kernel, strides=1, padding="VALID")

    def gradient(dy):
        rows_dy = tf.reshape(dy, [-1, filters])
        dx = tf.reshape(tf.matmul(rows_dy, matrix, transpose_b=True),
                        tf.shape(x))
        dw = tf.matmul(tf.reshape(x, [-1, channels]), rows_dy,
                       transpose_a=True)
        return dx, tf.reshape(dw, tf.shape(kernel))
    return y, gradient
