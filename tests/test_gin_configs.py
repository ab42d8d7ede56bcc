"""Every gin file parses, and every experiment builds its parts."""

import glob
import os

import gin
import numpy as np
import pytest

from tf_lbsgd import config
from tf_lbsgd import optimizers
from tf_lbsgd import schedules

GIN_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "gin")
ALL = sorted(glob.glob(os.path.join(GIN_DIR, "**", "*.gin"), recursive=True))
EXPERIMENTS = [p for p in ALL if "/experiments/" in p]


def test_there_are_gin_files():
    assert EXPERIMENTS and len(ALL) > len(EXPERIMENTS)


@pytest.mark.parametrize("path", ALL, ids=lambda p: os.path.relpath(p, GIN_DIR))
def test_parses(path):
    config.parse([path])


def _call(name):
    return gin.query_parameter(name).scoped_configurable_fn()


def _build(path, bindings=()):
    """Parses `path` and builds data, model, schedule and optimizer."""
    config.parse([path], list(bindings))
    data = _call("train_lib.run.data")
    model = gin.query_parameter("train_lib.run.model_fn").scoped_configurable_fn(
        input_shape=data.image_shape, num_classes=data.num_classes)
    assert model.output_shape == (None, data.num_classes)
    n = gin.query_parameter("train_lib.run.per_replica_batch_size")
    kn = _maybe("train_lib.run.global_batch_size") or (
        n * gin.query_parameter("distribute.build_strategy.num_replicas"))
    epochs = gin.query_parameter("train_lib.run.epochs")
    schedule = schedules.build_learning_rate_schedule(
        global_batch_size=kn, steps_per_epoch=data.num_train / kn,
        total_epochs=epochs)
    optimizer = optimizers.MomentumSGD(learning_rate=schedule)
    assert float(optimizer.learning_rate) > 0
    return model


def _maybe(name):
    try:
        return gin.query_parameter(name)
    except ValueError:
        return None


@pytest.mark.parametrize("path", [p for p in EXPERIMENTS if "imagenet" not in p],
                         ids=os.path.basename)
def test_experiment_builds(path):
    _build(path)


@pytest.mark.parametrize("name,params", [("resnet50_kn8k", 25557032),
                                          ("resnet101_kn256", 44549160)])
def test_imagenet_experiment_builds_on_synthetic_data(name, params):
    """ImageNet itself is not here: the same gin, with synthetic data."""
    path = os.path.join(GIN_DIR, "experiments", "imagenet", f"{name}.gin")
    model = _build(path, ["train_lib.run.data = @synthetic_imagenet"])
    assert sum(int(np.prod(v.shape))
               for v in model.trainable_variables) == params


def test_gin_file_found_by_name():
    assert config.resolve_gin_file("experiments/fashion_mnist_default") == (
        os.path.join(GIN_DIR, "experiments", "fashion_mnist_default.gin"))


def test_missing_gin_file_lists_where_it_looked():
    with pytest.raises(FileNotFoundError, match="nope.gin"):
        config.resolve_gin_file("nope")


def test_bad_binding_names_the_parameter():
    with pytest.raises(ValueError, match="epochz"):
        config.parse([], ["train_lib.run.epochz = 2"])
