"""Trainer pieces: the NaN guard, the loss (label smoothing) and the
evaluation's top-k errors (the median statistic: test_summarize_runs)."""

import logging

import keras
import numpy as np
import orbit
import pytest
import tensorflow as tf

from tf_lbsgd import distribute
from tf_lbsgd import losses
from tf_lbsgd import optimizers
from tf_lbsgd.models.resnet_cifar import resnet_cifar
from tf_lbsgd.trainer import Evaluator
from tf_lbsgd.trainer import Trainer


def test_nan_loss_stops_training_with_the_step():
    strategy = tf.distribute.get_strategy()
    model = resnet_cifar(input_shape=(8, 8, 1), depth=8, width=4)
    optimizer = optimizers.MomentumSGD(learning_rate=0.1,
                                       aggregate_gradients=False)
    optimizer.build(model.trainable_variables)
    step = orbit.utils.create_global_step()
    x = np.full((4, 8, 8, 1), np.nan, "f4")  # e.g. a corrupt input
    data = tf.data.Dataset.from_tensors((x, np.zeros(4, "i4"))).repeat()
    trainer = Trainer(strategy, model, optimizer, iter(data), 4, step)
    with pytest.raises(FloatingPointError, match="Training loss is nan at step"):
        trainer.train(tf.constant(3))


def _linear_model(dim=6, classes=5, seed=0):
    """Logits = x @ kernel + bias: their numpy twin is one line."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((dim,)),
                             keras.layers.Dense(classes,
                                                bias_initializer="random_normal")])


def _numpy_logits(model, x):
    kernel, bias = (v.numpy() for v in model.weights)
    return x.astype(np.float64) @ kernel + bias


def _numpy_cross_entropy(labels, logits, eps):
    """Mean over examples of -sum((1 - eps) onehot + eps / C) log softmax."""
    log_probs = logits - logits.max(axis=1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(axis=1, keepdims=True))
    classes = logits.shape[1]
    targets = (1 - eps) * np.eye(classes)[labels] + eps / classes
    return -(targets * log_probs).sum(axis=1)


@pytest.mark.parametrize("eps", [0.0, 0.3])
def test_trainer_reports_the_chosen_loss_and_trains(eps):
    strategy = tf.distribute.get_strategy()
    model = _linear_model()
    optimizer = optimizers.MomentumSGD(learning_rate=0.5,
                                       aggregate_gradients=False)
    optimizer.build(model.trainable_variables)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 6)).astype("f4") * 3
    y = rng.integers(0, 5, size=8).astype("i4")
    expected = _numpy_cross_entropy(y, _numpy_logits(model, x), eps).mean()
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    trainer = Trainer(strategy, model, optimizer, iter(data), 8,
                      orbit.utils.create_global_step(),
                      loss_fn=losses.SoftmaxCrossEntropy(eps) if eps else None)
    output = trainer.train(tf.constant(1))
    # The tags of model_dir/train/ (the Evaluator's share loss, top1_error).
    assert sorted(output) == ["examples_per_second", "learning_rate", "loss",
                              "loss_scale", "skipped_steps", "top1_error"]
    first = output["loss"]  # Step 0's loss.
    assert first == pytest.approx(expected, rel=1e-5)
    assert trainer.train(tf.constant(3))["loss"] < 0.9 * first


def test_evaluator_reports_each_top_k_error():
    strategy = distribute.logical_cpu_strategy(2)
    with strategy.scope():
        model = _linear_model(classes=6, seed=1)
        step = tf.Variable(7, dtype=tf.int64)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(12, 6)).astype("f4")
    logits = _numpy_logits(model, x)
    y = rng.integers(0, 6, size=12).astype("i4")
    weights = np.array([1.0] * 10 + [0.0] * 2, "f4")  # Padding: 2 examples.
    # The padding would be a top-1 hit and a high loss if it counted.
    y[10:] = logits[10:].argmax(axis=1)
    data = tf.data.Dataset.from_tensor_slices((x, y, weights)).batch(4)
    evaluator = Evaluator(
        strategy, model, strategy.experimental_distribute_dataset(data), step,
        top_k=(1, 3, 2), loss_fn=losses.SoftmaxCrossEntropy(0.1))
    output = evaluator.evaluate(tf.constant(-1))
    rank = (logits[:10] > logits[np.arange(10), y[:10]][:, None]).sum(axis=1)
    expected = {f"top{k}_error": np.mean(rank >= k) for k in (1, 3, 2)}
    assert 0 < expected["top3_error"] < expected["top1_error"]
    assert list(output) == ["loss", "top1_error", "top3_error", "top2_error",
                            "median5_top1_error", "examples"]
    for name, error in expected.items():
        assert output[name] == pytest.approx(error), name
    assert output["examples"] == 10
    assert output["loss"] == pytest.approx(
        _numpy_cross_entropy(y[:10], logits[:10], 0.1).mean(), rel=1e-5)
    assert evaluator.history == [output["top1_error"]]
    assert evaluator.steps == [7]


@pytest.mark.parametrize("top_k, problem", [
    ((2, 5), "must include 1"), ((1, 5, 1), "duplicates"),
    ((0, 1), "positive ints"), ((1, 2.5), "positive ints"),
    (5, "a sequence of ints")])
def test_evaluator_rejects_bad_top_k(top_k, problem):
    with pytest.raises(ValueError, match=problem) as error:
        Evaluator(tf.distribute.get_strategy(), _linear_model(), None,
                  tf.Variable(0, dtype=tf.int64), top_k=top_k)
    assert repr(top_k) in str(error.value)


def test_evaluator_default_top_k_and_too_few_classes(caplog):
    with caplog.at_level(logging.WARNING):
        evaluator = Evaluator(tf.distribute.get_strategy(),
                              _linear_model(classes=3), None,
                              tf.Variable(0, dtype=tf.int64))
    assert evaluator.sums.names == ["loss", "top1", "top5", "examples"]
    assert "with 3 classes, the top-5 error is 0" in caplog.text
