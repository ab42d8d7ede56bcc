"""Weak scaling on localhost: the plan, the pooled results and their report.

The pure part of tools/bench_scaling.py (its measuring part, with
TensorFlow and processes, is `tf_lbsgd.scaling_bench`): which
configurations run (`plan_runs`, `settings_for`), how the chief's records of
several rounds are pooled (`merge_runs`), the table's values
(`scaling_rows`: efficiency t1/tK, images/s, the all-reduce's share of the
step, the load of other processes) and the report (`report`), and the
machine's CPU accounting (`busy_cpu_seconds`, `own_cpu_seconds`,
`others_cores`).
"""

import os
import resource
import statistics

from tf_lbsgd.analysis import tables

GOAL_MODEL, GOAL_EFFICIENCY = "resnet50", 0.90
# The 2-worker step over the same processes computing without the
# all-reduce (issue 21: the all-reduce overlapped with backprop).
GOAL_OVER_COMPUTE = 1.05
BUSY_CORES = 0.25  # Others' load above which the report gets a note.
DEFAULT_SWEEP_SIZES = [4096 * 4 ** i for i in range(8)]  # 4 KiB .. 64 MiB.

# name -> model input and the default per-worker batch, loops, steps
# (`tf_lbsgd.scaling_bench.model_fn` builds the model of each name).
MODELS = {
    "small": {"image_shape": (28, 28, 1), "num_classes": 10,
              "per_worker_batch": 32, "loops": 3, "steps_per_loop": 20},
    "resnet50": {"image_shape": (224, 224, 3), "num_classes": 1000,
                 "per_worker_batch": 8, "loops": 3, "steps_per_loop": 2},
}


def _median(values):
    return float(statistics.median(values))


