"""The explicit gradient all-reduce: options, sums, float16 compression.

Every expected value is computed independently with numpy from the
gradients each replica passes in.
"""

import keras
import numpy as np
import orbit
import pytest
import tensorflow as tf

from tf_lbsgd import allreduce
from tf_lbsgd import config
from tf_lbsgd import distribute
from tf_lbsgd import optimizers
from tf_lbsgd.models.resnet_cifar import resnet_cifar
from tf_lbsgd.trainer import Trainer

Impl = tf.distribute.experimental.CommunicationImplementation
K = 4  # Replicas of the all-reduce tests.


@pytest.fixture(scope="module")
def strategy4():
    return distribute.logical_cpu_strategy(K)


@pytest.fixture(scope="module")
def strategy2():
    return distribute.logical_cpu_strategy(2)


# --- communication_options ------------------------------------------------


@pytest.mark.parametrize("collective, implementation", [
    ("auto", Impl.AUTO), ("ring", Impl.RING), ("nccl", Impl.NCCL)])
def test_communication_options_collectives(collective, implementation):
    options = distribute.communication_options(collective, 4096, 30)
    assert options.implementation == implementation
    assert options.bytes_per_pack == 4096
    assert options.timeout_seconds == 30


def test_communication_options_defaults():
    options = distribute.communication_options()
    assert options.implementation == Impl.AUTO
    assert options.bytes_per_pack == 0
    assert options.timeout_seconds is None
    # An integral float is accepted and stored as an int.
    assert distribute.communication_options("ring", 2048.0).bytes_per_pack == 2048
    assert isinstance(
        distribute.communication_options("ring", 2048.0).bytes_per_pack, int)


@pytest.mark.parametrize("kwargs, named", [
    (dict(collective="mpi"), "'mpi'"),
    (dict(collective="NCCL"), "'NCCL'"),
    (dict(bytes_per_pack=-1), "got -1"),
    (dict(bytes_per_pack=1.5), "got 1.5"),
    (dict(timeout_seconds=0), "got 0"),
    (dict(timeout_seconds=-3.5), "got -3.5"),
])
def test_communication_options_refuse_bad_values(kwargs, named):
    with pytest.raises(ValueError) as error:
        distribute.communication_options(**kwargs)
    assert named in str(error.value)


@pytest.mark.parametrize("kwargs, named", [
    (dict(bytes_per_pack=None), "bytes_per_pack"),
    (dict(timeout_seconds="30"), "timeout_seconds"),
], ids=["bytes_per_pack_None", "timeout_seconds_str"])
def test_communication_options_refuse_non_numbers_with_value_error(kwargs,
                                                                   named):
    # Values a gin binding can easily produce (`... = None`, `... = '30'`).
    # The CLI turns a ValueError into a one-line "tf-lbsgd: error: ..." (exit
    # 2); any other exception escapes as a traceback.
    with pytest.raises(ValueError, match=named):
        distribute.communication_options(**kwargs)


def test_gradient_allreduce_options_and_bad_compression():
    options = allreduce.GradientAllReduce(bytes_per_pack=1024).options
    assert options.bytes_per_pack == 1024
    # The strategy's implementation and timeout stay in force (a call's
    # options are merged over the strategy's: AUTO and None give way).
    strategy_options = distribute.communication_options("ring", 0, 30)
    merged = strategy_options.merge(options)
    assert (merged.implementation, merged.bytes_per_pack,
            merged.timeout_seconds) == (Impl.RING, 1024, 30)
    with pytest.raises(ValueError, match="'bfloat16'"):
        allreduce.GradientAllReduce(compression="bfloat16")
    with pytest.raises(ValueError, match="-8"):
        allreduce.GradientAllReduce(bytes_per_pack=-8)


# --- the all-reduce itself ------------------------------------------------


