"""The reproduction's report: markdown tables laid out as the paper's, the
findings, and a JSON of every number."""

from tf_lbsgd import paper
from tf_lbsgd.analysis import tables
from tf_lbsgd.analysis.reproduction import findings as findings_lib
from tf_lbsgd.analysis.reproduction import grid
from tf_lbsgd.analysis.reproduction import plots
from tf_lbsgd.analysis.reproduction import results


def format_error(summary):
    """'8.91 +- 0.10' over seeds; the diverged runs are counted."""
    if summary.mean is None:
        return f"diverged ({summary.diverged}/{len(summary.runs)})"
    text = f"{summary.mean:.2f}"
    if summary.std is not None:
        text += f" +- {summary.std:.2f}"
    if summary.diverged:
        text += f" ({summary.diverged}/{len(summary.runs)} diverged)"
    return text


def eta_text(preset, variant, kn):
    """The peak rate with its rule, as the paper writes it: 0.05 x 32 = 1.6."""
    ratio = kn / preset.baseline
    scaling = grid.VARIANTS[variant].scaling
    peak = preset.peak_lr(variant, kn)
    if scaling == "none" or ratio == 1:
        return f"{peak:g}"
    factor = f"{ratio:g}" if scaling == "linear" else f"sqrt({ratio:g})"
    return f"{preset.variant_base_lr(variant):.4g} x {factor} = {peak:.3g}"


def _paper_cells(row, baseline_row):
    mean, std = paper.TOP1_ERROR[row]
    cell = f"{mean:.2f}" + (f" +- {std:.2f}" if std is not None else "")
    if row == baseline_row:
        return cell, "-"
    return cell, f"{mean - paper.TOP1_ERROR[baseline_row][0]:+.2f}"


def _table(header, rows):
    """A markdown table of cells already formatted as the report writes
    them (`str` of each)."""
    return tables.markdown_table(header, rows, cell=str)


def table_1(outcome):
    """The ablations beside the baseline, as the paper's Table 1 and 2c."""
    preset = outcome.preset
    base_kn, kn = preset.baseline, outcome.large_kn
    gaps = findings_lib.curve_gaps(outcome)
    rows = []
    entries = [("baseline", grid.SWEEP, base_kn, outcome.baseline,
                "resnet50_kn256")]
    for variant, summary in outcome.baseline_ablations.items():
        entries.append((f"{grid.VARIANTS[variant].label}, at the baseline",
                        variant, base_kn, summary,
                        grid.PAPER_BASELINE_ROWS[variant]))
    for variant, summary in outcome.large_variants():
        entries.append((grid.VARIANTS[variant].label, variant, kn, summary,
                        grid.VARIANTS[variant].paper_row))
    for name, variant, size, summary, row in entries:
        delta = (summary.mean - outcome.baseline.mean
                 if summary is not outcome.baseline and summary.mean is not None
                 else None)
        gap = gaps.get(variant) if size == kn else None
        rows.append([
            name, size, f"{preset.workers(size)} x {preset.per_worker}",
            eta_text(preset, variant, size), format_error(summary),
            "-" if delta is None else f"{delta:+.2f}",
            "-" if gap is None else f"{gap:.2f}",
            *_paper_cells(row, "resnet50_kn256")])
    header = ["setting", "kn", "k x n", "eta", "top-1 error %",
              "- baseline (pp)", "train-curve gap (pp)",
              "paper: top-1 error % (ImageNet, kn 256 / 8k)",
              "paper: - baseline"]
    return _table(header, rows)


def sweep_table(outcome):
    """The minibatch sweep (Figure 1) with its steps and throughput."""
    preset = outcome.preset
    rows = []
    for kn in sorted(outcome.sweep):
        summary = outcome.sweep[kn]
        base = kn == preset.baseline
        delta = (None if base or summary.mean is None
                 else summary.mean - outcome.baseline.mean)
        speeds = [r.images_per_second for r in summary.runs
                  if r.images_per_second]
        rows.append([
            kn, preset.workers(kn), eta_text(preset, grid.SWEEP, kn),
            f"{preset.steps_per_epoch(kn):.1f}", preset.total_steps(kn),
            format_error(summary),
            "-" if delta is None else f"{delta:+.2f}",
            "baseline" if base else (
                "yes" if results.matches(
                    summary, outcome.baseline, preset.match_tolerance)
                else "no"),
            f"{sum(speeds) / len(speeds):.0f}" if speeds else "-"])
    header = ["kn", "k", "eta", "steps/epoch", "steps", "top-1 error %",
              "- baseline (pp)", f"matches (<= +{preset.match_tolerance:g} pp)",
              "train images/s"]
    return _table(header, rows)


