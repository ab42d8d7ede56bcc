"""A task the whole-run tests learn in a few steps (test_api, test_past_8k):
noise images brightened by (class - 1) / 2, 3 classes, and a small CNN with
per-worker batch norm."""

import keras
import numpy as np

import tf_lbsgd

SHAPE, CLASSES = (8, 8, 1), 3


def data(count, seed):
    """(images, labels) of `count` examples."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, size=count).astype("i4")
    images = rng.normal(size=(count,) + SHAPE) + (labels - 1.0).reshape(
        -1, 1, 1, 1) / 2
    return images.astype("f4"), labels


def model_fn(input_shape, num_classes):
    """Conv, WorkerBatchNorm (R9), ReLU, pooling, dense logits."""
    images = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 3, use_bias=False)(images)
    x = keras.layers.ReLU()(tf_lbsgd.WorkerBatchNorm()(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(images, keras.layers.Dense(num_classes)(x))
