"""The reproduction's sweep: each point trained by the CLI, then the report.

Every point of `grid` runs as `python -m tf_lbsgd` with `grid.GIN_FILE` and
the point's bindings in `runs_dir/<point>` (its log in `log.txt`, its wall
time in `run.json`). Finished points are skipped and an interrupted one
resumes from its last checkpoint; a run whose loss becomes non-finite (the
CLI's exit code 3) is recorded as diverged (`diverged.json`), not retried.
Runs an earlier report recorded in its results.json can stand in for
missing ones (`reuse`).
"""

import dataclasses
import os
import shlex
import subprocess
import sys
import time

from tf_lbsgd import exits
from tf_lbsgd.analysis import machine
from tf_lbsgd.analysis import tables
from tf_lbsgd.analysis.reproduction import findings
from tf_lbsgd.analysis.reproduction import grid
from tf_lbsgd.analysis.reproduction import plots
from tf_lbsgd.analysis.reproduction import report
from tf_lbsgd.analysis.reproduction import results
from tf_lbsgd.analysis.reproduction import reuse as reuse_lib


class RunFailed(RuntimeError):
    """A point's training failed for a reason other than divergence."""


def train_command(point, preset, model_dir):
    """The CLI command that trains `point` in `model_dir`."""
    return ([sys.executable, "-m", "tf_lbsgd", f"--model_dir={model_dir}",
             f"--gin_file={grid.GIN_FILE}"]
            + [f"--gin_bindings={b}" for b in grid.gin_bindings(point, preset)])


def _tail(path, lines=15):
    with open(path, encoding="utf-8", errors="replace") as f:
        return "".join(f.readlines()[-lines:])


def train_point(point, preset, model_dir):
    """Runs the CLI for `point`; records its wall time or its divergence.

    Returns:
        The wall seconds of this attempt.

    Raises:
        RunFailed: naming the point, its exit code and its log's last lines.
    """
    os.makedirs(model_dir, exist_ok=True)
    log_path = os.path.join(model_dir, "log.txt")
    command = train_command(point, preset, model_dir)
    start = time.time()
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"$ {shlex.join(command)}\n")
        log.flush()
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                              check=False).returncode
    seconds = time.time() - start
    earlier = results.recorded_wall_seconds(model_dir) or 0.0  # Resumed.
    tables.write_json(os.path.join(model_dir, results.RUN_INFO),
                      {"wall_seconds": earlier + seconds, "command": command})
    if code == exits.DIVERGED_EXIT_CODE:
        tables.write_json(os.path.join(model_dir, results.DIVERGED),
                          {"log_tail": _tail(log_path, 3)})
    elif code:
        raise RunFailed(f"{point.name} failed with exit code {code}; its log "
                        f"{log_path} ends:\n{_tail(log_path)}")
    return seconds


def ensure_runs(points, preset, runs_dir, dry_run=False, report_only=False,
                recorded=None):
    """Trains the points not finished yet; returns {point: RunResult}.

    Args:
        recorded: {point: RunResult} an earlier report recorded
            (`reuse.reusable_runs`); a point finished in `runs_dir` takes
            its own run, one recorded here is not trained again.

    Raises:
        FileNotFoundError: with `report_only`, naming an unfinished point.
    """
    done = {}
    recorded = recorded or {}
    for index, point in enumerate(points, 1):
        model_dir = os.path.join(runs_dir, point.name)
        total = preset.total_steps(point.kn)
        finished = results.is_finished(model_dir, total)
        if dry_run:
            if not finished and point in recorded:
                print(f"# {point.name}: recorded earlier")
            else:
                print(shlex.join(train_command(point, preset, model_dir)))
            continue
        if not finished and point in recorded:
            done[point] = recorded[point]
            print(f"[{index}/{len(points)}] {point.name}: "
                  f"{_error_text(recorded[point])} (recorded earlier)",
                  flush=True)
            continue
        if not finished:
            if report_only:
                raise FileNotFoundError(
                    f"--report_only: {point.name} is not finished in "
                    f"{model_dir}; run without --report_only to train it")
            seconds = train_point(point, preset, model_dir)
            status = f"trained in {seconds:.0f} s"
        else:
            status = "finished earlier"
        result = results.read_run(model_dir, preset.steps_per_epoch(point.kn),
                                  preset.final_evals)
        done[point] = dataclasses.replace(
            result, seed=point.seed,
            bindings=grid.gin_bindings(point, preset))
        print(f"[{index}/{len(points)}] {point.name}: {_error_text(result)} "
              f"({status})", flush=True)
    return done


def _error_text(result):
    return ("diverged" if result.diverged
            else f"{result.error:.2f} % top-1 error")


def _summaries(done, variant, kn=None):
    """{kn: Summary} of `variant` (or the Summary at `kn`)."""
    by_kn = {}
    for point, result in done.items():
        if point.variant == variant:
            by_kn.setdefault(point.kn, []).append(result)
    summaries = {k: results.Summary(runs) for k, runs in sorted(by_kn.items())}
    return summaries if kn is None else summaries.get(kn)


