"""ImageNet from the Model Garden's TFRecord layout, beside the TFDS source.

The layout is the one written by the TPU/Model Garden ImageNet conversion
script and read by `official/legacy/image_classification/resnet/
imagenet_preprocessing.py`: files `train-%05d-of-01024` and
`validation-%05d-of-00128` in one directory, each a TFRecord of
`tf.train.Example` with the features

- `image/encoded`: the JPEG bytes;
- `image/class/label`: int64, 1..1000 (0 is the "background" class).

Any shard counts are accepted (the files are globbed as `train-*-of-*` and
`validation-*-of-*`).

Labels: the legacy readers (`imagenet_preprocessing.parse_record` and
`dataset_factory.DatasetBuilder.parse_record`) subtract 1 so that labels are
in [0, 1000); the new `official/vision/dataloaders/classification_input.py`
parser keeps them as they are and uses `num_classes=1001` instead. This
source follows the legacy readers: `label_offset` (default 1) is subtracted,
giving labels 0..999 like TFDS `imagenet2012`.

The parsed `(image_bytes, label)` records go through the same decode (with
corrupt-image skipping and counting), shuffle, batch and padding code as the
TFDS source of `tf_lbsgd.data.imagenet`; see that module for the details.
"""

import os

import gin
import tensorflow as tf

from tf_lbsgd.data import imagenet
from tf_lbsgd.data import sharding

TRAIN_PATTERN = "train-*-of-*"
EVAL_PATTERN = "validation-*-of-*"
IMAGE_KEY = "image/encoded"
LABEL_KEY = "image/class/label"
# Files read at once by each training pipeline.
_CYCLE_LENGTH = 16
_FEATURES = {
    IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
    LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
}


def list_files(data_dir):
    """Returns the sorted training and validation files of `data_dir`.

    Args:
        data_dir: Directory holding the TFRecord shards.

    Returns:
        A tuple (train_files, eval_files) of sorted lists of paths.

    Raises:
        FileNotFoundError: Naming `data_dir` and the pattern(s) that matched
            no file.
    """
    data_dir = os.fspath(data_dir)
    files = {}
    for pattern in (TRAIN_PATTERN, EVAL_PATTERN):
        files[pattern] = sorted(
            tf.io.gfile.glob(os.path.join(data_dir, pattern)))
    missing = [pattern for pattern, paths in files.items() if not paths]
    if missing:
        raise FileNotFoundError(
            f"no ImageNet TFRecord files matching {' and '.join(missing)} in "
            f"{data_dir!r} (expected {TRAIN_PATTERN} and {EVAL_PATTERN}, "
            f"e.g. train-00000-of-01024 and validation-00000-of-00128)")
    return files[TRAIN_PATTERN], files[EVAL_PATTERN]


def count_records(files):
    """Returns the number of records in TFRecord `files` (reads them all)."""
    dataset = tf.data.TFRecordDataset(files)
    return int(dataset.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))


def parse_example(serialized, label_offset):
    """Parses one serialized example into `(image_bytes, label, True)`.

    Args:
        serialized: Scalar string tensor, a serialized `tf.train.Example`.
        label_offset: Subtracted from `image/class/label`.

    Returns:
        The raw element expected by `imagenet._decode_pass`: the encoded
        image, the int32 label minus `label_offset` and a True `is_real`.
    """
    features = tf.io.parse_single_example(serialized, _FEATURES)
    label = tf.cast(features[LABEL_KEY] - label_offset, tf.int32)
    return features[IMAGE_KEY], label, tf.constant(True)