def _all_reduce(strategy, reducer, per_replica_values, none_at=()):
    """Runs `reducer` on replica r with gradients per_replica_values[r].

    per_replica_values: list over replicas of lists of numpy arrays (same
    shapes on every replica). Positions in `none_at` are passed as None.
    Returns (list over replicas of lists of numpy results, the positions
    that came back as None, as seen when tracing).
    """
    k = strategy.num_replicas_in_sync
    num = len(per_replica_values[0])
    stacked = [tf.constant(np.stack([per_replica_values[r][i]
                                     for r in range(k)]))
               for i in range(num)]
    nones_seen = []

    def replica_fn():
        r = tf.distribute.get_replica_context().replica_id_in_sync_group
        grads = [None if i in none_at else tf.gather(stacked[i], r)
                 for i in range(num)]
        out = reducer(grads)
        assert len(out) == num
        nones_seen.append(tuple(i for i, g in enumerate(out) if g is None))
        return [g for g in out if g is not None]

    @tf.function
    def step():
        return strategy.run(replica_fn)

    result = step()
    per_replica = [[t.numpy() for t in strategy.experimental_local_results(x)]
                   for x in result]
    return ([[per_replica[i][r] for i in range(len(per_replica))]
             for r in range(k)], nones_seen)


def test_sum_over_replicas_equals_numpy_sum(strategy4):
    rng = np.random.default_rng(1)
    values = [[rng.normal(size=(3, 5)).astype("f4"),
               rng.normal(size=(7,)).astype("f4"),
               np.float32(rng.normal())]
              for _ in range(K)]
    results, nones = _all_reduce(strategy4, allreduce.GradientAllReduce(),
                                 values)
    assert nones and all(n == () for n in nones)
    for i in range(3):
        expected = np.sum([values[r][i] for r in range(K)], axis=0,
                          dtype=np.float64)
        # The replicas really passed different gradients.
        assert not np.allclose(values[0][i], values[1][i])
        for r in range(K):
            assert results[r][i].dtype == np.float32
            assert results[r][i].shape == np.shape(values[0][i])
            np.testing.assert_allclose(results[r][i], expected, rtol=1e-5,
                                       atol=1e-6)


def test_none_gradients_stay_none_in_place(strategy4):
    rng = np.random.default_rng(2)
    values = [[rng.normal(size=(4,)).astype("f4") for _ in range(4)]
              for _ in range(K)]
    results, nones = _all_reduce(strategy4, allreduce.GradientAllReduce(),
                                 values, none_at=(1, 3))
    assert nones and all(n == (1, 3) for n in nones)
    for r in range(K):
        assert len(results[r]) == 2  # The gradients at 0 and 2.
        for got, i in zip(results[r], (0, 2)):
            np.testing.assert_allclose(
                got, np.sum([values[q][i] for q in range(K)], axis=0),
                rtol=1e-5, atol=1e-6)


def test_all_none_gradients_come_back_unchanged():
    assert allreduce.GradientAllReduce()([None, None]) == [None, None]


def _float16_friendly(rng, shape):
    """float32 values whose float16 roundings lie on a 1/32 grid in [-4, 4).

    Each value is base + delta with |delta| a quarter of float16's spacing
    at base, so float16 rounds it exactly to base (which float32 also holds
    exactly); any sum of 4 bases is below 16 in magnitude on a 1/32 grid,
    i.e. needs at most 9 significant bits: float16 (11 bits) adds them
    exactly, whatever the order of the additions. The float32 values
    themselves are not float16-representable (delta != 0).
    """
    base = rng.integers(-128, 128, size=shape) / 32.0
    spacing = np.spacing(np.abs(base).astype(np.float16)).astype(np.float64)
    delta = rng.uniform(0.05, 0.25, size=shape) * spacing * rng.choice(
        [-1.0, 1.0], size=shape)
    values = (base + delta).astype(np.float32)
    np.testing.assert_array_equal(values.astype(np.float16), base)
    assert np.all(values != base)
    return values


def test_float16_compression_sums_float16_rounded_values(strategy4):
    rng = np.random.default_rng(3)
    values = [[_float16_friendly(rng, (6, 5)), _float16_friendly(rng, (9,))]
              for _ in range(K)]
    compressed, _ = _all_reduce(
        strategy4, allreduce.GradientAllReduce(compression="float16"), values)
    exact, _ = _all_reduce(strategy4, allreduce.GradientAllReduce(), values)
    for i in range(2):
        stack = np.stack([values[r][i] for r in range(K)])
        expected16 = stack.astype(np.float16).astype(np.float64).sum(axis=0)
        expected32 = stack.astype(np.float64).sum(axis=0)
        for r in range(K):
            assert compressed[r][i].dtype == np.float32  # Cast back.
            np.testing.assert_array_equal(compressed[r][i], expected16)
            np.testing.assert_allclose(exact[r][i], expected32, rtol=1e-6,
                                       atol=1e-6)
            # The compression really lost the float32 bits of every element.
            assert np.all(compressed[r][i] != exact[r][i])


