"""Model size and compute: parameters and forward multiply-adds (R15).

R15 (docs/paper.md) quotes ResNet-50 at 25,557,032 parameters and 4.09 G
multiply-adds per 224x224 image; these functions reproduce both figures from a
built Keras model's layer shapes.
"""

import math

import keras


def parameter_count(model):
    """Number of trainable parameters of `model`.

    Counts every trainable weight: conv kernels (and biases if any), BN gamma
    and beta, classifier weight and bias. BN moving mean and variance are
    non-trainable state and are excluded. This is how the paper's (and
    torchvision's, `sum(p.numel() for p in model.parameters())`, which leaves
    out BN running-statistics buffers) 25,557,032 for ResNet-50 is counted.

    Args:
        model: A built `keras.Model` (or layer).

    Returns:
        The number of trainable scalars, as an int.

    Raises:
        ValueError: if the model is not built.
    """
    if not model.built:
        raise ValueError(f"Model {model.name!r} is not built")
    return sum(math.prod(w.shape) for w in model.trainable_weights)


def multiply_adds(model):
    """Forward multiply-adds per example of a built functional Keras model.

    Only Conv2D and Dense layers are counted, as in the paper's 4.09 G figure
    for ResNet-50 (BN, ReLU, pooling, residual additions and biases are left
    out):

    * Conv2D: H_out * W_out * k_h * k_w * C_in * C_out / groups.
    * Dense: in * out (times the number of positions if the input has more
      than one non-batch axis).

    Nested models are counted recursively. Each layer is counted once, from
    its (single) call's input and output shapes.

    Args:
        model: A built functional `keras.Model` whose layers have static
            non-batch shapes.

    Returns:
        The number of multiply-adds for one example, as an int.

    Raises:
        ValueError: if a counted layer has an unknown non-batch dimension.
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += multiply_adds(layer)
        elif isinstance(layer, keras.layers.Conv2D):
            total += _conv2d_multiply_adds(layer)
        elif isinstance(layer, keras.layers.Dense):
            total += _dense_multiply_adds(layer)
    return total


def _static_dims(layer, shape):
    """Non-batch dimensions of `shape`, which must all be known."""
    dims = tuple(shape[1:])
    if any(d is None for d in dims):
        raise ValueError(f"Layer {layer.name!r} has an unknown dimension in "
                         f"shape {tuple(shape)}")
    return dims


def _conv2d_multiply_adds(layer):
    out = _static_dims(layer, layer.output.shape)
    channels_last = layer.data_format == "channels_last"
    spatial = out[:-1] if channels_last else out[1:]
    in_channels = layer.kernel.shape[-2]  # already C_in / groups
    kernel_h, kernel_w = layer.kernel_size
    return (math.prod(spatial) * kernel_h * kernel_w * in_channels
            * layer.filters)


def _dense_multiply_adds(layer):
    inputs = _static_dims(layer, layer.input.shape)
    positions = math.prod(inputs[:-1])
    return positions * inputs[-1] * layer.units
