"""The ImageNet TFRecord source on a tiny fake in the Model Garden layout.

3 classes x 4 training JPEGs + 1 corrupt record over 2 shards, and 6
validation JPEGs + 1 corrupt record over 2 shards; images are 48..96 px and
the tests use 64 x 64 outputs to stay fast. The fake is written by
`tf_lbsgd.data.fake_imagenet.write_fake_tfrecords`.
"""

import os

import numpy as np
import pytest
import tensorflow as tf

from tf_lbsgd import distribute
from tf_lbsgd.data import fake_imagenet
from tf_lbsgd.data import imagenet
from tf_lbsgd.data import imagenet_preprocessing
from tf_lbsgd.data import imagenet_tfrecord
from tf_lbsgd.data import source

CLASSES = 3
TRAIN_PER_CLASS = 4
NUM_TRAIN = CLASSES * TRAIN_PER_CLASS
VAL = 6
CORRUPT = 1
VAL_CORRUPT = 1
SIZE = 64


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    """Writes the fake; returns (data_dir, the writer's result dict)."""
    data_dir = tmp_path_factory.mktemp("tfrecords")
    result = fake_imagenet.write_fake_tfrecords(
        data_dir, CLASSES, TRAIN_PER_CLASS, VAL, train_shards=2, val_shards=2,
        corrupt=CORRUPT, val_corrupt=VAL_CORRUPT, seed=1, min_side=48,
        max_side=96)
    return data_dir, result


def _source(fake, **kwargs):
    return imagenet_tfrecord.imagenet_tfrecord(
        data_dir=fake[0], image_size=SIZE, shuffle_buffer=32, **kwargs)


def _context(num_pipelines=1, pipeline_id=0, num_replicas=1):
    return tf.distribute.InputContext(num_pipelines, pipeline_id, num_replicas)


def _eval_arrays(data, per_replica, context):
    batches = list(data.eval_dataset_fn(context, per_replica))
    return [np.concatenate([b[i].numpy() for b in batches]) for i in range(3)]


def test_fake_has_the_model_garden_layout(fake):
    data_dir, result = fake
    assert sorted(os.listdir(data_dir)) == [
        "train-00000-of-00002", "train-00001-of-00002",
        "validation-00000-of-00002", "validation-00001-of-00002"]
    labels = []
    for record in tf.data.TFRecordDataset(result["train_files"]):
        example = tf.train.Example.FromString(record.numpy())
        labels.append(
            example.features.feature["image/class/label"].int64_list.value[0])
    # Stored labels are 1..C (0 would be the background class).
    assert sorted(set(labels)) == list(range(1, CLASSES + 1))
    assert len(labels) == NUM_TRAIN + CORRUPT
    assert sorted(result["train_labels"]) == sorted(
        list(range(CLASSES)) * TRAIN_PER_CLASS)


def test_writer_deals_the_records_over_the_shards_asked(tmp_path):
    result = fake_imagenet.write_fake_tfrecords(
        tmp_path, 2, 1, 1, train_shards=3, val_shards=1, corrupt=1,
        min_side=48, max_side=96)
    train_files, val_files = imagenet_tfrecord.list_files(tmp_path)
    assert result["train_files"] == train_files
    assert [os.path.basename(p) for p in train_files + val_files] == [
        "train-00000-of-00003", "train-00001-of-00003",
        "train-00002-of-00003", "validation-00000-of-00001"]
    assert imagenet_tfrecord.count_records(train_files) == 3


def test_writer_names_a_bad_count(tmp_path):
    with pytest.raises(ValueError, match="train_shards=0 must be >= 1"):
        fake_imagenet.write_fake_tfrecords(tmp_path, 1, 1, 1, 0, 1)
    assert not os.listdir(tmp_path)


def test_sizes_are_counted(fake):
    data = _source(fake)
    assert (data.num_train, data.num_eval) == (NUM_TRAIN + CORRUPT,
                                               VAL + VAL_CORRUPT)
    assert data.num_classes == 1000
    assert data.image_shape == (SIZE, SIZE, 3)
    assert source.num_skipped_images(data) == 0
    given = _source(fake, num_train=100, num_eval=50)
    assert (given.num_train, given.num_eval) == (100, 50)


def test_one_epoch_labels_and_corrupt_count(fake):
    data = _source(fake)
    # One epoch of the valid images as one batch; the sentinel closing the
    # epoch is pulled before the second batch, so the count is then exact.
    iterator = iter(data.train_dataset_fn(_context(), NUM_TRAIN, 3, 0))
    images, labels = next(iterator)
    assert images.shape == (NUM_TRAIN, SIZE, SIZE, 3)
    assert images.dtype == tf.float32 and labels.dtype == tf.int32
    assert np.all(np.isfinite(images.numpy()))
    assert sorted(labels.numpy()) == sorted(list(range(CLASSES))
                                            * TRAIN_PER_CLASS)
    next(iterator)
    assert data.skipped.value() in (CORRUPT, 2 * CORRUPT)
    # A single pass counts exactly.
    counter = imagenet.SkipCounter()
    files, _ = imagenet_tfrecord.list_files(fake[0])
    raw = imagenet_tfrecord.read_train(files, _context(), 0).map(
        lambda r: imagenet_tfrecord.parse_example(r, 1))
    one_pass = imagenet._decode_pass(
        raw, lambda b: imagenet_preprocessing.preprocess_train(b, SIZE), SIZE, counter)
    assert len(list(one_pass)) == NUM_TRAIN
    assert counter.value() == CORRUPT


