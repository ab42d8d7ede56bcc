"""The ImageNet input pipeline on a tiny fake ILSVRC2012 built through TFDS.

A fake of 3 classes x 6 training JPEGs + 2 corrupt ones (a truncated JPEG
and random bytes) and 8 validation JPEGs is written and built into TFDS
`imagenet2012` once per module; images are small (48..96 px) and the tests
use 64 x 64 outputs to stay fast.
"""


import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tf_lbsgd import distribute
from tf_lbsgd.data import fake_imagenet
from tf_lbsgd.data import imagenet
from tf_lbsgd.data import imagenet_preprocessing
from tf_lbsgd.data import source
from tf_lbsgd.data import imagenet_tfds

CLASSES = 3
TRAIN_PER_CLASS = 6
NUM_TRAIN = CLASSES * TRAIN_PER_CLASS
VAL = 8
CORRUPT = 2
SIZE = 64


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """Writes the fake and builds TFDS; returns (data_dir, manual_dir)."""
    manual_dir = tmp_path_factory.mktemp("manual")
    fake_imagenet.write_fake_imagenet(
        manual_dir, CLASSES, TRAIN_PER_CLASS, VAL, corrupt=CORRUPT, seed=1,
        min_side=48, max_side=96)
    data_dir = tmp_path_factory.mktemp("tfds")
    imagenet_tfds.build_imagenet2012(data_dir, manual_dir)
    return data_dir, manual_dir


def _source(dirs, **kwargs):
    data_dir, manual_dir = dirs
    return imagenet.imagenet(data_dir=data_dir, manual_dir=manual_dir,
                             image_size=SIZE, shuffle_buffer=32, **kwargs)


def _context(num_pipelines=1, pipeline_id=0, num_replicas=1):
    return tf.distribute.InputContext(num_pipelines, pipeline_id, num_replicas)


def _eval_arrays(data, per_replica, context):
    batches = list(data.eval_dataset_fn(context, per_replica))
    return [np.concatenate([b[i].numpy() for b in batches]) for i in range(3)]


def test_sizes_come_from_tfds(dirs):
    data = _source(dirs)
    assert (data.num_train, data.num_eval) == (NUM_TRAIN + CORRUPT, VAL)
    assert data.num_classes == 1000
    assert data.image_shape == (SIZE, SIZE, 3)
    assert source.num_skipped_images(data) == 0


def test_train_batches(dirs):
    data = _source(dirs)
    dataset = data.train_dataset_fn(_context(), 6, 0, 0)
    # 5 batches of 6 span two epochs of the 18 valid images.
    batches = list(dataset.take(5))
    for images, labels in batches:
        assert images.shape == (6, SIZE, SIZE, 3)
        assert images.dtype == tf.float32 and labels.dtype == tf.int32
        assert np.all((labels.numpy() >= 0) & (labels.numpy() < CLASSES))
    images = np.concatenate([b[0].numpy() for b in batches])
    means = images.mean(axis=(0, 1, 2))
    assert np.all(np.abs(means) < 2.0), means
    assert np.all(images.std(axis=(0, 1, 2)) > 0.1)
    assert np.all(np.isfinite(images))
    assert source.num_skipped_images(data) >= CORRUPT


def test_corrupt_images_are_skipped_and_counted(dirs):
    data = _source(dirs)
    # One epoch of the 18 valid images as one batch; the sentinel closing the
    # epoch is pulled before the second batch, so the count is then exact.
    iterator = iter(data.train_dataset_fn(_context(), NUM_TRAIN, 3, 0))
    images, labels = next(iterator)
    assert images.shape == (NUM_TRAIN, SIZE, SIZE, 3)
    assert sorted(labels.numpy()) == sorted(list(range(CLASSES))
                                            * TRAIN_PER_CLASS)
    next(iterator)
    # The first epoch's, and as many of the second's as prefetching reached
    # (seen: 3 of 4 on a fresh clone).
    assert CORRUPT <= data.skipped.value() <= 2 * CORRUPT
    # A single pass counts exactly.
    counter = imagenet.SkipCounter()
    builder = tfds.builder("imagenet2012", data_dir=dirs[0])
    raw = builder.as_dataset(split="train",
                             decoders={"image": tfds.decode.SkipDecoding()})
    one_pass = imagenet._decode_pass(
        imagenet._raw_examples(raw),
        lambda b: imagenet_preprocessing.preprocess_train(b, SIZE), SIZE, counter)
    assert len(list(one_pass)) == NUM_TRAIN
    assert counter.value() == CORRUPT


