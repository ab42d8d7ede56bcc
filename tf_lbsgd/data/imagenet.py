"""ImageNet (TFDS `imagenet2012`) and synthetic ImageNet-shaped data sources.

Preprocessing (R13, R14) is in `imagenet_preprocessing`; this module reads
the records, deals them out among the input pipelines, counts corrupt images
and batches.

Corrupt images: TFDS is read with `SkipDecoding`, so the bytes are decoded
here. Decoding a corrupt image raises an error inside the map function; the
element is dropped by `ignore_errors` and counted in the data source's
`SkipCounter`. A fused crop decode only reads the rows it crops, so a JPEG
without its end-of-image marker (a truncated file) is also test-decoded at its
last pixel before it is used. To count the dropped elements, each pass over
the data is enumerated and closed by a sentinel element; after
`ignore_errors` the gaps between the indices of consecutive survivors (up to
the sentinel) are the skipped images. So the count of a pass is exact once
the pass has ended; a corrupt training image is counted once per epoch.

Sharding (R12): every epoch all pipelines shuffle the file list with one
shared seed and read files w, w + W, ... of it (`sharding.epoch_share_of_files`),
then shuffle their share in a local buffer and batch per replica with
`drop_remainder`. A run resumed at `start_step` > 0 starts a fresh shuffle
(its seed mixes in `start_step`) rather than replaying the skipped part of
the stream.
Evaluation is one ordered pass: pipeline w takes records w, w + W, ... and
pads with weight-0 examples to ceil(N / B) * R batches of n, the same count
on every pipeline, so that the weighted sums count every example once.
"""

import dataclasses
import math
import os
import zlib

import gin
import tensorflow as tf
import tensorflow_datasets as tfds

from tf_lbsgd import checks
from tf_lbsgd.data import imagenet_tfds
from tf_lbsgd.data.imagenet_preprocessing import preprocess_eval
from tf_lbsgd.data.imagenet_preprocessing import preprocess_train
from tf_lbsgd.data import sharding
from tf_lbsgd.data import source

NUM_CLASSES = imagenet_tfds.NUM_CLASSES
NUM_TRAIN = 1281167
NUM_EVAL = imagenet_tfds.NUM_VALIDATION


class SkipCounter:
    """Counts the images skipped because their bytes do not decode.

    The int64 variable is created on first use (in a dataset function or
    `value()`), on the host CPU, so that building a data source does not
    initialise the TensorFlow runtime. Create the datasets outside
    `strategy.scope()` (as `train_lib` does): inside, the variable would be
    mirrored.
    """

    def __init__(self):
        self._variable = None

    @property
    def variable(self):
        """The int64 scalar `tf.Variable` holding the count."""
        if self._variable is None:
            with tf.init_scope(), tf.device("/cpu:0"):
                self._variable = tf.Variable(
                    0, dtype=tf.int64, trainable=False,
                    name="skipped_images")
        return self._variable

    def value(self):
        """Returns the number of skipped images so far, as a Python int."""
        return int(self.variable.numpy())


@dataclasses.dataclass(frozen=True)
class ImageNetSource(source.DataSource):
    """A `DataSource` that also counts its corrupt, skipped images.

    Attributes:
        skipped: The `SkipCounter` incremented by the dataset functions.
    """

    skipped: SkipCounter


def _raw_examples(dataset):
    """Maps TFDS examples to `(image_bytes, label, is_real=True)`."""
    return dataset.map(
        lambda example: (example["image"], tf.cast(example["label"], tf.int32),
                         tf.constant(True)))


def _sentinel():
    """The one-element dataset closing a pass (see `_decode_pass`)."""
    return tf.data.Dataset.from_tensors(
        (tf.constant(b""), tf.constant(0, tf.int32), tf.constant(False)))


