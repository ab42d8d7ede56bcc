"""k simulated workers packed onto fewer replicas (`worker_packing`, R9).

The choice per CPU and setting; the BN layers it regroups and the ones it
refuses; and the run itself: 4 workers packed onto 2 replicas train to the
same weights, loss and evaluation as 4 replicas of one worker each.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import small_task
import tf_lbsgd
from tf_lbsgd import distribute
from tf_lbsgd import worker_packing
from tf_lbsgd.models import layers
from tf_lbsgd.models.resnet_cifar import resnet_cifar

AMX = "flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
EPYC = "flags\t\t: fpu avx2 fma\n"


@pytest.mark.parametrize("workers,cores,replicas", [
    (8, 2, 2), (8, 3, 2), (6, 4, 3), (7, 2, 1), (2, 8, 2), (1, 2, 1),
    (256, 2, 2)])
def test_replicas_for_is_the_largest_divisor_within_the_cores(
        workers, cores, replicas):
    assert worker_packing.replicas_for(workers, cores) == replicas


def test_auto_packs_where_measured_faster_and_says_why():
    replicas, why = worker_packing.choose("auto", 8, cores=2,
                                          cpuinfo_text=AMX)
    assert replicas == 2
    assert why == ("auto: 8 workers packed onto 2 replicas (4 each, ghost "
                   "batch norm per worker) for 2 core(s), where it "
                   "measured faster")
    replicas, why = worker_packing.choose("auto", 8, cores=2,
                                          cpuinfo_text=EPYC)
    assert replicas == 8 and "not measured on this kind of CPU" in why


def test_true_packs_on_any_cpu_and_false_never():
    assert worker_packing.choose(True, 8, cores=2,
                                 cpuinfo_text=EPYC)[0] == 2
    assert worker_packing.choose(False, 8, cores=2,
                                 cpuinfo_text=AMX) == (
                                     8, "set: one replica per worker")
    replicas, why = worker_packing.choose(True, 2, cores=4)
    assert replicas == 2 and "nothing to pack" in why


@pytest.mark.parametrize("setting", ["yes", 1, 0, None, "True"])
def test_bad_setting_is_named(setting):
    with pytest.raises(ValueError, match=(
            "distribute.build_strategy.pack_workers must be True, False or "
            "'auto', got " + repr(setting).replace("'", "."))):
        worker_packing.choose(setting, 8)


def test_build_strategy_refuses_a_bad_setting_before_building():
    with pytest.raises(ValueError, match="pack_workers must be"):
        distribute.build_strategy("mirrored", num_replicas=8,
                                  pack_workers="always")


def test_build_strategy_packs_onto_the_cores(monkeypatch):
    monkeypatch.setattr(worker_packing.os, "cpu_count", lambda: 2)
    strategy = distribute.build_strategy("mirrored", num_replicas=8,
                                         pack_workers=True,
                                         cpu_threads="default")
    assert strategy.num_replicas_in_sync == 2
    assert worker_packing.describe(strategy) == {
        "workers": 8, "replicas": 2, "workers_per_replica": 4,
        "reason": "set: 8 workers packed onto 2 replicas (4 each, ghost "
                  "batch norm per worker) for 2 core(s)"}
    plain = distribute.build_strategy("mirrored", num_replicas=8,
                                      cpu_threads="default")
    assert plain.num_replicas_in_sync == 8
    assert worker_packing.workers_per_replica(plain) == 1


def test_group_batch_norm_sets_each_worker_batch_and_keeps_finer_groups():
    model = resnet_cifar(input_shape=(8, 8, 1), depth=8, width=4)
    norms = [layer for layer in model.layers
             if isinstance(layer, layers.WorkerBatchNorm)]
    norms[0].group_size = 8
    worker_packing.group_batch_norm(model, 32)
    assert [layer.group_size for layer in norms] == [8] + [32] * 8
    with pytest.raises(ValueError, match=f"layer {norms[0].name}: "
                       f"group_size 8 does not divide the per-worker batch "
                       f"12"):
        worker_packing.group_batch_norm(model, 12)


def test_group_batch_norm_refuses_keras_batch_norm():
    images = keras.Input((8, 8, 1))
    x = keras.layers.BatchNormalization(name="users_bn")(
        keras.layers.Conv2D(4, 3)(images))
    model = keras.Model(images, keras.layers.Dense(3)(
        keras.layers.GlobalAveragePooling2D()(x)))
    with pytest.raises(ValueError, match=(
            "layer users_bn \\(BatchNormalization\\) normalises over the "
            "whole replica's batch.*pack_workers = False")):
        worker_packing.group_batch_norm(model, 16)


def _run(strategy, model_dir, initial, epochs=2):
    def model_fn(input_shape, num_classes):
        model = small_task.model_fn(input_shape, num_classes)
        model.set_weights(initial)
        return model
    return tf_lbsgd.train(
        model_fn, small_task.data(256, 0), model_dir,
        eval_data=small_task.data(64, 1), num_classes=small_task.CLASSES,
        strategy=strategy, recipe=tf_lbsgd.Recipe(
            epochs=epochs, per_replica_batch_size=8, base_lr=0.8,
            warmup_epochs=1, steps_per_loop=4, eval_top_k=(1,),
            export=False))


def test_packed_workers_train_as_one_replica_per_worker(tmp_path):
    """4 workers x 8 examples: 4 replicas against 2 replicas of 2 workers
    each (ghost BN per worker), 16 steps from the same weights."""
    initial = small_task.model_fn(small_task.SHAPE,
                                  small_task.CLASSES).get_weights()
    plain = _run(distribute.logical_cpu_strategy(4), str(tmp_path / "plain"),
                 initial)
    strategy = distribute.logical_cpu_strategy(2)
    worker_packing.register(strategy, 2, "test: 2 workers per replica")
    packed = _run(strategy, str(tmp_path / "packed"), initial)
    assert plain.metrics["num_replicas"] == 4
    assert packed.metrics["num_replicas"] == 2
    assert packed.metrics["workers"]["workers"] == 4
    assert packed.metrics["global_batch_size"] == 32
    assert packed.metrics["global_step"] == plain.metrics["global_step"] == 16
    moved = 0.0
    for a, b, w0 in zip(plain.model.weights, packed.model.weights,
                        initial):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=2e-4,
                                   atol=2e-5, err_msg=a.path)
        if a.trainable:
            moved = max(moved, float(np.abs(a.numpy() - w0).max()))
    assert moved > 1e-2  # The weights really trained.
    np.testing.assert_allclose(packed.metrics["eval"]["loss"],
                               plain.metrics["eval"]["loss"], rtol=1e-4)
    norms = [layer for layer in packed.model.layers
             if isinstance(layer, layers.WorkerBatchNorm)]
    assert [layer.group_size for layer in norms] == [8]


def test_a_run_resumes_packed_from_one_replica_per_worker(tmp_path):
    """The checkpoint holds the same variables either way: 1 epoch on 4
    replicas, then the second packed onto 2 from that checkpoint, ends
    where 2 epochs on 4 replicas do."""
    initial = small_task.model_fn(small_task.SHAPE,
                                  small_task.CLASSES).get_weights()
    model_dir = str(tmp_path / "run")
    first = _run(distribute.logical_cpu_strategy(4), model_dir, initial,
                 epochs=1)
    assert first.metrics["global_step"] == 8
    strategy = distribute.logical_cpu_strategy(2)
    worker_packing.register(strategy, 2, "test: 2 workers per replica")
    second = _run(strategy, model_dir, initial, epochs=2)
    assert second.metrics["global_step"] == 16
    assert second.metrics["workers"]["workers_per_replica"] == 2
    straight = _run(distribute.logical_cpu_strategy(4),
                    str(tmp_path / "straight"), initial)
    for a, b in zip(straight.model.weights, second.model.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=2e-4,
                                   atol=2e-5, err_msg=a.path)
