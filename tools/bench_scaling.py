"""Multi-worker weak scaling on localhost: 1 worker vs 2 workers (RING).

Usage:
    python tools/bench_scaling.py [--models=small,resnet50] \\
        [--bytes_per_pack=0,4194304] [--per_worker_batch=N] [--loops=L] \\
        [--steps_per_loop=S] [--measure_compute] [--out_json=scaling.json] \\
        [--interop_threads=1,2] [--profile_dir=DIR] [--rate_mbit=R] \\
        [--compression=float16]

The driver (default role) runs, for each model, worker count and (for more
than one worker) pack size, the workers through `tools/launch_local.py
--workers K --cores-per-worker 1`, each running this file with
--role=worker (`tf_lbsgd.scaling_bench.run_worker`); it prints the table of
`tf_lbsgd.analysis.scaling.scaling_rows` (step ms, all-reduce ms, images/s,
efficiency t1/tK, the all-reduce's share, others' load; with
--measure_compute the step without the all-reduce), the goal (ResNet-50, 2
workers, >= 90%) and the all-reduce sweep, and writes --out_json: machine,
settings, runs, rows, failures, table, wall_seconds, the sweep
("allreduce_sweep") and the 1-worker small model's step_seconds,
gradient_bytes and images_per_worker: tools/comm_model.py's calibration.
--rounds R > 1 repeats the plan round-robin; medians pool all rounds.

--interop_threads runs each multi-worker configuration with each count of
TensorFlow inter-op threads (default: the launcher's, one per core: then no
pack's all-reduce starts before the backward pass ends). --profile_dir
traces one loop per run (TensorBoard's Profile tab reads it) and adds to the
table how many packs started during backprop and how long communication ran
past it (`tf_lbsgd.analysis.collective_timeline`). --rate_mbit runs each
worker on its own emulated host (tools/emulated_cluster.py, as root), the
links shaped to that rate (0: unshaped), instead of on localhost.

Exit code: 0, or 1 when a run failed or timed out (its row is missing).
"""

import os
import sys
import tempfile
import time
import traceback

from absl import app
from absl import flags

from tf_lbsgd import scaling_bench
from tf_lbsgd.analysis import machine
from tf_lbsgd.analysis import scaling
from tf_lbsgd.analysis import tables

LAUNCHER = (sys.executable, os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "launch_local.py"))
EMULATOR = (sys.executable, os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "emulated_cluster.py"))


def define_flags(flag_values=flags.FLAGS):
    """Defines the command-line flags of this tool in `flag_values`."""
    def define(kind, name, default, help_text, *args, **kwargs):
        getattr(flags, f"DEFINE_{kind}")(name, default, *args, help_text,
                                         flag_values=flag_values, **kwargs)
    define("enum", "role", "driver", "`driver` runs the plan; `worker` is "
           "what it starts.", ["driver", "worker"])
    define("list", "models", ["small", "resnet50"],
           f"Models to run, of {sorted(scaling.MODELS)} (a worker: one).")
    define("list", "worker_counts", ["1", "2"],
           "Worker counts; 1 is the weak-scaling baseline.")
    define("list", "bytes_per_pack", ["0", "4194304"],
           "All-reduce pack sizes for more than one worker (0: one pack); "
           "one worker runs the first only (a worker: one value).")
    define("integer", "per_worker_batch", None,
           "Per-worker batch n (default: small 32, resnet50 8).")
    define("integer", "loops", None, "Timed loops (default: 3).")
    define("integer", "steps_per_loop", None,
           "Steps per loop (default: small 20, resnet50 2).")
    define("integer", "allreduce_repeats", 5, "Timed calls of the "
           "all-reduce alone (after one warm-up).", lower_bound=1)
    define("list", "sweep_sizes",
           [str(s) for s in scaling.DEFAULT_SWEEP_SIZES],
           "Message sizes in bytes of the all-reduce sweep, run once by the "
           "first multi-worker run; empty for none.")
    define("integer", "sweep_repeats", 5, "Timed calls per sweep size.",
           lower_bound=1)
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
    define("list", "interop_threads", [], "TensorFlow inter-op threads per "
           "worker, each a run of every multi-worker configuration; empty: "
           "the launcher's (one per core) (a worker: one value).")
    define("string", "profile_dir", None, "Trace one loop of each run's "
           "workers here (<dir>/<run>/worker<i>) and report the all-reduce's "
           "overlap with backprop.")
    define("integer", "profile_steps", 3, "Steps of the profiled loop.",
           lower_bound=1)
    define("float", "rate_mbit", None, "Run the workers on emulated hosts "
           "(network namespaces, as root) joined by links of this rate in "
           "Mbit/s (0: unshaped); unset: on localhost.", lower_bound=0)
    define("enum", "compression", "none", "The gradient all-reduce's wire "
           "dtype (allreduce.GradientAllReduce): float16 halves the bytes.",
           ["none", "float16"])
    define("boolean", "verbose", False, "Echo all worker output to stderr.")
    define("string", "out_json", None, "Write the results here.")
    define("string", "worker_json", None,
           "Worker: where the chief writes its result.")