def settings_for(model, per_worker_batch=None, loops=None,
                 steps_per_loop=None):
    """The per-worker batch, loops and steps of `model`: given values win
    over the model's defaults."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; expected one of "
                         f"{sorted(MODELS)}")
    defaults = MODELS[model]
    chosen = {"per_worker_batch": per_worker_batch, "loops": loops,
              "steps_per_loop": steps_per_loop}
    return {key: defaults[key] if value is None else int(value)
            for key, value in chosen.items()}


def interop_thread_counts(values):
    """--interop_threads' values as ints; (None,) when empty (the
    launcher's choice).

    Raises:
        ValueError: for a value that is not an integer >= 1.
    """
    if not values:
        return (None,)
    try:
        counts = tuple(int(v) for v in values)
    except ValueError as e:
        raise ValueError(f"--interop_threads must be integers, got "
                         f"{values}") from e
    if min(counts) < 1:
        raise ValueError(f"--interop_threads must be >= 1, got {values}")
    return counts


def profile_dir_of(root, run):
    """The profiler's directory of one planned `run` under `root` (None if
    no root): model, workers, pack and inter-op threads in its name."""
    if not root:
        return None
    name = f"{run['model']}_w{run['workers']}_p{run['bytes_per_pack']}"
    if run["interop_threads"] is not None:
        name += f"_i{run['interop_threads']}"
    return os.path.abspath(os.path.join(root, name))


def plan_runs(models, worker_counts, packs, sweep, interop_threads=(None,)):
    """The configurations to run, in order: dicts of model, workers,
    bytes_per_pack, interop_threads (None: the launcher's, one per core) and
    sweep (True on the first multi-worker run only when `sweep`). One
    worker runs only with packs[0] and interop_threads[0]."""
    runs, swept = [], not sweep
    for model in models:
        for workers in worker_counts:
            for pack in (packs if workers > 1 else packs[:1]):
                for interop in (interop_threads if workers > 1
                                else interop_threads[:1]):
                    runs.append({"model": model, "workers": workers,
                                 "bytes_per_pack": pack,
                                 "interop_threads": interop,
                                 "sweep": workers > 1 and not swept})
                    swept = swept or workers > 1
    return runs


def _key(record):
    return (record["model"], record["workers"], record["bytes_per_pack"],
            record.get("interop_threads"))


def merge_runs(records):
    """Merges worker records of the same (model, workers, bytes_per_pack,
    interop_threads) from several rounds: their loops, all-reduce times,
    compute-only loops, wall seconds, others' load and profiled overlaps
    are pooled (lists, one entry per round for the last three); the step,
    all-reduce and compute seconds (None when not measured) are the medians
    of the pools."""
    merged = {}
    for record in records:
        key = _key(record)
        if key not in merged:
            merged[key] = {**{k: v for k, v in record.items()
                              if k not in ("allreduce_sweep", "overlap")},
                           "loop_seconds": [], "allreduce_seconds_all": [],
                           "compute_loop_seconds": [], "wall_seconds": [],
                           "others_cores": [], "overlaps": [], "rounds": 0}
        entry = merged[key]
        entry["rounds"] += 1
        if record.get("overlap"):
            entry["overlaps"].append(record["overlap"])
        for pooled in ("loop_seconds", "allreduce_seconds_all",
                       "compute_loop_seconds", "wall_seconds",
                       "others_cores"):
            entry[pooled] += list(record.get(pooled) or [])
    for entry in merged.values():
        steps = entry["steps_per_loop"]
        entry["step_seconds"] = _median(
            s / steps for s in entry["loop_seconds"])
        entry["allreduce_seconds"] = _median(
            entry["allreduce_seconds_all"])
        entry["compute_seconds"] = (_median(
            s / steps for s in entry["compute_loop_seconds"])
            if entry["compute_loop_seconds"] else None)
    return list(merged.values())


def scaling_rows(runs):
    """The table's values of merged `runs` (dicts with model, workers,
    bytes_per_pack, per_worker_batch, step_seconds, allreduce_seconds).

    efficiency = t1 / t: the step time of the same model with 1 worker (the
    first such run) over this run's, at the same per-worker batch; None
    without a 1-worker run. images_per_second = workers * n / t;
    allreduce_share = allreduce seconds / t; compute_ms: the step without
    the all-reduce (None when not measured); others_cores: the most cores
    that other processes kept busy during a round of this run (None when
    unknown); started_in_backward, exposed_ms: from the profiled steps
    (`collective_timeline.summary`, median over rounds; None when not
    profiled).
    """
    baseline = {}
    for run in runs:
        if run["workers"] == 1:
            baseline.setdefault(run["model"], run["step_seconds"])
    rows = []
    for run in runs:
        step = run["step_seconds"]
        t1 = baseline.get(run["model"])
        rows.append({
            "model": run["model"],
            "workers": run["workers"],
            "bytes_per_pack": run["bytes_per_pack"],
            "per_worker_batch": run["per_worker_batch"],
            "step_ms": 1e3 * step,
            "allreduce_ms": 1e3 * run["allreduce_seconds"],
            "images_per_second": (run["workers"] * run["per_worker_batch"]
                                  / step),
            "efficiency": None if t1 is None else t1 / step,
            "allreduce_share": run["allreduce_seconds"] / step,
            "compute_ms": (None if run.get("compute_seconds") is None
                           else 1e3 * run["compute_seconds"]),
            "others_cores": (max(run["others_cores"])
                             if run.get("others_cores") else None),
            "interop_threads": run.get("interop_threads"),
            **_overlap_values(run.get("overlaps") or []),
        })
    return rows


def _overlap_values(overlaps):
    if not overlaps:
        return {"collectives": None, "started_in_backward": None,
                "exposed_ms": None}
    return {key: _median(o[key] for o in overlaps)
            for key in ("collectives", "started_in_backward", "exposed_ms")}


SCALING_HEADER = ["model", "workers", "bytes_per_pack", "batch/worker",
                  "step ms", "allreduce ms", "images/s", "efficiency t1/tK",
                  "allreduce/step", "others' cores"]


def _blank(value):
    return "-" if value is None else value


def _any(rows, key):
    return any(r.get(key) is not None for r in rows)


def scaling_table(rows):
    """The markdown table of `scaling_rows`; with a column of inter-op
    threads when any row set them, "compute ms" and "step / compute" when
    any row has a compute-only time, and the profiled overlap (packs
    started during backprop, of all; exposed communication) when any row
    was profiled."""
    interop, compute = _any(rows, "interop_threads"), _any(rows, "compute_ms")
    profiled = _any(rows, "exposed_ms")
    header = (SCALING_HEADER[:3] + (["inter-op threads"] if interop else [])
              + SCALING_HEADER[3:]
              + (["compute ms (no allreduce)", "step / compute"] if compute
                 else [])
              + (["packs started in backprop", "exposed comm ms"]
                 if profiled else []))
    table = []
    for r in rows:
        compute_ms = r.get("compute_ms")
        table.append(
            [r["model"], r["workers"], r["bytes_per_pack"]]
            + ([_blank(r.get("interop_threads"))] if interop else [])
            + [r["per_worker_batch"], r["step_ms"], r["allreduce_ms"],
               r["images_per_second"], _blank(r["efficiency"]),
               r["allreduce_share"], _blank(r.get("others_cores"))]
            + ([_blank(compute_ms),
                "-" if compute_ms is None else r["step_ms"] / compute_ms]
               if compute else [])
            + ([_started(r), _blank(r.get("exposed_ms"))] if profiled
               else []))
    return tables.markdown_table(header, table)


def _started(row):
    if row.get("started_in_backward") is None:
        return "-"
    return f"{row['started_in_backward']:g} of {row['collectives']:g}"


def sweep_table(records):
    """The markdown table of the all-reduce sweep records."""
    return tables.markdown_table(
        ["bytes", "workers", "allreduce ms", "MB/s (bytes / time)"],
        [[r["bytes"], r["workers"], 1e3 * r["seconds"],
          r["bytes"] / r["seconds"] / 1e6] for r in records])


def goal_lines(rows, model=GOAL_MODEL, goal=GOAL_EFFICIENCY,
               overlap_goal=GOAL_OVER_COMPUTE):
    """Per 2-worker row of `model`: its efficiency against `goal`, and with
    a compute-only time its step over that time against `overlap_goal`
    (the all-reduce hidden behind backprop, issue 21)."""
    lines = []
    for row in rows:
        if row["model"] != model or row["workers"] != 2:
            continue
        which = f"bytes_per_pack={row['bytes_per_pack']}"
        if row.get("interop_threads") is not None:
            which += f", inter-op threads {row['interop_threads']}"
        if row["efficiency"] is not None:
            verdict = "met" if row["efficiency"] >= goal else "NOT met"
            lines.append(
                f"goal {model} 2 workers efficiency >= {goal:.0%} "
                f"({which}): {row['efficiency']:.1%}, {verdict}")
        if row.get("compute_ms"):
            ratio = row["step_ms"] / row["compute_ms"]
            verdict = "met" if ratio <= overlap_goal else "NOT met"
            lines.append(
                f"goal {model} 2 workers step <= {overlap_goal:.0%} of "
                f"compute alone ({which}): {ratio:.1%}, {verdict}")
    return lines


def others_cores(busy_seconds, own_seconds, wall_seconds):
    """Cores that other processes (and the hypervisor) kept busy on average
    over `wall_seconds`: the machine's busy CPU seconds minus our own."""
    if busy_seconds is None or wall_seconds <= 0:
        return None
    return max(0.0, (busy_seconds - own_seconds) / wall_seconds)


