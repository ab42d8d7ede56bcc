"""Each ImageNet experiment builds the paper's schedule for its row."""

import glob
import math
import os
import re

import gin
import pytest

from tf_lbsgd import config
from tf_lbsgd import schedules

GIN_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "gin")
EXPERIMENTS = sorted(glob.glob(os.path.join(GIN_DIR, "experiments", "imagenet",
                                            "*.gin")))
IMAGENET_TRAIN = 1281167
# name: (depth, kn, base rate, scaling, warmup, zero_gamma)
ROWS = {
    "resnet50_kn256": (50, 256, 0.1, "linear", "gradual", True),
    "resnet50_kn1k": (50, 1024, 0.1, "linear", "gradual", True),
    "resnet50_kn2k": (50, 2048, 0.1, "linear", "gradual", True),
    "resnet50_kn4k": (50, 4096, 0.1, "linear", "gradual", True),
    "resnet50_kn8k": (50, 8192, 0.1, "linear", "gradual", True),
    "resnet50_kn16k": (50, 16384, 0.1, "linear", "gradual", True),
    "resnet50_kn32k": (50, 32768, 0.1, "linear", "gradual", True),
    "resnet50_kn64k": (50, 65536, 0.1, "linear", "gradual", True),
    "resnet50_kn8k_no_warmup": (50, 8192, 0.1, "linear", "none", True),
    "resnet50_kn8k_constant_warmup": (50, 8192, 0.1, "linear", "constant",
                                      True),
    "resnet50_kn8k_lr0.05": (50, 8192, 0.05, "linear", "gradual", True),
    "resnet50_kn8k_lr0.2": (50, 8192, 0.2, "linear", "gradual", True),
    "resnet50_kn8k_unscaled": (50, 8192, 0.1, "none", "gradual", True),
    "resnet50_kn8k_sqrt_scaling": (50, 8192, 0.1, "sqrt", "gradual", True),
    "resnet50_kn8k_no_zero_gamma": (50, 8192, 0.1, "linear", "gradual", False),
    "resnet50_kn256_no_zero_gamma": (50, 256, 0.1, "linear", "gradual", False),
    "resnet101_kn256": (101, 256, 0.1, "linear", "gradual", True),
    "resnet101_kn8k": (101, 8192, 0.1, "linear", "gradual", True),
}


def test_one_file_per_paper_row():
    assert sorted(os.path.basename(p)[:-4] for p in EXPERIMENTS) == sorted(ROWS)


def _peak(kn, base, scaling):
    return {"linear": base * kn / 256, "sqrt": base * math.sqrt(kn / 256),
            "none": base}[scaling]


@pytest.mark.parametrize("path", EXPERIMENTS, ids=os.path.basename)
def test_schedule_matches_the_paper(path):
    depth, kn, base, scaling, warmup, zero_gamma = ROWS[
        os.path.basename(path)[:-4]]
    with open(path) as f:
        assert re.search(r"^# Paper row: .*top-1 error|^# Paper row: .*Figure 1",
                         f.read(), re.M)
    config.parse([path])
    assert gin.query_parameter("train_lib.run.global_batch_size") == kn
    assert gin.query_parameter("train_lib.run.per_replica_batch_size") == 32
    assert gin.query_parameter("resnet_imagenet.depth") == depth
    assert gin.query_parameter("resnet_imagenet.zero_gamma") == zero_gamma
    epochs = gin.query_parameter("train_lib.run.epochs")
    assert epochs == 90
    spe = IMAGENET_TRAIN / kn
    schedule = schedules.build_learning_rate_schedule(
        global_batch_size=kn, steps_per_epoch=spe, total_epochs=epochs)
    lr = lambda step: float(schedule(step))  # noqa: E731
    peak = _peak(kn, base, scaling)
    warm_end = round(5 * spe)
    first = {"gradual": base, "constant": base, "none": peak}[warmup]
    assert lr(0) == pytest.approx(first, rel=1e-6)
    assert lr(warm_end) == pytest.approx(peak, rel=1e-6)
    if warmup == "gradual" and peak != base:
        middle = lr(warm_end // 2)
        assert base < middle < peak
        assert middle == pytest.approx(
            base + (peak - base) * (warm_end // 2) / warm_end, rel=1e-5)
    if warmup == "constant":
        assert lr(warm_end - 1) == pytest.approx(base, rel=1e-6)
    for i, epoch in enumerate((30, 60, 80)):
        boundary = round(epoch * spe)
        assert lr(boundary - 1) == pytest.approx(peak * 0.1 ** i, rel=1e-5)
        assert lr(boundary) == pytest.approx(peak * 0.1 ** (i + 1), rel=1e-5)
    assert lr(round(90 * spe)) == pytest.approx(peak * 1e-3, rel=1e-5)


def test_the_8k_row_as_the_paper_states_it():
    config.parse([os.path.join(GIN_DIR, "experiments", "imagenet",
                               "resnet50_kn8k.gin")])
    spe = IMAGENET_TRAIN / 8192
    schedule = schedules.build_learning_rate_schedule(
        global_batch_size=8192, steps_per_epoch=spe, total_epochs=90)
    assert float(schedule(0)) == pytest.approx(0.1)
    assert float(schedule(round(5 * spe))) == pytest.approx(3.2)
    assert float(schedule(round(31 * spe))) == pytest.approx(0.32)
    assert float(schedule(round(61 * spe))) == pytest.approx(0.032)
    assert float(schedule(round(81 * spe))) == pytest.approx(0.0032)
