"""In-process replicas stay one model: in sync, resumable, evaluated as saved.

k replicas of MirroredStrategy apply the same summed gradient, so every copy
of every weight and optimizer slot must stay bit-identical; a run resumed
from a checkpoint (which keeps one copy) must then end with the uninterrupted
run's state; the evaluation made during training must score exactly the
checkpoint that `--mode=eval` scores, and the run's record (metrics.json,
operative_config.gin) must not be rewritten by re-runs and evaluations.
"""

import json
import os

import gin
import numpy as np
import pytest
import tensorflow as tf

from tf_lbsgd import config
from tf_lbsgd import distribute
from tf_lbsgd import optimizers
from tf_lbsgd import outputs
from tf_lbsgd import train_lib
from tf_lbsgd.analysis import event_files
from tf_lbsgd.models.resnet_cifar import resnet_cifar
from tf_lbsgd.trainer import Trainer

K, N = 2, 16
JOB = [  # 2 replicas x n = 16 of a ResNet-8 of width 8, no XLA.
    "experiments/fashion_mnist_default",
    f"distribute.build_strategy.num_replicas = {K}",
    f"train_lib.run.per_replica_batch_size = {N}",
    "resnet_cifar.width = 8",
    "train_lib.run.steps_per_loop = 2",
    "train_lib.run.checkpoint_every_steps = 4",
    "train_lib.run.keep_checkpoints = 5",
    "train_lib.run.eval_every_epochs = 0",
    "train_lib.run.jit_compile = False",
    "train_lib.run.export = False",
]
EIGHT_STEPS = "train_lib.run.epochs = 0.0043"  # 1875 steps per epoch.
FOUR_STEPS = "train_lib.run.epochs = 0.0022"


@pytest.mark.parametrize("velocity_form,nesterov", [
    ("unscaled", False), ("unscaled", True), ("scaled", False)])
def test_replicas_stay_bit_identical(velocity_form, nesterov):
    # Before the fix the unscaled form's decayed kernels differed by ~1e-8
    # after 10 steps (grappler re-associated m*u + g + lambda*w differently
    # on replica 0).
    strategy = distribute.logical_cpu_strategy(K)
    rng = np.random.default_rng(0)
    images = rng.normal(size=(K * N * 12, 12, 12, 1)).astype("f4")
    labels = rng.integers(0, 10, size=len(images)).astype("i4")
    dataset = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((images, labels))
        .batch(K * N).repeat())
    with strategy.scope():
        tf.keras.utils.set_random_seed(0)
        model = resnet_cifar(input_shape=(12, 12, 1), depth=8, width=8)
        optimizer = optimizers.MomentumSGD(
            learning_rate=0.2, velocity_form=velocity_form,
            nesterov=nesterov, l2_weight_decay=1e-3,
            aggregate_gradients=False)
        optimizer.build(model.trainable_variables)
        step = tf.Variable(0, dtype=tf.int64)
    trainer = Trainer(strategy, model, optimizer, dataset, K * N, step)
    trainer.train(tf.constant(12))
    copies = {v.path: [c.numpy() for c in
                       strategy.experimental_local_results(v.value)]
              for v in model.trainable_variables + optimizer.variables}
    assert len([c for c in copies.values() if len(c) == K]) > 50
    for path, values in copies.items():
        for value in values[1:]:
            np.testing.assert_array_equal(value, values[0], err_msg=path)


def _run(model_dir, *bindings, mode="train"):
    config.parse(JOB[:1], JOB[1:] + list(bindings))
    try:
        return train_lib.run(str(model_dir), mode=mode)
    finally:
        gin.clear_config()


def _checkpoint(model_dir, step):
    reader = tf.train.load_checkpoint(os.path.join(model_dir, f"ckpt-{step}"))
    return {key: reader.get_tensor(key)
            for key in reader.get_variable_to_shape_map()
            if key.startswith(("model/", "optimizer/"))}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """8 steps in one run, evaluated at the end."""
    model_dir = tmp_path_factory.mktemp("sync") / "uninterrupted"
    metrics = _run(model_dir, EIGHT_STEPS, mode="train_and_eval")
    gin.clear_config()
    return model_dir, metrics


def test_resumed_run_ends_with_the_uninterrupted_state(uninterrupted,
                                                       tmp_path):
    model_dir, _ = uninterrupted
    resumed = tmp_path / "resumed"
    _run(resumed, FOUR_STEPS)
    _run(resumed, EIGHT_STEPS)
    want, got = _checkpoint(model_dir, 8), _checkpoint(resumed, 8)
    assert got.keys() == want.keys()
    moving = [key for key in want if "moving_" in key]
    assert len(want) > 50 and moving  # Weights, slots, BN statistics.
    for key in want:  # Bit for bit, BN moving statistics included.
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_training_evaluation_scores_the_saved_checkpoint(uninterrupted):
    model_dir, metrics = uninterrupted
    with open(model_dir / outputs.OPERATIVE_CONFIG) as f:
        trained_with = f.read()
    again = _run(model_dir, EIGHT_STEPS, mode="eval")
    # The same model: not one example scored differently, the same loss.
    for key in ("top1_error", "top5_error", "loss", "examples"):
        assert again["eval"][key] == metrics["eval"][key], key
    # Recorded once: the checkpoint of step 8 was evaluated already.
    assert again["eval"]["top1_error_history"] == [
        metrics["eval"]["top1_error"]]
    assert again["eval"]["evaluated_steps"] == [8]
    with open(model_dir / outputs.OPERATIVE_CONFIG) as f:
        assert f.read() == trained_with  # The training config is kept.
    with open(model_dir / outputs.EVAL_OPERATIVE_CONFIG) as f:
        assert "run.per_replica_batch_size = 16" in f.read()
    # The evaluation's config as text beside its scalars.
    tags = {value.tag for path in (model_dir / "validation").glob(
        "events.out.tfevents.*") for event in event_files.read_events(path)
            for value in event.summary.value}
    assert {"gin/operative_config", "top1_error", "loss"} <= tags


def test_rerun_of_a_finished_run_records_nothing_new(uninterrupted):
    model_dir, metrics = uninterrupted
    again = _run(model_dir, EIGHT_STEPS, mode="train_and_eval")
    assert again["global_step"] == 8
    with open(model_dir / outputs.METRICS) as f:
        record = json.load(f)["eval"]
    assert record["top1_error_history"] == [metrics["eval"]["top1_error"]]
    assert record["evaluated_steps"] == [8]
