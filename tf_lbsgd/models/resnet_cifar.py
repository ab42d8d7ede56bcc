"""CIFAR-style ResNets (He et al. 2016, the 6n+2 family) for small images.

The embedded default model: three stages of `blocks_per_stage` basic blocks at
widths w, 2w, 4w, stride 2 on the first 3x3 conv of stages 2 and 3 with a 1x1
projection shortcut, global average pooling and a linear classifier. It carries
the paper's BN, init and zero-gamma choices (R9, R10, R11).
"""

import gin
import keras

from tf_lbsgd import checks
from tf_lbsgd.models import conv
from tf_lbsgd.models import init
from tf_lbsgd.models.layers import WorkerBatchNorm


def _conv(filters, kernel_size, strides, name):
    return conv.Conv2D(
        filters, kernel_size, strides=strides, padding="same", use_bias=False,
        kernel_initializer=init.he_conv_initializer(), name=name)


def _bn(name, group_size, gamma="ones", fused=None):
    return WorkerBatchNorm(gamma_initializer=gamma, group_size=group_size,
                           fused=fused, name=name)


def basic_block(x, filters, strides, name, zero_gamma, group_size,
                bn_fused=None):
    """Two 3x3 convs with BN; the last BN's gamma starts at zero (R10)."""
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _conv(filters, 1, strides, f"{name}_proj")(x)
        shortcut = _bn(f"{name}_proj_bn", group_size,
                       fused=bn_fused)(shortcut)
    y = _conv(filters, 3, strides, f"{name}_conv1")(x)
    y = keras.layers.ReLU()(_bn(f"{name}_bn1", group_size,
                                fused=bn_fused)(y))
    y = _conv(filters, 3, 1, f"{name}_conv2")(y)
    gamma = init.residual_gamma_initializer(zero_gamma)
    y = _bn(f"{name}_bn2", group_size, gamma, fused=bn_fused)(y)
    return keras.layers.ReLU()(keras.layers.Add()([shortcut, y]))


def _check_arguments(depth, width, zero_gamma, bn_group_size, stem_stride,
                     bn_fused=None):
    """Raises ValueError naming the first bad setting of `resnet_cifar`.

    The input shape and number of classes come from the data source.
    """
    checks.positive_int("resnet_cifar.depth", depth)
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"resnet_cifar.depth must be 6n+2 (8, 14, 20, ...), "
                         f"got {depth}")
    checks.positive_int("resnet_cifar.width", width)
    if not isinstance(zero_gamma, bool):
        raise ValueError(f"resnet_cifar.zero_gamma must be True or False, got "
                         f"{zero_gamma!r}")
    if bn_group_size is not None:
        checks.positive_int("resnet_cifar.bn_group_size", bn_group_size)
    checks.positive_int("resnet_cifar.stem_stride", stem_stride)
    if not (bn_fused is None or isinstance(bn_fused, bool)):
        raise ValueError(f"resnet_cifar.bn_fused must be None, True or "
                         f"False, got {bn_fused!r}")


@gin.configurable
def resnet_cifar(input_shape=(28, 28, 1), num_classes=10, depth=20, width=16,
                 zero_gamma=True, bn_group_size=None, stem_stride=1,
                 bn_fused=None):
    """Builds a CIFAR-style ResNet-`depth` (depth = 6 * blocks + 2).

    Args:
        input_shape: Image shape (H, W, C).
        num_classes: Number of classes.
        depth: 8, 14, 20, 32, 44, 56, 110, ... (6n+2).
        width: Channels of the first stage (16 in He et al.).
        zero_gamma: R10 zero init of each block's last BN gamma.
        bn_group_size: None for per-replica BN; n for ghost-batch BN (R9).
        stem_stride: stride of the stem conv (2 halves the resolution of
            every stage: about 4x fewer multiply-adds).
        bn_fused: the BN layers' kernel in training (`WorkerBatchNorm`'s
            `fused`): None for the one `layers.built_for_xla` picks (the
            fused kernel unless compiled with XLA), False for the unfused
            ops, whose sums do not depend on the thread count (runs on
            differently threaded processes agree to rounding).

    Returns:
        A `keras.Model` mapping images to float32 logits.

    Raises:
        ValueError: naming the argument (as its gin binding `resnet_cifar.*`)
            and its value if one is not of the expected type or range, e.g.
            a depth not of the form 6n+2 or `width = 'wide'`.
    """
    _check_arguments(depth, width, zero_gamma, bn_group_size, stem_stride,
                     bn_fused)
    blocks = (depth - 2) // 6
    inputs = keras.Input(input_shape)
    x = _conv(width, 3, stem_stride, "stem_conv")(inputs)
    x = keras.layers.ReLU()(_bn("stem_bn", bn_group_size,
                                fused=bn_fused)(x))
    for stage, filters in enumerate((width, 2 * width, 4 * width)):
        for block in range(blocks):
            strides = 2 if stage > 0 and block == 0 else 1
            x = basic_block(x, filters, strides, f"s{stage + 1}b{block + 1}",
                            zero_gamma, bn_group_size, bn_fused)
    x = keras.layers.GlobalAveragePooling2D()(x)
    logits = keras.layers.Dense(
        num_classes, kernel_initializer=init.classifier_initializer(),
        dtype="float32", name="classifier")(x)
    return keras.Model(inputs, logits, name=f"resnet{depth}_cifar")
