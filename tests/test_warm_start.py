"""Warm start from another run's checkpoint (fine-tuning, `init_checkpoint`).

Real tiny ResNets (with WorkerBatchNorm) and real checkpoints written as runs
write them: `tf.train.Checkpoint(model=..., optimizer=..., global_step=...)`
through a `tf.train.CheckpointManager`, with momentum slots that the warm
start must leave aside.
"""

import glob
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_lbsgd import distribute
from tf_lbsgd import warm_start
from tf_lbsgd.models.resnet_cifar import resnet_cifar

DONOR_CLASSES = 10
CLASSIFIER = ("classifier/kernel", "classifier/bias")


def _tiny_resnet(num_classes=DONOR_CLASSES, depth=8, seed=1):
    keras.utils.set_random_seed(seed)
    return resnet_cifar(input_shape=(8, 8, 1), num_classes=num_classes,
                        depth=depth, width=2)


def _values(model):
    """{variable path: value} of every model variable."""
    return {v.path: np.array(v.numpy()) for v in model.variables}


def _assert_values(model, expected, names=None):
    names = sorted(expected) if names is None else names
    for name, actual in _values(model).items():
        if name in names:
            np.testing.assert_array_equal(actual, expected[name],
                                          err_msg=name)


def _randomise(model, rng):
    """Gives every model variable (BN moving statistics too) new values."""
    for variable in model.variables:
        variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype(
            np.float32))


class _Run:
    """A model, an optimizer with momentum slots and a step, checkpointed
    as train_lib's runs are."""

    def __init__(self, model):
        self.model = model
        self.optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
        self.optimizer.build(model.trainable_variables)
        self.step = tf.Variable(0, dtype=tf.int64, name="global_step")
        self.checkpoint = tf.train.Checkpoint(
            model=model, optimizer=self.optimizer, global_step=self.step)

    def optimizer_state(self):
        return [np.array(v.numpy()) for v in self.optimizer.variables]


@pytest.fixture(scope="module")
def donor(tmp_path_factory):
    """A model_dir with ckpt-5 and the newer ckpt-9 of a 10-class ResNet-8;
    returns (model_dir, {step: the model's values at that step})."""
    model_dir = str(tmp_path_factory.mktemp("donor"))
    run = _Run(_tiny_resnet(seed=0))
    manager = tf.train.CheckpointManager(run.checkpoint, model_dir,
                                         max_to_keep=3)
    rng = np.random.default_rng(0)
    values = {}
    for step in (5, 9):
        _randomise(run.model, rng)
        for slot in run.optimizer.variables:  # Slots and iterations != 0.
            slot.assign(tf.ones_like(slot) * step)
        run.step.assign(step)
        manager.save(checkpoint_number=step)
        values[step] = _values(run.model)
    return model_dir, values


def test_round_trip_restores_weights_and_bn_statistics_only(donor):
    model_dir, values = donor
    run = _Run(_tiny_resnet())
    optimizer_before = run.optimizer_state()
    assert not np.array_equal(run.model.variables[0].numpy(),
                              values[9]["stem_conv/kernel"])

    report = warm_start.initialize_from_checkpoint(
        run.model, f"{model_dir}/ckpt-9")

    _assert_values(run.model, values[9])
    assert any("moving_mean" in n for n in values[9])
    assert report.path == f"{model_dir}/ckpt-9"
    assert sorted(report.restored) == sorted(values[9])
    assert report.skipped == ()
    assert f"initialized {len(values[9])} model variables" in str(report)
    for before, after in zip(optimizer_before, run.optimizer_state()):
        np.testing.assert_array_equal(before, after)  # Slots stay zero.
    assert int(run.step.numpy()) == 0


def test_model_dir_gives_its_newest_checkpoint(donor):
    model_dir, values = donor
    assert warm_start.resolve_checkpoint(model_dir) == f"{model_dir}/ckpt-9"
    model = _tiny_resnet()
    report = warm_start.initialize_from_checkpoint(model, model_dir)
    assert report.path == f"{model_dir}/ckpt-9"
    _assert_values(model, values[9])
    warm_start.initialize_from_checkpoint(model, f"{model_dir}/ckpt-5")
    _assert_values(model, values[5])


def test_skip_classifier_fine_tunes_to_other_classes(donor):
    model_dir, values = donor
    model = _tiny_resnet(num_classes=3)
    initial = _values(model)

    report = warm_start.initialize_from_checkpoint(model, model_dir,
                                                   skip_classifier=True)

    body = [name for name in values[9] if name not in CLASSIFIER]
    _assert_values(model, values[9], body)
    _assert_values(model, initial, CLASSIFIER)
    assert report.skipped == CLASSIFIER
    assert sorted(report.restored) == sorted(body)
    assert "kept the initial values of 2 (the classifier)" in str(report)


