"""Weak scaling on localhost, measured: the workers and their launcher.

The measuring part of tools/bench_scaling.py (the plan, pooling and report
are `tf_lbsgd.analysis.scaling`). `measure` runs every planned
configuration in K worker processes through a launcher that gives them
TF_CONFIG (tools/launch_local.py, or tools/emulated_cluster.py for hosts
joined by links of a set rate), once per round, and collects the chief's
records; `run_worker` is what each worker runs: MultiWorkerMirroredStrategy
(RING) from TF_CONFIG, the project's Trainer on in-memory synthetic data
(`benchmark.SyntheticTrainer`) with `GradientAllReduce(bytes_per_pack)`,
timed loops, optionally a profiled loop (when each pack's all-reduce ran
against the backward pass, `analysis.collective_timeline`), the all-reduce
timed alone and the all-reduce sweep.
"""

import collections
import dataclasses
import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import tensorflow as tf

from tf_lbsgd import allreduce
from tf_lbsgd import benchmark
from tf_lbsgd import cluster
from tf_lbsgd import cpu_threads
from tf_lbsgd import distribute
from tf_lbsgd.analysis import collective_timeline
from tf_lbsgd.analysis import op_profile
from tf_lbsgd.analysis import scaling
from tf_lbsgd.models import resnet_cifar
from tf_lbsgd.models import resnet_imagenet

EXIT_LINGER_SECONDS = 1.0


class RunFailed(RuntimeError):
    """A launcher run that failed, timed out or wrote no result."""


def model_fn(name):
    """The Keras model builder of model `name` (takes input_shape and
    num_classes)."""
    if name == "small":
        return functools.partial(resnet_cifar.resnet_cifar, depth=8, width=32,
                                 stem_stride=2, zero_gamma=True)
    if name == "resnet50":
        return functools.partial(resnet_imagenet.resnet_imagenet, depth=50,
                                 zero_gamma=True)
    raise ValueError(f"unknown model {name!r}; expected one of "
                     f"{sorted(scaling.MODELS)}")


def _pump(pipe, tail, verbose):
    """Copies the launcher's lines: progress ones (and all when `verbose`)
    to stderr, the last ones into `tail`."""
    for line in iter(pipe.readline, ""):
        line = line.rstrip("\n")
        tail.append(line)
        if verbose or "bench_scaling:" in line or "launch_local:" in line:
            print(line, file=sys.stderr, flush=True)
    pipe.close()


def launch(launcher, workers, command, cores_per_worker, timeout,
           verbose=False, grace_seconds=5, rate_mbit=None):
    """Runs `command` in `workers` workers through the `launcher`.

    Args:
        launcher: the command line of tools/launch_local.py (the
            interpreter and the script's path), or with `rate_mbit` of
            tools/emulated_cluster.py.
        workers: K, the number of worker processes.
        command: what every worker runs.
        cores_per_worker: cores (and threads) per worker; 0 or None for no
            pinning.
        timeout: seconds before the run is stopped.
        verbose: echo all worker output to stderr (else the progress lines).
        grace_seconds: the launcher's wait between SIGTERM and SIGKILL.
        rate_mbit: run each worker on its own emulated host, the links
            shaped to this rate (0: unshaped); None: on localhost.

    Raises:
        RunFailed: on a non-zero exit or after `timeout` seconds (the
            launcher is sent SIGTERM, which it forwards to the workers, and
            killed if it is still there `grace_seconds` + 10 s later).
    """
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get(
        "TF_CPP_MIN_LOG_LEVEL", "2"))
    env.pop("TF_CONFIG", None)
    if rate_mbit is None:
        args = list(launcher) + ["--workers", str(workers),
                                 "--grace-seconds", str(grace_seconds)]
        if cores_per_worker:
            args += ["--cores-per-worker", str(cores_per_worker)]
    else:
        args = list(launcher) + [f"--hosts={workers}",
                                 f"--grace_seconds={grace_seconds}"]
        if rate_mbit:
            args.append(f"--rate_mbit={rate_mbit:g}")
        if cores_per_worker:
            args.append(f"--cores_per_worker={cores_per_worker}")
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


@dataclasses.dataclass(frozen=True)
class Launch:
    """How `measure` starts the workers of a run (see `launch`)."""
    launcher: tuple
    cores_per_worker: int = 1
    timeout: float = 1800.0
    verbose: bool = False
    rate_mbit: float = None  # Emulated hosts with links of this rate.