def test_float16_compression_overflows_above_65504(strategy4):
    big = np.zeros((K, 3), np.float32)
    big[0, 0] = 70000.0          # One replica's value beyond float16's max.
    big[:, 1] = 40000.0          # Each fits; the sum of 4 does not.
    big[:, 2] = 65504.0 / K      # The sum is exactly float16's largest value.
    values = [[big[r]] for r in range(K)]
    compressed, _ = _all_reduce(
        strategy4, allreduce.GradientAllReduce(compression="float16"), values)
    exact, _ = _all_reduce(strategy4, allreduce.GradientAllReduce(), values)
    for r in range(K):
        np.testing.assert_array_equal(exact[r][0], [70000.0, 160000.0, 65504.0])
        assert np.isposinf(compressed[r][0][0])
        assert np.isposinf(compressed[r][0][1])
        assert compressed[r][0][2] == 65504.0


def test_float16_compression_leaves_other_dtypes_alone(strategy4):
    # A float64 gradient is not float32: it is all-reduced uncompressed.
    values = [[np.full((2,), 1.0 + 1e-9 * (r + 1), np.float64)]
              for r in range(K)]
    results, _ = _all_reduce(
        strategy4, allreduce.GradientAllReduce(compression="float16"), values)
    for r in range(K):
        assert results[r][0].dtype == np.float64
        np.testing.assert_allclose(results[r][0], K + 1e-9 * 10, rtol=1e-15)


# --- through the Trainer --------------------------------------------------

STEPS, N = 4, 8  # 4 steps of 2 replicas x 8 examples of 10x10x1.


def _train(strategy, initial_weights, reducer):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2 * N * STEPS, 10, 10, 1)).astype("f4")
    y = rng.integers(0, 10, size=len(x)).astype("i4")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(2 * N)
    with strategy.scope():
        model = resnet_cifar(input_shape=(10, 10, 1), depth=8, width=4)
        model.set_weights(initial_weights)
        optimizer = optimizers.MomentumSGD(learning_rate=0.1, momentum=0.9,
                                           aggregate_gradients=False)
        optimizer.build(model.trainable_variables)
        step = orbit.utils.create_global_step()
    trainer = Trainer(strategy, model, optimizer,
                      strategy.experimental_distribute_dataset(data), 2 * N,
                      step, gradient_allreduce=reducer)
    trainer.train(tf.constant(STEPS))
    assert int(step.numpy()) == STEPS
    return [w.numpy() for w in model.weights]


def test_float16_compressed_training_stays_close_to_float32(strategy2):
    keras.utils.set_random_seed(0)
    initial = resnet_cifar(input_shape=(10, 10, 1), depth=8,
                           width=4).get_weights()
    plain = _train(strategy2, initial,
                   allreduce.GradientAllReduce(compression="none"))
    half = _train(strategy2, initial,
                  allreduce.GradientAllReduce(compression="float16"))
    moved = max(np.abs(p - w0).max() for p, w0 in zip(plain, initial))
    assert moved > 0.1  # Training really changed the weights.
    # float16 keeps 11 significant bits: every element of a replica's
    # gradient, and of the sum, is rounded by at most 2^-11 ~ 4.9e-4 of its
    # size (values under ~6e-5 fall in float16's subnormals, but their
    # absolute error, <= 3e-8, is negligible). A relative error of <= 1e-3
    # in every update changes the total move of a weight (<= ~0.45 here)
    # by <= ~4.5e-4 if later steps do not amplify it; 5e-4 allows that bound
    # (measured over 3 seeds: at most 4.2e-5), and is ~1000x smaller than
    # how far training moved the weights. A wrong reduction could not pass:
    # averaging instead of summing (a 50% change of every update) moves the
    # weights by 1.4e-2 from the float32 run, 29x the tolerance.
    differ = 0
    for a, b in zip(plain, half):
        np.testing.assert_allclose(b, a, rtol=0, atol=5e-4)
        differ += int(np.any(a != b))
    assert differ > 0  # The compression really rounded something.


# --- MomentumSGD.aggregate_gradients ------------------------------------