def test_class_count_mismatch_names_the_classifier_and_assigns_nothing(donor):
    model_dir, _ = donor
    model = _tiny_resnet(num_classes=3)
    initial = _values(model)
    with pytest.raises(ValueError) as error:
        warm_start.initialize_from_checkpoint(model, model_dir)
    message = str(error.value)
    assert "classifier/kernel has shape (8, 10) in it but (8, 3)" in message
    assert "classifier/bias has shape (10,) in it but (3,)" in message
    assert "skip_classifier=True" in message
    _assert_values(model, initial)


def test_missing_checkpoint_is_named(tmp_path):
    model = _tiny_resnet()
    missing = str(tmp_path / "nowhere" / "ckpt-3")
    with pytest.raises(FileNotFoundError, match=f"{missing}.index"):
        warm_start.initialize_from_checkpoint(model, missing)
    with pytest.raises(FileNotFoundError,
                       match=f"{tmp_path} has no intact checkpoint.*"
                             f"'checkpoint' file lists"):
        warm_start.resolve_checkpoint(str(tmp_path))


def test_damaged_checkpoint_is_refused(donor, tmp_path):
    model_dir, _ = donor
    for name in glob.glob(f"{model_dir}/ckpt-9.*"):
        shutil.copy(name, tmp_path)
    (data,) = glob.glob(f"{tmp_path}/ckpt-9.data-*")
    with open(data, "r+b") as stream:
        stream.truncate(os.path.getsize(data) // 2)
    model = _tiny_resnet()
    initial = _values(model)
    with pytest.raises(ValueError, match=r"ckpt-9 cannot be read"):
        warm_start.initialize_from_checkpoint(model, f"{tmp_path}/ckpt-9")
    _assert_values(model, initial)


def test_checkpoint_of_a_different_model_is_refused(donor, tmp_path):
    model_dir, _ = donor
    deeper = _tiny_resnet(depth=14)
    initial = _values(deeper)
    with pytest.raises(ValueError,
                       match=r"do not fit it: s1b2_conv1/kernel has shape "
                             r"\(3, 3, 2, 4\) in it but \(3, 3, 2, 2\).*"
                             r"different model") as error:
        warm_start.initialize_from_checkpoint(deeper, model_dir,
                                              skip_classifier=True)
    assert "skip_classifier=True" not in str(error.value)
    _assert_values(deeper, initial)
    no_model = tf.train.Checkpoint(global_step=tf.Variable(3)).save(
        str(tmp_path / "ckpt"))
    with pytest.raises(ValueError,
                       match=r"stem_conv/kernel \(shape \(3, 3, 1, 2\)\) "
                             r"has no value in it"):
        warm_start.initialize_from_checkpoint(deeper, no_model)
    _assert_values(deeper, initial)


def test_subclassed_model_skips_its_last_weighted_layer(tmp_path):
    class Mlp(keras.Model):
        def __init__(self, classes):
            super().__init__(name="mlp")  # The same variable paths.
            self.hidden = keras.layers.Dense(4, name="hidden")
            self.head = keras.layers.Dense(classes, name="head")

        def call(self, x):
            return self.head(self.hidden(x))

    donor_model, model = Mlp(5), Mlp(2)
    for each in (donor_model, model):
        each(np.zeros((1, 3), np.float32))
    path = _Run(donor_model).checkpoint.save(str(tmp_path / "ckpt"))
    initial = _values(model)
    report = warm_start.initialize_from_checkpoint(model, path,
                                                   skip_classifier=True)
    assert report.skipped == ("mlp/head/kernel", "mlp/head/bias")
    _assert_values(model, _values(donor_model), ["mlp/hidden/kernel",
                                                 "mlp/hidden/bias"])
    _assert_values(model, initial, report.skipped)


def test_every_replica_copy_is_restored(donor):
    model_dir, values = donor
    strategy = distribute.logical_cpu_strategy(2)
    with strategy.scope():
        model = _tiny_resnet()
        warm_start.initialize_from_checkpoint(model, model_dir)
    moving_means = 0
    for variable in model.variables:
        copies = strategy.experimental_local_results(variable.value)
        assert len(copies) == 2, variable.path
        moving_means += "moving_mean" in variable.path
        for copy in copies:
            np.testing.assert_array_equal(copy.numpy(),
                                          values[9][variable.path],
                                          err_msg=variable.path)
    assert moving_means == 9  # Stem, 3 blocks x 2, 2 projections.
