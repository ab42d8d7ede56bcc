"""Multi-worker weak scaling on localhost: 1 worker vs 2 workers (RING).

Usage:
    python tools/bench_scaling.py [--models=small,resnet50] \\
        [--bytes_per_pack=0,4194304] [--per_worker_batch=N] [--loops=L] \\
        [--steps_per_loop=S] [--out_json=scaling.json]

Driver (the default role): for each model of --models, each worker count of
--worker_counts (1 and 2) and, for more than one worker, each value of
--bytes_per_pack (one worker runs only the first value: with a group of one
the all-reduce moves no bytes), it starts the workers with
`tools/launch_local.py --workers K --cores-per-worker 1` (TF_CONFIG on free
localhost ports, each worker pinned to its own core) running this file with
`--role=worker`, and reads the chief's JSON. It prints a markdown table:

    model, workers, bytes_per_pack, per-worker batch n, step ms (median over
    loops), allreduce ms per step (measured alone), images/s of all workers,
    weak-scaling efficiency t1/tK (the 1-worker step time over this row's, at
    the same per-worker batch: 1.0 is perfect scaling), the share of the
    step that the all-reduce alone would take (allreduce / step), and how
    many cores other processes kept busy on average during the run (the
    machine's busy CPU time from /proc/stat minus that of this process and
    its workers, over the run's wall time: on a shared 2-core machine a
    2-worker run is slowed by any other load, a 1-worker run hardly)

(with --measure_compute also the step time of the same Trainer without the
all-reduce, run by the same workers at the same time: what sharing the
machine costs apart from communication), then, when measured, the
all-reduce sweep over message sizes, and writes
--out_json: {"machine", "settings", "runs" (per configuration: the loop
seconds of every round, their median step seconds, the all-reduce seconds),
"rows" (the table's values), "step_seconds", "gradient_bytes" and
"images_per_worker" (of the 1-worker run of the small model, when it ran:
the local scenario of tools/comm_model.py), "allreduce_sweep" ([{"bytes",
"workers", "seconds"}], one record per message size, measured by 2 workers:
its calibration), "failures", "table", "wall_seconds"}. The goal reported
against: two local workers reach >= 90% weak-scaling efficiency for
ResNet-50.

Worker (`--role=worker`, started by the driver): builds
MultiWorkerMirroredStrategy (RING) from TF_CONFIG and the project's Trainer on
in-memory synthetic data (`tf_lbsgd.benchmark.SyntheticTrainer`) with
`GradientAllReduce(bytes_per_pack=...)`; runs one warm-up loop, then --loops
loops of --steps_per_loop steps (with --measure_compute, then as many loops
of a second Trainer whose gradient "all-reduce" is the identity); then times
the all-reduce alone
(`strategy.run(gradient_allreduce)` on tensors shaped like the model's
trainable variables, --allreduce_repeats times after one warm-up call); then,
given --sweep_sizes, all-reduces one float32 tensor of each size. Every
worker makes the same collective calls in the same order; only the chief
writes --worker_json; all then meet in a last all-reduce, wait 1 s (a peer
may still be fetching a buffer) and exit with os._exit (the synthetic
dataset is endless and its iterator must not be torn down by the
interpreter).

Timing flags default per model: small (ResNet-8 of width 32 on 28x28x1, 0.31M
parameters) n = 32, 3 loops x 20 steps; resnet50 (224x224x3, 25.6M
parameters) n = 8, 3 loops x 2 steps. --rounds R > 1 repeats the whole plan
R times round-robin (the peers interleaved, so a busier machine slows them
alike); the medians are then over the loops of all rounds.

Exit code: 0, or 1 when a run failed or timed out (its row is missing; the
others are still measured and written).

Tests import this file by its path (it is not in a package); importing it
defines no flags.
"""

import collections
import functools
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

from absl import app
from absl import flags

from tf_lbsgd import benchmark

LAUNCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        "launch_local.py")
GOAL_MODEL, GOAL_EFFICIENCY = "resnet50", 0.90
EXIT_LINGER_SECONDS = 1.0
BUSY_CORES = 0.25  # Others' load above which the table gets a note.
DEFAULT_SWEEP_SIZES = [4096 * 4 ** i for i in range(8)]  # 4 KiB .. 64 MiB.

