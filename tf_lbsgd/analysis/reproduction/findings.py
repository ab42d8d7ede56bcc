"""The paper's claims, each checked against the reproduction's numbers.

Every check states the claim, the paper's evidence, ours and a verdict:
"agrees" when the difference has the paper's sign and is at least twice its
standard error over seeds; "same direction, within noise" when it has the
sign but not the margin; "disagrees" when the opposite sign has that margin;
"no clear difference" otherwise. With one seed the noise is unknown and the
verdict says only which direction ours went.
"""

import dataclasses

from tf_lbsgd import paper
from tf_lbsgd.analysis.reproduction import grid
from tf_lbsgd.analysis.reproduction import results

# The paper's minibatch that still matches its baseline: 8k = 32 x 256.
PAPER_LARGEST_MATCH = 32


@dataclasses.dataclass
class Outcome:
    """All a report needs: the preset, every summary, the chosen size."""
    preset: grid.Preset
    sweep: dict            # kn -> Summary (gradual warmup, R1 + R2)
    large_kn: int          # where the ablations ran
    large_matched: bool    # whether large_kn matched the baseline
    ablations: dict        # variant -> Summary at large_kn
    baseline_ablations: dict  # variant -> Summary at the baseline
    large_forced: bool = False  # large_kn was given (--large_kn), not found
    layerwise: dict = dataclasses.field(default_factory=dict)
    # variant -> {kn: Summary}: LARS / LAMB at the sweep's sizes

    @property
    def baseline(self):
        return self.sweep[self.preset.baseline]

    @property
    def large(self):
        return self.sweep[self.large_kn]

    def at_large(self, variant):
        """The Summary of `variant` at the large size (gradual: the sweep's)."""
        if variant == grid.SWEEP:
            return self.large
        return self.ablations.get(variant)

    def large_variants(self):
        """[(variant, Summary)] measured at the large size, in the paper's
        Table 1 order: no, constant and gradual warmup, then the others."""
        warmups = ("no_warmup", "constant_warmup")
        order = warmups + (grid.SWEEP,) + tuple(
            v for v in self.ablations if v not in warmups)
        return [(v, self.at_large(v)) for v in order
                if self.at_large(v) is not None]


@dataclasses.dataclass
class Finding:
    claim: str
    paper: str
    ours: str
    verdict: str


def _paper_delta(row, reference):
    return paper.TOP1_ERROR[row][0] - paper.TOP1_ERROR[reference][0]


def verdict(delta, stderr, paper_delta):
    """Classifies our difference against the paper's (see module doc)."""
    if delta is None:
        return "not measured (every run diverged)"
    same = (delta > 0) == (paper_delta > 0)
    if stderr is None:
        return ("same direction (one seed: noise unknown)" if same
                else "opposite direction (one seed: noise unknown)")
    if stderr > 0 and abs(delta) >= 2 * stderr:
        return "agrees" if same else "disagrees"
    return "same direction, within noise" if same else "no clear difference"


def format_delta(delta, stderr):
    if delta is None:
        return "n/a"
    text = f"{delta:+.2f} pp"
    return text + (f" +- {stderr:.2f}" if stderr is not None else "")


def _compare(claim, a, b, row, reference):
    """A finding for 'a is worse than b' with the paper's rows."""
    delta, stderr = results.difference(a, b)
    paper_delta = _paper_delta(row, reference)
    return Finding(claim, f"{paper_delta:+.2f} pp ({row} - {reference})",
                   format_delta(delta, stderr),
                   verdict(delta, stderr, paper_delta))


def scaling_findings(outcome):
    """How far linear scaling + gradual warmup hold (Figure 1)."""
    preset = outcome.preset
    base = preset.baseline
    tol = preset.match_tolerance
    largest, matched = results.largest_matching_size(outcome.sweep, tol)
    largest = largest if matched else None  # Not where the ablations ran.
    ratio = largest // base if largest else 0
    holds = Finding(
        f"Linear scaling + gradual warmup keep the baseline's error up to a "
        f"large minibatch (within {tol:g} pp here)",
        f"up to 8k = {PAPER_LARGEST_MATCH}x the baseline "
        f"({_paper_delta('resnet50_kn8k', 'resnet50_kn256'):+.2f} pp)",
        f"up to kn = {largest} = {ratio}x the baseline" if largest
        else "no size above the baseline matches",
        "agrees" if ratio >= PAPER_LARGEST_MATCH
        else ("partly: matches, but to a smaller multiple" if ratio
              else "disagrees"))
    beyond = [kn for kn in sorted(outcome.sweep) if kn > (largest or base)]
    if not beyond:
        breaks = Finding("Past that size the error rises",
                         "16k: +1.19 pp; diverges past 64k",
                         "no larger size in this sweep", "not measured")
    else:
        first = beyond[0]
        delta, stderr = results.difference(outcome.sweep[first],
                                           outcome.baseline)
        diverged = outcome.sweep[first].diverged
        ours = (f"kn = {first}: {format_delta(delta, stderr)}"
                + (f", {diverged} run(s) diverged" if diverged else ""))
        breaks = Finding("Past that size the error rises",
                         "16k: +1.19 pp; diverges past 64k", ours, "agrees")
    return [holds, breaks]


