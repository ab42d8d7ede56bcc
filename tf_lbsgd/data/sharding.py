"""Per-epoch shuffling of example indices, divided among the workers (R12).

PAPER.md R12 (Goyal et al. 2017, Remark 4): "we use a single random shuffling
of the training data (per epoch) that is divided amongst all k workers". This
module works on example indices only; data sets gather their examples from the
indices (see `fashion_mnist.py`).

Notation: N examples, n examples per replica, K replicas in sync (the paper's
k workers), global batch B = K * n, W input pipelines (one per host; pipeline w
is `input_context.input_pipeline_id`) each feeding R = K / W local replicas.

The training stream is the concatenation of the epoch permutations
`perm_0, perm_1, ...` (`epoch_permutation`), so stream position p holds example
`perm_{p // N}[p % N]`. Global step s consumes the positions
`s * B ... s * B + B - 1`, and global replica q the n consecutive positions
`s * B + q * n ... s * B + (q + 1) * n - 1`. Nothing is dropped: a global batch
that straddles an epoch boundary finishes one permutation and starts the next,
so each epoch's N examples are each used exactly once and steps_per_epoch =
N / B may be fractional.

Pipeline w serves global replicas `w * R ... w * R + R - 1` and emits their
per-replica batches step by step: step s replica w*R, ..., step s replica
w*R + R - 1, step s + 1 replica w*R, ... This is the order in which
`tf.distribute` strategies hand out a pipeline's consecutive elements to its
local replicas (round robin over the local devices) when the dataset comes from
`strategy.distribute_datasets_from_function`; tests/test_sharding.py checks it
with a `MirroredStrategy`.
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

    Args:
        per_replica_batch_size: n, the examples per replica and step.
        input_context: The `tf.distribute.InputContext` of this pipeline.

    Returns:
        `(global_batch, first_row, replicas_per_pipeline)`: pipeline w feeds
        the R = K / W replicas `w * R ... w * R + R - 1`, i.e. rows
        `first_row = w * R * n` to `first_row + R * n - 1` of every global
        batch, n rows per replica in that order (the module docstring).

    Raises:
        ValueError: If n is not positive or the replicas do not split evenly
            among the input pipelines.
    """
    layout = _layout(1, per_replica_batch_size, input_context)
    rows = layout.replicas_per_pipeline * layout.per_replica
    return (_global_batch(layout), layout.pipeline_id * rows,
            layout.replicas_per_pipeline)


def _global_batch(layout):
    """Returns B = K * n."""
    return layout.num_replicas * layout.per_replica


def _pipeline_positions(layout, step):
    """Returns the [R, n] stream positions that `layout`'s pipeline feeds at `step`.

    Row r holds the positions of global replica q = w * R + r:
    `step * B + q * n + [0, ..., n - 1]`.
    """
    pipeline_size = layout.replicas_per_pipeline * layout.per_replica
    first = (tf.cast(step, tf.int64) * _global_batch(layout)
             + layout.pipeline_id * pipeline_size)
    positions = first + tf.range(pipeline_size, dtype=tf.int64)
    return tf.reshape(positions, [layout.replicas_per_pipeline, layout.per_replica])


def epoch_permutation(num_examples, epoch, seed):
    """The random order of the training examples in one epoch (R12, Remark 4).

    A stateless shuffle of `[0, ..., N - 1]` seeded by `(seed, epoch)` with the
    Philox algorithm: a pure function of its arguments, hence the same on every
    worker and process (for a given TensorFlow version), and a fresh
    permutation for every epoch.

    Args:
        num_examples: N, the number of training examples.
        epoch: Epoch number (int or int64 scalar tensor).
        seed: Integer seed of the run.

    Returns:
        An int64 tensor of shape [N], a permutation of `range(N)`.
    """
    key = tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.random.experimental.stateless_shuffle(
        tf.range(num_examples, dtype=tf.int64), seed=key, alg="philox")


def _stream_from(num_examples, seed, start_position):
    """The training stream from `start_position` on, as a dataset of index vectors.

    Element i is (a suffix of) `epoch_permutation(N, first_epoch + i, seed)`;
    concatenated, the elements are the stream positions `start_position, ...`.
    """
    first_epoch, skip = divmod(start_position, num_examples)

    def epoch_indices(epoch):
        offset = tf.where(epoch == first_epoch, tf.constant(skip, tf.int64), 0)
        return epoch_permutation(num_examples, epoch, seed)[offset:]

    return tf.data.Dataset.counter(start=first_epoch).map(epoch_indices)


def train_index_dataset(num_examples, per_replica_batch_size, input_context,
                        seed, start_step=0, with_positions=False):
    """Training example indices of one input pipeline, one epoch shuffle (R12).

    The stream of epoch permutations is cut into global batches of B = K * n;
    this pipeline keeps its R consecutive chunks of n of every global batch
    and emits them one per element (see the module docstring for the order).
    Every pipeline builds the same stream (it costs one shuffle of N int64 per
    epoch), so no coordination between workers is needed.

    Args:
        num_examples: N, the number of training examples.
        per_replica_batch_size: n, the examples per replica and step.
        input_context: The `tf.distribute.InputContext` of this pipeline.
        seed: Integer seed of the run (the same on every worker).
        start_step: Global step to start at; a resumed run passes its
            checkpointed step and continues the exact same stream. The start
            epoch is computed directly, only part of one epoch is skipped.
        with_positions: Also emit the global stream positions of the examples,
            e.g. to seed per-example augmentation.

    Returns:
        An infinite `tf.data.Dataset` of int64 [n] index vectors, or of
        `(indices, positions)` pairs if `with_positions`.

    Raises:
        ValueError: If a size is not positive, `start_step` is negative, or the
            replicas do not split evenly among the input pipelines.
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

    Positions `0 ... N - 1` are cut into ceil(N / B) global batches exactly as
    in training (same per-replica chunks, same pipeline split); the positions
    past the end of the data are padding with index 0 and weight 0, so that a
    weighted sum over all replicas counts every example exactly once.

    Args:
        num_examples: N, the number of evaluation examples.
        per_replica_batch_size: n, the examples per replica and step.
        input_context: The `tf.distribute.InputContext` of this pipeline.

    Returns:
        A finite `tf.data.Dataset` of `(indices, weights)`: int64 [n] example
        indices and float32 [n] weights in {0, 1}.

    Raises:
        ValueError: If a size is not positive or the replicas do not split
            evenly among the input pipelines.
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

    PAPER.md R12 (Goyal et al. 2017, Remark 4): one random shuffle of the
    training set per epoch, divided among the k workers, rather than a fixed
    part per worker. For data in files, every pipeline shuffles the file list
    with the same `seed` (so each epoch's order is identical on all workers
    and new every epoch: iterating again reshuffles) and reads files
    w, w + W, ... of it. With fewer files than pipelines every pipeline reads
    all records, shuffles them in a `buffer_size` buffer with the same seed
    and keeps records w, w + W, .... Each pipeline then shuffles its share
    locally (see `imagenet.train_pipeline`).

    Args:
        files: Training file paths (TFRecord).
        input_context: The `tf.distribute.InputContext` of this pipeline.
        seed: Shuffle seed, the same on every pipeline.
        buffer_size: Record shuffle buffer of the fewer-files-than-pipelines
            case.

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
