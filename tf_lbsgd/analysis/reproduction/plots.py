"""The reproduction's figures, laid out as the paper's Figures 1, 2 and 3.

matplotlib (Agg, no screen) is imported when a figure is drawn.
"""

import math
import os

from tf_lbsgd.analysis.reproduction import grid

FIGURE_1 = "fig1_error_vs_minibatch.png"
FIGURE_2 = "fig2_training_curves_ablations.png"
FIGURE_3 = "fig3_training_curves_minibatch.png"
# Training error axis: Fashion-MNIST errors start near 90 % (chance) and end
# near 5-10 %; the top is cut so that the late epochs stay readable.
ERROR_AXIS_TOP = 40.0


def error_axis_top(final_errors):
    """ERROR_AXIS_TOP, raised in steps of 10 (to 100) when a curve ends
    within 10 pp of it, so that a failed large minibatch stays in view."""
    top = ERROR_AXIS_TOP
    highest = max(final_errors, default=0.0)
    while top < 100.0 and highest > top - 10.0:
        top += 10.0
    return top


def _pyplot():
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    from matplotlib import pyplot  # pylint: disable=import-outside-toplevel
    return pyplot


def _grid_of(count, columns):
    rows = max(1, math.ceil(count / columns))
    return rows, min(count, columns)


def figure_1(outcome, path):
    """Final error (mean +- std over seeds) vs minibatch size (Figure 1)."""
    pyplot = _pyplot()
    sizes = sorted(outcome.sweep)
    ok = [kn for kn in sizes if outcome.sweep[kn].mean is not None]
    figure, axes = pyplot.subplots(figsize=(6.4, 4.2))
    axes.errorbar(ok, [outcome.sweep[kn].mean for kn in ok],
                  yerr=[outcome.sweep[kn].std or 0 for kn in ok],
                  marker="o", capsize=3, label="linear scaling + gradual warmup")
    for variant, by_kn in outcome.layerwise.items():
        done = [kn for kn in sorted(by_kn) if by_kn[kn].mean is not None]
        axes.errorbar(done, [by_kn[kn].mean for kn in done],
                      yerr=[by_kn[kn].std or 0 for kn in done], marker="s",
                      capsize=3, label=grid.VARIANTS[variant].label)
    base = outcome.baseline.mean
    tol = outcome.preset.match_tolerance
    axes.axhspan(base, base + tol, color="grey", alpha=0.2,
                 label=f"baseline kn={outcome.preset.baseline} + {tol:g} pp")
    diverged = [kn for kn in sizes if outcome.sweep[kn].diverged]
    if diverged:
        axes.plot(diverged, [axes.get_ylim()[1]] * len(diverged), "rx",
                  markersize=10, label="a seed diverged")
    axes.set_xscale("log", base=2)
    axes.set_xticks(sizes, [str(kn) for kn in sizes])
    axes.set_xlabel("minibatch size kn")
    axes.set_ylabel("top-1 error % (median of final evaluations)")
    axes.set_title(f"Fashion-MNIST, ResNet-8, n = {outcome.preset.per_worker} "
                   f"per worker")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def _curve_panel(axes, summary, reference, label, baseline_label):
    finals = []
    for source, name, style in ((reference, baseline_label, "k-"),
                                (summary, label, "r-")):
        curve = source.mean_curve()
        if curve:
            x, y = zip(*curve)
            axes.plot(x, y, style, linewidth=1.2, label=name)
            finals.append(y[-1])
    axes.set_ylim(0, error_axis_top(finals))
    axes.set_xlabel("epochs")
    axes.set_ylabel("training error %")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)


def _label(summary, kn):
    mean = summary.mean
    text = f"{mean:.2f}%" if mean is not None else "diverged"
    if summary.diverged and mean is not None:
        text += f", {summary.diverged} diverged"
    return f"kn={kn}: {text}"


def _panels(pairs, path, title, columns=3):
    """One panel per (title, summary, kn) against the baseline's curve."""
    pyplot = _pyplot()
    rows, cols = _grid_of(len(pairs), columns)
    figure, axes = pyplot.subplots(rows, cols, figsize=(4.2 * cols,
                                                        3.3 * rows),
                                   squeeze=False)
    for ax, (name, summary, kn, reference, base_kn) in zip(axes.flat, pairs):
        _curve_panel(ax, summary, reference, _label(summary, kn),
                     _label(reference, base_kn))
        ax.set_title(name, fontsize=9)
    for ax in list(axes.flat)[len(pairs):]:
        ax.axis("off")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def figure_2(outcome, path):
    """Training error of the large minibatch's variants against the
    baseline's (Figure 2: no / constant / gradual warmup; and the rest)."""
    base_kn, kn = outcome.preset.baseline, outcome.large_kn
    pairs = [(grid.VARIANTS[v].label, summary, kn, outcome.baseline, base_kn)
             for v, summary in outcome.large_variants()]
    pairs += [(f"{grid.VARIANTS[v].label}, both at baseline", summary,
               base_kn, outcome.baseline, base_kn)
              for v, summary in outcome.baseline_ablations.items()]
    _panels(pairs, path, f"kn = {kn} vs kn = {base_kn}: training error, "
            f"mean over seeds")


def figure_3(outcome, path):
    """Training error of every size of the sweep against the baseline's
    (Figure 3)."""
    base_kn = outcome.preset.baseline
    pairs = [(f"kn = {kn} (k = {outcome.preset.workers(kn)})",
              outcome.sweep[kn], kn, outcome.baseline, base_kn)
             for kn in sorted(outcome.sweep)[1:]]
    _panels(pairs, path, "Linear scaling + gradual warmup: training error "
            "of each minibatch vs the baseline's", columns=4)


def draw_all(outcome, directory):
    """Writes the three figures into `directory`; returns their file names."""
    names = (FIGURE_1, FIGURE_2, FIGURE_3)
    for name, draw in zip(names, (figure_1, figure_2, figure_3)):
        draw(outcome, os.path.join(directory, name))
    return names
