"""The grid of the small-scale reproduction of Goyal et al. 2017 (issue 7).

Every point is one run of the real trainer (`python -m tf_lbsgd`) on
Fashion-MNIST with k simulated workers of n examples each: one replica with
ghost batch norm over groups of n (`resnet_cifar.bn_group_size = n`), which
computes what k replicas with per-worker BN compute (R9;
tests/test_equivalence.py, tests/test_multi_worker.py).

The grid has two parts, as the paper's experiments:

* the minibatch sweep (Figure 1, Figure 3): kn from the baseline to many
  times it, n fixed, linear scaling (R1) and gradual warmup (R2), the same
  number of epochs for every size;
* the ablations at the largest size that still matches the baseline (Table 1,
  Figure 2, Sec. 5.3-5.4): no warmup, constant warmup (R3), the rate not
  scaled, scaled by sqrt(k), and zero-gamma off (R10; also at the baseline).

The schedule has the paper's shape in proportion: step decay by 10 at 30/90,
60/90 and 80/90 of the epochs (R4), and the statistic is the median top-1
error of the final evaluations (R14), taken densely in the last rate phase.
"""

import dataclasses

from tf_lbsgd.analysis import recipe_math

GIN_FILE = "reproduction/fashion_mnist"
# The paper's step decay at epochs 30, 60 and 80 of 90 (R4), as fractions.
PAPER_DECAY_FRACTIONS = (30 / 90, 60 / 90, 80 / 90)
FASHION_MNIST_TRAIN = 60000
SWEEP = "gradual_warmup"


@dataclasses.dataclass(frozen=True)
class Variant:
    """One recipe of the paper's tables: what differs from R1 + R2 + R10.

    Attributes:
        label: the row's name in the report.
        warmup: `schedules.build_learning_rate_schedule.warmup`.
        scaling: `schedules.build_learning_rate_schedule.scaling`.
        zero_gamma: `resnet_cifar.zero_gamma` (R10).
        paper_row: key of `paper.TOP1_ERROR` for this recipe at kn = 8k.
        optimizer: the gin name of the optimizer class (`train_lib.run.
            optimizer_fn`): the paper's `MomentumSGD`, or `LARS` / `LAMB`
            (issue 20).
        base_lr: the rate at the baseline kn, if not the preset's (a
            layer-wise optimizer's global rate has another scale).
        trust_coefficient: LARS' trust coefficient (You et al.: 0.001).
    """
    label: str
    warmup: str = "gradual"
    scaling: str = "linear"
    zero_gamma: bool = True
    paper_row: str = "resnet50_kn8k"
    optimizer: str = "MomentumSGD"
    base_lr: float = None
    trust_coefficient: float = 0.001


VARIANTS = {
    SWEEP: Variant("gradual warmup (R1 + R2)"),
    "no_warmup": Variant("no warmup", warmup="none",
                         paper_row="resnet50_kn8k_no_warmup"),
    "constant_warmup": Variant("constant warmup (R3)", warmup="constant",
                               paper_row="resnet50_kn8k_constant_warmup"),
    "unscaled": Variant("eta not scaled", scaling="none",
                        paper_row="resnet50_kn8k_unscaled"),
    "sqrt_scaling": Variant("eta scaled by sqrt(k)", scaling="sqrt",
                            paper_row="resnet50_kn8k_sqrt_scaling"),
    "no_zero_gamma": Variant("zero-gamma off (gamma = 1)", zero_gamma=False,
                             paper_row="resnet50_kn8k_no_zero_gamma"),
}
ABLATIONS = ("no_warmup", "constant_warmup", "unscaled", "sqrt_scaling",
             "no_zero_gamma")
# Past the limit (issue 20): the sweep's recipe (gradual warmup over the same
# epochs, step decay, the same epochs) with a layer-wise adaptive optimizer,
# at every size of the sweep. One rule for every size, as the sweep has: the
# rate scaled by sqrt(k) from a base tuned with seed 0 (for LARS, whose
# update depends on eta * trust_coefficient only, the trust coefficient
# stays You et al.'s 0.001 and the rate varies). Tried, median top-1 error
# % (peak rate): LARS at kn = 1024, linear scaling: 19.04 (1.6), 13.56 (4),
# 12.03 (10), 11.77 (24); at 2048: 16.23 (8), 15.11 (20), 35.90 (48; 24.63
# with a 1-epoch warmup); at 4096: 69.89 (40), 79.08 (96). Linear scaling
# overshoots past 1024: sqrt(k) from 2.5 gives 14.1 at 1024, 20 at 2048.
# LAMB at 1024: 11.74 (0.02), 10.71 (0.05), 12.87 (0.1): sqrt(k) from 0.05
# at 1024, as LAMB's authors scale its rate.
VARIANTS["lars"] = Variant("LARS (You et al. 2017)", optimizer="LARS",
                           scaling="sqrt", base_lr=2.5,
                           trust_coefficient=0.001)