def test_label_offset_zero_keeps_stored_labels(fake):
    data = _source(fake, label_offset=0)
    _, labels = next(iter(data.train_dataset_fn(_context(), 6, 0, 0)))
    assert set(labels.numpy()) <= set(range(1, CLASSES + 1))


@pytest.mark.parametrize("per_replica,num_replicas", [(4, 1), (2, 2)])
def test_eval_covers_every_good_example_once(fake, per_replica,
                                             num_replicas):
    data = _source(fake)
    labels, weights = [], []
    for pipeline in range(num_replicas):
        context = _context(num_replicas, pipeline, num_replicas)
        i, l, w = _eval_arrays(data, per_replica, context)
        assert np.all(i[w == 0] == 0)
        labels.append(l)
        weights.append(w)
    assert len({len(w) for w in weights}) == 1
    weights = np.concatenate(weights)
    labels = np.concatenate(labels)
    global_batch = per_replica * num_replicas
    num_eval = VAL + VAL_CORRUPT
    assert len(weights) == -(-num_eval // global_batch) * global_batch
    assert weights.sum() == VAL and set(weights) <= {0.0, 1.0}
    assert np.all(labels[weights == 0] == 0)
    assert sorted(labels[weights == 1]) == sorted(fake[1]["val_labels"])
    assert data.skipped.value() == VAL_CORRUPT


def _pipeline_records(files, num_pipelines):
    return [{r.numpy() for r in imagenet_tfrecord.read_train(
        files, _context(num_pipelines, pipeline, num_pipelines), 0)}
            for pipeline in range(num_pipelines)]


def test_each_epoch_is_one_shared_shuffle_dealt_to_the_pipelines(fake):
    """R12: per epoch, whole files go to one pipeline each, every record is
    read exactly once, and which pipeline gets which file changes."""
    files, _ = imagenet_tfrecord.list_files(fake[0])
    by_file = [frozenset(r.numpy() for r in tf.data.TFRecordDataset(f))
               for f in files]
    pipelines = [imagenet_tfrecord.read_train(files, _context(2, w, 2), 7)
                 for w in range(2)]
    assignments = set()
    for _ in range(8):  # Each iteration of a dataset is a new epoch.
        parts = [frozenset(r.numpy() for r in p) for p in pipelines]
        assert not parts[0] & parts[1]
        assert parts[0] | parts[1] == by_file[0] | by_file[1]
        assert set(parts) == set(by_file)
        assignments.add(parts[0])
    assert len(assignments) == 2


def test_more_pipelines_than_files_split_the_records(fake):
    files, _ = imagenet_tfrecord.list_files(fake[0])
    parts = _pipeline_records(files, 3)
    union = set().union(*parts)
    assert sum(len(p) for p in parts) == len(union) == NUM_TRAIN + CORRUPT


def test_train_through_mirrored_strategy(fake):
    data = _source(fake)
    strategy = distribute.logical_cpu_strategy(2)
    dataset = strategy.distribute_datasets_from_function(
        lambda ctx: data.train_dataset_fn(ctx, 3, 0, 0))
    images, labels = next(iter(dataset))
    local = strategy.experimental_local_results(images)
    assert len(local) == 2
    for replica_images, replica_labels in zip(
            local, strategy.experimental_local_results(labels)):
        assert replica_images.shape == (3, SIZE, SIZE, 3)
        assert replica_labels.shape == (3,)
        assert np.all((replica_labels.numpy() >= 0)
                      & (replica_labels.numpy() < CLASSES))


def test_missing_files_name_the_directory_and_patterns(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere") as error:
        imagenet_tfrecord.imagenet_tfrecord(data_dir=missing)
    assert "train-*-of-*" in str(error.value)
    assert "validation-*-of-*" in str(error.value)
    (tmp_path / "train-00000-of-00001").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"validation-\*-of-\*"):
        imagenet_tfrecord.imagenet_tfrecord(data_dir=tmp_path)


@pytest.mark.parametrize("name,value", [("image_size", 0),
                                        ("num_train", -1),
                                        ("label_offset", 1.0)])
def test_bad_arguments_are_named(fake, name, value):
    with pytest.raises(ValueError, match=name):
        imagenet_tfrecord.imagenet_tfrecord(data_dir=fake[0],
                                            **{name: value})
