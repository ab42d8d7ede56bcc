"""Tests of the per-epoch shuffle divided among workers (R12, docs/paper.md)."""

import numpy as np
import pytest
import tensorflow as tf

from tf_lbsgd import distribute
from tf_lbsgd.data import sharding
from tf_lbsgd.data import source

SEED = 17
# (N, n, K, W): examples, per-replica batch, replicas, input pipelines.
LAYOUTS = [
    (12, 3, 2, 1),   # B = 6 divides N.
    (10, 2, 4, 2),   # B = 8 does not divide N.
    (7, 1, 4, 4),    # one replica per pipeline.
    (13, 2, 8, 2),   # B = 16 > N: a global batch spans two epochs.
]


def _context(num_replicas, num_pipelines, pipeline_id):
    return tf.distribute.InputContext(num_input_pipelines=num_pipelines,
                                      input_pipeline_id=pipeline_id,
                                      num_replicas_in_sync=num_replicas)


def _simulate(num_examples, n, k, w, num_steps, start_step=0):
    """Runs every pipeline and lays its elements out as [step, replica, n]."""
    r = k // w
    indices = np.full((num_steps, k, n), -1, np.int64)
    positions = np.full((num_steps, k, n), -1, np.int64)
    for pipeline in range(w):
        dataset = sharding.train_index_dataset(
            num_examples, n, _context(k, w, pipeline), SEED,
            start_step=start_step, with_positions=True)
        for j, (idx, pos) in enumerate(dataset.take(num_steps * r)):
            step, replica = divmod(j, r)
            indices[step, pipeline * r + replica] = idx.numpy()
            positions[step, pipeline * r + replica] = pos.numpy()
    return indices.reshape(-1), positions.reshape(-1)