def busy_cpu_seconds(path="/proc/stat"):
    """CPU seconds all cores have spent busy since boot (user, nice, system,
    irq, softirq and steal), or None without a readable /proc/stat."""
    try:
        with open(path, encoding="utf-8") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    user, nice, system, _, _, irq, softirq, steal = (
        [int(v) for v in fields[1:9]] + [0] * 8)[:8]
    return ((user + nice + system + irq + softirq + steal)
            / os.sysconf("SC_CLK_TCK"))


def own_cpu_seconds():
    """CPU seconds of this process and of its reaped descendants (the
    launcher and, reaped by it, the workers)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def local_step(runs, model="small"):
    """The top-level keys of the 1-worker run of `model` that
    `comm_model.analyse` reads for its local scenario: step_seconds,
    gradient_bytes (all-reduced per step) and images_per_worker (per step);
    {} without such a run (the keys must then be absent, not null)."""
    for run in runs:
        if run["model"] == model and run["workers"] == 1:
            return {"step_seconds": run["step_seconds"],
                    "gradient_bytes": run["gradient_bytes"],
                    "images_per_worker": run["per_worker_batch"]}
    return {}


def report(rows, sweep, failures):
    """The text report: the table of `scaling_rows`, the goal lines, a note
    when other processes loaded the machine, the sweep's table and one line
    per failed run (dicts with run and round, counted from 0)."""
    lines = [scaling_table(rows), ""] + goal_lines(rows)
    busiest = max((r["others_cores"] for r in rows
                   if r["others_cores"] is not None), default=0.0)
    if busiest > BUSY_CORES:
        lines.append(
            f"note: other processes kept up to {busiest:.2f} cores busy "
            f"during a run (others' cores, over the run's whole wall time): "
            f"the machine was not quiet; the step times and their ratios "
            f"carry that load (a 2-worker run needs both cores)")
    if sweep:
        lines += ["", sweep_table(sweep)]
    for failure in failures:
        lines.append(f"FAILED: {failure['run']} "
                     f"(round {failure['round'] + 1})")
    return "\n".join(lines).rstrip("\n")


def check_plan(models, worker_counts, packs, rounds):
    """Raises ValueError for an empty or out-of-range plan."""
    if not models or not packs or not worker_counts:
        raise ValueError("--models, --bytes_per_pack and --worker_counts "
                         "must not be empty")
    if min(rounds, *worker_counts) < 1 or min(packs) < 0:
        raise ValueError(f"--rounds ({rounds}) and --worker_counts "
                         f"({worker_counts}) must be >= 1, --bytes_per_pack "
                         f"({packs}) >= 0")
    for model in models:
        settings_for(model)


def summarize(records, sweep, failures):
    """The results of `measure`d records, JSON-ready.

    Returns:
        dict with runs (`merge_runs`), rows (`scaling_rows`), table (the
        `report`), allreduce_sweep, failures and, with a 1-worker run of
        the small model, the keys of `local_step`.
    """
    runs = merge_runs(records)
    rows = scaling_rows(runs)
    return {"runs": runs, "rows": rows, **local_step(runs),
            "allreduce_sweep": sweep, "failures": failures,
            "table": report(rows, sweep, failures)}
