"""Past 8k through the whole run (issue 20): LARS and LAMB in the Trainer on
2 replicas with checkpoints, resume and mixed precision; the moving average
of the weights in the evaluations and the export; the gin settings."""

import gin
import keras
import numpy as np
import pytest
import tensorflow as tf

import small_task
import tf_lbsgd
from tf_lbsgd import config
from tf_lbsgd import distribute
from tf_lbsgd import hparams
from tf_lbsgd import lamb
from tf_lbsgd import lars
from tf_lbsgd import optimizers
from tf_lbsgd import train_lib

K = 2
SHAPE, CLASSES = small_task.SHAPE, small_task.CLASSES
LARS_RECIPE = dict(global_batch_size=32, optimizer="lars", base_lr=2.0,
                   base_batch_size=32, trust_coefficient=0.02,
                   warmup_epochs=0.5, warmup_start_lr=0.0,
                   decay="polynomial", steps_per_loop=5, eval_top_k=(1,),
                   export=False)
TRAIN, TEST = small_task.data(320, 0), small_task.data(96, 1)
_model_fn = small_task.model_fn


@pytest.fixture(scope="module")
def strategy():
    return distribute.logical_cpu_strategy(K)


def _train(strategy, model_dir, epochs, **recipe):
    return tf_lbsgd.train(_model_fn, TRAIN, str(model_dir), eval_data=TEST,
                          num_classes=CLASSES, strategy=strategy,
                          recipe=tf_lbsgd.Recipe(epochs=epochs, **recipe))


def _weights(model):
    return [np.array(w) for w in model.get_weights()]


def _raw_weights_of(model_dir):
    """The model's weights as the newest checkpoint saved them."""
    model = _model_fn(SHAPE, CLASSES)
    tf.train.Checkpoint(model=model).restore(
        tf.train.latest_checkpoint(model_dir)).expect_partial()
    return model


def _loss(model):
    logits = model.predict(TEST[0], verbose=0)
    return float(np.mean(keras.losses.sparse_categorical_crossentropy(
        TEST[1], logits, from_logits=True)))


def test_lars_learns_and_a_resumed_run_ends_where_an_uninterrupted_one_does(
        strategy, tmp_path):
    # A schedule that does not depend on the run's length, so that the first
    # half of the whole run is the 1-epoch run.
    recipe = dict(LARS_RECIPE, decay="step", decay_epochs=(1.5,))
    whole = _train(strategy, tmp_path / "whole", 2, **recipe)
    assert isinstance(whole.model, keras.Model)
    assert whole.metrics["eval"]["top1_error"] < 0.4, whole.metrics["eval"]
    _train(strategy, tmp_path / "halves", 1, **recipe)
    resumed = _train(strategy, tmp_path / "halves", 2, **recipe)
    assert resumed.metrics["global_step"] == 20
    # The velocities and step count came back from the checkpoint: without
    # them the second half would start from zero velocity and differ.
    for a, b in zip(_weights(whole.model), _weights(resumed.model)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_lamb_in_mixed_float16_with_loss_scaling(strategy, tmp_path):
    result = _train(strategy, tmp_path / "run", 2,
                    **dict(LARS_RECIPE, optimizer="lamb", base_lr=0.1,
                           l2_weight_decay=0.01, precision="mixed_float16"))
    metrics = result.metrics
    assert metrics["loss_scale"] > 1.0  # Dynamic loss scaling was on.
    assert metrics["skipped_steps"] < 5
    assert metrics["eval"]["top1_error"] < 0.4, metrics["eval"]
    assert all(w.dtype == "float32" for w in result.model.weights)


def test_the_moving_average_is_evaluated_and_exported(strategy, tmp_path):
    result = _train(strategy, tmp_path / "ema", 2,
                    **dict(LARS_RECIPE, use_ema=True, ema_momentum=0.9,
                           export=True))
    evaluated = result.metrics["eval"]["loss"]
    # The returned model holds the average: it scores as evaluated.
    assert _loss(result.model) == pytest.approx(evaluated, rel=1e-4)
    unexported = _train(strategy, tmp_path / "ema_no_export", 2,
                        **dict(LARS_RECIPE, use_ema=True, ema_momentum=0.9))
    assert _loss(unexported.model) == pytest.approx(
        unexported.metrics["eval"]["loss"], rel=1e-4)
    # The checkpoint keeps the raw weights, which score otherwise.
    raw = _raw_weights_of(str(tmp_path / "ema"))
    assert _loss(raw) != pytest.approx(evaluated, rel=1e-3)
    # The run's HParams name the optimizer, its trust and average.
    session = hparams.read_session(str(tmp_path / "ema"))
    assert (session["optimizer"], session["lr/decay"],
            session["lr/decay_power"]) == ("LARS", "polynomial", 2.0)
    assert session["optimizer/trust_coefficient"] == pytest.approx(0.02)
    assert session["optimizer/ema_momentum"] == pytest.approx(0.9)
    # The export is the average too.
    served = tf.saved_model.load(result.export_path).signatures[
        "serving_default"](images=tf.constant(TEST[0]))
    np.testing.assert_allclose(served["logits"],
                               result.model.predict(TEST[0], verbose=0),
                               rtol=1e-5, atol=1e-5)


def test_recipe_refuses_an_unknown_optimizer():
    with pytest.raises(ValueError, match="Recipe.optimizer must be one of "
                       r"\('momentum', 'lars', 'lamb'\).*'adam'"):
        tf_lbsgd.Recipe(epochs=1, global_batch_size=8, optimizer="adam")


def test_recipe_builds_each_optimizer():
    built = {name: tf_lbsgd.Recipe(
        epochs=1, global_batch_size=8, optimizer=name, use_ema=True,
        trust_coefficient=0.01).optimizer_fn()(
            learning_rate=0.1, aggregate_gradients=False)
        for name in ("momentum", "lars", "lamb")}
    assert type(built["momentum"]) is optimizers.MomentumSGD
    assert type(built["lars"]) is lars.LARS
    assert built["lars"].trust_coefficient == 0.01
    assert type(built["lamb"]) is lamb.LAMB
    assert all(o.use_ema for o in built.values())


def test_gin_chooses_the_optimizer_and_its_settings():
    config.parse([], gin_bindings=[
        "train_lib.run.optimizer_fn = @LARS",
        "LARS.trust_coefficient = 0.002",
        "optimizers.MomentumSGD.l2_weight_decay = 5e-5",
        "LARS.use_ema = True",
        "LARS.ema_momentum = 0.999",
    ])
    optimizer_fn = gin.query_parameter("train_lib.run.optimizer_fn")
    optimizer = optimizer_fn.scoped_configurable_fn(
        learning_rate=0.1, aggregate_gradients=False)
    assert type(optimizer) is lars.LARS
    assert optimizer.trust_coefficient == 0.002
    # LARS is a MomentumSGD: the recipe's momentum and decay bindings hold.
    assert optimizer.l2_weight_decay == 5e-5
    assert optimizer.use_ema and optimizer.ema_momentum == 0.999


def test_a_bad_optimizer_binding_is_named():
    with pytest.raises(ValueError, match="train_lib.run.optimizer_fn must "
                       "be an optimizer class.*'LARS'"):
        train_lib._check_optimizer_fn("LARS")  # pylint: disable=protected-access