def read_train(files, input_context, shuffle_seed):
    """Reads this pipeline's part of the training records, files shuffled.

    Whole files are divided among the pipelines when there are at least as
    many files as pipelines, else every W-th record is taken. The file order
    is reshuffled every time the dataset is iterated (every epoch).

    Args:
        files: Sorted training file paths.
        input_context: `tf.distribute.InputContext` of this pipeline.
        shuffle_seed: Seed of the file shuffle.

    Returns:
        A finite dataset of serialized examples (one epoch).
    """
    num_pipelines = input_context.num_input_pipelines
    pipeline_id = input_context.input_pipeline_id
    by_file = 1 < num_pipelines <= len(files)
    dataset = tf.data.Dataset.from_tensor_slices(files)
    if by_file:
        dataset = dataset.shard(num_pipelines, pipeline_id)
    dataset = dataset.shuffle(len(files), seed=shuffle_seed,
                              reshuffle_each_iteration=True)
    dataset = dataset.interleave(
        tf.data.TFRecordDataset, cycle_length=min(len(files), _CYCLE_LENGTH),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if not by_file and num_pipelines > 1:
        dataset = dataset.shard(num_pipelines, pipeline_id)
    return dataset


def read_eval(files, input_context):
    """Reads this pipeline's validation records: w, w + W, ... in file order."""
    dataset = tf.data.TFRecordDataset(files)
    return dataset.shard(input_context.num_input_pipelines,
                         input_context.input_pipeline_id)


def _train_dataset_fn(files, image_size, shuffle_buffer, label_offset,
                      counter):
    """Returns the `train_dataset_fn` of `imagenet_tfrecord`."""

    def dataset_fn(input_context, per_replica_batch_size, seed, start_step):
        imagenet._check_positive("per_replica_batch_size",
                                 per_replica_batch_size)
        if start_step < 0:
            raise ValueError(f"start_step must be non-negative, got {start_step}")
        shuffle_seed = imagenet._shuffle_seed(seed, start_step,
                                              input_context.input_pipeline_id)
        raw = read_train(files, input_context, shuffle_seed)
        raw = raw.shuffle(shuffle_buffer, seed=shuffle_seed,
                          reshuffle_each_iteration=True)
        raw = raw.map(lambda record: parse_example(record, label_offset),
                      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        epoch = imagenet._decode_pass(
            raw,
            lambda image_bytes: imagenet.preprocess_train(
                image_bytes, image_size, seed=shuffle_seed),
            image_size, counter)
        dataset = epoch.repeat().batch(per_replica_batch_size,
                                       drop_remainder=True)
        return dataset.prefetch(tf.data.AUTOTUNE)

    return dataset_fn


def _eval_dataset_fn(files, num_eval, image_size, label_offset, counter):
    """Returns the `eval_dataset_fn` of `imagenet_tfrecord`."""

    def dataset_fn(input_context, per_replica_batch_size):
        # Validates the sizes the same way as the index datasets do.
        sharding.eval_index_dataset(num_eval, per_replica_batch_size,
                                    input_context)
        raw = read_eval(files, input_context).map(
            lambda record: parse_example(record, label_offset))
        examples = imagenet._decode_pass(
            raw,
            lambda image_bytes: imagenet.preprocess_eval(image_bytes,
                                                         image_size),
            image_size, counter)
        examples = examples.map(lambda image, label: (image, label,
                                                      tf.constant(1.0)))
        total = imagenet.eval_examples_per_pipeline(
            num_eval, per_replica_batch_size, input_context)
        dataset = examples.concatenate(imagenet._padding(image_size))
        dataset = dataset.take(total).batch(per_replica_batch_size,
                                            drop_remainder=True)
        return dataset.prefetch(tf.data.AUTOTUNE)

    return dataset_fn


def _check_count(name, value):
    """Raises ValueError naming `name` unless `value` is None or positive."""
    if value is not None:
        imagenet._check_positive(name, value)


@gin.configurable
def imagenet_tfrecord(data_dir=gin.REQUIRED, image_size=224,
                      shuffle_buffer=10000, label_offset=1, num_train=None,
                      num_eval=None):
    """ImageNet from Model Garden TFRecord shards as an `ImageNetSource`.

    Args:
        data_dir: Directory of `train-*-of-*` and `validation-*-of-*`.
        image_size: Side S of the square images fed to the model.
        shuffle_buffer: Records in each pipeline's shuffle buffer.
        label_offset: Subtracted from `image/class/label`; 1 for the Model
            Garden layout (labels 1..1000), 0 for files with labels 0..999.
        num_train: Number of training records; None to count them by reading
            every training file once on the host (minutes for the full
            1,281,167 records: pass `imagenet.NUM_TRAIN` then).
        num_eval: Number of validation records; None to count them
            (`imagenet.NUM_EVAL` = 50,000 for the full set). It sets the
            padded length of evaluation, so it must not be too small.

    Returns:
        An `ImageNetSource`: training batches `(images, labels)`, evaluation
        batches `(images, labels, weights)`, images float32 [n, S, S, 3],
        labels int32 [n]; its `skipped` counter counts corrupt images.

    Raises:
        ValueError: If `image_size`, `shuffle_buffer`, `num_train` or
            `num_eval` is not positive, or `label_offset` is not an int.
        FileNotFoundError: If `data_dir` has no training or no validation
            files.
    """
    imagenet._check_positive("image_size", image_size)
    imagenet._check_positive("shuffle_buffer", shuffle_buffer)
    if not isinstance(label_offset, int) or isinstance(label_offset, bool):
        raise ValueError(f"label_offset must be an integer, got "
                         f"{label_offset!r}")
    _check_count("num_train", num_train)
    _check_count("num_eval", num_eval)
    train_files, eval_files = list_files(data_dir)
    if num_train is None:
        num_train = count_records(train_files)
    if num_eval is None:
        num_eval = count_records(eval_files)
    counter = imagenet.SkipCounter()
    return imagenet.ImageNetSource(
        name="imagenet_tfrecord",
        num_train=num_train,
        num_eval=num_eval,
        num_classes=imagenet.NUM_CLASSES,
        image_shape=(image_size, image_size, 3),
        train_dataset_fn=_train_dataset_fn(train_files, image_size,
                                           shuffle_buffer, label_offset,
                                           counter),
        eval_dataset_fn=_eval_dataset_fn(eval_files, num_eval, image_size,
                                         label_offset, counter),
        skipped=counter)
