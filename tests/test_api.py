"""The Python API (issue 16): your own model and data with the whole recipe.

`tf_lbsgd.train` on in-memory arrays and on a `tf.data.Dataset`, with a
model_fn, a functional model built outside the strategy and a subclassed
model; resume; warm start; the bad inputs, each refused before anything is
written to model_dir.
"""

import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import small_task
import tf_lbsgd
from tf_lbsgd import distribute
from tf_lbsgd import hparams
from tf_lbsgd.data import adapters

K = 2
SHAPE, CLASSES = small_task.SHAPE, small_task.CLASSES
RECIPE = dict(global_batch_size=32, base_lr=3.2, warmup_epochs=1,
              decay="cosine", steps_per_loop=4, eval_top_k=(1, 2))
TRAIN, TEST = small_task.data(320, 0), small_task.data(96, 1)
_model_fn = small_task.model_fn


class SmallSubclassed(keras.Model):
    """A user's subclassed model (its config: the number of classes)."""

    def __init__(self, classes=CLASSES, **kwargs):
        super().__init__(**kwargs)
        self.classes = classes
        self.conv = keras.layers.Conv2D(8, 3)
        self.pool = keras.layers.GlobalAveragePooling2D()
        self.logits = keras.layers.Dense(classes)

    def call(self, images):
        return self.logits(self.pool(tf.nn.relu(self.conv(images))))

    def get_config(self):
        return dict(super().get_config(), classes=self.classes)


@pytest.fixture(scope="module")
def strategy():
    return distribute.logical_cpu_strategy(K)


@pytest.fixture(scope="module")
def trained(strategy, tmp_path_factory):
    """Two epochs of the recipe on the arrays: 20 steps of kn = 32."""
    model_dir = str(tmp_path_factory.mktemp("api") / "run")
    result = tf_lbsgd.train(_model_fn, TRAIN, model_dir, eval_data=TEST,
                            num_classes=CLASSES, strategy=strategy,
                            recipe=tf_lbsgd.Recipe(epochs=2, **RECIPE))
    return result


