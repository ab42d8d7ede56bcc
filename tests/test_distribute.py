"""Strategy construction, TF_CONFIG checks and batch-size validation."""

import json

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


def test_unknown_kind():
    with pytest.raises(ValueError, match="'mirorred'"):
        distribute.build_strategy("mirorred")


@pytest.mark.parametrize("raw,message", [
    ("{not json", "not valid JSON"),
    (json.dumps({"task": {"type": "worker", "index": 0}}), "no 'cluster'"),
    (json.dumps({"cluster": {"worker": ["a:1"]},
                 "task": {"type": "worker", "index": 3}}), "index 3"),
    (json.dumps({"cluster": {"worker": ["a:1"]},
                 "task": {"type": "ps", "index": 0}}), "'ps'"),
])
def test_bad_tf_config(raw, message):
    with pytest.raises(ValueError, match=message):
        distribute.validate_tf_config({"TF_CONFIG": raw})


def test_good_tf_config():
    raw = json.dumps({"cluster": {"worker": ["a:1", "b:2"]},
                      "task": {"type": "worker", "index": 1}})
    assert distribute.validate_tf_config({"TF_CONFIG": raw})["task"]["index"] == 1
    assert distribute.validate_tf_config({}) == {}


def test_batch_sizes():
    assert train_lib.resolve_batch_sizes(8, 32, None) == (32, 256)
    assert train_lib.resolve_batch_sizes(8, None, 256) == (32, 256)
    with pytest.raises(ValueError, match="global batch 250 is not divisible "
                                         "by 8 replicas"):
        train_lib.resolve_batch_sizes(8, None, 250)
    with pytest.raises(ValueError, match="per_replica_batch_size is 16"):
        train_lib.resolve_batch_sizes(8, 16, 256)


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