def measure(plan, rounds, command_of, how, out_dir):
    """Runs the plan `rounds` times round-robin; collects the chief's records.

    Args:
        plan: the runs of `scaling.plan_runs`.
        rounds: how many times the whole plan runs (the sweep only in the
            first round).
        command_of: callable (run, worker_json) -> the workers' command line
            of one run, whose chief writes its record to `worker_json`.
        how: `Launch`.
        out_dir: a directory for the chief's records.

    Returns:
        (records, sweep, failures): the chief's records with wall_seconds
        and others_cores (one-element lists) added and allreduce_sweep
        removed; the sweep's records; one dict (run, round, error) per
        failed run.
    """
    records, sweep, failures = [], [], []
    for round_index in range(rounds):
        for i, run in enumerate(plan):
            run = dict(run, sweep=run["sweep"] and round_index == 0)
            name = (f"{run['model']} workers={run['workers']} "
                    f"bytes_per_pack={run['bytes_per_pack']}")
            if run.get("interop_threads") is not None:
                name += f" interop_threads={run['interop_threads']}"
            _log(f"round {round_index + 1}/{rounds}: {name}")
            out = os.path.join(out_dir, f"round{round_index}_run{i}.json")
            try:
                record = _measure_run(run, command_of(run, out), how, out)
            except RunFailed as e:
                _log(f"{name} FAILED: {e}")
                failures.append({"run": name, "round": round_index,
                                 "error": str(e)})
                continue
            others = record["others_cores"]
            _log(f"{name}: {record['wall_seconds'][0]:.1f} s wall"
                 + (f", other processes kept {others[0]:.2f} cores busy"
                    if others else ""))
            sweep += record.pop("allreduce_sweep", [])
            records.append(record)
    return records, sweep, failures


def _measure_run(run, command, how, out):
    """One launcher run: the chief's record with its wall time and load."""
    start = time.monotonic()
    busy_start = scaling.busy_cpu_seconds()
    own_start = scaling.own_cpu_seconds()
    launch(how.launcher, run["workers"], command, how.cores_per_worker,
           how.timeout, how.verbose, rate_mbit=how.rate_mbit)
    if not os.path.exists(out):
        raise RunFailed("the chief wrote no result")
    with open(out, encoding="utf-8") as f:
        record = json.load(f)
    wall = time.monotonic() - start
    busy_end = scaling.busy_cpu_seconds()
    others = scaling.others_cores(
        None if busy_start is None or busy_end is None
        else busy_end - busy_start,
        scaling.own_cpu_seconds() - own_start, wall)
    record["wall_seconds"] = [wall]
    record["others_cores"] = [] if others is None else [others]
    return record


def _log(message):
    print(f"bench_scaling: {message}", file=sys.stderr, flush=True)


def _say(message):
    print(f"bench_scaling: {message}", flush=True)


def _cluster_size():
    return max(1, cluster.worker_count(cluster.validate_tf_config()))


def time_allreduce(strategy, gradient_allreduce, shapes, repeats):
    """Median seconds (None for 0 repeats), and all of them, of all-reducing
    float32 tensors of `shapes` with `gradient_allreduce` in `strategy.run`,
    after one warm-up call. Every worker must call it with the same
    arguments."""
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


@dataclasses.dataclass(frozen=True)
class WorkerPlan:
    """What one worker measures (every worker of a run gets the same).

    Attributes:
        model: a name of `scaling.MODELS`.
        bytes_per_pack: the all-reduce's pack size (0: one pack).
        settings: per_worker_batch, loops and steps_per_loop
            (`scaling.settings_for`).
        allreduce_repeats: timed calls of the all-reduce alone.
        sweep_sizes: message sizes in bytes of the all-reduce sweep.
        sweep_repeats: timed calls per sweep size.
        measure_compute: also time the steps without the all-reduce.
        interop_threads: TensorFlow's inter-op threads (None: the
            launcher's, one per core). With one, no pack's all-reduce
            starts before the backward pass ends (issue 21).
        profile_dir: where each worker writes a profiler trace of one loop
            (`<profile_dir>/worker<i>`); the chief's record gets its
            `collective_timeline.summary` as `overlap`. None: no trace.
        profile_steps: steps of the profiled loop.
        compression: `GradientAllReduce`'s wire dtype: "none" or
            "float16" (half the bytes; the sums in float16).
    """
    model: str
    bytes_per_pack: int
    settings: dict
    allreduce_repeats: int = 5
    sweep_sizes: tuple = ()
    sweep_repeats: int = 5
    measure_compute: bool = False
    interop_threads: int = None
    profile_dir: str = None
    profile_steps: int = 3
    compression: str = "none"


