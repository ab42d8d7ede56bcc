"""Each ImageNet experiment builds the paper's schedule for its row.

What a file must configure comes from its name (`resnet50_kn8k_lr0.2`: depth,
kn and the one change to the recipe; the names are `paper.TOP1_ERROR`'s keys),
and the error its first line states from `paper.TOP1_ERROR`: the test restates
neither file.
"""

import glob
import math
import os
import re

import gin
import pytest

from tf_lbsgd import config
from tf_lbsgd import paper
from tf_lbsgd import schedules

GIN_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "gin")
IMAGENET_DIR = os.path.join(GIN_DIR, "experiments", "imagenet")
BASE = "base.gin"  # The shared part the experiments include; not a row.
# Past 8k, the later records' rows (tests/test_lars_experiments.py).
LATER = "_lars.gin"
EXPERIMENTS = sorted(p for p in glob.glob(os.path.join(IMAGENET_DIR, "*.gin"))
                     if os.path.basename(p) != BASE and not p.endswith(LATER))
IMAGENET_TRAIN = 1281167
# Figure 1's ResNet-50 points that no table gives a number for.
FIGURE_1_ONLY = {f"resnet50_kn{k}k" for k in (1, 2, 4, 32, 64)}
# The paper's recipe (Sec. 5.1), and what each name's suffix changes in it.
RECIPE = {"base_lr": 0.1, "scaling": "linear", "warmup": "gradual",
          "zero_gamma": True}
VARIANTS = {
    None: {},
    "no_warmup": {"warmup": "none"},
    "constant_warmup": {"warmup": "constant"},
    "lr0.05": {"base_lr": 0.05},
    "lr0.2": {"base_lr": 0.2},
    "unscaled": {"scaling": "none"},
    "sqrt_scaling": {"scaling": "sqrt"},
    "no_zero_gamma": {"zero_gamma": False},
}
NAME = re.compile(r"resnet(50|101)_kn(\d+)(k?)(?:_(.+))?$")


def _stem(path):
    return os.path.basename(path)[:-len(".gin")]


def _expected(stem):
    """(depth, kn, recipe) that the experiment named `stem` must configure."""
    match = NAME.match(stem)
    assert match, f"{stem}.gin is not named resnet<depth>_kn<N>[k][_variant]"
    depth, number, thousands, variant = match.groups()
    assert variant in VARIANTS, f"{stem}: unknown variant {variant!r}"
    kn = int(number) * (1024 if thousands else 1)
    return int(depth), kn, {**RECIPE, **VARIANTS[variant]}


def test_one_file_per_paper_row():
    assert {_stem(p) for p in EXPERIMENTS} == set(paper.TOP1_ERROR) | FIGURE_1_ONLY


@pytest.mark.parametrize("path", EXPERIMENTS, ids=os.path.basename)
def test_first_line_states_the_paper_row(path):
    with open(path) as f:
        first = f.readline()
    assert first.startswith("# Paper row: "), first
    stem = _stem(path)
    if stem in FIGURE_1_ONLY:
        assert "Figure 1" in first
        return
    mean, std = paper.TOP1_ERROR[stem]
    assert f"top-1 error {mean:.2f}" in first
    if std is not None:
        assert f"+- {std:.2f}" in first


def _peak(kn, base, scaling):
    return {"linear": base * kn / 256, "sqrt": base * math.sqrt(kn / 256),
            "none": base}[scaling]


@pytest.mark.parametrize("path", EXPERIMENTS, ids=os.path.basename)
def test_schedule_matches_the_paper(path):
    depth, kn, recipe = _expected(_stem(path))
    config.parse([path])
    assert gin.query_parameter("train_lib.run.global_batch_size") == kn
    assert gin.query_parameter("train_lib.run.per_replica_batch_size") == 32
    assert gin.query_parameter("distribute.build_strategy.kind") == "mirrored"
    assert gin.query_parameter("resnet_imagenet.depth") == depth
    assert gin.query_parameter("resnet_imagenet.zero_gamma") == recipe["zero_gamma"]
    epochs = gin.query_parameter("train_lib.run.epochs")
    assert epochs == 90
    spe = IMAGENET_TRAIN / kn
    schedule = schedules.build_learning_rate_schedule(
        global_batch_size=kn, steps_per_epoch=spe, total_epochs=epochs)
    lr = lambda step: float(schedule(step))  # noqa: E731
    base, warmup = recipe["base_lr"], recipe["warmup"]
    peak = _peak(kn, base, recipe["scaling"])
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
    config.parse([os.path.join(IMAGENET_DIR, "resnet50_kn8k.gin")])
    spe = IMAGENET_TRAIN / 8192
    schedule = schedules.build_learning_rate_schedule(
        global_batch_size=8192, steps_per_epoch=spe, total_epochs=90)
    assert float(schedule(0)) == pytest.approx(0.1)
    assert float(schedule(round(5 * spe))) == pytest.approx(3.2)
    assert float(schedule(round(31 * spe))) == pytest.approx(0.32)
    assert float(schedule(round(61 * spe))) == pytest.approx(0.032)
    assert float(schedule(round(81 * spe))) == pytest.approx(0.0032)
