"""Your own data as a `DataSource`: in-memory arrays or a `tf.data.Dataset`.

The training loop reads every data set through a `source.DataSource`; these
adapters build one from a user's examples so that the recipe applies to them
exactly as to the built-in data sets (`fashion_mnist` is a user of
`from_arrays`):

- `from_arrays(train=(images, labels), eval=...)`: examples in memory. Each
  input pipeline gathers its batches by the example indices of
  `sharding.train_index_dataset`: one random shuffle per epoch divided among
  the k workers (R12, arXiv:1706.02677 Sec. 3 Remark 4), nothing dropped, a
  resumed run continuing the exact same stream, the same order for any k.
- `from_dataset(train, eval=...)`: a finite `tf.data.Dataset` of unbatched
  `(image, label)` examples. Every input pipeline reads the same stream
  (`example_stream`: the same epoch permutations, so the same batches as
  `from_arrays` of the same examples) and keeps its rows of each global
  batch. Each pipeline reads, and per epoch holds, the whole data set,
  which suits data that fits in memory; for large data on many hosts,
  write a `DataSource` whose `train_dataset_fn` reads each worker's part
  from files, as `imagenet.imagenet` does.

Evaluation passes are cut into global batches as in training, the last one
padded with weight-0 examples, so that every example counts exactly once for
any number of replicas.
"""

import functools

import numpy as np
import tensorflow as tf

from tf_lbsgd import checks
from tf_lbsgd.data import sharding
from tf_lbsgd.data import source


def example_seeds(seed, positions):
    """Per-example stateless seeds (seed, stream position), int64 [n, 2].

    Augmentation seeded this way is a pure function of the run seed and the
    example's position in the training stream: identical after a resume and
    for any number of workers.
    """
    positions = tf.cast(positions, tf.int64)
    return tf.stack([tf.fill(tf.shape(positions), tf.cast(seed, tf.int64)),
                     positions], axis=1)


def _check_arrays(split, arrays, num_classes):
    """Returns `(images, labels)` as numpy arrays with integer labels."""
    if not isinstance(arrays, (tuple, list)) or len(arrays) != 2:
        raise ValueError(f"{split} must be a pair (images, labels) of arrays, "
                         f"got {type(arrays).__name__}")
    images, labels = np.asarray(arrays[0]), np.asarray(arrays[1])
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{split} labels must be a 1-D array of integer class ids, got "
            f"shape {labels.shape} and dtype {labels.dtype} (one-hot labels: "
            f"pass labels.argmax(-1))")
    if len(images) != len(labels):
        raise ValueError(f"{split} has {len(images)} images but "
                         f"{len(labels)} labels")
    if not len(labels):
        raise ValueError(f"{split} has no examples")
    if num_classes is not None and not 0 <= labels.min() <= labels.max() < (
            num_classes):
        raise ValueError(
            f"{split} labels run from {labels.min()} to {labels.max()}, "
            f"outside 0 ... {num_classes - 1} for num_classes={num_classes}")
    return images, labels.astype(np.int32)


def _mapped_image_shape(images, map_fn):
    """The shape of one image after `map_fn(images, labels, seeds)`."""
    if map_fn is None:
        return tuple(images.shape[1:])
    spec = tf.TensorSpec((None,) + images.shape[1:], tf.as_dtype(images.dtype))
    traced = tf.function(lambda x: map_fn(x, tf.zeros([tf.shape(x)[0]],
                                                      tf.int32),
                                          tf.zeros([tf.shape(x)[0], 2],
                                                   tf.int64)))
    out = traced.get_concrete_function(spec).structured_outputs[0]
    return tuple(out.shape[1:])


def _arrays_train_fn(images, labels, map_fn):
    """`train_dataset_fn` gathering batches from in-memory arrays (R12)."""

    def dataset_fn(input_context, per_replica_batch_size, seed, start_step):
        images_t, labels_t = tf.constant(images), tf.constant(labels)

        def batch(indices, positions):
            x, y = tf.gather(images_t, indices), tf.gather(labels_t, indices)
            if map_fn is not None:
                x, y = map_fn(x, y, example_seeds(seed, positions))
            return x, y

        dataset = sharding.train_index_dataset(
            len(labels), per_replica_batch_size, input_context, seed,
            start_step=start_step, with_positions=True)
        return dataset.map(batch, num_parallel_calls=tf.data.AUTOTUNE,
                           deterministic=True).prefetch(tf.data.AUTOTUNE)

    return dataset_fn


