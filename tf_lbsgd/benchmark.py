"""Shared parts of the benchmarks (`tf_lbsgd.benchmarks`, `scaling_bench`).

Timing, the machine and a synthetic-data Trainer (the peaks of the CPU are
measured by `tf_lbsgd.benchmarks.peaks`).

Every benchmark measures its peers in the same process run, interleaved
(round-robin), so a slower or busier machine moves all of them alike; the
tables report medians over rounds and ratios against the peers.
"""

import os
import statistics
import sys
import time

import tensorflow as tf

from tf_lbsgd import precision as precision_lib
from tf_lbsgd.analysis import machine
from tf_lbsgd.analysis import tables


def interleaved(runners, rounds):
    """Runs each named callable once per round, round-robin.

    Args:
        runners: dict name -> callable returning a measurement (a number or
            a dict of numbers).
        rounds: how many rounds.

    Returns:
        dict name -> list of the `rounds` measurements, in round order.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    results = {name: [] for name in runners}
    for _ in range(rounds):
        for name, runner in runners.items():
            results[name].append(runner())
    return results


def exit_without_teardown():
    """Ends a benchmark's process, output flushed, without TensorFlow's
    teardown: with one thread per op (`cpu_threads`, several replicas) the
    destructor of an endless `synthetic_dataset`'s iterator can wait forever
    at exit (a MultiDeviceIterator's tf.data thread, seen on the Xeon with
    the small model): TensorFlow's known hangs of dataset iterators with a
    small inter-op pool (tensorflow/tensorflow#21277, a dataset's session
    destructor with one inter-op thread; #38969, open). Call it once
    everything is written."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # pylint: disable=protected-access


def median(values):
    """The median of a non-empty sequence of numbers."""
    values = list(values)
    if not values:
        raise ValueError("median of no values")
    return float(statistics.median(values))


def write_json(path, payload):
    """Writes `payload` with the machine info to `path` (dirs created);
    nothing without a `path`."""
    if path:
        tables.write_json(path, {"machine": machine.machine_info(),
                                 **payload})


def synthetic_dataset(strategy, per_replica_batch, image_shape, num_classes,
                      seed=0):
    """A distributed dataset repeating one random batch per replica.

    The batch lives in memory, so the step time is the model's alone. The
    dataset is endless: use it only in processes that keep the iterator
    until they exit (benchmarks), not in a long test process.
    """
    def dataset_fn(context):
        pipeline = context.input_pipeline_id
        images = tf.random.stateless_normal(
            [per_replica_batch, *image_shape], seed=[seed, pipeline])
        labels = tf.random.stateless_uniform(
            [per_replica_batch], seed=[seed + 1, pipeline], maxval=num_classes,
            dtype=tf.int32)
        return tf.data.Dataset.from_tensors((images, labels)).repeat()
    return strategy.distribute_datasets_from_function(dataset_fn)


class SyntheticTrainer:
    """The project's real `trainer.Trainer` on synthetic data, to be timed.

    Builds model, `MomentumSGD` (aggregate_gradients=False, constant rate)
    and Trainer under `strategy.scope()` as `train_lib.run` does: the model
    under the Keras dtype policy `precision`, and for `mixed_float16` the
    optimizer wrapped in the project's dynamic loss scaling
    (`precision.with_loss_scaling`), and a strategy of packed workers
    (`worker_packing`) run with ghost BN per worker of `per_replica_batch`
    examples, each replica taking its workers' batches. `time_loop(steps)`
    runs one orbit loop
    of `steps` steps inside one `tf.function` and returns its seconds (the
    loop ends with a host read of the step's sums: a true sync).
    """

    def __init__(self, strategy, model_fn, per_replica_batch, image_shape,
                 num_classes, jit_compile=False, gradient_allreduce=None,
                 learning_rate=0.1, precision="float32"):
        # Imported here: the library modules below import this package.
        # pylint: disable=import-outside-toplevel
        import orbit
        from tf_lbsgd import optimizers
        from tf_lbsgd import trainer
        from tf_lbsgd import worker_packing
        from tf_lbsgd.models import layers
        self.strategy = strategy
        packed = worker_packing.workers_per_replica(strategy)
        self.global_batch = (per_replica_batch * packed
                             * strategy.num_replicas_in_sync)
        with strategy.scope():
            with precision_lib.dtype_policy(precision), \
                    layers.built_for_xla(jit_compile):  # BN kernel for XLA.
                self.model = model_fn(input_shape=tuple(image_shape),
                                      num_classes=num_classes)
            if packed > 1:
                worker_packing.group_batch_norm(self.model, per_replica_batch)
            self.optimizer = optimizers.MomentumSGD(
                learning_rate=learning_rate, aggregate_gradients=False)
            if precision == "mixed_float16":
                self.optimizer = precision_lib.with_loss_scaling(
                    self.optimizer)
            self.optimizer.build(self.model.trainable_variables)
            global_step = orbit.utils.create_global_step()
        dataset = synthetic_dataset(strategy, per_replica_batch * packed,
                                    image_shape, num_classes)
        self.trainer = trainer.Trainer(
            strategy, self.model, self.optimizer, dataset, self.global_batch,
            global_step, gradient_allreduce=gradient_allreduce,
            jit_compile=jit_compile)

    def time_loop(self, steps):
        """Seconds for one loop of `steps` training steps."""
        start = time.perf_counter()
        self.trainer.train(tf.constant(steps, tf.int32))
        return time.perf_counter() - start
