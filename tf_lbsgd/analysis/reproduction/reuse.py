"""Runs an earlier report recorded: a reproduction over sessions and machines.

A report's `results.json` (`runner.write_report`) keeps every run's numbers:
its seed, gin bindings, CPU, evaluations, training curve and wall time. A
reproduction whose runs directory is gone (another session, another
machine) can take those runs as finished instead of training them again,
and train only the seeds it lacks: `tools/reproduce.py --reuse=<results.json>`.

A recorded run is reused only when it is the same run: its gin bindings
(the whole training configuration) equal the bindings the preset gives the
point today. Files written before the runs recorded their seeds and
bindings list the runs of a point in the order of their preset's seeds;
their bindings are rebuilt from the recorded preset, their CPU is the
report's.
"""

import dataclasses
import json

from tf_lbsgd.analysis.reproduction import grid
from tf_lbsgd.analysis.reproduction import results


@dataclasses.dataclass
class Recorded:
    """The runs one results.json holds.

    Attributes:
        path: the file.
        runs: {grid.Point: results.RunResult}, each with the CPU it was
            trained on.
        date: when its report was written.
    """
    path: str
    runs: dict
    date: str


def _recorded_preset(data, path):
    fields = {f.name for f in dataclasses.fields(grid.Preset)}
    values = {k: tuple(v) if isinstance(v, list) else v
              for k, v in data["preset"].items() if k in fields}
    try:
        return grid.Preset(**values)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: its preset cannot be read: {e}") from e


def _points_and_runs(data, preset):
    """(variant, kn, summary) of every point group the file holds."""
    for kn, summary in data.get("sweep", {}).items():
        yield grid.SWEEP, int(kn), summary
    for variant, by_kn in data.get("layerwise", {}).items():
        for kn, summary in by_kn.items():
            yield variant, int(kn), summary
    large_kn = data.get("large_kn")
    for variant, summary in data.get("ablations", {}).items():
        yield variant, large_kn, summary
    for variant, summary in data.get("baseline_ablations", {}).items():
        yield variant, preset.baseline, summary


def _run_result(run):
    return results.RunResult(
        diverged=run["diverged"], error=run.get("error"),
        errors=run.get("errors", []),
        curve=[tuple(p) for p in run.get("curve", [])],
        wall_seconds=run.get("wall_seconds"),
        images_per_second=run.get("images_per_second"),
        seed=run.get("seed"), bindings=run.get("bindings"),
        cpu=run.get("cpu"))


def read_recorded(path):
    """Every run `path` (a report's results.json) records.

    Raises:
        FileNotFoundError: naming `path`.
        ValueError: naming `path`, for a file that is not such a record.
    """
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not JSON: {e}") from e
    if "preset" not in data or "meta" not in data:
        raise ValueError(f"{path} is not a results.json of tools/"
                         f"reproduce.py (no 'preset' or 'meta')")
    preset = _recorded_preset(data, path)
    machine = data["meta"].get("machine", {})
    runs = {}
    for variant, kn, summary in _points_and_runs(data, preset):
        recorded = summary["runs"]
        for index, run in enumerate(recorded):
            result = _run_result(run)
            if result.seed is None:  # Written before runs kept their seed.
                if len(recorded) != len(preset.seeds):
                    raise ValueError(
                        f"{path}: {len(recorded)} runs at kn = {kn} "
                        f"({variant}) for seeds {list(preset.seeds)}; "
                        f"cannot tell their seeds")
                result.seed = preset.seeds[index]
            point = grid.Point(variant, kn, result.seed)
            if result.bindings is None:
                result.bindings = grid.gin_bindings(point, preset)
            if result.cpu is None:  # Written before runs kept their CPU.
                result.cpu = machine.get("cpu", "?")
            runs[point] = result
    return Recorded(path=path, runs=runs, date=data["meta"].get("date", "?"))


def reusable_runs(paths, preset):
    """The runs of `preset`'s grid recorded in `paths`, with their sources.

    Returns:
        ({grid.Point: results.RunResult}, [Recorded]): the points recorded
        with the bindings `preset` gives them today (the first file
        recording a point wins), and each file read.

    Raises:
        FileNotFoundError, ValueError: as `read_recorded`; ValueError also
            when a recorded run of one of `preset`'s seeds was trained with
            other bindings, naming the first that differs.
    """
    reusable, sources = {}, []
    for path in paths:
        recorded = read_recorded(path)
        sources.append(recorded)
        for point, run in recorded.runs.items():
            if point.seed not in preset.seeds or point in reusable:
                continue
            wanted = grid.gin_bindings(point, preset)
            if run.bindings != wanted:
                differ = sorted(set(run.bindings) ^ set(wanted))
                raise ValueError(
                    f"{path}: {point.name} was trained with other settings "
                    f"than preset {preset.name!r} gives it: {differ[:2]}")
            reusable[point] = run
    return reusable, sources
