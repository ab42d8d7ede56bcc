"""ImageNet ResNets v1.5 (He et al. 2016, stride on the 3x3 conv; R15).

The paper's model (R15, docs/paper.md): ResNet-50 with bottleneck blocks, the
downsampling stride on the 3x3 conv of the first block of stages 2-4 ("v1.5",
as in torchvision and the paper's Caffe2 code), 25,557,032 parameters and
4.09 G multiply-adds per 224x224 image. The stem and the strided 3x3 convs use
torchvision's explicit zero padding, so the feature maps are 56, 28, 14 and 7
pixels wide at 224x224 input and the layer arithmetic matches torchvision's.
The model carries the paper's per-worker BN, zero-gamma and init (R9-R11).
"""

import gin
import keras

from tf_lbsgd.models import conv
from tf_lbsgd.models import init
from tf_lbsgd.models import resnet_spec
from tf_lbsgd.models.layers import WorkerBatchNorm


def _conv(x, filters, kernel_size, strides, name):
    """Bias-free He-initialised conv with torchvision's padding (R11).

    Stride 1 uses 'same' padding (symmetric for odd kernels); a stride > 1
    pads kernel_size // 2 zeros on every side explicitly, as torchvision does,
    instead of TensorFlow's asymmetric 'same' padding.
    """
    padding = "same"
    if strides > 1 and kernel_size > 1:
        x = keras.layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad")(x)
        padding = "valid"
    return conv.Conv2D(
        filters, kernel_size, strides=strides, padding=padding,
        use_bias=False, kernel_initializer=init.he_conv_initializer(),
        name=name)(x)


def _bn(x, name, group_size, gamma="ones"):
    """Per-worker BN with the paper's momentum 0.9 and epsilon 1e-5 (R9)."""
    return WorkerBatchNorm(momentum=0.9, epsilon=1e-5, gamma_initializer=gamma,
                           group_size=group_size, name=name)(x)


def _conv_bn_relu(x, filters, kernel_size, strides, name, group_size):
    x = _conv(x, filters, kernel_size, strides, f"{name}_conv")
    x = _bn(x, f"{name}_bn", group_size)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def stem(x, group_size):
    """7x7/2 conv + BN + ReLU + 3x3/2 max pool: 224 -> 56 pixels.

    The max pool pads one zero on every side (torchvision pads -inf; both are
    the same after a ReLU, whose outputs are >= 0).
    """
    x = _conv_bn_relu(x, resnet_spec.STEM_WIDTH, 7, 2, "stem", group_size)
    x = keras.layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
    return keras.layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)


def bottleneck_block(x, width, strides, name, zero_gamma, group_size):
    """1x1 -> 3x3 (strided, v1.5) -> 1x1 bottleneck with a residual add.

    Args:
        x: Input tensor (N, H, W, C).
        width: Bottleneck width; the block outputs EXPANSION * width channels
            (`resnet_spec.EXPANSION`).
        strides: Stride of the 3x3 conv and of the projection shortcut.
        name: Layer name prefix, e.g. "s2b1".
        zero_gamma: R10 zero init of the gamma of the block's last BN.
        group_size: None for per-replica BN; n for ghost-batch BN (R9).

    Returns:
        The block's output tensor.
    """
    filters = resnet_spec.EXPANSION * width
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _conv(x, filters, 1, strides, f"{name}_proj")
        shortcut = _bn(shortcut, f"{name}_proj_bn", group_size)
    y = _conv(x, width, 1, 1, f"{name}_conv1")
    y = keras.layers.ReLU(name=f"{name}_relu1")(
        _bn(y, f"{name}_bn1", group_size))
    y = _conv(y, width, 3, strides, f"{name}_conv2")
    y = keras.layers.ReLU(name=f"{name}_relu2")(
        _bn(y, f"{name}_bn2", group_size))
    y = _conv(y, filters, 1, 1, f"{name}_conv3")
    y = _bn(y, f"{name}_bn3", group_size,
            init.residual_gamma_initializer(zero_gamma))
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.ReLU(name=f"{name}_out")(y)


@gin.configurable
def resnet_imagenet(input_shape=(224, 224, 3), num_classes=1000, depth=50,
                    zero_gamma=True, bn_group_size=None):
    """Builds an ImageNet ResNet-`depth` v1.5 (R15).

    Layer names: "stem_conv", "stem_bn", "stem_pool", then for stage s in 1-4
    and block b "s{s}b{b}_conv1/2/3", "s{s}b{b}_bn1/2/3", "s{s}b{b}_proj",
    "s{s}b{b}_proj_bn" (first block only) and "s{s}b{b}_out" (block output),
    then "avg_pool" and "classifier".

    Args:
        input_shape: Image shape (H, W, C).
        num_classes: Number of classes.
        depth: 50, 101 or 152.
        zero_gamma: R10 zero init of each block's last BN gamma.
        bn_group_size: None for per-replica BN; n for ghost-batch BN (R9).

    Returns:
        A `keras.Model` mapping images to float32 logits (whatever the global
        Keras dtype policy; the classifier runs in float32).

    Raises:
        ValueError: if depth is not 50, 101 or 152.
    """
    blocks_per_stage = resnet_spec.blocks_per_stage(depth)
    inputs = keras.Input(input_shape)
    x = stem(inputs, bn_group_size)
    for stage, (width, blocks, stride) in enumerate(zip(
            resnet_spec.STAGE_WIDTHS, blocks_per_stage,
            resnet_spec.STAGE_STRIDES)):
        for block in range(blocks):
            strides = stride if block == 0 else 1
            x = bottleneck_block(x, width, strides,
                                 f"s{stage + 1}b{block + 1}", zero_gamma,
                                 bn_group_size)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    logits = keras.layers.Dense(
        num_classes, kernel_initializer=init.classifier_initializer(),
        bias_initializer="zeros", dtype="float32", name="classifier")(x)
    return keras.Model(inputs, logits, name=f"resnet{depth}_v1_5")
