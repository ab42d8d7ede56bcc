"""The ImageNet rows past 8k (issue 20): each `*_lars.gin` builds LARS and
the TF reference's schedule (linear warmup from 0 to the peak, poly(2) decay
to 0 at epoch 90), and its first line states the published top-1 of
`later_records.TOP1_ACCURACY`, which the test does not restate."""

import glob
import os

import gin
import pytest

from tf_lbsgd import config
from tf_lbsgd import lars
from tf_lbsgd import later_records
from tf_lbsgd import schedules

IMAGENET_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "gin",
                            "experiments", "imagenet")
ROWS = sorted(glob.glob(os.path.join(IMAGENET_DIR, "*_lars.gin")))
IMAGENET_TRAIN = 1281167


def _stem(path):
    return os.path.basename(path)[:-len(".gin")]


def test_one_file_per_later_record():
    assert {_stem(p) for p in ROWS} == set(later_records.TOP1_ACCURACY)


@pytest.mark.parametrize("path", ROWS, ids=os.path.basename)
def test_first_line_states_the_published_top1(path):
    with open(path) as f:
        first = f.readline()
    accuracy, who, what = later_records.TOP1_ACCURACY[_stem(path)]
    assert first.startswith(f"# Published: top-1 {accuracy:g}% ({who}: "
                            f"{what})"), first


@pytest.mark.parametrize("path", ROWS, ids=os.path.basename)
def test_row_builds_lars_and_the_poly_schedule(path):
    config.parse([path])
    kn = gin.query_parameter("train_lib.run.global_batch_size")
    assert f"_kn{kn // 1024}k_" in os.path.basename(path)
    assert gin.query_parameter("train_lib.run.per_replica_batch_size") == 32
    epochs = gin.query_parameter("train_lib.run.epochs")
    assert epochs == 90
    spe = IMAGENET_TRAIN / kn
    schedule = schedules.build_learning_rate_schedule(
        global_batch_size=kn, steps_per_epoch=spe, total_epochs=epochs)
    peak = gin.query_parameter("schedules.build_learning_rate_schedule.base_lr")
    warmup = gin.query_parameter(
        "schedules.build_learning_rate_schedule.warmup_epochs")
    # The TF reference's settings by kn (lars_util.poly_rate_schedule).
    assert (peak, warmup) == ((25.0, 5.0) if kn < 32768 else (32.0, 14.0))
    w, total = round(warmup * spe), round(epochs * spe)
    lr = lambda step: float(schedule(step))  # noqa: E731
    assert lr(0) == 0.0
    assert lr(w // 2) == pytest.approx(peak * (w // 2) / w, rel=1e-5)
    assert lr(w) == pytest.approx(peak, rel=1e-6)
    middle = (w + total) // 2
    assert lr(middle) == pytest.approx(
        peak * (1 - (middle - w) / (total - w)) ** 2, rel=1e-4)
    assert lr(total) == pytest.approx(0.0, abs=1e-6)
    optimizer_fn = gin.query_parameter("train_lib.run.optimizer_fn")
    optimizer = optimizer_fn.scoped_configurable_fn(
        learning_rate=schedule, aggregate_gradients=False)
    assert type(optimizer) is lars.LARS
    assert optimizer.trust_coefficient == 0.001
    assert (optimizer.momentum, optimizer.l2_weight_decay) == (0.9, 1e-4)
    try:
        precision = gin.query_parameter("train_lib.run.precision")
    except ValueError:  # Unbound: the default, float32.
        precision = "float32"
    assert precision == ("mixed_float16" if kn == 65536 else "float32")