# name -> model, input and the default per-worker batch, loops, steps.
MODELS = {
    "small": {"image_shape": (28, 28, 1), "num_classes": 10,
              "per_worker_batch": 32, "loops": 3, "steps_per_loop": 20},
    "resnet50": {"image_shape": (224, 224, 3), "num_classes": 1000,
                 "per_worker_batch": 8, "loops": 3, "steps_per_loop": 2},
}


def model_fn(name):
    """The Keras model builder of model `name` (takes input_shape and
    num_classes)."""
    # pylint: disable=import-outside-toplevel
    if name == "small":
        from tf_lbsgd.models import resnet_cifar
        return functools.partial(resnet_cifar.resnet_cifar, depth=8, width=32,
                                 stem_stride=2, zero_gamma=True)
    if name == "resnet50":
        from tf_lbsgd.models import resnet_imagenet
        return functools.partial(resnet_imagenet.resnet_imagenet, depth=50,
                                 zero_gamma=True)
    raise ValueError(f"unknown model {name!r}; expected one of "
                     f"{sorted(MODELS)}")


# ----------------------------------------------------------------------------
# Pure helpers: plan, merging, efficiency, tables.


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


def plan_runs(models, worker_counts, packs, sweep):
    """The configurations to run, in order: dicts of model, workers,
    bytes_per_pack and sweep (True on the first multi-worker run only when
    `sweep`). One worker runs only with packs[0]."""
    runs, swept = [], not sweep
    for model in models:
        for workers in worker_counts:
            for pack in (packs if workers > 1 else packs[:1]):
                runs.append({"model": model, "workers": workers,
                             "bytes_per_pack": pack,
                             "sweep": workers > 1 and not swept})
                swept = swept or workers > 1
    return runs


def merge_runs(records):
    """Merges worker records of the same (model, workers, bytes_per_pack)
    from several rounds: their loops, all-reduce times, compute-only loops,
    wall seconds and others' load are pooled (lists, one entry per round for
    the last two); the step, all-reduce and compute seconds (None when not
    measured) are the medians of the pools."""
    merged = {}
    for record in records:
        key = (record["model"], record["workers"], record["bytes_per_pack"])
        if key not in merged:
            merged[key] = {**{k: v for k, v in record.items()
                              if k not in ("allreduce_sweep",)},
                           "loop_seconds": [], "allreduce_seconds_all": [],
                           "compute_loop_seconds": [], "wall_seconds": [],
                           "others_cores": [], "rounds": 0}
        entry = merged[key]
        entry["rounds"] += 1
        for pooled in ("loop_seconds", "allreduce_seconds_all",
                       "compute_loop_seconds", "wall_seconds",
                       "others_cores"):
            entry[pooled] += list(record.get(pooled) or [])
    for entry in merged.values():
        steps = entry["steps_per_loop"]
        entry["step_seconds"] = benchmark.median(
            s / steps for s in entry["loop_seconds"])
        entry["allreduce_seconds"] = benchmark.median(
            entry["allreduce_seconds_all"])
        entry["compute_seconds"] = (benchmark.median(
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
    unknown).
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
        })
    return rows


SCALING_HEADER = ["model", "workers", "bytes_per_pack", "batch/worker",
                  "step ms", "allreduce ms", "images/s", "efficiency t1/tK",
                  "allreduce/step", "others' cores"]


def _blank(value):
    return "-" if value is None else value


def scaling_table(rows):
    """The markdown table of `scaling_rows`; with a "compute ms" column
    when any row has a compute-only time."""
    compute = any(r.get("compute_ms") is not None for r in rows)
    header = SCALING_HEADER + (["compute ms (no allreduce)"] if compute
                               else [])
    return benchmark.format_table(header, [
        [r["model"], r["workers"], r["bytes_per_pack"],
         r["per_worker_batch"], r["step_ms"], r["allreduce_ms"],
         r["images_per_second"], _blank(r["efficiency"]),
         r["allreduce_share"], _blank(r.get("others_cores"))]
        + ([_blank(r.get("compute_ms"))] if compute else []) for r in rows])


def sweep_table(records):
    """The markdown table of the all-reduce sweep records."""
    return benchmark.format_table(
        ["bytes", "workers", "allreduce ms", "MB/s (bytes / time)"],
        [[r["bytes"], r["workers"], 1e3 * r["seconds"],
          r["bytes"] / r["seconds"] / 1e6] for r in records])