def _arrays_eval_fn(images, labels, map_fn):
    """`eval_dataset_fn`: one padded pass over in-memory arrays."""

    def dataset_fn(input_context, per_replica_batch_size):
        images_t, labels_t = tf.constant(images), tf.constant(labels)

        def batch(indices, weights):
            x, y = tf.gather(images_t, indices), tf.gather(labels_t, indices)
            if map_fn is not None:
                x, y = map_fn(x, y)
            return x, y, weights

        dataset = sharding.eval_index_dataset(
            len(labels), per_replica_batch_size, input_context)
        return dataset.map(batch, num_parallel_calls=tf.data.AUTOTUNE,
                           deterministic=True).prefetch(tf.data.AUTOTUNE)

    return dataset_fn


def from_arrays(train, eval=None, num_classes=None, train_map_fn=None,  # pylint: disable=redefined-builtin
                eval_map_fn=None, image_shape=None, name="arrays"):
    """A `DataSource` over examples held in memory (numpy arrays).

    Args:
        train: `(images, labels)`: images [N, ...] of any dtype, labels [N]
            integer class ids.
        eval: optional `(images, labels)` of the evaluation set; without it
            the run cannot evaluate (train only).
        num_classes: the number of classes C (labels in 0 ... C - 1); None to
            take it from the model's output.
        train_map_fn: optional `(images, labels, seeds) -> (images, labels)`
            applied to each per-replica batch of training examples:
            preprocessing and augmentation, `seeds` int64 [n, 2] being
            per-example stateless seeds (`example_seeds`).
        eval_map_fn: optional `(images, labels) -> (images, labels)` for the
            evaluation batches (the deterministic preprocessing).
        image_shape: the shape of one image as the model takes it; None to
            infer it (from the arrays, or by tracing `train_map_fn`).
        name: a short name of the data set.

    Returns:
        A `source.DataSource`.

    Raises:
        ValueError: naming the split and the problem (not a pair, images and
            labels of different lengths, no examples, labels that are not
            integer ids or out of range).
    """
    images, labels = _check_arrays("train", train, num_classes)
    eval_fn, num_eval = None, 0
    if eval is not None:
        eval_images, eval_labels = _check_arrays("eval", eval, num_classes)
        eval_fn = _arrays_eval_fn(eval_images, eval_labels, eval_map_fn)
        num_eval = len(eval_labels)
    if image_shape is None:
        image_shape = _mapped_image_shape(images, train_map_fn)
    return source.DataSource(
        name=name, num_train=len(labels), num_eval=num_eval,
        num_classes=num_classes, image_shape=tuple(image_shape),
        train_dataset_fn=_arrays_train_fn(images, labels, train_map_fn),
        eval_dataset_fn=eval_fn)


def dataset_size(split, dataset, size=None):
    """The number of examples of a finite `dataset`.

    Args:
        split: "train" or "eval", for the messages.
        dataset: a `tf.data.Dataset` of unbatched examples.
        size: the size if the caller knows it (needed when TensorFlow does
            not, e.g. after `filter`).

    Raises:
        ValueError: for an infinite dataset, an unknown size not given, or a
            given size that differs from the known one.
    """
    known = int(dataset.cardinality())
    if known == tf.data.INFINITE_CARDINALITY:
        raise ValueError(
            f"the {split} dataset is infinite (a repeat()?); pass one pass "
            f"over the data: the recipe makes the epochs itself")
    if known == tf.data.UNKNOWN_CARDINALITY:
        if size is None:
            raise ValueError(
                f"the {split} dataset has no known size (tf.data cannot tell "
                f"after filter() and the like); pass num_{split}=<number of "
                f"examples>, the epoch length of the recipe's schedule")
        checks.positive_int(f"num_{split}", size)
        return size
    if size is not None and size != known:
        raise ValueError(f"num_{split}={size!r} but the {split} dataset has "
                         f"{known} examples")
    if not known:
        raise ValueError(f"the {split} dataset has no examples")
    return known


def _example_specs(split, dataset):
    """The (image, label) specs of a dataset of unbatched examples."""
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) != 2 or not all(
            isinstance(s, tf.TensorSpec) for s in spec):
        raise ValueError(
            f"the {split} dataset must yield (image, label) pairs of tensors, "
            f"got elements {spec}")
    image, label = spec
    if label.shape.rank != 0 or not label.dtype.is_integer:
        raise ValueError(
            f"the {split} dataset's labels must be scalar integer class ids, "
            f"got {label} (is it batched? pass unbatched examples; one-hot? "
            f"map them with tf.argmax)")
    if not image.shape.is_fully_defined():
        raise ValueError(
            f"the {split} dataset's images have shape {image.shape}; the "
            f"model needs one fixed shape (is it batched? pass unbatched "
            f"examples; or resize the images)")
    return image, label


