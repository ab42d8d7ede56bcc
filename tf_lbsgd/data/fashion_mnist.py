"""Fashion-MNIST from Debian's `dataset-fashion-mnist` package, in memory.

60,000 training and 10,000 test images, 28x28 grey levels, 10 classes, read
from the gzipped idx files (no download at run time). Both splits are small
(47 MB of training pixels), so the dataset functions gather batches from
in-memory tensors by the example indices of `sharding.py` (R12), through
`adapters.from_arrays` like any in-memory data set.

Preprocessing (R13 of docs/paper.md, adapted to 28x28): training images are
randomly cropped back to 28x28 from the image zero-padded by `pad` pixels and
randomly flipped left-right, then normalised per channel with the training
set mean and standard deviation. The padding is applied to the raw pixels, so
it is black like the Fashion-MNIST background. The augmentation of the example at global
stream position p uses stateless random ops seeded by (seed, p): it is a pure
function of the run seed and the position, hence identical after a resume and
independent of the number of workers and of the batch size.
"""

import gzip
import os
import zlib

import gin
import numpy as np
import tensorflow as tf

from tf_lbsgd.data import adapters

DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"
INSTALL_COMMAND = "sudo apt-get install -y dataset-fashion-mnist"
NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28, 1)
# Per-channel mean and standard deviation of the 60,000 training images, in
# pixel units (0..255); tests/test_data_fashion_mnist.py recomputes them.
FASHION_MNIST_MEAN = (72.94035223214286,)
FASHION_MNIST_STD = (90.02118235130526,)

_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension


def _split_paths(data_dir, split):
    """Returns the (images, labels) file paths of `split`, checking they exist."""
    if split not in _FILES:
        raise ValueError(f"unknown Fashion-MNIST split {split!r}, expected one of "
                         f"{sorted(_FILES)}")
    paths = [os.path.join(data_dir, name) for name in _FILES[split]]
    missing = [path for path in paths if not os.path.isfile(path)]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST files not found: {', '.join(missing)}. Install them "
            f"with `{INSTALL_COMMAND}` or pass the right data_dir.")
    return paths


def _read_gzip(path):
    """Returns the decompressed bytes of `path`, a ValueError if it is corrupt."""
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"corrupt gzip file {path}: {e}") from e


def _read_idx(path, magic, num_dims):
    """Reads an idx file of unsigned bytes with `num_dims` dimensions.

    idx format: a big-endian int32 magic number (0x0800 + number of
    dimensions for unsigned bytes), one big-endian int32 per dimension, then
    the values in C order.

    Raises:
        ValueError: naming `path` if it is not gzip, has the wrong magic number
            or its size does not match its header.
    """
    data = _read_gzip(path)
    header_size = 4 * (1 + num_dims)
    if len(data) < header_size:
        raise ValueError(f"idx file {path} is truncated: {len(data)} bytes")
    header = np.frombuffer(data, dtype=">i4", count=1 + num_dims)
    if header[0] != magic:
        raise ValueError(f"idx file {path} has magic number {header[0]:#010x}, "
                         f"expected {magic:#010x}")
    shape = tuple(int(d) for d in header[1:])
    if len(data) != header_size + int(np.prod(shape)):
        raise ValueError(f"idx file {path} holds {len(data) - header_size} values, "
                         f"its header announces shape {shape}")
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape)