def _decode_pass(raw, preprocess_fn, image_size, counter):
    """Decodes one finite pass, dropping and counting undecodable images.

    Args:
        raw: Finite dataset of `(image_bytes, label, True)`.
        preprocess_fn: `image_bytes -> float32 [S, S, 3]`; raises on bad bytes.
        image_size: S, for the sentinel's placeholder image.
        counter: `SkipCounter` to increment by the number of dropped images.

    Returns:
        The dataset of `(image, label)` of the images that decoded, in order.
    """
    variable = counter.variable

    def decode(index, element):
        image_bytes, label, is_real = element
        image = tf.cond(is_real, lambda: preprocess_fn(image_bytes),
                        lambda: tf.zeros([image_size, image_size, 3]))
        return index, image, label, is_real

    def count_gaps(last_index, element):
        index, image, label, is_real = element
        add = variable.assign_add(index - last_index - 1)
        with tf.control_dependencies([add]):
            index = tf.identity(index)
        return index, (image, label, is_real)

    dataset = raw.concatenate(_sentinel()).enumerate()
    dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=True)
    dataset = dataset.ignore_errors()
    dataset = dataset.scan(tf.constant(-1, tf.int64), count_gaps)
    dataset = dataset.filter(lambda image, label, is_real: is_real)
    return dataset.map(lambda image, label, is_real: (image, label))


def _shuffle_seed(seed, start_step, pipeline_id):
    """Returns a 31-bit shuffle seed mixing the run seed, start and pipeline."""
    return zlib.crc32(f"{seed}/{start_step}/{pipeline_id}".encode()) & 0x7FFFFFFF