def test_trainer_refuses_an_optimizer_that_aggregates_gradients():
    model = resnet_cifar(input_shape=(8, 8, 1), depth=8, width=4)
    optimizer = optimizers.MomentumSGD(learning_rate=0.1,
                                       aggregate_gradients=True)
    data = tf.data.Dataset.from_tensors(
        (np.zeros((2, 8, 8, 1), "f4"), np.zeros(2, "i4"))).repeat()
    with pytest.raises(ValueError, match="aggregate_gradients"):
        Trainer(tf.distribute.get_strategy(), model, optimizer, iter(data),
                2, tf.Variable(0, dtype=tf.int64))


def _apply_per_replica(strategy, aggregate_gradients, gradient):
    """Applies `(r + 1) * gradient` on replica r once; returns the
    per-replica copies of the variable (numpy) and its initial value."""
    w0 = np.array([1.0, -2.0, 0.5], np.float32)
    with strategy.scope():
        var = tf.Variable(w0, name="w")
        optimizer = optimizers.MomentumSGD(
            learning_rate=0.5, momentum=0.9, l2_weight_decay=0.0,
            aggregate_gradients=aggregate_gradients)
        optimizer.build([var])

    def replica_fn():
        r = tf.distribute.get_replica_context().replica_id_in_sync_group
        g = tf.constant(gradient) * tf.cast(r + 1, tf.float32)
        optimizer.apply_gradients([(g, var)])

    tf.function(lambda: strategy.run(replica_fn))()
    return [v.numpy() for v in strategy.experimental_local_results(var)], w0


def test_aggregate_gradients_false_applies_each_replicas_own_gradient(
        strategy2):
    g = np.array([0.2, 0.4, -1.0], np.float32)
    lr = 0.5
    # First momentum step: u = g, w <- w - lr * u.
    copies, w0 = _apply_per_replica(strategy2, False, g)
    np.testing.assert_allclose(copies[0], w0 - lr * g, rtol=1e-6)
    np.testing.assert_allclose(copies[1], w0 - lr * 2 * g, rtol=1e-6)
    # Keras' default sums over replicas: every copy takes the sum 3g.
    copies, w0 = _apply_per_replica(strategy2, True, g)
    for copy in copies:
        np.testing.assert_allclose(copy, w0 - lr * 3 * g, rtol=1e-6)


def test_aggregate_gradients_false_same_gradient_is_one_step_not_two(
        strategy2):
    g = np.array([0.2, 0.4, -1.0], np.float32)

    def apply(aggregate):
        w0 = np.array([1.0, -2.0, 0.5], np.float32)
        with strategy2.scope():
            var = tf.Variable(w0, name="w")
            optimizer = optimizers.MomentumSGD(
                learning_rate=0.5, momentum=0.9, l2_weight_decay=0.0,
                aggregate_gradients=aggregate)
            optimizer.build([var])
        tf.function(lambda: strategy2.run(
            lambda: optimizer.apply_gradients([(tf.constant(g), var)])))()
        return [v.numpy() for v in strategy2.experimental_local_results(var)]

    w0 = np.array([1.0, -2.0, 0.5], np.float32)
    for copy in apply(False):  # Both replicas passed g: one step of g.
        np.testing.assert_allclose(copy, w0 - 0.5 * g, rtol=1e-6)
    for copy in apply(True):  # Summed: one step of 2g.
        np.testing.assert_allclose(copy, w0 - 0.5 * 2 * g, rtol=1e-6)


@pytest.mark.parametrize("aggregate", [True, False])
def test_get_config_round_trips_aggregate_gradients(aggregate):
    optimizer = optimizers.MomentumSGD(learning_rate=0.1,
                                       aggregate_gradients=aggregate)
    config = optimizer.get_config()
    assert config["aggregate_gradients"] is aggregate
    again = optimizers.MomentumSGD.from_config(config)
    assert again.aggregate_gradients is aggregate
    assert optimizers.MomentumSGD().aggregate_gradients is True


def test_gin_binds_the_gradient_allreduce():
    config.parse([], ["allreduce.GradientAllReduce.compression = 'float16'",
                      "allreduce.GradientAllReduce.bytes_per_pack = 4e6"])
    reducer = allreduce.GradientAllReduce()
    assert reducer.compression == "float16"
    assert reducer.options.bytes_per_pack == 4_000_000