VARIANTS["lamb"] = Variant("LAMB (You et al. 2019)", optimizer="LAMB",
                           scaling="sqrt", base_lr=0.05 / 32 ** 0.5)
LAYERWISE = ("lars", "lamb")
# The paper's rows at its baseline kn = 256, by variant.
PAPER_BASELINE_ROWS = {SWEEP: "resnet50_kn256",
                       "no_zero_gamma": "resnet50_kn256_no_zero_gamma"}


@dataclasses.dataclass(frozen=True)
class Point:
    """One run: a recipe at one minibatch size with one seed."""
    variant: str
    kn: int
    seed: int

    @property
    def name(self):
        """The run's directory name, e.g. `kn2048-no_warmup-s1`."""
        return f"kn{self.kn}-{self.variant}-s{self.seed}"


@dataclasses.dataclass(frozen=True)
class Preset:
    """The sizes, seeds and budget of one reproduction.

    Attributes:
        name: `tiny` (the test suite), `quick` (< 20 min) or `full`.
        sizes: kn of the sweep, ascending; `sizes[0]` is the baseline.
        seeds: the seeds of every point (weights, shuffle; R12).
        epochs: training length of every run, whatever kn.
        per_worker: n, examples per worker, fixed (R9).
        base_lr: the rate of the baseline minibatch (R1's reference).
        warmup_epochs: length of the warmups (R2, R3).
        width: channels of the ResNet-8's first stage.
        final_evals: evaluations the statistic takes the median of (R14).
        final_eval_spacing: epochs between those final evaluations.
        loops_per_epoch: training-error points per epoch in the curves.
        ablations: the variants run at the chosen large size.
        baseline_ablations: the variants also run at the baseline.
        match_tolerance: a size matches the baseline when its mean error is
            at most this many percentage points above the baseline's.
        layerwise: the layer-wise optimizers' variants (`LAYERWISE`) run at
            every size of the sweep, beside linear scaling + warmup.
        jit_compile: XLA for the forward and backward pass.

    Raises:
        ValueError: naming the value, for sizes that are not ascending
            multiples of `per_worker`, unknown variants, no seeds, or final
            evaluations that start before the last rate decay.
    """
    name: str
    sizes: tuple
    seeds: tuple
    epochs: float
    per_worker: int = 16
    base_lr: float = 0.05
    warmup_epochs: float = 0.5
    width: int = 16
    final_evals: int = 5
    final_eval_spacing: float = 0.1
    loops_per_epoch: int = 4
    ablations: tuple = ABLATIONS
    baseline_ablations: tuple = ("no_zero_gamma",)
    match_tolerance: float = 0.5
    jit_compile: bool = True
    layerwise: tuple = ()

    def __post_init__(self):
        if not self.sizes or list(self.sizes) != sorted(set(self.sizes)):
            raise ValueError(f"preset {self.name!r}: sizes {self.sizes} must "
                             f"be distinct and ascending")
        bad = [kn for kn in self.sizes if kn % self.per_worker]
        if bad:
            raise ValueError(f"preset {self.name!r}: sizes {bad} are not "
                             f"multiples of n = {self.per_worker}")
        unknown = [v for v in self.ablations + self.baseline_ablations
                   if v not in VARIANTS or v == SWEEP]
        if unknown:
            raise ValueError(f"preset {self.name!r}: unknown ablations "
                             f"{unknown}; expected some of {ABLATIONS}")
        unknown = [v for v in self.layerwise if v not in LAYERWISE]
        if unknown:
            raise ValueError(f"preset {self.name!r}: unknown layer-wise "
                             f"variants {unknown}; expected some of "
                             f"{LAYERWISE}")
        if not self.seeds:
            raise ValueError(f"preset {self.name!r} has no seeds")
        first = self.final_eval_epochs[0]
        if first < self.decay_epochs[-1]:
            raise ValueError(
                f"preset {self.name!r}: the final evaluations start at epoch "
                f"{first:g}, before the last decay at {self.decay_epochs[-1]:g}"
                f"; lower final_evals or final_eval_spacing")

    @property
    def baseline(self):
        """The baseline minibatch kn (the paper's 256)."""
        return self.sizes[0]

    @property
    def decay_epochs(self):
        """The paper's decay epochs 30, 60, 80 of 90, scaled to `epochs`."""
        return tuple(round(self.epochs * f, 6) for f in PAPER_DECAY_FRACTIONS)

    @property
    def final_eval_epochs(self):
        """The epochs of the final evaluations, the last one at the end."""
        return tuple(round(self.epochs - i * self.final_eval_spacing, 6)
                     for i in reversed(range(self.final_evals)))

    def workers(self, kn):
        """k = kn / n simulated workers."""
        return kn // self.per_worker

    def steps_per_epoch(self, kn):
        return FASHION_MNIST_TRAIN / kn

    def total_steps(self, kn):
        return recipe_math.epochs_to_steps(self.epochs, self.steps_per_epoch(kn))

    def steps_per_loop(self, kn):
        """Steps per training loop: `loops_per_epoch` curve points an epoch."""
        return max(1, round(self.steps_per_epoch(kn) / self.loops_per_epoch))

    def peak_lr(self, variant, kn):
        """The rate after warmup (R1, or the variant's scaling)."""
        return recipe_math.scaled_learning_rate(
            kn, self.variant_base_lr(variant), self.baseline,
            VARIANTS[variant].scaling)

    def variant_base_lr(self, variant):
        """The rate at the baseline kn: the variant's own, or the preset's."""
        own = VARIANTS[variant].base_lr
        return self.base_lr if own is None else own