def goal_lines(rows, model=GOAL_MODEL, goal=GOAL_EFFICIENCY):
    """One line per 2-worker row of `model`: its efficiency against `goal`."""
    lines = []
    for row in rows:
        if (row["model"] == model and row["workers"] == 2
                and row["efficiency"] is not None):
            verdict = "met" if row["efficiency"] >= goal else "NOT met"
            lines.append(
                f"goal {model} 2 workers efficiency >= {goal:.0%} "
                f"(bytes_per_pack={row['bytes_per_pack']}): "
                f"{row['efficiency']:.1%}, {verdict}")
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
    tools/comm_model.py reads for its local scenario: step_seconds,
    gradient_bytes (all-reduced per step) and images_per_worker (per step);
    {} without such a run (the keys must then be absent, not null)."""
    for run in runs:
        if run["model"] == model and run["workers"] == 1:
            return {"step_seconds": run["step_seconds"],
                    "gradient_bytes": run["gradient_bytes"],
                    "images_per_worker": run["per_worker_batch"]}
    return {}


# ----------------------------------------------------------------------------
# Driver.


class RunFailed(RuntimeError):
    """A launcher run that failed, timed out or wrote no result."""


def worker_command(run, settings, flag_values, worker_json):
    """The worker command line of one planned `run`."""
    command = [
        sys.executable, os.path.abspath(__file__), "--role=worker",
        f"--models={run['model']}",
        f"--bytes_per_pack={run['bytes_per_pack']}",
        f"--per_worker_batch={settings['per_worker_batch']}",
        f"--loops={settings['loops']}",
        f"--steps_per_loop={settings['steps_per_loop']}",
        f"--allreduce_repeats={flag_values.allreduce_repeats}",
        f"--worker_json={worker_json}",
        f"--measure_compute={flag_values.measure_compute}",
    ]
    if run["sweep"]:
        command += [
            "--sweep_sizes=" + ",".join(map(str, flag_values.sweep_sizes)),
            f"--sweep_repeats={flag_values.sweep_repeats}"]
    else:
        command += ["--sweep_sizes="]
    return command


def _pump(pipe, tail, verbose):
    """Copies the launcher's lines: progress ones (and all when `verbose`)
    to stderr, the last ones into `tail`."""
    for line in iter(pipe.readline, ""):
        line = line.rstrip("\n")
        tail.append(line)
        if verbose or "bench_scaling:" in line or "launch_local:" in line:
            print(line, file=sys.stderr, flush=True)
    pipe.close()


def launch(workers, command, cores_per_worker, timeout, verbose=False,
           grace_seconds=5):
    """Runs `command` in `workers` workers through tools/launch_local.py.

    Raises:
        RunFailed: on a non-zero exit or after `timeout` seconds (the
            launcher is sent SIGTERM, which it forwards to the workers, and
            killed if it is still there `grace_seconds` + 10 s later).
    """
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get(
        "TF_CPP_MIN_LOG_LEVEL", "2"))
    env.pop("TF_CONFIG", None)
    args = [sys.executable, LAUNCHER, "--workers", str(workers),
            "--grace-seconds", str(grace_seconds)]
    if cores_per_worker:
        args += ["--cores-per-worker", str(cores_per_worker)]
    proc = subprocess.Popen(args + ["--"] + command, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env,
                            stdin=subprocess.DEVNULL)
    tail = collections.deque(maxlen=40)
    reader = threading.Thread(target=_pump, args=(proc.stdout, tail, verbose),
                              daemon=True)
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace_seconds + 10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    finally:
        if proc.poll() is None:  # KeyboardInterrupt: stop the workers too.
            proc.send_signal(signal.SIGTERM)
            proc.wait()
        reader.join(timeout=5)
    if timed_out or proc.returncode != 0:
        why = (f"timed out after {timeout:g} s" if timed_out
               else f"launcher exit code {proc.returncode}")
        raise RunFailed(f"{workers} worker(s) {why}; last output:\n"
                        + "\n".join(tail))


def run_driver(flag_values):
    """Runs the plan, prints the tables, writes the JSON; returns the exit
    code.

    Args:
        flag_values: parsed `flags.FlagValues` holding the flags of
            `define_flags` (tests pass their own).
    """
    start = time.monotonic()
    models = list(flag_values.models)
    packs = [int(p) for p in flag_values.bytes_per_pack]
    counts = [int(k) for k in flag_values.worker_counts]
    if not models or not packs or not counts:
        raise app.UsageError("--models, --bytes_per_pack and --worker_counts "
                             "must not be empty")
    if (min(flag_values.rounds, flag_values.allreduce_repeats,
            flag_values.sweep_repeats, *counts) < 1 or min(packs) < 0):
        raise app.UsageError("--rounds, --allreduce_repeats, --sweep_repeats "
                             "and --worker_counts must be >= 1, "
                             "--bytes_per_pack >= 0")
    try:
        settings = {m: settings_for(m, flag_values.per_worker_batch,
                                    flag_values.loops,
                                    flag_values.steps_per_loop)
                    for m in models}
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    plan = plan_runs(models, counts, packs,
                     sweep=bool(flag_values.sweep_sizes))
    records, sweep, failures = [], [], []
    with tempfile.TemporaryDirectory(prefix="bench_scaling_") as tmp:
        for round_index in range(flag_values.rounds):
            for i, run in enumerate(plan):
                run = dict(run, sweep=run["sweep"] and round_index == 0)
                name = (f"{run['model']} workers={run['workers']} "
                        f"bytes_per_pack={run['bytes_per_pack']}")
                out = os.path.join(tmp, f"round{round_index}_run{i}.json")
                print(f"bench_scaling: round {round_index + 1}/"
                      f"{flag_values.rounds}: {name}", file=sys.stderr,
                      flush=True)
                run_start = time.monotonic()
                busy_start, own_start = busy_cpu_seconds(), own_cpu_seconds()
                try:
                    launch(run["workers"], worker_command(
                        run, settings[run["model"]], flag_values, out),
                        flag_values.cores_per_worker, flag_values.run_timeout,
                        flag_values.verbose)
                    if not os.path.exists(out):
                        raise RunFailed("the chief wrote no result")
                    with open(out, encoding="utf-8") as f:
                        record = json.load(f)
                except RunFailed as e:
                    print(f"bench_scaling: {name} FAILED: {e}",
                          file=sys.stderr, flush=True)
                    failures.append({"run": name, "round": round_index,
                                     "error": str(e)})
                    continue
                wall = time.monotonic() - run_start
                busy_end = busy_cpu_seconds()
                others = others_cores(
                    None if busy_start is None or busy_end is None
                    else busy_end - busy_start,
                    own_cpu_seconds() - own_start, wall)
                record["wall_seconds"] = [wall]
                record["others_cores"] = [] if others is None else [others]
                print(f"bench_scaling: {name}: {wall:.1f} s wall"
                      + ("" if others is None else
                         f", other processes kept {others:.2f} cores busy"),
                      file=sys.stderr, flush=True)
                sweep += record.pop("allreduce_sweep", [])
                records.append(record)
    runs = merge_runs(records)
    rows = scaling_rows(runs)
    table = scaling_table(rows)
    lines = [table, ""] + goal_lines(rows)
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
    text = "\n".join(lines).rstrip("\n")
    print(text)
    wall = time.monotonic() - start
    print(f"bench_scaling: total {wall:.1f} s wall", file=sys.stderr)
    benchmark.write_json(flag_values.out_json, {
        "settings": {
            "models": {m: settings[m] for m in models},
            "worker_counts": counts, "bytes_per_pack": packs,
            "cores_per_worker": flag_values.cores_per_worker,
            "collective": "ring", "rounds": flag_values.rounds,
            "allreduce_repeats": flag_values.allreduce_repeats,
            "sweep_sizes": [int(s) for s in flag_values.sweep_sizes],
            "sweep_repeats": flag_values.sweep_repeats,
        },
        "runs": runs,
        "rows": rows,
        **local_step(runs),
        "allreduce_sweep": sweep,
        "failures": failures,
        "table": text,
        "wall_seconds": wall,
    })
    return 1 if failures else 0


# ----------------------------------------------------------------------------
# Worker.


def _say(message):
    print(f"bench_scaling: {message}", flush=True)


def _cluster_size():
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    cluster = config.get("cluster", {})
    return max(1, sum(len(cluster.get(job, []))
                      for job in ("chief", "worker")))


def time_allreduce(strategy, gradient_allreduce, shapes, repeats):
    """Median seconds (None for 0 repeats), and all of them, of all-reducing
    float32 tensors of `shapes` with `gradient_allreduce` in `strategy.run`,
    after one warm-up call. Every worker must call it with the same
    arguments."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    tensors = [tf.fill(shape, 1e-3) for shape in shapes]

    def replica_fn(values):
        # Placed on the replica's device like real gradients (the collective
        # reads its destination from there; inputs have no device).
        return gradient_allreduce([tf.identity(v) for v in values])

    @tf.function
    def reduce(values):
        summed = strategy.run(replica_fn, args=(values,))
        local = strategy.experimental_local_results(summed)[0]
        # One element of each sum: a scalar to read that depends on all.
        return tf.add_n([tf.reshape(s, [-1])[0] for s in local])

    reduce(tensors).numpy()
    seconds = []
    for _ in range(repeats):
        begin = time.perf_counter()
        reduce(tensors).numpy()
        seconds.append(time.perf_counter() - begin)
    return (benchmark.median(seconds) if seconds else None), seconds


