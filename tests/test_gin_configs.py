"""Every gin file parses, and every experiment builds its parts."""

import glob
import os

import gin
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


@pytest.mark.parametrize("path", EXPERIMENTS, ids=os.path.basename)
def test_experiment_builds(path):
    config.parse([path])
    data = _call("train_lib.run.data")
    model = gin.query_parameter("train_lib.run.model_fn").scoped_configurable_fn(
        input_shape=data.image_shape, num_classes=data.num_classes)
    assert model.output_shape == (None, data.num_classes)
    n = gin.query_parameter("train_lib.run.per_replica_batch_size")
    k = gin.query_parameter("build_strategy.num_replicas")
    epochs = gin.query_parameter("train_lib.run.epochs")
    schedule = schedules.build_learning_rate_schedule(
        global_batch_size=k * n, steps_per_epoch=data.num_train / (k * n),
        total_epochs=epochs)
    optimizer = optimizers.build_optimizer(learning_rate=schedule)
    assert float(optimizer.learning_rate) > 0


def test_gin_file_found_by_name():
    assert config.resolve_gin_file("experiments/fashion_mnist_default") == (
        os.path.join(GIN_DIR, "experiments", "fashion_mnist_default.gin"))


def test_missing_gin_file_lists_where_it_looked():
    with pytest.raises(FileNotFoundError, match="nope.gin"):
        config.resolve_gin_file("nope")


def test_bad_binding_names_the_parameter():
    with pytest.raises(ValueError, match="epochz"):
        config.parse([], ["train_lib.run.epochz = 2"])