def test_train_on_arrays_returns_the_trained_model_and_writes_the_run(
        trained):
    metrics = trained.metrics
    assert metrics["global_step"] == 20  # 2 epochs of 320 / 32.
    assert metrics["num_replicas"] == K
    # Chance is 2/3 error; the model learnt.
    assert metrics["eval"]["top1_error"] < 0.35, metrics["eval"]
    assert metrics["eval"]["examples"] == len(TEST[1])
    with open(os.path.join(trained.model_dir, "metrics.json")) as f:
        assert json.load(f)["global_step"] == 20
    assert tf.train.latest_checkpoint(trained.model_dir).endswith("ckpt-20")
    for events in ("train", "validation"):
        assert os.listdir(os.path.join(trained.model_dir, events))
    # The recipe's HParams session (test_tensorboard_summaries: the rest).
    session = hparams.read_session(trained.model_dir)
    assert (session["batch/kn"], session["batch/k"], session["batch/n"],
            session["lr/base"], session["lr/decay"], session["epochs"]) == (
                32, K, 32 // K, 3.2, "cosine", 2.0)
    assert session["lr/peak"] == pytest.approx(3.2 * 32 / 256)
    # The returned model is the trained one: it scores as evaluated.
    logits = trained.model.predict(TEST[0], verbose=0)
    error = np.mean(logits.argmax(-1) != TEST[1])
    assert error == pytest.approx(metrics["eval"]["top1_error"], abs=1e-6)
    assert trained.export_path == os.path.join(trained.model_dir, "export",
                                               "20")
    served = tf.saved_model.load(trained.export_path).signatures[
        "serving_default"](images=tf.constant(TEST[0]))
    np.testing.assert_allclose(served["logits"], logits, rtol=1e-5,
                               atol=1e-5)


def test_a_rerun_with_more_epochs_resumes(trained, strategy):
    result = tf_lbsgd.train(_model_fn, TRAIN, trained.model_dir,
                            eval_data=TEST, num_classes=CLASSES,
                            strategy=strategy,
                            recipe=tf_lbsgd.Recipe(epochs=3, **RECIPE),
                            mode="train")
    assert result.metrics["global_step"] == 30  # From 20, not from 0.
    assert tf.train.latest_checkpoint(trained.model_dir).endswith("ckpt-30")
    # One HParams session, as the run started: TensorBoard would take
    # either of two.
    assert hparams.read_session(trained.model_dir)["epochs"] == 2.0
    assert len([name for name in os.listdir(trained.model_dir)
                if name.startswith("events.out.tfevents.")]) == 1


def test_export_mode_exports_the_newest_checkpoint(trained, strategy):
    export = os.path.join(trained.model_dir, "export")
    shutil.rmtree(export)
    result = tf_lbsgd.train(_model_fn, TRAIN, trained.model_dir,
                            num_classes=CLASSES, strategy=strategy,
                            recipe=tf_lbsgd.Recipe(epochs=3, **RECIPE),
                            mode="export")
    assert result.export_path == os.path.join(export, "30")
    assert os.listdir(export) == ["30"]
    served = tf.saved_model.load(result.export_path).signatures[
        "serving_default"](images=tf.constant(TEST[0]))
    np.testing.assert_allclose(
        served["logits"], result.model.predict(TEST[0], verbose=0),
        rtol=1e-5, atol=1e-5)


def test_export_mode_without_a_checkpoint_says_so(strategy, tmp_path):
    with pytest.raises(FileNotFoundError, match="needs a checkpoint"):
        tf_lbsgd.train(_model_fn, TRAIN, str(tmp_path / "empty"),
                       num_classes=CLASSES, strategy=strategy,
                       recipe=tf_lbsgd.Recipe(epochs=1, **RECIPE),
                       mode="export")


def _batch_norm_fused(model):
    return [layer.fused for layer in model.layers
            if isinstance(layer, tf_lbsgd.WorkerBatchNorm)]


def test_warm_start_starts_at_the_donor_accuracy(trained, strategy,
                                                 tmp_path):
    """A new run initialised from the trained one, barely trained (rate
    1e-6 for one epoch), scores as the donor did; from scratch it would not.
    It compiles with XLA, so its model was built with unfused BN ops."""
    assert _batch_norm_fused(trained.model) == [True]  # No XLA there.
    recipe = tf_lbsgd.Recipe(epochs=1, global_batch_size=32, base_lr=1e-6,
                             warmup="none", decay="constant",
                             l2_weight_decay=0.0, steps_per_loop=10,
                             export=False, jit_compile=True,
                             init_checkpoint=os.path.join(
                                 trained.model_dir, "ckpt-20"))
    result = tf_lbsgd.train(_model_fn, TRAIN, str(tmp_path / "warm"),
                            eval_data=TEST, num_classes=CLASSES,
                            strategy=strategy, recipe=recipe)
    assert result.metrics["global_step"] == 10  # A new run: from step 0.
    assert _batch_norm_fused(result.model) == [False]
    assert result.metrics["eval"]["top1_error"] == pytest.approx(
        trained.metrics["eval"]["top1_error"], abs=0.02)


def test_fine_tune_to_other_classes_keeps_all_but_the_classifier(
        trained, strategy, tmp_path):
    recipe = tf_lbsgd.Recipe(epochs=1, global_batch_size=32, export=False,
                             init_checkpoint=trained.model_dir,
                             init_skip_classifier=True, steps_per_loop=10)
    two_classes = (TRAIN[0], (TRAIN[1] > 0).astype("i4"))
    result = tf_lbsgd.train(_model_fn, two_classes, str(tmp_path / "tune"),
                            num_classes=2, strategy=strategy, recipe=recipe)
    assert result.model.output_shape == (None, 2)
    assert result.metrics["global_step"] == 10
    assert "eval" not in result.metrics  # No eval data: train only.


def test_dataset_input_and_models_built_outside_the_strategy(strategy,
                                                             tmp_path):
    """A tf.data.Dataset of examples; a functional model built outside the
    scope (cloned into it) and a subclassed one."""
    train = tf.data.Dataset.from_tensor_slices(TRAIN)
    test = tf.data.Dataset.from_tensor_slices(TEST)
    recipe = tf_lbsgd.Recipe(epochs=1, export=False, **RECIPE)
    outside = _model_fn(SHAPE, CLASSES)
    before = [w.numpy().copy() for w in outside.weights]
    result = tf_lbsgd.train(outside, train, str(tmp_path / "functional"),
                            eval_data=test, strategy=strategy, recipe=recipe)
    assert result.model is not outside  # Cloned into the scope, trained:
    for want, got in zip(before, result.model.weights[:1]):
        assert not np.allclose(want, got.numpy())
    for want, got in zip(before, outside.weights):  # The user's untouched.
        np.testing.assert_array_equal(want, got.numpy())
    assert result.metrics["eval"]["examples"] == len(TEST[1])
    with strategy.scope():
        subclassed = SmallSubclassed()
    result = tf_lbsgd.train(subclassed, train, str(tmp_path / "subclassed"),
                            eval_data=test, strategy=strategy, recipe=recipe)
    assert result.model is subclassed  # Built in the scope: used as it is.
    assert result.metrics["global_step"] == 10


def _context(pipelines=1, pipeline=0, replicas=K):
    return tf.distribute.InputContext(num_input_pipelines=pipelines,
                                      input_pipeline_id=pipeline,
                                      num_replicas_in_sync=replicas)


def _labels(dataset, count):
    return np.stack([y for _, y in dataset.take(count).as_numpy_iterator()])


def test_dataset_stream_is_a_shuffle_per_epoch_divided_among_pipelines():
    """R12: each epoch uses every example once, in a new order; two
    pipelines split each global batch as one pipeline would; a resume
    continues the same stream; a Dataset gives the same batches as the
    same examples in arrays."""
    ids = np.arange(40, dtype="i4")
    examples = (ids.reshape(40, 1).astype("f4"), ids)
    data = adapters.from_dataset(tf.data.Dataset.from_tensor_slices(
        examples))
    make = data.train_dataset_fn
    one = _labels(make(_context(), 4, 7, 0), 20).reshape(-1)  # 80 positions.
    assert sorted(one[:40]) == list(ids) and sorted(one[40:]) == list(ids)
    assert not np.array_equal(one[:40], one[40:])
    assert not np.array_equal(one[:40], ids)
    halves = [_labels(make(_context(2, w, 4), 2, 7, 0), 20).reshape(10, 2, 2)
              for w in (0, 1)]
    np.testing.assert_array_equal(
        np.concatenate(halves, axis=1).reshape(-1), one)
    resumed = _labels(make(_context(), 4, 7, 3), 14).reshape(-1)
    np.testing.assert_array_equal(resumed, one[24:])  # Step 3 of kn = 8.
    other_seed = _labels(make(_context(), 4, 8, 0), 10).reshape(-1)
    assert not np.array_equal(other_seed, one[:40])
    arrays = adapters.from_arrays(examples).train_dataset_fn
    np.testing.assert_array_equal(
        _labels(arrays(_context(), 4, 7, 0), 20).reshape(-1), one)


def test_dataset_eval_counts_every_example_once():
    ids = np.arange(13, dtype="i4")
    data = adapters.from_dataset(
        tf.data.Dataset.from_tensor_slices((ids.reshape(13, 1) * 1.0, ids)),
        eval=tf.data.Dataset.from_tensor_slices((ids.reshape(13, 1) * 1.0,
                                                 ids)))
    seen = []
    for w in (0, 1):
        for _, labels, weights in data.eval_dataset_fn(
                _context(2, w, 4), 2).as_numpy_iterator():
            assert labels.shape == weights.shape == (2,)
            seen += list(labels[weights == 1])
    assert sorted(seen) == list(ids)


def _refused(tmp_path, strategy, model=_model_fn, data=TRAIN, **kwargs):
    model_dir = tmp_path / "never"
    recipe = kwargs.pop("recipe", tf_lbsgd.Recipe(epochs=1, **RECIPE))
    kwargs.setdefault("num_classes", CLASSES)
    with pytest.raises((ValueError, FileNotFoundError)) as error:
        tf_lbsgd.train(model, data, str(model_dir), strategy=strategy,
                       recipe=recipe, **kwargs)
    assert not model_dir.exists(), "written before the error"
    return str(error.value)


def test_bad_input_is_refused_before_model_dir_is_written(strategy,
                                                           tmp_path):
    unknown = tf.data.Dataset.from_tensor_slices(TRAIN).filter(
        lambda x, y: True)
    assert "no known size" in _refused(tmp_path, strategy, data=unknown)
    endless = tf.data.Dataset.from_tensor_slices(TRAIN).repeat()
    assert "infinite" in _refused(tmp_path, strategy, data=endless)
    batched = tf.data.Dataset.from_tensor_slices(TRAIN).batch(4)
    assert "unbatched" in _refused(tmp_path, strategy, data=batched)
    message = _refused(tmp_path, strategy, model=_model_fn(SHAPE, CLASSES),
                       num_classes=5)
    assert "3 outputs" in message and "num_classes=5" in message
    message = _refused(tmp_path, strategy, recipe=tf_lbsgd.Recipe(
        epochs=1, global_batch_size=31))
    assert "31" in message and "2 replicas" in message
    missing = str(tmp_path / "no_such_run")
    assert missing in _refused(tmp_path, strategy, recipe=tf_lbsgd.Recipe(
        epochs=1, global_batch_size=32, init_checkpoint=missing))
    assert "labels run from 0 to 2" in _refused(
        tmp_path, strategy, data=TRAIN, num_classes=2)
    assert "has no evaluation examples" in _refused(
        tmp_path, strategy, mode="train_and_eval")  # No eval_data given.
    with pytest.raises(ValueError, match="global_batch_size"):
        tf_lbsgd.Recipe(epochs=1)


def test_init_checkpoint_of_another_model_is_refused(trained, strategy,
                                                     tmp_path):
    def wider(input_shape, num_classes):
        images = keras.Input(input_shape)
        x = keras.layers.Conv2D(16, 3, use_bias=False)(images)
        x = keras.layers.GlobalAveragePooling2D()(x)
        return keras.Model(images, keras.layers.Dense(num_classes)(x))

    message = _refused(tmp_path, strategy, model=wider,
                       recipe=tf_lbsgd.Recipe(
                           epochs=1, global_batch_size=32,
                           init_checkpoint=trained.model_dir))
    assert "shape" in message


def test_public_names_resolve_and_are_documented():
    for name in tf_lbsgd.__all__:
        value = getattr(tf_lbsgd, name)
        assert (value.__doc__ or "").strip(), f"tf_lbsgd.{name} has no doc"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        tf_lbsgd.nope  # pylint: disable=pointless-statement


def test_import_does_not_start_tensorflow():
    """The CLI's --help and its first checks run before TensorFlow loads."""
    result = subprocess.run(
        [sys.executable, "-c", "import sys, tf_lbsgd; "
         "assert 'tensorflow' not in sys.modules, 'loaded'; "
         "print(len(tf_lbsgd.__all__))"],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == len(tf_lbsgd.__all__)