def run_worker(flag_values):
    """The worker role; returns nothing (exits the process)."""
    # pylint: disable=import-outside-toplevel
    import numpy as np
    import tensorflow as tf
    from tf_lbsgd import allreduce
    from tf_lbsgd import distribute
    if len(flag_values.models) != 1 or len(flag_values.bytes_per_pack) != 1:
        raise app.UsageError("a worker takes one --models and one "
                             "--bytes_per_pack value")
    model = flag_values.models[0]
    pack = int(flag_values.bytes_per_pack[0])
    settings = settings_for(model, flag_values.per_worker_batch,
                            flag_values.loops, flag_values.steps_per_loop)
    steps = settings["steps_per_loop"]
    began = time.perf_counter()
    strategy = distribute.build_strategy("multi_worker_mirrored",
                                         collective="ring")
    chief = distribute.is_chief(strategy)
    workers = _cluster_size()
    gradient_allreduce = allreduce.GradientAllReduce(bytes_per_pack=pack)
    bench = benchmark.SyntheticTrainer(
        strategy, model_fn(model), settings["per_worker_batch"],
        MODELS[model]["image_shape"], MODELS[model]["num_classes"],
        gradient_allreduce=gradient_allreduce)
    variables = bench.model.trainable_variables
    shapes = [tuple(v.shape) for v in variables]
    sizes = [int(np.prod(shape)) for shape in shapes]
    params = sum(sizes)
    gradient_bytes = sum(size * tf.as_dtype(v.dtype).size
                         for size, v in zip(sizes, variables))
    setup = time.perf_counter() - began
    _say(f"{model}: {workers} worker(s), {params} parameters, set up in "
         f"{setup:.1f} s")
    warmup = bench.time_loop(steps)
    _say(f"warm-up loop of {steps} steps: {warmup:.2f} s")
    loop_seconds = []
    for i in range(settings["loops"]):
        loop_seconds.append(bench.time_loop(steps))
        _say(f"loop {i + 1}/{settings['loops']}: {loop_seconds[-1]:.3f} s, "
             f"{1e3 * loop_seconds[-1] / steps:.1f} ms/step")
    compute_seconds = []
    if flag_values.measure_compute:  # The same Trainer without the sum.
        alone = benchmark.SyntheticTrainer(
            strategy, model_fn(model), settings["per_worker_batch"],
            MODELS[model]["image_shape"], MODELS[model]["num_classes"],
            gradient_allreduce=list)
        alone.time_loop(steps)
        for _ in range(settings["loops"]):
            compute_seconds.append(alone.time_loop(steps))
        _say(f"compute alone (no allreduce): "
             f"{1e3 * benchmark.median(compute_seconds) / steps:.1f} ms/step")
    allreduce_median, allreduce_all = time_allreduce(
        strategy, gradient_allreduce, shapes, flag_values.allreduce_repeats)
    _say(f"allreduce of {gradient_bytes} bytes alone: "
         f"{1e3 * allreduce_median:.1f} ms")
    sweep = []
    for size in (int(s) for s in flag_values.sweep_sizes):
        seconds, _ = time_allreduce(strategy, gradient_allreduce,
                                    [(max(1, size // 4),)],
                                    flag_values.sweep_repeats)
        sweep.append({"bytes": 4 * max(1, size // 4), "workers": workers,
                      "seconds": seconds})
        _say(f"sweep {sweep[-1]['bytes']} bytes: {1e3 * seconds:.2f} ms")
    if chief:
        record = {
            "model": model, "workers": workers,
            "replicas": strategy.num_replicas_in_sync,
            "bytes_per_pack": pack, **settings,
            "params": params, "gradient_bytes": gradient_bytes,
            "setup_seconds": setup, "warmup_seconds": warmup,
            "loop_seconds": loop_seconds,
            "step_seconds": benchmark.median(s / steps for s in loop_seconds),
            "allreduce_seconds": allreduce_median,
            "allreduce_seconds_all": allreduce_all,
            "compute_loop_seconds": compute_seconds,
            "allreduce_sweep": sweep,
        }
        tmp = flag_values.worker_json + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2)
        os.replace(tmp, flag_values.worker_json)
    # A barrier: all wait until the chief has written. Then all linger a
    # moment before exiting: a ring all-reduce can end on one worker while
    # its peer still fetches a buffer from it.
    time_allreduce(strategy, gradient_allreduce, [(1,)], repeats=0)
    time.sleep(EXIT_LINGER_SECONDS)
    _say("done")


# ----------------------------------------------------------------------------
# Command line.


def define_flags(flag_values=flags.FLAGS):
    """Defines the command-line flags of this tool in `flag_values`."""
    def define(kind, name, default, help_text):
        getattr(flags, f"DEFINE_{kind}")(name, default, help_text,
                                         flag_values=flag_values)
    flags.DEFINE_enum("role", "driver", ["driver", "worker"],
                      "`driver` runs the plan; `worker` is what it starts.",
                      flag_values=flag_values)
    define("list", "models", ["small", "resnet50"],
           f"Models to run, of {sorted(MODELS)} (a worker: one).")
    define("list", "worker_counts", ["1", "2"],
           "Worker counts; 1 is the weak-scaling baseline.")
    define("list", "bytes_per_pack", ["0", "4194304"],
           "All-reduce pack sizes for more than one worker (0: one pack); "
           "one worker runs the first only (a worker: one value).")
    define("integer", "per_worker_batch", None,
           "Per-worker batch n (default: small 32, resnet50 8).")
    define("integer", "loops", None,
           "Timed loops (default: 3).")
    define("integer", "steps_per_loop", None,
           "Steps per loop (default: small 20, resnet50 2).")
    define("integer", "allreduce_repeats", 5,
           "Timed calls of the all-reduce alone (after one warm-up).")
    define("list", "sweep_sizes", [str(s) for s in DEFAULT_SWEEP_SIZES],
           "Message sizes in bytes of the all-reduce sweep, run once by the "
           "first multi-worker run; empty for none.")
    define("integer", "sweep_repeats", 5, "Timed calls per sweep size.")
    define("integer", "cores_per_worker", 1,
           "Cores (and threads) per worker; 0 for no pinning.")
    define("integer", "rounds", 1,
           "Repeat the whole plan this many times, round-robin.")
    define("float", "run_timeout", 1800.0,
           "Seconds before one launcher run is stopped.")
    define("boolean", "measure_compute", False,
           "Also time each worker's steps without the all-reduce (the same "
           "Trainer summing nothing; a second model is built and traced): "
           "separates the slowdown of sharing the machine from the "
           "communication.")
    define("boolean", "verbose", False, "Echo all worker output to stderr.")
    define("string", "out_json", None, "Write the results here.")
    define("string", "worker_json", None,
           "Worker: where the chief writes its result.")


def main(argv):
    """Entry point for `app.run`."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    flag_values = flags.FLAGS
    if flag_values.allreduce_repeats < 1 or flag_values.sweep_repeats < 1:
        raise app.UsageError("--allreduce_repeats and --sweep_repeats must "
                             "be >= 1")
    if flag_values.role == "worker":
        if not flag_values.worker_json:
            raise app.UsageError("a worker needs --worker_json")
        try:
            run_worker(flag_values)
        except BaseException:  # pylint: disable=broad-except
            traceback.print_exc()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)  # pylint: disable=protected-access
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)  # pylint: disable=protected-access
    if flag_values.role != "driver":
        raise app.UsageError(f"unknown --role {flag_values.role!r}")
    return run_driver(flag_values)


if __name__ == "__main__":
    define_flags()
    app.run(main)