PRESETS = {
    "tiny": Preset("tiny", sizes=(32, 64), seeds=(0,), epochs=0.01,
                   width=4, warmup_epochs=0.002, final_evals=2,
                   final_eval_spacing=0.001, loops_per_epoch=1000,
                   ablations=("no_warmup",), baseline_ablations=(),
                   jit_compile=False, layerwise=("lars",)),
    "quick": Preset("quick", sizes=(32, 256, 2048), seeds=(0,), epochs=2,
                    warmup_epochs=0.25, final_eval_spacing=0.05),
    "full": Preset("full", sizes=(32, 64, 128, 256, 512, 1024, 2048, 4096),
                   seeds=(0, 1, 2), epochs=6, layerwise=LAYERWISE),
    # The full sweep with the layer-wise optimizers and no ablations.
    "past8k": Preset("past8k",
                     sizes=(32, 64, 128, 256, 512, 1024, 2048, 4096),
                     seeds=(0, 1, 2), epochs=6, ablations=(),
                     baseline_ablations=(), layerwise=LAYERWISE),
}


def with_seeds(preset, seeds):
    """`preset` with only `seeds` (ints or their strings), which must be
    among its own; its runs are named as the preset's, so they are reused.

    Raises:
        ValueError: naming a seed that is not a number or not the preset's.
    """
    chosen = []
    for seed in seeds:
        try:
            chosen.append(int(seed))
        except (TypeError, ValueError):
            raise ValueError(f"seed {seed!r} is not an integer") from None
    unknown = [s for s in chosen if s not in preset.seeds]
    if unknown or not chosen:
        raise ValueError(f"seeds {chosen} are not a non-empty subset of "
                         f"the seeds of preset {preset.name!r}, "
                         f"{list(preset.seeds)}")
    return dataclasses.replace(preset, seeds=tuple(chosen))


def sweep_points(preset):
    """The minibatch sweep, seed by seed (seed 0 of every size first)."""
    return [Point(SWEEP, kn, seed) for seed in preset.seeds
            for kn in preset.sizes]


def layerwise_points(preset):
    """The layer-wise optimizers at every size, seed by seed."""
    return [Point(v, kn, seed) for seed in preset.seeds
            for v in preset.layerwise for kn in preset.sizes]


def ablation_points(preset, kn):
    """The ablations at the large size `kn` and at the baseline."""
    points = [Point(v, kn, seed) for seed in preset.seeds
              for v in preset.ablations]
    return points + [Point(v, preset.baseline, seed) for seed in preset.seeds
                     for v in preset.baseline_ablations]


def _gin_value(value):
    return repr(tuple(value)) if isinstance(value, (tuple, list)) else repr(
        value)


def gin_bindings(point, preset):
    """The `--gin_bindings` of `point` over `GIN_FILE`.

    Returns:
        A list of strings `selector = value`.
    """
    variant = VARIANTS[point.variant]
    schedule = "schedules.build_learning_rate_schedule"
    values = {
        "train_lib.run.global_batch_size": point.kn,
        "resnet_cifar.bn_group_size": preset.per_worker,
        "resnet_cifar.width": preset.width,
        "resnet_cifar.zero_gamma": variant.zero_gamma,
        "train_lib.run.epochs": preset.epochs,
        "train_lib.run.seed": point.seed,
        "train_lib.run.steps_per_loop": preset.steps_per_loop(point.kn),
        "train_lib.run.eval_at_epochs": preset.final_eval_epochs,
        "train_lib.run.jit_compile": preset.jit_compile,
        f"{schedule}.base_lr": preset.variant_base_lr(point.variant),
        f"{schedule}.base_batch_size": preset.baseline,
        f"{schedule}.scaling": variant.scaling,
        f"{schedule}.warmup": variant.warmup,
        f"{schedule}.warmup_epochs": preset.warmup_epochs,
        f"{schedule}.decay_epochs": preset.decay_epochs,
    }
    bindings = [f"{key} = {_gin_value(value)}" for key, value in values.items()]
    if variant.optimizer != "MomentumSGD":
        bindings.append(f"train_lib.run.optimizer_fn = @{variant.optimizer}")
    if variant.optimizer == "LARS":
        bindings.append(f"LARS.trust_coefficient = "
                        f"{variant.trust_coefficient!r}")
    return bindings