def ablation_findings(outcome):
    """The warmup, scaling and zero-gamma comparisons (Table 1, Sec. 5)."""
    checks = [
        ("no_warmup", grid.SWEEP, "Without warmup the large minibatch is "
         "worse than with gradual warmup", "resnet50_kn8k_no_warmup",
         "resnet50_kn8k"),
        ("constant_warmup", grid.SWEEP, "Constant warmup is worse than "
         "gradual warmup", "resnet50_kn8k_constant_warmup", "resnet50_kn8k"),
        ("constant_warmup", "no_warmup", "Constant warmup is worse than no "
         "warmup", "resnet50_kn8k_constant_warmup",
         "resnet50_kn8k_no_warmup"),
        ("unscaled", grid.SWEEP, "The rate not scaled (eta of the baseline) "
         "is far worse", "resnet50_kn8k_unscaled", "resnet50_kn8k"),
        ("sqrt_scaling", grid.SWEEP, "sqrt(k) scaling is worse than linear "
         "scaling", "resnet50_kn8k_sqrt_scaling", "resnet50_kn8k"),
        ("no_zero_gamma", grid.SWEEP, "Zero-gamma off is worse at the large "
         "minibatch", "resnet50_kn8k_no_zero_gamma", "resnet50_kn8k"),
    ]
    found = []
    for variant, reference, claim, row, paper_reference in checks:
        a, b = outcome.at_large(variant), outcome.at_large(reference)
        if a is not None and b is not None:
            found.append(_compare(claim, a, b, row, paper_reference))
    off = outcome.baseline_ablations.get("no_zero_gamma")
    if off is not None:
        found.append(_compare("Zero-gamma off is worse at the baseline", off,
                              outcome.baseline, "resnet50_kn256_no_zero_gamma",
                              "resnet50_kn256"))
    return found


def curve_gaps(outcome):
    """variant -> mean |training error - baseline's| after warmup, in pp."""
    reference = outcome.baseline.mean_curve()
    start = outcome.preset.warmup_epochs
    gaps = {}
    for variant in (grid.SWEEP,) + tuple(outcome.ablations):
        summary = outcome.at_large(variant)
        gaps[variant] = results.curve_gap(summary.mean_curve(), reference,
                                          start)
    return gaps


def curve_finding(outcome):
    """Figure 2: after warmup, gradual warmup's curve follows the baseline's
    more closely than no warmup's or constant warmup's."""
    gaps = curve_gaps(outcome)
    others = {v: gaps.get(v) for v in ("no_warmup", "constant_warmup")
              if gaps.get(v) is not None}
    if gaps.get(grid.SWEEP) is None or not others:
        return None
    closest = all(gaps[grid.SWEEP] < gap for gap in others.values())
    ours = ", ".join(f"{grid.VARIANTS[v].label} {gaps[v]:.2f} pp"
                     for v in (grid.SWEEP,) + tuple(others))
    return Finding(
        "After warmup, the large minibatch's training curve follows the "
        "baseline's closely with gradual warmup, less so without it or with "
        "constant warmup (mean gap after warmup)",
        "Figure 2: close match with gradual warmup; a gap without warmup; "
        "an error spike with constant warmup", ours,
        "agrees" if closest else "disagrees")


def layerwise_findings(outcome):
    """Issue 20's question, per layer-wise optimizer: does it keep the error
    within the tolerance of the baseline at sizes where linear scaling +
    gradual warmup does not?"""
    tol = outcome.preset.match_tolerance
    failed = [kn for kn, s in sorted(outcome.sweep.items())
              if kn != outcome.preset.baseline
              and not results.matches(s, outcome.baseline, tol)]
    found = []
    for variant, by_kn in outcome.layerwise.items():
        label = grid.VARIANTS[variant].label
        rescued = [kn for kn in failed if kn in by_kn
                   and results.matches(by_kn[kn], outcome.baseline, tol)]
        lost = [kn for kn, s in sorted(by_kn.items())
                if kn != outcome.preset.baseline and kn not in failed
                and not results.matches(s, outcome.baseline, tol)]
        parts = []
        for kn in failed:
            if kn in by_kn:
                delta, stderr = results.difference(by_kn[kn],
                                                   outcome.baseline)
                parts.append(f"kn = {kn}: {format_delta(delta, stderr)}")
        ours = ("; ".join(parts) if parts
                else "linear scaling matched at every size")
        if not failed:
            verdict_text = "not measured (no size failed)"
        elif rescued:
            verdict_text = (f"yes at kn = {', '.join(map(str, rescued))}"
                            + (f"; no at {', '.join(str(k) for k in failed if k not in rescued)}"
                               if len(rescued) < len(failed) else ""))
        else:
            verdict_text = "no"
        if lost:
            verdict_text += (f" (and it misses the baseline at kn = "
                             f"{', '.join(map(str, lost))}, where linear "
                             f"scaling matches)")
        found.append(Finding(
            f"{label} keeps the error within {tol:g} pp of the baseline "
            f"where linear scaling + gradual warmup does not",
            "You et al.: ResNet-50 to 32k (LARS); Goyal et al.'s SGD "
            "degrades from 16k", ours, verdict_text))
    return found


def all_findings(outcome):
    found = scaling_findings(outcome) + ablation_findings(outcome)
    curve = curve_finding(outcome)
    return found + ([curve] if curve else [])
