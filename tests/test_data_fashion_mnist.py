"""Tests of the Fashion-MNIST data source (Debian's dataset-fashion-mnist)."""

import gzip
import os
import re
import shutil

import gin
import numpy as np
import pytest
import tensorflow as tf

from tf_lbsgd.data import adapters
from tf_lbsgd.data import fashion_mnist as fm

DATA_DIR = fm.DEFAULT_DATA_DIR
SEED = 5


def _context(num_replicas=1, num_pipelines=1, pipeline_id=0):
    return tf.distribute.InputContext(num_input_pipelines=num_pipelines,
                                      input_pipeline_id=pipeline_id,
                                      num_replicas_in_sync=num_replicas)


@pytest.fixture(scope="module")
def train():
    return fm.load_fashion_mnist(DATA_DIR, "train")


@pytest.fixture(scope="module")
def data():
    return fm.fashion_mnist(DATA_DIR)


def _take(dataset, count):
    return [tuple(t.numpy() for t in element) for element in dataset.take(count)]


@pytest.mark.parametrize("split,size", [("train", 60000), ("test", 10000)])
def test_splits_shapes_dtypes_and_balance(split, size, train):
    images, labels = train if split == "train" else fm.load_fashion_mnist(
        DATA_DIR, split)
    assert images.shape == (size, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (size,) and labels.dtype == np.int32
    np.testing.assert_array_equal(np.bincount(labels, minlength=10),
                                  np.full(10, size // 10))
    assert images.max() == 255 and images.min() == 0


def test_normalisation_constants_match_the_training_data(train):
    images, _ = train
    mean = images.mean(dtype=np.float64)
    std = np.sqrt(((images - mean) ** 2).mean(dtype=np.float64))
    np.testing.assert_allclose(fm.FASHION_MNIST_MEAN, [mean], rtol=1e-6)
    np.testing.assert_allclose(fm.FASHION_MNIST_STD, [std], rtol=1e-6)


def test_preprocessed_train_epoch_is_standardised():
    """One epoch without augmentation: every example once, mean 0, std 1."""
    plain = fm.fashion_mnist(DATA_DIR, augment=False)
    total, total_sq, count = 0.0, 0.0, 0
    labels = []
    for images, batch_labels in _take(plain.train_dataset_fn(_context(), 6000,
                                                             SEED, 0), 10):
        assert images.shape == (6000, 28, 28, 1) and images.dtype == np.float32
        total += images.sum(dtype=np.float64)
        total_sq += np.square(images, dtype=np.float64).sum()
        count += images.size
        labels.append(batch_labels)
    mean = total / count
    assert abs(mean) < 1e-4
    assert abs(np.sqrt(total_sq / count - mean ** 2) - 1.0) < 1e-4
    np.testing.assert_array_equal(np.bincount(np.concatenate(labels)),
                                  np.full(10, 6000))


def test_augmentation_is_a_padded_crop_and_flip(train):
    """Each augmented image is one of the 25 crops, flipped or not (pad=2)."""
    images, _ = train
    padded = np.pad(images[:6].astype(np.float32), [(0, 0), (2, 2), (2, 2)])
    seen = set()
    for i in range(6):
        out = fm.augment_example(images[i], tf.constant([SEED, i], tf.int64)).numpy()
        matches = [(dy, dx, flip) for dy in range(5) for dx in range(5)
                   for flip in (False, True)
                   if np.array_equal(out, (lambda c: c[:, ::-1] if flip else c)(
                       padded[i, dy:dy + 28, dx:dx + 28]))]
        assert matches, f"example {i} is not a crop of the padded image"
        seen.update(matches)
    assert len(seen) > 1


def test_augmentation_depends_on_seed_and_position_only(train):
    images = tf.constant(np.repeat(train[0][:1], 8, axis=0))
    positions = tf.range(100, 108, dtype=tf.int64)
    first = fm.augment_batch(images, adapters.example_seeds(SEED, positions), 2).numpy()
    again = fm.augment_batch(images, adapters.example_seeds(SEED, positions), 2).numpy()
    other_seed = fm.augment_batch(images, adapters.example_seeds(SEED + 1, positions), 2).numpy()
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other_seed)
    # Same image, different positions: not all augmented alike.
    assert len({a.tobytes() for a in first}) > 1


def test_train_batches_are_deterministic_and_resumable(data):
    make = data.train_dataset_fn
    first = _take(make(_context(), 8, SEED, 0), 4)
    again = _take(make(_context(), 8, SEED, 0), 4)
    resumed = _take(make(_context(), 8, SEED, 2), 2)
    other = _take(make(_context(), 8, SEED + 1, 0), 1)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a[0], b[0])
    for a, b in zip(first[2:], resumed):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(first[0][0], other[0][0])
    images, labels = first[0]
    assert images.shape == (8, 28, 28, 1) and images.dtype == np.float32
    assert labels.shape == (8,) and labels.dtype == np.int32


def test_augmented_stream_does_not_depend_on_replica_layout(data):
    """Position p gets the same example and augmentation for any (n, K)."""
    single = _take(data.train_dataset_fn(_context(), 8, SEED, 0), 1)[0][0]
    split = _take(data.train_dataset_fn(_context(2), 4, SEED, 0), 2)
    np.testing.assert_array_equal(single, np.concatenate([s[0] for s in split]))


def test_eval_covers_the_test_set_once(data):
    assert (data.num_train, data.num_eval, data.num_classes) == (60000, 10000, 10)
    assert data.image_shape == (28, 28, 1)
    total_weight, counts = 0.0, np.zeros(10)
    for pipeline in range(2):
        dataset = data.eval_dataset_fn(_context(4, 2, pipeline), 768)
        for images, labels, weights in dataset:
            assert images.shape == (768, 28, 28, 1)
            total_weight += weights.numpy().sum()
            np.add.at(counts, labels.numpy(), weights.numpy())
    assert total_weight == 10000
    np.testing.assert_array_equal(counts, np.full(10, 1000))


def test_gin_bindings_reach_fashion_mnist():
    gin.parse_config("fashion_mnist.pad = -3")
    with pytest.raises(ValueError, match="pad must be non-negative, got -3"):
        fm.fashion_mnist()


def test_missing_files_name_the_path_and_the_install_command(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as raised:
        fm.load_fashion_mnist(str(missing), "test")
    message = str(raised.value)
    assert "apt-get install" in message and "dataset-fashion-mnist" in message
    assert str(missing / "t10k-images-idx3-ubyte.gz") in message
    assert str(missing / "t10k-labels-idx1-ubyte.gz") in message


def test_unknown_split_is_named():
    with pytest.raises(ValueError, match="'validation'"):
        fm.load_fashion_mnist(DATA_DIR, "validation")


# Fixed ids and gzip times: the pytest processes of `make test` (xdist) must
# collect the same test names.
@pytest.mark.parametrize("content", [
    b"this is not gzip",
    "truncated",
    gzip.compress(b"\x00\x00\x08\x01" + (10).to_bytes(4, "big") + bytes(10),
                  mtime=0),
    gzip.compress(b"\x00\x00\x08\x03" + b"\x00\x00\x00\x0a" * 3 + bytes(7),
                  mtime=0),
], ids=["not_gzip", "truncated", "gzip_idx1", "gzip_idx3"])
def test_corrupt_files_are_named(tmp_path, content):
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(os.path.join(DATA_DIR, name), tmp_path / name)
    bad = tmp_path / "t10k-images-idx3-ubyte.gz"
    if content == "truncated":
        content = bad.read_bytes()[:5000]
    bad.write_bytes(content)
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        fm.load_fashion_mnist(str(tmp_path), "test")