def _checked(check, *args):
    try:
        return check(*args)
    except ValueError as e:
        raise app.UsageError(str(e)) from e


def _settings(flag_values, models):
    return {m: _checked(scaling.settings_for, m, flag_values.per_worker_batch,
                        flag_values.loops, flag_values.steps_per_loop)
            for m in models}


def worker_command(run, settings, flag_values, worker_json):
    """The worker command line of one planned `run`."""
    return [sys.executable, os.path.abspath(__file__), "--role=worker",
            f"--models={run['model']}",
            f"--bytes_per_pack={run['bytes_per_pack']}",
            f"--per_worker_batch={settings['per_worker_batch']}",
            f"--loops={settings['loops']}",
            f"--steps_per_loop={settings['steps_per_loop']}",
            f"--allreduce_repeats={flag_values.allreduce_repeats}",
            f"--worker_json={worker_json}",
            f"--measure_compute={flag_values.measure_compute}",
            "--interop_threads=" + ("" if run["interop_threads"] is None
                                    else str(run["interop_threads"])),
            "--profile_dir=" + (scaling.profile_dir_of(
                flag_values.profile_dir, run) or ""),
            f"--profile_steps={flag_values.profile_steps}",
            f"--compression={flag_values.compression}",
            "--sweep_sizes=" + (",".join(map(str, flag_values.sweep_sizes))
                                if run["sweep"] else ""),
            f"--sweep_repeats={flag_values.sweep_repeats}"]


def run_driver(flag_values):
    """Runs the plan, prints the report, writes the JSON; returns the exit
    code. `flag_values` holds the parsed flags of `define_flags`."""
    start = time.monotonic()
    models = list(flag_values.models)
    packs = [int(p) for p in flag_values.bytes_per_pack]
    counts = [int(k) for k in flag_values.worker_counts]
    interops = _checked(scaling.interop_thread_counts,
                        flag_values.interop_threads)
    _checked(scaling.check_plan, models, counts, packs, flag_values.rounds)
    settings = _settings(flag_values, models)
    plan = scaling.plan_runs(models, counts, packs,
                             sweep=bool(flag_values.sweep_sizes),
                             interop_threads=interops)
    emulated = flag_values.rate_mbit is not None
    how = scaling_bench.Launch(EMULATOR if emulated else LAUNCHER,
                               flag_values.cores_per_worker,
                               flag_values.run_timeout, flag_values.verbose,
                               rate_mbit=flag_values.rate_mbit)
    with tempfile.TemporaryDirectory(prefix="bench_scaling_") as tmp:
        result = scaling.summarize(*scaling_bench.measure(
            plan, flag_values.rounds, lambda run, out: worker_command(
                run, settings[run["model"]], flag_values, out), how, tmp))
    print(result["table"])
    wall = time.monotonic() - start
    print(f"bench_scaling: total {wall:.1f} s wall", file=sys.stderr)
    if flag_values.out_json:
        tables.write_json(flag_values.out_json, {
            "machine": machine.machine_info(), **result,
            "wall_seconds": wall, "settings": {
                "models": settings, "worker_counts": counts,
                "bytes_per_pack": packs, "collective": "ring",
                "interop_threads": interops,
                **{name: flag_values[name].value for name in (
                    "cores_per_worker", "rounds", "allreduce_repeats",
                    "sweep_repeats", "rate_mbit", "profile_dir",
                    "profile_steps", "compression")},
                "sweep_sizes": [int(s) for s in flag_values.sweep_sizes]}})
    return 1 if result["failures"] else 0


def run_worker(flag_values):
    """The worker role: measures, then leaves with os._exit (0 or 1)."""
    if (len(flag_values.models) != 1 or len(flag_values.bytes_per_pack) != 1
            or len(flag_values.interop_threads) > 1):
        raise app.UsageError("a worker takes one --models, --bytes_per_pack "
                             "and --interop_threads value")
    if not flag_values.worker_json:
        raise app.UsageError("a worker needs --worker_json")
    model = flag_values.models[0]
    plan = scaling_bench.WorkerPlan(
        model, int(flag_values.bytes_per_pack[0]),
        _settings(flag_values, [model])[model],
        flag_values.allreduce_repeats,
        tuple(int(s) for s in flag_values.sweep_sizes),
        flag_values.sweep_repeats, flag_values.measure_compute,
        scaling.interop_thread_counts(flag_values.interop_threads)[0],
        flag_values.profile_dir or None, flag_values.profile_steps,
        flag_values.compression)
    code = 0
    try:
        scaling_bench.run_worker(plan, flag_values.worker_json)
    except BaseException:  # pylint: disable=broad-except
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # pylint: disable=protected-access


def main(argv):
    """Entry point for `app.run`."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if flags.FLAGS.role == "worker":
        run_worker(flags.FLAGS)
    return run_driver(flags.FLAGS)


if __name__ == "__main__":
    define_flags()
    app.run(main)
