"""Strategy construction, its cluster check and batch-size validation."""

import json
import re

import pytest
import tensorflow as tf

from tf_lbsgd import distribute
from tf_lbsgd import train_lib


def test_mirrored_over_logical_cpus():
    strategy = distribute.build_strategy("mirrored", num_replicas=4)
    assert strategy.num_replicas_in_sync == 4
    assert distribute.is_chief(strategy)


def test_default_and_one_device():
    assert distribute.build_strategy("default").num_replicas_in_sync == 1
    one = distribute.build_strategy("one_device")
    assert isinstance(one, tf.distribute.OneDeviceStrategy)


def test_too_many_logical_cpus_after_initialisation():
    with pytest.raises(RuntimeError, match="64 logical CPU devices requested"):
        distribute.ensure_logical_cpus(64)


@pytest.mark.parametrize("num_replicas", [0, -2, "4", 2.0, True])
def test_num_replicas_must_be_a_positive_int(num_replicas):
    with pytest.raises(ValueError, match=re.escape(
            f"distribute.build_strategy.num_replicas must be a positive "
            f"integer, got {num_replicas!r}")):
        distribute.build_strategy("mirrored", num_replicas=num_replicas)


def test_num_replicas_bounded_by_the_host():
    distribute.check_num_replicas(None)
    distribute.check_num_replicas(distribute.MAX_LOGICAL_CPU_REPLICAS)
    with pytest.raises(ValueError, match="num_replicas = 100000: one host's "
                                         "CPU runs at most 256 simulated "
                                         "workers.*bn_group_size"):
        distribute.build_strategy("mirrored", num_replicas=100000)
    with pytest.raises(ValueError, match="num_replicas = 3 but this host has "
                                         "2 GPUs"):
        distribute.check_num_replicas(3, num_gpus=2)
    distribute.check_num_replicas(1000, num_gpus=1000)


def test_unknown_kind():
    with pytest.raises(ValueError, match="'mirorred'"):
        distribute.build_strategy("mirorred")


def test_cluster_of_several_workers_needs_a_multi_worker_kind():
    env = {"TF_CONFIG": json.dumps({"cluster": {"worker": ["a:1", "b:2"]},
                                    "task": {"type": "worker", "index": 1}})}
    distribute.check_cluster_kind("multi_worker_mirrored", env)
    distribute.check_cluster_kind("mirrored", {})
    with pytest.raises(ValueError, match="cluster of 2 workers but the "
                                         "strategy kind is 'mirrored'"):
        distribute.check_cluster_kind("mirrored", env)
    with pytest.raises(ValueError, match="TF_CONFIG is not valid JSON"):
        distribute.check_cluster_kind("mirrored", {"TF_CONFIG": "{"})


def test_batch_sizes():
    assert train_lib.resolve_batch_sizes(8, 32, None) == (32, 256)
    assert train_lib.resolve_batch_sizes(8, None, 256) == (32, 256)
    with pytest.raises(ValueError, match="global batch 250 is not divisible "
                                         "by 8 replicas"):
        train_lib.resolve_batch_sizes(8, None, 250)
    with pytest.raises(ValueError, match="per_replica_batch_size is 16"):
        train_lib.resolve_batch_sizes(8, 16, 256)


@pytest.mark.parametrize("n,kn,message", [
    (0, None, "train_lib.run.per_replica_batch_size must be a positive "
              "integer, got 0"),
    ("32", None, "train_lib.run.per_replica_batch_size must be a positive "
                 "integer, got '32'"),
    (None, "256", "train_lib.run.global_batch_size must be a positive "
                  "integer, got '256'"),
    (None, -8, "train_lib.run.global_batch_size must be a positive integer, "
               "got -8"),
    ("32", 256, "per_replica_batch_size is '32'"),
])
def test_batch_sizes_must_be_positive_ints(n, kn, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        train_lib.resolve_batch_sizes(8, n, kn)


def test_eval_boundaries_follow_epochs_without_drift():
    # 60000 / 256 = 234.375 steps per epoch, 5 epochs = 1172 steps.
    assert train_lib._eval_boundaries(0, 1172, 1.0, 234.375) == [
        234, 469, 703, 938, 1172]
    assert train_lib._eval_boundaries(500, 1172, 1.0, 234.375) == [
        703, 938, 1172]
    assert train_lib._eval_boundaries(0, 1172, 0, 234.375) == [1172]


def test_eval_boundaries_add_the_requested_epochs_once():
    # Every 2 epochs, plus densely in the final epoch (4.6 -> step 1078);
    # 4.0 coincides with a periodic one, 5.0 is the end, 0.0 is done.
    assert train_lib._eval_boundaries(
        0, 1172, 2.0, 234.375, at_epochs=(0.0, 4.0, 4.6, 4.8, 5.0)) == [
            469, 938, 1078, 1125, 1172]
    assert train_lib._eval_boundaries(
        1100, 1172, 0, 234.375, at_epochs=(4.6, 4.8)) == [1125, 1172]