def load_fashion_mnist(data_dir=DEFAULT_DATA_DIR, split="train"):
    """Loads one split of Fashion-MNIST from the gzipped idx files.

    Args:
        data_dir: Directory with `{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`.
        split: "train" (60,000 examples) or "test" (10,000 examples).

    Returns:
        `(images, labels)`: uint8 [N, 28, 28] and int32 [N] numpy arrays.

    Raises:
        FileNotFoundError: If files are missing (the message lists them and
            the apt-get command that installs them).
        ValueError: If `split` is unknown, or a file is corrupt (named).
    """
    images_path, labels_path = _split_paths(data_dir, split)
    images = _read_idx(images_path, _IMAGES_MAGIC, 3)
    labels = _read_idx(labels_path, _LABELS_MAGIC, 1)
    if images.shape[1:] != IMAGE_SHAPE[:2]:
        raise ValueError(f"{images_path} holds images of shape {images.shape[1:]}, "
                         f"expected {IMAGE_SHAPE[:2]}")
    if len(images) != len(labels):
        raise ValueError(f"{images_path} holds {len(images)} images but "
                         f"{labels_path} holds {len(labels)} labels")
    if labels.size and labels.max() >= NUM_CLASSES:
        raise ValueError(f"{labels_path} holds label {labels.max()}, expected "
                         f"labels below {NUM_CLASSES}")
    return images, labels.astype(np.int32)


def channel_stats(images):
    """Returns the per-channel (mean, std) of uint8 [N, H, W] grey images."""
    pixels = np.asarray(images, dtype=np.float64)
    return (pixels.mean(),), (pixels.std(),)


def normalize(images):
    """Per-channel normalisation with the training set statistics (R13).

    Args:
        images: uint8 or float [..., 28, 28] grey images in pixel units.

    Returns:
        float32 [..., 28, 28, 1]: (x - mean) / std.
    """
    images = tf.cast(images, tf.float32)[..., tf.newaxis]
    mean = tf.constant(FASHION_MNIST_MEAN, tf.float32)
    std = tf.constant(FASHION_MNIST_STD, tf.float32)
    return (images - mean) / std


def augment_example(image, seed, pad=2):
    """Random crop from the zero-padded image and random left-right flip (R13).

    Args:
        image: One [28, 28] grey image (uint8 or float, pixel units).
        seed: int64 [2] stateless seed, e.g. (run seed, stream position).
        pad: Zero padding in pixels on every side before the 28x28 crop.

    Returns:
        A float32 [28, 28] image.
    """
    crop_seed, flip_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=2))
    image = tf.cast(image, tf.float32)[..., tf.newaxis]
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    image = tf.image.stateless_random_crop(padded, IMAGE_SHAPE, seed=crop_seed)
    image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
    return image[..., 0]


def augment_batch(images, seeds, pad=2):
    """`augment_example` of each image with its seed (int64 [n, 2])."""
    return tf.map_fn(lambda args: augment_example(args[0], args[1], pad),
                     (images, seeds), fn_output_signature=tf.float32)


@gin.configurable
def fashion_mnist(data_dir=DEFAULT_DATA_DIR, augment=True, pad=2):
    """Fashion-MNIST as a `DataSource` (the embedded default data set).

    Both splits are loaded once into numpy arrays and served by
    `adapters.from_arrays`, as a user's own in-memory data is; each input
    pipeline turns them into tensors when its dataset is built (so that
    calling this function does not initialise the TensorFlow runtime before
    the devices are set up).

    Args:
        data_dir: Directory of the gzipped idx files.
        augment: Random crop and flip of the training images (R13).
        pad: Zero padding in pixels before the random 28x28 crop.

    Returns:
        A `source.DataSource`; training batches are `(images, labels)`,
        evaluation batches `(images, labels, weights)`, images float32
        [n, 28, 28, 1], labels int32 [n].

    Raises:
        FileNotFoundError: If the data files are missing.
        ValueError: If a file is corrupt or `pad` is negative.
    """
    if pad < 0:
        raise ValueError(f"pad must be non-negative, got {pad}")
    def train_map_fn(images, labels, seeds):
        if augment:
            images = augment_batch(images, seeds, pad)
        return normalize(images), labels

    return adapters.from_arrays(
        train=load_fashion_mnist(data_dir, "train"),
        eval=load_fashion_mnist(data_dir, "test"),
        num_classes=NUM_CLASSES, train_map_fn=train_map_fn,
        eval_map_fn=lambda images, labels: (normalize(images), labels),
        image_shape=IMAGE_SHAPE, name="fashion_mnist")