def example_stream(dataset, num_examples, seed, start_position=0):
    """The training stream of a dataset of examples, from `start_position`.

    Epoch e is the dataset's N examples in the order of
    `sharding.epoch_permutation(N, e, seed)` (R12: one random shuffle per
    epoch, which every pipeline computes alike): the same stream
    `from_arrays` makes of the same examples. Stream position p is example
    p % N of epoch p // N; a resume skips only the part of one epoch already
    trained on. Each epoch reads the dataset once and holds it in memory
    (as a full shuffle buffer would).

    Args:
        dataset: a finite `tf.data.Dataset` of N examples in a fixed order.
        num_examples: N.
        seed: the run seed.
        start_position: the first stream position to yield.

    Returns:
        An infinite `tf.data.Dataset` of examples.
    """
    first_epoch, skip = divmod(int(start_position), num_examples)
    whole = dataset.take(num_examples).batch(num_examples)

    def epoch(e):
        order = sharding.epoch_permutation(num_examples, e, seed)
        return whole.map(lambda *example: tuple(
            tf.gather(t, order) for t in example)).unbatch()

    return tf.data.Dataset.counter(start=first_epoch).flat_map(epoch).skip(
        skip)


def _rows(tensor, first_row, replicas, per_replica):
    """Rows first_row ... of a global batch, as [replicas, per_replica, ...]."""
    part = tensor[first_row:first_row + replicas * per_replica]
    return tf.reshape(part, tf.concat([[replicas, per_replica],
                                       tf.shape(tensor)[1:]], 0))


def _dataset_train_fn(dataset, num_examples):
    """`train_dataset_fn` of a dataset: this pipeline's rows of each batch."""

    def dataset_fn(input_context, per_replica_batch_size, seed, start_step):
        global_batch, first_row, replicas = sharding.pipeline_rows(
            per_replica_batch_size, input_context)
        stream = example_stream(dataset, num_examples, seed,
                                start_step * global_batch)
        part = functools.partial(_rows, first_row=first_row,
                                 replicas=replicas,
                                 per_replica=per_replica_batch_size)
        batches = stream.batch(global_batch, drop_remainder=True)
        return batches.map(lambda x, y: (part(x), part(y))).unbatch(
        ).prefetch(tf.data.AUTOTUNE)

    return dataset_fn


def _pad_rows(tensor, size):
    """`tensor` padded with zeros along axis 0 to `size` rows."""
    pad = [[0, size - tf.shape(tensor)[0]]] + [[0, 0]] * (
        tensor.shape.rank - 1)
    return tf.pad(tensor, pad)


def _dataset_eval_fn(dataset):
    """`eval_dataset_fn` of a dataset: padded global batches, weights."""

    def dataset_fn(input_context, per_replica_batch_size):
        global_batch, first_row, replicas = sharding.pipeline_rows(
            per_replica_batch_size, input_context)
        part = functools.partial(_rows, first_row=first_row,
                                 replicas=replicas,
                                 per_replica=per_replica_batch_size)

        def pipeline_part(x, y, weights):
            return tuple(part(_pad_rows(t, global_batch))
                         for t in (x, y, weights))

        weighted = dataset.map(lambda x, y: (x, y, tf.constant(1.0)))
        return weighted.batch(global_batch).map(pipeline_part).unbatch(
        ).prefetch(tf.data.AUTOTUNE)

    return dataset_fn


def from_dataset(train, eval=None, num_classes=None, num_train=None,  # pylint: disable=redefined-builtin
                 num_eval=None, name="dataset"):
    """A `DataSource` over `tf.data.Dataset`s of unbatched examples.

    Args:
        train: a finite dataset of `(image, label)` examples, image of one
            fixed shape (preprocessed as the model takes it), label a scalar
            integer class id, in the same order at every iteration (no
            reshuffling of its own: the recipe shuffles, R12).
        eval: optional dataset of evaluation examples, likewise.
        num_classes: the number of classes; None to take it from the model.
        num_train: the number of training examples, needed when tf.data
            does not know it (`dataset.cardinality()` is unknown).
        num_eval: likewise for `eval`.
        name: a short name of the data set.

    Returns:
        A `source.DataSource`.

    Raises:
        ValueError: naming the problem: an infinite dataset or one of
            unknown size without `num_train`, elements that are not
            `(image, label)` pairs, batched examples, labels that are not
            integer ids, images without a fixed shape.
    """
    image, _ = _example_specs("train", train)
    num_train = dataset_size("train", train, num_train)
    eval_fn = None
    if eval is not None:
        eval_image, _ = _example_specs("eval", eval)
        if eval_image.shape != image.shape:
            raise ValueError(f"eval images have shape {eval_image.shape} but "
                             f"train images {image.shape}")
        num_eval = dataset_size("eval", eval, num_eval)
        eval_fn = _dataset_eval_fn(eval.take(num_eval))
    return source.DataSource(
        name=name, num_train=num_train, num_eval=num_eval or 0,
        num_classes=num_classes, image_shape=tuple(image.shape),
        train_dataset_fn=_dataset_train_fn(train, num_train),
        eval_dataset_fn=eval_fn)