def layerwise_table(outcome):
    """The sweep's error beside each layer-wise optimizer's, size by size."""
    preset = outcome.preset
    tol = preset.match_tolerance
    variants = list(outcome.layerwise)
    rows = []
    for kn in sorted(outcome.sweep):
        row = [kn, preset.workers(kn)]
        for variant, summary in [(grid.SWEEP, outcome.sweep[kn])] + [
                (v, outcome.layerwise[v].get(kn)) for v in variants]:
            if summary is None:
                row += ["-", "-", "-"]
                continue
            delta = (None if summary.mean is None
                     else summary.mean - outcome.baseline.mean)
            row += [eta_text(preset, variant, kn), format_error(summary),
                    "-" if delta is None or (kn == preset.baseline
                                              and variant == grid.SWEEP)
                    else (f"{delta:+.2f}" + (
                        "" if results.matches(summary, outcome.baseline, tol)
                        else " (no)"))]
        rows.append(row)
    header = ["kn", "k"]
    for variant in [grid.SWEEP] + variants:
        name = ("linear + gradual warmup" if variant == grid.SWEEP
                else grid.VARIANTS[variant].label)
        header += [f"{name}: eta", f"{name}: top-1 error %",
                   f"{name}: - baseline (pp)"]
    return _table(header, rows)


def _layerwise_setup(outcome):
    lines = []
    for variant in outcome.layerwise:
        v = grid.VARIANTS[variant]
        extra = (f", trust coefficient {v.trust_coefficient:g}"
                 if v.optimizer == "LARS" else "")
        rule = {"linear": "linearly", "sqrt": "by sqrt(k)",
                "none": "not at all"}[v.scaling]
        lines.append(f"- {v.label}: `{v.optimizer}` with base rate "
                     f"{outcome.preset.variant_base_lr(variant):.4g} at kn = "
                     f"{outcome.preset.baseline}, scaled {rule}{extra}; "
                     f"the same warmup, step decay and epochs as the sweep "
                     f"(the rates tried: tf_lbsgd/analysis/reproduction/"
                     f"grid.py).")
    return "\n".join(lines)


def findings_table(found):
    return _table(["paper's claim", "paper", "ours", "verdict"],
                  [[f.claim, f.paper, f.ours, f"**{f.verdict}**"]
                   for f in found])


def format_hours(seconds):
    minutes = int(round(seconds / 60))
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _setup(preset):
    decay = ", ".join(f"{e:g}" for e in preset.decay_epochs)
    evals = ", ".join(f"{e:g}" for e in preset.final_eval_epochs)
    return "\n".join([
        f"- Data: Fashion-MNIST (Debian's `dataset-fashion-mnist`), "
        f"{grid.FASHION_MNIST_TRAIN} training images, top-1 error on the "
        f"10,000 test images.",
        f"- Model: CIFAR-style ResNet-8, stride-2 stem, widths {preset.width}/"
        f"{2 * preset.width}/{4 * preset.width}; He init (R11), zero-gamma "
        f"(R10) unless switched off.",
        f"- Workers: n = {preset.per_worker} examples per worker, k = kn / n; "
        f"one replica with ghost batch norm over each group of n (per-worker "
        f"BN, R9), proven equal to k replicas in `tests/test_equivalence.py` "
        f"and to real worker processes in `tests/test_multi_worker.py`; the "
        f"loss is divided by kn (R8), one shuffle per epoch (R12).",
        f"- Baseline: kn = {preset.baseline} (k = "
        f"{preset.workers(preset.baseline)}), eta = {preset.base_lr:g} (the "
        f"default job's 0.4 per 256, R1); momentum 0.9, L2 1e-4 off BN (R5-R7).",
        f"- Schedule: {preset.epochs:g} epochs for every kn; warmups over "
        f"{preset.warmup_epochs:g} epochs from eta = {preset.base_lr:g} (R2, "
        f"R3); eta / 10 at epochs {decay} (the paper's 30, 60, 80 of 90, R4).",
        f"- Statistic: median top-1 error of the final {preset.final_evals} "
        f"evaluations (epochs {evals}, all after the last decay; the paper's "
        f"final 5 epochs, R14), mean +- std over {len(preset.seeds)} "
        f"seed(s) ({', '.join(str(s) for s in preset.seeds)}).",
    ])


def _runs_text(meta):
    reused = sum(r["runs"] for r in meta.get("reused", []))
    if not reused:
        return f"{meta['runs']} runs,"
    return f"{meta['runs']} runs: {meta['runs'] - reused} trained"


def _reused_text(meta):
    parts = []
    for reused in meta.get("reused", []):
        where = ", ".join(f"{count} on {cpu}" if len(reused["cpus"]) > 1
                          else f"on {cpu}"
                          for cpu, count in reused["cpus"].items())
        parts.append(f"; {reused['runs']} recorded in `{reused['file']}` "
                     f"(trained {where}; the file of {reused['date']})")
    return "".join(parts)


