"""Per-epoch shuffling of example indices, divided among the workers.

R12 (docs/paper.md; arXiv:1706.02677 Sec. 3, Remark 4): one random shuffle of
the training data per epoch, divided among all k workers. Data sets gather
their examples by the indices given here (see `adapters.from_arrays`).

N examples, n per replica, K replicas in sync (the paper's k workers), global
batch B = K * n, W input pipelines (pipeline w is
`input_context.input_pipeline_id`) of R = K / W local replicas each.

The training stream concatenates `epoch_permutation` of epochs 0, 1, ...:
step s takes positions `s * B ... s * B + B - 1`, global replica q the n of
them from `s * B + q * n`. Nothing is dropped (a batch may straddle two
epochs, and N / B steps per epoch may be fractional). Pipeline w feeds
replicas `w * R ... w * R + R - 1` and emits, step by step, their batches in
that order: the round robin in which `distribute_datasets_from_function`
hands a pipeline's elements to its local replicas (tests/test_sharding.py
checks it with a `MirroredStrategy`).

Arguments shared by the functions: `num_examples` N, `per_replica_batch_size`
n, `input_context` (this pipeline's `tf.distribute.InputContext`) and `seed`
(the run's, the same on every worker). A size that is not positive, or
replicas that do not split evenly among the pipelines, raise ValueError.
"""

import collections

import tensorflow as tf

_Layout = collections.namedtuple(
    "_Layout", ["num_examples", "per_replica", "num_replicas",
                "replicas_per_pipeline", "pipeline_id"])