def test_truncated_jpeg_fails_even_if_the_crop_is_intact():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(80, 80, 3), dtype=np.uint8)
    data = tf.io.encode_jpeg(image).numpy()
    truncated = tf.constant(data[:len(data) // 2])
    # The top rows alone decode...
    tf.image.decode_and_crop_jpeg(truncated, [0, 0, 8, 8], channels=3)
    # ...but the training decode checks the file to its end.
    with pytest.raises(tf.errors.InvalidArgumentError):
        imagenet_preprocessing.preprocess_train(truncated, SIZE)
    assert imagenet_preprocessing.preprocess_train(tf.constant(data), SIZE).shape == (
        SIZE, SIZE, 3)


@pytest.mark.parametrize("per_replica,num_replicas", [(3, 1), (2, 2)])
def test_eval_covers_every_example_once(dirs, per_replica, num_replicas):
    data = _source(dirs)
    images, labels, weights = [], [], []
    for pipeline in range(num_replicas):
        context = _context(num_replicas, pipeline, num_replicas)
        i, l, w = _eval_arrays(data, per_replica, context)
        images.append(i)
        labels.append(l)
        weights.append(w)
    counts = {len(w) for w in weights}
    assert len(counts) == 1  # Every pipeline runs the same number of steps.
    weights = np.concatenate(weights)
    labels = np.concatenate(labels)
    images = np.concatenate(images)
    global_batch = per_replica * num_replicas
    assert len(weights) == -(-VAL // global_batch) * global_batch
    assert weights.sum() == VAL and set(weights) <= {0.0, 1.0}
    assert np.all(images[weights == 0] == 0)
    assert np.all(labels[weights == 0] == 0)
    builder = tfds.builder("imagenet2012", data_dir=dirs[0])
    expected = sorted(int(e["label"]) for e in builder.as_dataset(
        split="validation", decoders={"image": tfds.decode.SkipDecoding()}))
    assert sorted(labels[weights == 1]) == expected
    assert source.num_skipped_images(data) == 0


def test_eval_is_deterministic_centre_crop(dirs):
    data = _source(dirs)
    first = _eval_arrays(data, 4, _context())
    second = _eval_arrays(data, 4, _context())
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    # Independent computation for the first validation example.
    builder = tfds.builder("imagenet2012", data_dir=dirs[0])
    example = next(iter(builder.as_dataset(split="validation",
                                           shuffle_files=False)))
    image = tf.cast(example["image"], tf.float32)
    height, width = image.shape[:2]
    short = round(256 * SIZE / 224)
    if height <= width:
        new_size = (short, int(short * width / height))
    else:
        new_size = (int(short * height / width), short)
    resized = tf.image.resize(image, new_size).numpy()
    top = (new_size[0] - SIZE) // 2
    left = (new_size[1] - SIZE) // 2
    crop = resized[top:top + SIZE, left:left + SIZE]
    mean = np.array([0.485, 0.456, 0.406]) * 255
    std = np.array([0.229, 0.224, 0.225]) * 255
    expected = (crop - mean) / std
    np.testing.assert_allclose(first[0][0], expected, atol=1e-4)
    assert first[1][0] == example["label"]


def test_train_through_mirrored_strategy(dirs):
    data = _source(dirs)
    strategy = distribute.logical_cpu_strategy(2)
    dataset = strategy.distribute_datasets_from_function(
        lambda ctx: data.train_dataset_fn(ctx, 3, 0, 0))
    batch = next(iter(dataset))
    images, labels = batch
    local = strategy.experimental_local_results(images)
    assert len(local) == 2
    for replica_images, replica_labels in zip(
            local, strategy.experimental_local_results(labels)):
        assert replica_images.shape == (3, SIZE, SIZE, 3)
        assert replica_labels.shape == (3,)


def test_sharded_training_pipelines_split_the_records(dirs):
    builder = tfds.builder("imagenet2012", data_dir=dirs[0])
    names = []
    for pipeline in range(2):
        raw = imagenet._read_train(builder, _context(2, pipeline, 2), 0)
        names.append({e["file_name"].numpy() for e in raw})
    assert not names[0] & names[1]
    assert len(names[0] | names[1]) == NUM_TRAIN + CORRUPT
    data = _source(dirs)
    for pipeline in range(2):
        dataset = data.train_dataset_fn(_context(2, pipeline, 2), 4, 0, 0)
        _, labels = next(iter(dataset))
        assert labels.shape == (4,)


def test_synthetic_imagenet_shapes():
    data = imagenet.synthetic_imagenet(image_size=32, num_classes=10,
                                       num_train=100, num_eval=10)
    assert (data.num_train, data.num_eval, data.image_shape) == (
        100, 10, (32, 32, 3))
    images, labels = next(iter(data.train_dataset_fn(_context(), 4, 0, 0)))
    assert images.shape == (4, 32, 32, 3) and images.dtype == tf.float32
    assert labels.dtype == tf.int32
    assert np.all((labels.numpy() >= 0) & (labels.numpy() < 10))
    batches = list(data.eval_dataset_fn(_context(), 4))
    assert len(batches) == 3
    assert sum(float(w.numpy().sum()) for _, _, w in batches) == 10
    assert all(i.shape == (4, 32, 32, 3) for i, _, _ in batches)


def test_bad_arguments_name_the_value(dirs):
    with pytest.raises(ValueError, match="image_size must be a positive"
                       " integer, got 0"):
        imagenet.imagenet(data_dir=dirs[0], image_size=0)
    with pytest.raises(ValueError, match="num_classes.*-1"):
        imagenet.synthetic_imagenet(num_classes=-1)
    with pytest.raises(FileNotFoundError, match="manual_dir"):
        imagenet.imagenet(data_dir=dirs[1] / "nothing", manual_dir=dirs[1] / "x")
