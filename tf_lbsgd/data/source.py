"""`DataSource`: what the trainer needs to know about a data set.

A data source bundles the sizes of a data set with two dataset factories that
are called once per input pipeline by
`tf.distribute.Strategy.distribute_datasets_from_function`:

- `train_dataset_fn(input_context, per_replica_batch_size, seed, start_step)`
  returns an infinite `tf.data.Dataset` of per-replica training batches
  `(images, labels)` that starts at global step `start_step` (see
  `sharding.train_index_dataset` for the order of the batches);
- `eval_dataset_fn(input_context, per_replica_batch_size)` returns one pass of
  per-replica evaluation batches `(images, labels, weights)` in which padding
  examples have weight 0 (see `sharding.eval_index_dataset`).

`adapters.from_arrays` and `adapters.from_dataset` build one from a user's
in-memory arrays or `tf.data.Dataset`.
"""

import dataclasses
from typing import Callable, Optional

import tensorflow as tf

TrainDatasetFn = Callable[[tf.distribute.InputContext, int, int, int],
                          tf.data.Dataset]
EvalDatasetFn = Callable[[tf.distribute.InputContext, int], tf.data.Dataset]


@dataclasses.dataclass(frozen=True)
class DataSource:
    """A data set: its sizes and its per-pipeline dataset factories.

    Attributes:
        name: Short name of the data set, e.g. "fashion_mnist".
        num_train: Number N of training examples (one epoch).
        num_eval: Number of evaluation examples.
        num_classes: Number of label classes; None to take it from the
            model's output (a user's data, `adapters`).
        image_shape: Shape of one preprocessed image, (height, width, channels).
        train_dataset_fn: `(input_context, per_replica_batch_size, seed,
            start_step) -> tf.data.Dataset` of `(images, labels)`.
        eval_dataset_fn: `(input_context, per_replica_batch_size) ->
            tf.data.Dataset` of `(images, labels, weights)`; None when
            there is no evaluation set (the run can only train).
    """

    name: str
    num_train: int
    num_eval: int
    num_classes: Optional[int]
    image_shape: tuple
    train_dataset_fn: TrainDatasetFn
    eval_dataset_fn: Optional[EvalDatasetFn]


def check_divisible(global_batch_size, num_replicas):
    """Returns the per-replica batch size n = kn / k.

    Args:
        global_batch_size: The minibatch size kn summed over all replicas.
        num_replicas: The number k of replicas in sync.

    Returns:
        The per-replica batch size, `global_batch_size // num_replicas`.

    Raises:
        ValueError: If either size is not positive, or if the global batch does
            not split evenly among the replicas.
    """
    if num_replicas <= 0:
        raise ValueError(f"number of replicas must be positive, got {num_replicas}")
    if global_batch_size <= 0:
        raise ValueError(
            f"global batch size must be positive, got {global_batch_size}")
    if global_batch_size % num_replicas:
        raise ValueError(f"global batch {global_batch_size} is not divisible by "
                         f"{num_replicas} replicas")
    return global_batch_size // num_replicas


def num_skipped_images(data_source):
    """Returns how many images `data_source` skipped so far (0 if it cannot).

    Args:
        data_source: Any `source.DataSource`.

    Returns:
        The count of `ImageNetSource.skipped`, else 0.
    """
    counter = getattr(data_source, "skipped", None)
    return counter.value() if counter is not None else 0