def _read_train(builder, input_context, shuffle_seed):
    """One epoch of this pipeline's part of the training split (R12).

    Reads TFDS's TFRecord files directly so that the files are dealt out
    under one shuffle shared by all pipelines (`sharding.epoch_share_of_files`)
    instead of TFDS's fixed per-pipeline split.
    """
    files = [os.fspath(p) for p in builder.info.splits["train"].filepaths]
    records = sharding.epoch_share_of_files(files, input_context,
                                            shuffle_seed)
    features = builder.info.features
    return records.map(
        lambda record: features.deserialize_example(
            record, decoders={"image": tfds.decode.SkipDecoding()}),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _check_start_step(start_step):
    """Raises ValueError unless `start_step` is non-negative."""
    if start_step < 0:
        raise ValueError(f"start_step must be non-negative, got {start_step}")


def _repeat_batches(epoch, per_replica_batch_size):
    """Repeats `epoch` forever in per-replica batches, remainder dropped."""
    dataset = epoch.repeat().batch(per_replica_batch_size, drop_remainder=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def train_pipeline(read_raw_train, image_size, shuffle_buffer, counter):
    """Returns a `train_dataset_fn` over the raw records of `read_raw_train`.

    Each pipeline reads one epoch of its raw records, shuffles them in a
    buffer, decodes them with `preprocess_train` (dropping and counting the
    corrupt images), repeats the epoch and batches it per replica.

    Args:
        read_raw_train: `(input_context, shared_seed) -> tf.data.Dataset`,
            one epoch of this pipeline's part of the training split as
            `(image_bytes, label, True)` elements (see `_decode_pass`),
            dealt out under a shuffle seeded by `shared_seed`, the same on
            every pipeline and new on every iteration (R12).
        image_size: Side S of the square output images.
        shuffle_buffer: Records in each pipeline's shuffle buffer.
        counter: `SkipCounter` counting the corrupt images.

    Returns:
        The `train_dataset_fn(input_context, per_replica_batch_size, seed,
        start_step)` of a `source.DataSource`.
    """

    def dataset_fn(input_context, per_replica_batch_size, seed, start_step):
        checks.positive_int("per_replica_batch_size", per_replica_batch_size)
        _check_start_step(start_step)
        # One shuffle shared by all pipelines deals out the epoch (R12);
        # each pipeline then shuffles its share with its own seed.
        shared_seed = _shuffle_seed(seed, start_step, "all")
        shuffle_seed = _shuffle_seed(seed, start_step,
                                     input_context.input_pipeline_id)
        raw = read_raw_train(input_context, shared_seed)
        raw = raw.shuffle(shuffle_buffer, seed=shuffle_seed,
                          reshuffle_each_iteration=True)
        epoch = _decode_pass(
            raw,
            lambda image_bytes: preprocess_train(image_bytes, image_size,
                                                 seed=shuffle_seed),
            image_size, counter)
        return _repeat_batches(epoch, per_replica_batch_size)

    return dataset_fn


def _padding(image_size):
    """An infinite dataset of weight-0 padding examples."""
    return tf.data.Dataset.from_tensors(
        (tf.zeros([image_size, image_size, 3]), tf.constant(0, tf.int32),
         tf.constant(0.0))).repeat()


def eval_examples_per_pipeline(num_eval, per_replica_batch_size, input_context):
    """Returns ceil(N / B) * R * n, the padded examples of each eval pipeline."""
    global_batch = per_replica_batch_size * input_context.num_replicas_in_sync
    num_steps = math.ceil(num_eval / global_batch)
    return num_steps * global_batch // input_context.num_input_pipelines


def _pad_and_batch(examples, total, image_size, per_replica_batch_size):
    """Weights `examples` 1, pads them with weight 0 to `total` and batches."""
    examples = examples.map(lambda image, label: (image, label,
                                                  tf.constant(1.0)))
    dataset = examples.concatenate(_padding(image_size)).take(total)
    dataset = dataset.batch(per_replica_batch_size, drop_remainder=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def eval_pipeline(read_raw_eval, num_eval, image_size, counter):
    """Returns an `eval_dataset_fn` over the raw records of `read_raw_eval`.

    Each pipeline decodes its records in order with `preprocess_eval`
    (dropping and counting the corrupt images) and pads them with weight-0
    examples to `eval_examples_per_pipeline` examples.

    Args:
        read_raw_eval: `input_context -> tf.data.Dataset`, this pipeline's
            validation records w, w + W, ... in order, as
            `(image_bytes, label, True)` elements (see `_decode_pass`).
        num_eval: Number N of validation records.
        image_size: Side S of the square output images.
        counter: `SkipCounter` counting the corrupt images.

    Returns:
        The `eval_dataset_fn(input_context, per_replica_batch_size)` of a
        `source.DataSource`.
    """

    def dataset_fn(input_context, per_replica_batch_size):
        # Validates the sizes the same way as the index datasets do.
        sharding.eval_index_dataset(num_eval, per_replica_batch_size,
                                    input_context)
        examples = _decode_pass(
            read_raw_eval(input_context),
            lambda image_bytes: preprocess_eval(image_bytes, image_size),
            image_size, counter)
        total = eval_examples_per_pipeline(num_eval, per_replica_batch_size,
                                           input_context)
        return _pad_and_batch(examples, total, image_size,
                              per_replica_batch_size)

    return dataset_fn


def _tfds_train_reader(builder):
    """Returns the `read_raw_train` of `train_pipeline` for TFDS `builder`."""

    def read_raw_train(input_context, shuffle_seed):
        return _raw_examples(_read_train(builder, input_context, shuffle_seed))

    return read_raw_train


def _tfds_eval_reader(builder):
    """Returns the `read_raw_eval` of `eval_pipeline` for TFDS `builder`."""

    def read_raw_eval(input_context):
        raw = builder.as_dataset(
            split="validation", shuffle_files=False,
            decoders={"image": tfds.decode.SkipDecoding()})
        raw = raw.shard(input_context.num_input_pipelines,
                        input_context.input_pipeline_id)
        return _raw_examples(raw)

    return read_raw_eval


def default_manual_dir(data_dir=None):
    """Returns TFDS's default manual_dir, `<data_dir>/downloads/manual`."""
    if data_dir is None:
        data_dir = os.environ.get(
            "TFDS_DATA_DIR", os.path.join("~", "tensorflow_datasets"))
    return os.path.join(os.path.expanduser(os.fspath(data_dir)), "downloads",
                        "manual")


@gin.configurable
def imagenet(data_dir=None, manual_dir=None, image_size=224,
             shuffle_buffer=10000):
    """ImageNet (ILSVRC2012) from TFDS `imagenet2012` as a `DataSource`.

    TFDS `imagenet2012` is built offline from `manual_dir` first if it is not
    prepared under `data_dir` yet (`imagenet_tfds.build_imagenet2012`).

    Args:
        data_dir: TFDS data directory; None for TFDS's default.
        manual_dir: Directory of the two ILSVRC2012 tars; None for
            `<data_dir>/downloads/manual`. Only needed for the first build.
        image_size: Side S of the square images fed to the model.
        shuffle_buffer: Records in each pipeline's shuffle buffer.

    Returns:
        An `ImageNetSource`: training batches `(images, labels)`, evaluation
        batches `(images, labels, weights)`, images float32 [n, S, S, 3],
        labels int32 [n]; its `skipped` counter counts corrupt images.

    Raises:
        ValueError: If `image_size` or `shuffle_buffer` is not positive.
        FileNotFoundError: If the dataset must be built and an archive is
            missing.
    """
    checks.positive_int("image_size", image_size)
    checks.positive_int("shuffle_buffer", shuffle_buffer)
    if manual_dir is None:
        manual_dir = default_manual_dir(data_dir)
    builder = imagenet_tfds.build_imagenet2012(data_dir, manual_dir)
    counter = SkipCounter()
    return ImageNetSource(
        name="imagenet",
        num_train=builder.info.splits["train"].num_examples,
        num_eval=builder.info.splits["validation"].num_examples,
        num_classes=NUM_CLASSES,
        image_shape=(image_size, image_size, 3),
        train_dataset_fn=train_pipeline(_tfds_train_reader(builder),
                                        image_size, shuffle_buffer, counter),
        eval_dataset_fn=eval_pipeline(
            _tfds_eval_reader(builder),
            builder.info.splits["validation"].num_examples, image_size,
            counter),
        skipped=counter)


def _random_batch(per_replica_batch_size, image_size, num_classes, seed):
    """One random batch `(images, labels)`: N(0, 1) pixels, uniform labels."""
    images = tf.random.stateless_normal(
        [per_replica_batch_size, image_size, image_size, 3], seed=[seed, 0])
    labels = tf.random.stateless_uniform(
        [per_replica_batch_size], seed=[seed, 1], maxval=num_classes,
        dtype=tf.int32)
    return images, labels


def _synthetic_train_fn(image_size, num_classes):
    """Returns the `train_dataset_fn` of `synthetic_imagenet`."""

    def dataset_fn(input_context, per_replica_batch_size, seed, start_step):
        del start_step  # Every batch is the same.
        checks.positive_int("per_replica_batch_size", per_replica_batch_size)
        batch_seed = seed + input_context.input_pipeline_id
        dataset = tf.data.Dataset.range(1).map(
            lambda _: _random_batch(per_replica_batch_size, image_size,
                                    num_classes, batch_seed))
        return dataset.cache().repeat().prefetch(tf.data.AUTOTUNE)

    return dataset_fn


def _synthetic_eval_fn(image_size, num_classes, num_eval):
    """Returns the `eval_dataset_fn` of `synthetic_imagenet`."""

    def dataset_fn(input_context, per_replica_batch_size):
        indices = sharding.eval_index_dataset(num_eval, per_replica_batch_size,
                                              input_context)
        images = tf.data.Dataset.range(1).map(
            lambda _: _random_batch(per_replica_batch_size, image_size,
                                    num_classes, 0)[0]).cache().repeat()

        def batch(image_batch, index_weights):
            index, weights = index_weights
            labels = tf.cast(index % num_classes, tf.int32)
            return image_batch, labels, weights

        dataset = tf.data.Dataset.zip(images, indices).map(batch)
        return dataset.prefetch(tf.data.AUTOTUNE)

    return dataset_fn


@gin.configurable
def synthetic_imagenet(image_size=224, num_classes=1000, num_train=NUM_TRAIN,
                       num_eval=NUM_EVAL):
    """Random tensors of ImageNet shape, for throughput benchmarks.

    Each pipeline generates one random batch with `tf.random` and repeats it,
    so that the input costs nearly nothing.

    Args:
        image_size: Side S of the square images.
        num_classes: Number of label classes.
        num_train: Nominal number of training examples (sets the epoch).
        num_eval: Number of evaluation examples.

    Returns:
        A `source.DataSource` with images float32 [n, S, S, 3] and labels
        int32 [n] in 0..num_classes - 1.

    Raises:
        ValueError: If a size is not positive.
    """
    for name, value in (("image_size", image_size),
                        ("num_classes", num_classes),
                        ("num_train", num_train), ("num_eval", num_eval)):
        checks.positive_int(name, value)
    return source.DataSource(
        name="synthetic_imagenet",
        num_train=num_train,
        num_eval=num_eval,
        num_classes=num_classes,
        image_shape=(image_size, image_size, 3),
        train_dataset_fn=_synthetic_train_fn(image_size, num_classes),
        eval_dataset_fn=_synthetic_eval_fn(image_size, num_classes, num_eval))