def render(outcome, meta):
    """The whole markdown report.

    Args:
        outcome: a `findings.Outcome`.
        meta: dict with `command`, `machine` (dict), `date`,
            `runs_seconds` (sum of the runs' wall times), `runs`,
            `figure_dir` (relative to the report); optionally `reused`, a
            list of {file, runs, cpus ({cpu: runs}), date} of runs earlier
            reports recorded (`runner.run`'s `reuse`).
    """
    preset = outcome.preset
    machine = meta["machine"]
    figs = meta["figure_dir"]
    if outcome.large_forced:
        verb = "matches" if outcome.large_matched else "does not match"
        chosen = f"set by --large_kn; it {verb} the baseline"
    elif outcome.large_matched:
        chosen = "the largest size that matches the baseline"
    else:
        chosen = ("no size above the baseline matched it: the smallest size "
                  "above it")
    ablations = bool(outcome.ablations or outcome.baseline_ablations)
    table_1_part = [
        f"## Table 1: warmup, scaling and zero-gamma at kn = "
        f"{outcome.large_kn} ({chosen})",
        "",
        "Laid out as the paper's Table 1 and 2c. \"train-curve gap\": mean "
        "absolute difference of the training-error curve from the "
        "baseline's after warmup (Figure 2). The paper's columns are "
        "ImageNet ResNet-50 at kn = 256 and 8k: compare the differences, "
        "not the errors.",
        "",
        table_1(outcome),
        "",
    ] if ablations else []
    layerwise_part = [
        "## Past the limit: layer-wise adaptive rates (LARS, LAMB)",
        "",
        _layerwise_setup(outcome),
        "",
        "\"(no)\": more than "
        f"{preset.match_tolerance:g} pp above the baseline.",
        "",
        layerwise_table(outcome),
        "",
        findings_table(findings_lib.layerwise_findings(outcome)),
        "",
    ] if outcome.layerwise else []
    parts = [
        "# Goyal et al. 2017 at small scale: Fashion-MNIST with simulated "
        "workers",
        "",
        f"Generated by `{meta['command']}` (preset `{preset.name}`), "
        f"{_runs_text(meta)} on {machine['cpu']} ({machine['cores']} cores, "
        f"no GPU; TensorFlow {machine['tensorflow']}, Keras "
        f"{machine['keras']}), {meta['date']}{_reused_text(meta)}. Wall time: "
        f"{format_hours(meta['runs_seconds'])} (the runs' sum, start-up and "
        f"evaluations included).",
        "",
        "## Set-up",
        "",
        _setup(preset),
        "",
        *table_1_part,
        "## Minibatch sweep: linear scaling + gradual warmup (Figure 1)",
        "",
        sweep_table(outcome),
        "",
        f"![error vs minibatch size]({figs}/{plots.FIGURE_1})",
        "",
        *layerwise_part,
        "## Training curves (Figures 2 and 3)",
        "",
        *([f"![training curves of the ablations]({figs}/{plots.FIGURE_2})",
           ""] if ablations else []),
        f"![training curves of the sweep]({figs}/{plots.FIGURE_3})",
        "",
        "## Where the small scale agrees with the paper, and where not",
        "",
        findings_lib.__doc__.split("\n\n", 1)[1].strip(),
        "",
        findings_table(findings_lib.all_findings(outcome)),
        "",
    ]
    return "\n".join(parts)


def _summary_json(summary):
    return {"mean": summary.mean, "std": summary.std,
            "diverged": summary.diverged,
            "runs": [{"seed": r.seed, "cpu": r.cpu, "error": r.error,
                      "diverged": r.diverged, "errors": r.errors,
                      "wall_seconds": r.wall_seconds,
                      "images_per_second": r.images_per_second,
                      "curve": [list(p) for p in r.curve],
                      "bindings": r.bindings}
                     for r in summary.runs]}


def results_json(outcome, meta):
    """Every number of the report, for tools that read it back."""
    return {
        "meta": meta, "preset": vars(outcome.preset),
        "large_kn": outcome.large_kn, "large_matched": outcome.large_matched,
        "sweep": {str(kn): _summary_json(s) for kn, s in outcome.sweep.items()},
        "ablations": {v: _summary_json(s)
                      for v, s in outcome.ablations.items()},
        "baseline_ablations": {v: _summary_json(s) for v, s in
                               outcome.baseline_ablations.items()},
        "layerwise": {v: {str(kn): _summary_json(s) for kn, s in by_kn.items()}
                      for v, by_kn in outcome.layerwise.items()},
        "curve_gaps": findings_lib.curve_gaps(outcome),
        "findings": [vars(f) for f in findings_lib.all_findings(outcome)],
        "layerwise_findings": [
            vars(f) for f in findings_lib.layerwise_findings(outcome)],
    }
