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

The parsed `(image_bytes, label, True)` records go through the same shuffle,
decode (with corrupt-image skipping and counting), batch and padding code as
the TFDS source: `imagenet.train_pipeline` and `imagenet.eval_pipeline`; see
`tf_lbsgd.data.imagenet` for the details.
"""

import os

import gin
import tensorflow as tf

from tf_lbsgd import checks
from tf_lbsgd.data import imagenet
from tf_lbsgd.data import sharding

TRAIN_PATTERN = "train-*-of-*"
EVAL_PATTERN = "validation-*-of-*"
IMAGE_KEY = "image/encoded"
LABEL_KEY = "image/class/label"
# Files read at once by each training pipeline.
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
        The raw element read by `imagenet.train_pipeline` and
        `imagenet.eval_pipeline`: the encoded
        image, the int32 label minus `label_offset` and a True `is_real`.
    """
    features = tf.io.parse_single_example(serialized, _FEATURES)
    label = tf.cast(features[LABEL_KEY] - label_offset, tf.int32)
    return features[IMAGE_KEY], label, tf.constant(True)


def read_train(files, input_context, shuffle_seed):
    """One epoch of this pipeline's training records under one shared shuffle.

    See `sharding.epoch_share_of_files` (R12): the same shuffled file order
    on every pipeline, new every epoch, dealt out file by file.

    Args:
        files: Sorted training file paths.
        input_context: `tf.distribute.InputContext` of this pipeline.
        shuffle_seed: Seed of the shared shuffle (the same on all pipelines).

    Returns:
        A finite dataset of serialized examples (one epoch).
    """
    return sharding.epoch_share_of_files(files, input_context, shuffle_seed)


def read_eval(files, input_context):
    """Reads this pipeline's validation records: w, w + W, ... in file order."""
    dataset = tf.data.TFRecordDataset(files)
    return dataset.shard(input_context.num_input_pipelines,
                         input_context.input_pipeline_id)


def _parse_all(records, label_offset, **map_kwargs):
    """Maps serialized `records` to raw `(image_bytes, label, True)`."""
    return records.map(lambda record: parse_example(record, label_offset),
                       **map_kwargs)


def _train_reader(files, label_offset):
    """Returns the `read_raw_train` of `imagenet.train_pipeline`."""

    def read_raw_train(input_context, shuffle_seed):
        return _parse_all(read_train(files, input_context, shuffle_seed),
                          label_offset, num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=True)

    return read_raw_train


def _eval_reader(files, label_offset):
    """Returns the `read_raw_eval` of `imagenet.eval_pipeline`."""

    def read_raw_eval(input_context):
        return _parse_all(read_eval(files, input_context), label_offset)

    return read_raw_eval


def _check_count(name, value):
    """Raises ValueError naming `name` unless `value` is None or positive."""
    if value is not None:
        checks.positive_int(name, value)


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
    checks.positive_int("image_size", image_size)
    checks.positive_int("shuffle_buffer", shuffle_buffer)
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
        train_dataset_fn=imagenet.train_pipeline(
            _train_reader(train_files, label_offset), image_size,
            shuffle_buffer, counter),
        eval_dataset_fn=imagenet.eval_pipeline(
            _eval_reader(eval_files, label_offset), num_eval, image_size,
            counter),
        skipped=counter)