def _num_steps(num_examples, n, k, epochs):
    return -(-epochs * num_examples // (n * k))


@pytest.mark.parametrize("num_examples,n,k,w", LAYOUTS)
def test_train_stream_is_per_epoch_permutations(num_examples, n, k, w):
    steps = _num_steps(num_examples, n, k, epochs=3)
    stream, positions = _simulate(num_examples, n, k, w, steps)
    # Replica q of step s holds positions s*B + q*n ... s*B + (q+1)*n - 1.
    np.testing.assert_array_equal(positions, np.arange(steps * n * k))
    epochs = [stream[e * num_examples:(e + 1) * num_examples] for e in range(3)]
    for epoch in epochs:  # every example exactly once per epoch
        np.testing.assert_array_equal(np.sort(epoch), np.arange(num_examples))
    assert not np.array_equal(epochs[0], epochs[1])
    assert not np.array_equal(epochs[1], epochs[2])


@pytest.mark.parametrize("num_examples,n,k,w", LAYOUTS)
def test_all_workers_follow_the_same_permutations(num_examples, n, k, w):
    steps = _num_steps(num_examples, n, k, epochs=2)
    stream, _ = _simulate(num_examples, n, k, w, steps)
    reference = np.concatenate([
        sharding.epoch_permutation(num_examples, e, SEED).numpy()
        for e in range(3)])
    np.testing.assert_array_equal(stream, reference[:len(stream)])


@pytest.mark.parametrize("num_examples,n,k,w", LAYOUTS)
@pytest.mark.parametrize("start_step", [1, 3])
def test_resume_continues_the_stream(num_examples, n, k, w, start_step):
    steps = _num_steps(num_examples, n, k, epochs=2) + start_step
    full, full_positions = _simulate(num_examples, n, k, w, steps)
    tail, tail_positions = _simulate(num_examples, n, k, w, steps - start_step,
                                     start_step=start_step)
    cut = start_step * n * k
    np.testing.assert_array_equal(tail, full[cut:])
    np.testing.assert_array_equal(tail_positions, full_positions[cut:])


def test_stream_does_not_depend_on_batch_layout():
    one, _ = _simulate(30, 10, 1, 1, 6)
    many, _ = _simulate(30, 2, 6, 3, 5)
    np.testing.assert_array_equal(one[:60], many)


@pytest.mark.parametrize("num_examples,n,k,w", LAYOUTS)
def test_eval_counts_every_example_once(num_examples, n, k, w):
    r = k // w
    num_steps = -(-num_examples // (n * k))
    counts = np.zeros(num_examples)
    for pipeline in range(w):
        elements = list(sharding.eval_index_dataset(
            num_examples, n, _context(k, w, pipeline)))
        assert len(elements) == num_steps * r
        for indices, weights in elements:
            assert indices.shape == (n,) and weights.shape == (n,)
            np.add.at(counts, indices.numpy(), weights.numpy())
            assert np.all(indices.numpy()[weights.numpy() == 0] == 0)
    np.testing.assert_array_equal(counts, np.ones(num_examples))


def test_epoch_permutation_is_deterministic_and_graph_safe():
    eager = sharding.epoch_permutation(100, 4, SEED).numpy()
    graph = tf.function(sharding.epoch_permutation)(100, tf.constant(4, tf.int64),
                                                    SEED).numpy()
    np.testing.assert_array_equal(eager, graph)
    np.testing.assert_array_equal(np.sort(eager), np.arange(100))
    other_seed = sharding.epoch_permutation(100, 4, SEED + 1).numpy()
    assert not np.array_equal(eager, other_seed)


def test_errors_name_the_bad_values():
    with pytest.raises(ValueError, match="8 replicas are not divisible among 3"):
        sharding.train_index_dataset(10, 2, _context(8, 3, 0), SEED)
    with pytest.raises(ValueError, match="-1"):
        sharding.train_index_dataset(10, 2, _context(2, 1, 0), SEED, start_step=-1)
    with pytest.raises(ValueError, match="global batch 250 is not divisible by 8"):
        source.check_divisible(250, 8)
    assert source.check_divisible(256, 8) == 32


@pytest.mark.parametrize("num_replicas", [2, 4])
def test_mirrored_strategy_hands_elements_round_robin(num_replicas):
    """Replica q of step s receives positions s*B + q*n ... (module docstring)."""
    num_examples, n, num_steps = 11, 2, 3
    strategy = distribute.logical_cpu_strategy(num_replicas)
    contexts = []

    def dataset_fn(input_context):
        contexts.append(input_context)
        return sharding.train_index_dataset(num_examples, n, input_context, SEED,
                                            with_positions=True)

    def replica_fn(indices, positions):
        replica_id = tf.distribute.get_replica_context().replica_id_in_sync_group
        return indices, positions, replica_id

    iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))
    assert [(c.num_input_pipelines, c.num_replicas_in_sync) for c in contexts] == [
        (1, num_replicas)]
    stream = np.concatenate([
        sharding.epoch_permutation(num_examples, e, SEED).numpy() for e in range(3)])
    batch = num_replicas * n
    for step in range(num_steps):
        results = strategy.run(replica_fn, args=next(iterator))
        per_replica = list(zip(
            *(strategy.experimental_local_results(x) for x in results)))
        assert sorted(int(r) for _, _, r in per_replica) == list(
            range(num_replicas))
        for indices, positions, replica in per_replica:
            first = step * batch + int(replica) * n
            np.testing.assert_array_equal(positions, np.arange(first, first + n))
            np.testing.assert_array_equal(indices, stream[first:first + n])


def _write_record_files(directory, num_files, per_file):
    paths = []
    for i in range(num_files):
        path = str(directory / f"part-{i}")
        with tf.io.TFRecordWriter(path) as writer:
            for j in range(per_file):
                writer.write(f"{i}/{j}".encode())
        paths.append(path)
    return paths


@pytest.mark.parametrize("num_files,per_file,pipelines",
                         [(5, 3, 2), (1, 12, 3), (2, 5, 3)])
def test_epoch_share_of_files_is_one_shared_shuffle_per_epoch(
        tmp_path, num_files, per_file, pipelines):
    """R12 for file data: each epoch every record goes to exactly one
    pipeline, and the split changes from epoch to epoch."""
    files = _write_record_files(tmp_path, num_files, per_file)
    everything = {f"{i}/{j}".encode() for i in range(num_files)
                  for j in range(per_file)}
    shares = [sharding.epoch_share_of_files(
        files, tf.distribute.InputContext(pipelines, w, pipelines), seed=3,
        buffer_size=100) for w in range(pipelines)]
    splits = set()
    for _ in range(6):  # Each iteration is a new epoch.
        parts = [[r.numpy() for r in share] for share in shares]
        assert sum(len(p) for p in parts) == len(everything)
        assert set().union(*map(set, parts)) == everything
        splits.add(frozenset(parts[0]))
    assert len(splits) > 1