def _layout(num_examples, per_replica_batch_size, input_context):
    """Validates the sizes and returns the `_Layout` of one input pipeline."""
    if num_examples <= 0:
        raise ValueError(f"number of examples must be positive, got {num_examples}")
    if per_replica_batch_size <= 0:
        raise ValueError("per-replica batch size must be positive, got "
                         f"{per_replica_batch_size}")
    num_replicas = input_context.num_replicas_in_sync
    num_pipelines = input_context.num_input_pipelines
    if num_replicas % num_pipelines:
        raise ValueError(f"{num_replicas} replicas are not divisible among "
                         f"{num_pipelines} input pipelines")
    return _Layout(num_examples, per_replica_batch_size, num_replicas,
                   num_replicas // num_pipelines, input_context.input_pipeline_id)


def pipeline_rows(per_replica_batch_size, input_context):
    """Where this pipeline's part lies in each global batch of B = K * n.

    Returns:
        `(B, first_row, R)`: rows `first_row = w * R * n` to
        `first_row + R * n - 1` of every global batch are this pipeline's.
    """
    layout = _layout(1, per_replica_batch_size, input_context)
    rows = layout.replicas_per_pipeline * layout.per_replica
    return (_global_batch(layout), layout.pipeline_id * rows,
            layout.replicas_per_pipeline)


def _global_batch(layout):
    """Returns B = K * n."""
    return layout.num_replicas * layout.per_replica


def _pipeline_positions(layout, step):
    """The [R, n] stream positions `layout`'s pipeline feeds at `step`.

    Row r: `step * B + q * n + [0, ..., n - 1]` for replica q = w * R + r.
    """
    pipeline_size = layout.replicas_per_pipeline * layout.per_replica
    first = (tf.cast(step, tf.int64) * _global_batch(layout)
             + layout.pipeline_id * pipeline_size)
    positions = first + tf.range(pipeline_size, dtype=tf.int64)
    return tf.reshape(positions, [layout.replicas_per_pipeline, layout.per_replica])


def epoch_permutation(num_examples, epoch, seed):
    """The random order of the training examples in one epoch (R12).

    A stateless Philox shuffle seeded by `(seed, epoch)`: the same on every
    worker (for a given TensorFlow version), new every epoch.

    Returns:
        An int64 tensor of shape [N], a permutation of `range(N)`.
    """
    key = tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.random.experimental.stateless_shuffle(
        tf.range(num_examples, dtype=tf.int64), seed=key, alg="philox")


def _stream_from(num_examples, seed, start_position):
    """The training stream from `start_position` on, as epochs' index vectors."""
    first_epoch, skip = divmod(start_position, num_examples)

    def epoch_indices(epoch):
        offset = tf.where(epoch == first_epoch, tf.constant(skip, tf.int64), 0)
        return epoch_permutation(num_examples, epoch, seed)[offset:]

    return tf.data.Dataset.counter(start=first_epoch).map(epoch_indices)


def train_index_dataset(num_examples, per_replica_batch_size, input_context,
                        seed, start_step=0, with_positions=False):
    """Training example indices of one input pipeline, one epoch shuffle (R12).

    Every pipeline builds the same stream (one shuffle of N int64 per epoch,
    no coordination between workers) and keeps its R chunks of n of each
    global batch, one per element (order: the module docstring).

    Args:
        start_step: Global step to start at, >= 0; a resumed run passes its
            checkpointed step and continues the same stream.
        with_positions: Also emit the examples' stream positions (e.g. to
            seed per-example augmentation).

    Returns:
        An infinite `tf.data.Dataset` of int64 [n] index vectors, or of
        `(indices, positions)` pairs if `with_positions`.
    """
    layout = _layout(num_examples, per_replica_batch_size, input_context)
    start_step = int(start_step)
    if start_step < 0:
        raise ValueError(f"start step must be non-negative, got {start_step}")
    global_batch = _global_batch(layout)
    batches = _stream_from(num_examples, seed, start_step * global_batch)
    batches = batches.rebatch(global_batch, drop_remainder=True)
    steps = tf.data.Dataset.counter(start=start_step)

    def pipeline_part(step, indices):
        positions = _pipeline_positions(layout, step)
        local = positions - step * global_batch
        return tf.gather(indices, local), positions

    dataset = tf.data.Dataset.zip(steps, batches).map(pipeline_part).unbatch()
    if not with_positions:
        dataset = dataset.map(lambda indices, positions: indices)
    return dataset


def eval_index_dataset(num_examples, per_replica_batch_size, input_context):
    """One ordered pass over the evaluation examples of one input pipeline.

    ceil(N / B) global batches split as in training; positions past N are
    padding (index 0, weight 0), so a weighted sum counts each example once.

    Returns:
        A finite `tf.data.Dataset` of `(indices, weights)`: int64 [n] example
        indices and float32 [n] weights in {0, 1}.
    """
    layout = _layout(num_examples, per_replica_batch_size, input_context)
    num_steps = -(-num_examples // _global_batch(layout))

    def pipeline_part(step):
        positions = _pipeline_positions(layout, step)
        valid = positions < num_examples
        return (tf.where(valid, positions, tf.zeros_like(positions)),
                tf.cast(valid, tf.float32))

    return tf.data.Dataset.range(num_steps).map(pipeline_part).unbatch()


def _interleave_records(files):
    """Records of a dataset of file names, read in order (deterministic)."""
    return files.interleave(tf.data.TFRecordDataset, cycle_length=16,
                            num_parallel_calls=tf.data.AUTOTUNE,
                            deterministic=True)


def epoch_share_of_files(files, input_context, seed, buffer_size=10000):
    """One epoch of this pipeline's records under one shared shuffle (R12).

    Every pipeline shuffles the file list with the same `seed` (the same order
    on all workers, a new one each time the dataset is iterated) and reads
    files w, w + W, ... of it; with fewer files than pipelines, records
    w, w + W, ... of all records shuffled alike. The caller shuffles the share
    locally (`imagenet.train_pipeline`).

    Args:
        files: Training file paths (TFRecord).
        buffer_size: Record shuffle buffer when files < pipelines.

    Returns:
        A finite dataset of serialized records: one epoch of this pipeline.
    """
    num_pipelines = input_context.num_input_pipelines
    pipeline_id = input_context.input_pipeline_id
    order = tf.data.Dataset.from_tensor_slices(list(files)).shuffle(
        len(files), seed=seed, reshuffle_each_iteration=True)
    if num_pipelines == 1:
        return _interleave_records(order)
    if len(files) >= num_pipelines:
        return _interleave_records(order.shard(num_pipelines, pipeline_id))
    records = _interleave_records(order).shuffle(
        buffer_size, seed=seed, reshuffle_each_iteration=True)
    return records.shard(num_pipelines, pipeline_id)
