"""The shape of the ImageNet ResNets v1.5 (R15, docs/paper.md), without
TensorFlow: `resnet_imagenet` builds the Keras model from it and
`analysis.backprop_overlap` counts ResNet-50's per-layer parameters and
multiply-adds from it."""

# Bottleneck blocks per stage for each supported depth.
BLOCKS_PER_STAGE = {
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}
STEM_WIDTH = 64  # A 7x7 conv at stride 2, then a 3x3 max pool at stride 2.
STAGE_WIDTHS = (64, 128, 256, 512)  # Bottleneck widths of stages 2-5.
STAGE_STRIDES = (1, 2, 2, 2)  # On each stage's first 3x3 conv ("v1.5").
EXPANSION = 4  # A block outputs EXPANSION * width channels.


def blocks_per_stage(depth):
    """The bottleneck blocks of each of the 4 stages of ResNet-`depth`."""
    if depth not in BLOCKS_PER_STAGE:
        raise ValueError(f"Unsupported ImageNet ResNet depth {depth!r}; "
                         f"expected one of {sorted(BLOCKS_PER_STAGE)}")
    return BLOCKS_PER_STAGE[depth]