def run_worker(plan, worker_json):
    """Measures `plan` in this worker; the chief writes its record to
    `worker_json`. Every worker makes the same collective calls in the same
    order; all then meet in a last all-reduce and wait
    `EXIT_LINGER_SECONDS` (a peer may still be fetching a buffer). The
    caller should then leave with os._exit: the synthetic dataset is
    endless and its iterator must not be torn down by the interpreter."""
    settings, steps = plan.settings, plan.settings["steps_per_loop"]
    began = time.perf_counter()
    if plan.interop_threads is not None:  # Intra-op: the launcher's.
        cpu_threads.apply(plan.interop_threads,
                          int(os.environ.get("TF_NUM_INTRAOP_THREADS", "0")),
                          "bench_scaling --interop_threads")
    strategy = distribute.build_strategy("multi_worker_mirrored",
                                         collective="ring")
    workers = _cluster_size()
    gradient_allreduce = allreduce.GradientAllReduce(
        bytes_per_pack=plan.bytes_per_pack, compression=plan.compression)
    bench = _trainer(plan, strategy, gradient_allreduce)
    variables = bench.model.trainable_variables
    shapes = [tuple(v.shape) for v in variables]
    sizes = [int(np.prod(shape)) for shape in shapes]
    gradient_bytes = sum(size * tf.as_dtype(v.dtype).size
                         for size, v in zip(sizes, variables))
    setup = time.perf_counter() - began
    _say(f"{plan.model}: {workers} worker(s), {sum(sizes)} parameters, set "
         f"up in {setup:.1f} s")
    warmup = bench.time_loop(steps)
    _say(f"warm-up loop of {steps} steps: {warmup:.2f} s")
    loop_seconds = []
    for i in range(settings["loops"]):
        loop_seconds.append(bench.time_loop(steps))
        _say(f"loop {i + 1}/{settings['loops']}: {loop_seconds[-1]:.3f} s, "
             f"{1e3 * loop_seconds[-1] / steps:.1f} ms/step")
    overlap = None
    if plan.profile_dir:
        overlap = profile_overlap(bench, plan.profile_steps, os.path.join(
            plan.profile_dir, f"worker{_task_index()}"))
        _say(f"profiled {plan.profile_steps} steps: {overlap}")
    compute_seconds = []
    if plan.measure_compute:  # The same Trainer without the sum.
        alone = _trainer(plan, strategy, list)
        alone.time_loop(steps)
        for _ in range(settings["loops"]):
            compute_seconds.append(alone.time_loop(steps))
        _say(f"compute alone (no allreduce): "
             f"{1e3 * benchmark.median(compute_seconds) / steps:.1f} ms/step")
    allreduce_median, allreduce_all = time_allreduce(
        strategy, gradient_allreduce, shapes, plan.allreduce_repeats)
    _say(f"allreduce of {gradient_bytes} bytes alone: "
         f"{1e3 * allreduce_median:.1f} ms")
    sweep = []
    for size in plan.sweep_sizes:
        seconds, _ = time_allreduce(strategy, gradient_allreduce,
                                    [(max(1, size // 4),)],
                                    plan.sweep_repeats)
        sweep.append({"bytes": 4 * max(1, size // 4), "workers": workers,
                      "seconds": seconds})
        _say(f"sweep {sweep[-1]['bytes']} bytes: {1e3 * seconds:.2f} ms")
    if distribute.is_chief(strategy):
        _write_record(worker_json, {
            "model": plan.model, "workers": workers,
            "replicas": strategy.num_replicas_in_sync,
            "bytes_per_pack": plan.bytes_per_pack, **settings,
            "params": sum(sizes), "gradient_bytes": gradient_bytes,
            "setup_seconds": setup, "warmup_seconds": warmup,
            "loop_seconds": loop_seconds,
            "step_seconds": benchmark.median(s / steps for s in loop_seconds),
            "allreduce_seconds": allreduce_median,
            "allreduce_seconds_all": allreduce_all,
            "compute_loop_seconds": compute_seconds,
            "allreduce_sweep": sweep,
            "interop_threads": plan.interop_threads,
            "compression": plan.compression,
            "overlap": overlap,
        })
    # A barrier: all wait until the chief has written. Then all linger a
    # moment before exiting: a ring all-reduce can end on one worker while
    # its peer still fetches a buffer from it.
    time_allreduce(strategy, gradient_allreduce, [(1,)], repeats=0)
    time.sleep(EXIT_LINGER_SECONDS)
    _say("done")


def profile_overlap(bench, steps, logdir):
    """Traces one loop of `steps` steps of `bench` (a `SyntheticTrainer`)
    into `logdir`; returns `collective_timeline.summary` of its steps (None
    when the trace holds no whole step)."""
    tf.profiler.experimental.start(logdir)
    try:
        bench.time_loop(steps)
    finally:
        tf.profiler.experimental.stop()
    events = collective_timeline.read_events(op_profile.find_trace(logdir))
    return collective_timeline.summary(
        collective_timeline.step_overlaps(events))


def _task_index():
    return cluster.validate_tf_config().get("task", {}).get("index", 0)


def _trainer(plan, strategy, gradient_allreduce):
    model = scaling.MODELS[plan.model]
    return benchmark.SyntheticTrainer(
        strategy, model_fn(plan.model), plan.settings["per_worker_batch"],
        model["image_shape"], model["num_classes"],
        gradient_allreduce=gradient_allreduce)


def _write_record(path, record):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
    os.replace(tmp, path)