def run(preset, runs_dir, report_path, large_kn=None, dry_run=False,
        report_only=False, command="", reuse=()):
    """The whole reproduction: the sweep, the ablations, the report.

    Args:
        preset: a `grid.Preset`.
        runs_dir: where each point's model_dir goes.
        report_path: the markdown report; its figures and results.json go
            to the folder beside it named after it.
        large_kn: run the ablations at this kn of the sweep instead of the
            largest size matching the baseline.
        dry_run: print the CLI commands; train nothing.
        report_only: train nothing; redraw the report from finished runs.
        command: the command line the report names.
        reuse: results.json files of earlier reports whose runs of this
            preset's grid count as finished (`reuse.reusable_runs`).

    Returns:
        The `findings.Outcome`, or None when `dry_run`.

    Raises:
        RunFailed: a point's training failed (not by divergence).
        FileNotFoundError: with `report_only`, naming an unfinished point.
        ValueError: for a `large_kn` that is not a size of the sweep, or a
            `reuse` file that is not a report's or records other settings.
    """
    start = time.time()
    recorded, sources = reuse_lib.reusable_runs(reuse, preset)
    sweep_runs = ensure_runs(grid.sweep_points(preset), preset, runs_dir,
                             dry_run, report_only, recorded)
    if dry_run:
        kn = large_kn or preset.sizes[-1]
        print(f"# then the ablations at the chosen kn, e.g. {kn}:")
        ensure_runs(grid.ablation_points(preset, kn), preset, runs_dir, True,
                    recorded=recorded)
        ensure_runs(grid.layerwise_points(preset), preset, runs_dir, True,
                    recorded=recorded)
        return None
    sweep = _summaries(sweep_runs, grid.SWEEP)
    forced = large_kn is not None
    if large_kn is None:
        large_kn, matched = results.largest_matching_size(
            sweep, preset.match_tolerance)
    elif large_kn not in sweep:
        raise ValueError(f"--large_kn={large_kn} is not a size of the sweep "
                         f"{sorted(sweep)}")
    else:
        matched = results.matches(sweep[large_kn], sweep[preset.baseline],
                                  preset.match_tolerance)
    print(f"ablations at kn = {large_kn} "
          f"({'matches' if matched else 'does not match'} the baseline)")
    done = dict(sweep_runs)
    done.update(ensure_runs(grid.ablation_points(preset, large_kn), preset,
                            runs_dir, report_only=report_only,
                            recorded=recorded))
    done.update(ensure_runs(grid.layerwise_points(preset), preset, runs_dir,
                            report_only=report_only, recorded=recorded))
    info = machine.machine_info()
    for result in done.values():  # Trained here (recorded ones say where).
        if result.cpu is None:
            result.cpu = info["cpu"]
    outcome = findings.Outcome(
        preset=preset, sweep=sweep, large_kn=large_kn, large_matched=matched,
        large_forced=forced,
        ablations={v: _summaries(done, v, large_kn) for v in preset.ablations},
        baseline_ablations={v: _summaries(done, v, preset.baseline)
                            for v in preset.baseline_ablations},
        layerwise={v: _summaries(done, v) for v in preset.layerwise})
    meta = {"command": command, "machine": info,
            "date": time.strftime("%Y-%m-%d", time.gmtime()),
            "runs": len(done),
            "runs_seconds": sum(r.wall_seconds or 0 for r in done.values()),
            "reused": _reused_meta(done, recorded, sources),
            "invocation_seconds": time.time() - start}
    write_report(outcome, meta, report_path)
    return outcome


def _reused_meta(done, recorded, sources):
    """Per file of `sources`: how many of the report's runs came from it,
    by the CPU they were trained on."""
    used = [p for p, r in done.items() if recorded.get(p) is r]
    meta = []
    for source in sources:
        cpus = {}
        for point in used:
            if source.runs.get(point) is done[point]:
                cpu = done[point].cpu
                cpus[cpu] = cpus.get(cpu, 0) + 1
        if cpus:
            meta.append({"file": source.path, "runs": sum(cpus.values()),
                         "cpus": cpus, "date": source.date})
    return meta


def write_report(outcome, meta, report_path):
    """Writes the markdown, the figures and results.json beside it."""
    figure_dir = os.path.splitext(report_path)[0]
    os.makedirs(figure_dir, exist_ok=True)
    meta = dict(meta, figure_dir=os.path.basename(figure_dir))
    plots.draw_all(outcome, figure_dir)
    with open(report_path, "w", encoding="utf-8") as f:
        f.write(report.render(outcome, meta))
    tables.write_json(os.path.join(figure_dir, "results.json"),
                      report.results_json(outcome, meta))
    print(f"report: {report_path}; figures and results.json in {figure_dir}")


def reproducing_command(program, argv):
    """The command a report names: `python program` with the invocation's
    flags `argv[1:]` but --report_only, which trains what is missing and
    rewrites the same report."""
    kept = [a for a in argv[1:]
            if a.split("=")[0] not in ("--report_only", "--noreport_only")]
    return shlex.join(["python", program] + kept)
