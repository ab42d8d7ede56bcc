"""Train-step throughput: ours vs tf-models-official's loop vs Keras fit.

`resnet50`: ResNet-50 v1.5, synthetic 224x224x3 data, a global batch of 16
on one device by default. Peers, each measured once per round, round-robin
in one process (after a warm-up that traces and compiles):

- `ours`: `tf_lbsgd.trainer.Trainer` (orbit loop of `steps` steps inside
  one tf.function, explicit allreduce, MomentumSGD), XLA off, and
  `ours_xla` with the forward/backward compiled (`jit_compile`);
- `keras_fit`: Keras 3 `model.fit` on the same model and data, SGD with
  momentum, compiled with the defaults (`jit_compile='auto'`, which is off
  on a CPU-only machine), and `keras_fit_xla` (jit_compile=True);
- `model_garden`: `official.legacy.image_classification.resnet.
  resnet_ctl_imagenet_main` (its custom loop, tf_keras) in a subprocess,
  timed by its own per-step TimeHistory log after the first steps, and
  `model_garden_xla` with its `--enable_xla` (its step compiled).

`small`: the default job's ResNet-8 (width 32) on 28x28x1 inputs, k = 8
logical-CPU replicas of MirroredStrategy x n = 32 (kn = 256), ours vs
`model.fit` under the same strategy.

Precisions (`float32`, `mixed_bfloat16`, `mixed_float16`; several are
measured side by side in the same rounds) are applied to each peer as its
own users apply them: ours as `train_lib.run` does (the model built under
the Keras dtype policy, the project's dynamic loss scaling for float16,
`benchmark.SyntheticTrainer`), `model.fit` on a model built under
`keras.mixed_precision`'s policy (its `compile` adds loss scaling for
float16), Model Garden's loop with its own `--dtype=fp32|bf16|fp16` flag.

The achieved rate is also given in GFLOP/s (3 x forward multiply-adds x 2
per image: forward, and backward for activations and weights) against the
peaks of the precision's compute dtype (`peaks`: a matmul and a 3x3
convolution), measured in the same rounds, with the CPU's bfloat16 units.
"""

import functools
import re
import subprocess
import sys
import tempfile
import time

import keras
import tensorflow as tf

from tf_lbsgd import benchmark
from tf_lbsgd import cpu_threads as cpu_threads_lib
from tf_lbsgd import distribute
from tf_lbsgd import precision as precision_lib
from tf_lbsgd import worker_packing
from tf_lbsgd.analysis import machine
from tf_lbsgd.analysis import tables
from tf_lbsgd.benchmarks import child_peer
from tf_lbsgd.benchmarks import peaks as peaks_lib
from tf_lbsgd.models import flops
from tf_lbsgd.models import resnet_cifar
from tf_lbsgd.models import resnet_imagenet

MODELS = {
    "resnet50": dict(
        model_fn=functools.partial(resnet_imagenet.resnet_imagenet, depth=50,
                                   zero_gamma=True),
        image_shape=(224, 224, 3), num_classes=1000, replicas=1,
        per_replica_batch=16, steps=6),
    "small": dict(
        model_fn=functools.partial(resnet_cifar.resnet_cifar, depth=8,
                                   width=32, stem_stride=2, zero_gamma=True),
        image_shape=(28, 28, 1), num_classes=10, replicas=8,
        per_replica_batch=32, steps=39),
}
# Model Garden's --dtype for each Keras precision policy.
MODEL_GARDEN_DTYPE = {"float32": "fp32", "mixed_bfloat16": "bf16",
                      "mixed_float16": "fp16"}
_TIME_HISTORY = re.compile(
    r"TimeHistory: ([\d.]+) seconds, [\d.]+ examples/second between steps "
    r"(\d+) and (\d+)")


def strategy_for(replicas):
    """One device, or `replicas` logical-CPU replicas of MirroredStrategy."""
    if replicas == 1:
        return tf.distribute.OneDeviceStrategy("/cpu:0")
    return distribute.logical_cpu_strategy(replicas)


def packed_strategy(workers, pack_workers):
    """(The strategy of our peers with `workers` packed onto fewer
    replicas, or None if `pack_workers` does not pack them; why).

    Raises:
        ValueError: for a bad `pack_workers` setting.
    """
    replicas, reason = worker_packing.choose(pack_workers, workers,
                                             where="--")
    if replicas == workers:
        return None, reason
    strategy = distribute.logical_cpu_strategy(replicas)
    worker_packing.register(strategy, workers // replicas, reason)
    return strategy, reason


def check_precisions(precisions):
    """`precisions` as a list, each one of `precision.PRECISIONS`.

    Raises:
        ValueError: for none, a repeated or an unknown precision.
    """
    precisions = list(precisions)
    if not precisions:
        raise ValueError(f"no precision given; choose from "
                         f"{precision_lib.PRECISIONS}")
    for name in precisions:
        if name not in precision_lib.PRECISIONS:
            raise ValueError(f"unknown precision {name!r}; choose from "
                             f"{precision_lib.PRECISIONS}")
    if len(set(precisions)) < len(precisions):
        raise ValueError(f"precisions repeated in {precisions}")
    return precisions


def ours(strategy, spec, per_replica_batch, steps, jit_compile,
         precision="float32"):
    """Returns (a runner timing one loop of our Trainer in seconds per
    step, the model), in `precision` as `train_lib.run` applies it."""
    bench = benchmark.SyntheticTrainer(
        strategy, spec["model_fn"], per_replica_batch, spec["image_shape"],
        spec["num_classes"], jit_compile=jit_compile, precision=precision)
    bench.time_loop(steps)  # Trace, compile, warm up.
    return lambda: bench.time_loop(steps) / steps, bench.model


def keras_fit(strategy, spec, per_replica_batch, steps, jit_compile,
              precision="float32"):
    """Returns a runner timing `model.fit` of `steps` steps: s per step.

    The model is built under the `keras.mixed_precision` policy
    `precision`; for `mixed_float16` Keras' `compile` wraps the optimizer in
    its `LossScaleOptimizer` itself (`auto_scale_loss`).
    """
    global_batch = per_replica_batch * strategy.num_replicas_in_sync
    with strategy.scope():
        with precision_lib.dtype_policy(precision):
            model = spec["model_fn"](input_shape=spec["image_shape"],
                                     num_classes=spec["num_classes"])
        model.compile(
            optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=jit_compile)
    images = tf.random.stateless_normal([global_batch, *spec["image_shape"]],
                                        seed=[0, 0])
    labels = tf.random.stateless_uniform(
        [global_batch], seed=[1, 0], maxval=spec["num_classes"],
        dtype=tf.int32)
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
    stamps = StepTimes()

    def run():
        model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0,
                  callbacks=[stamps])
        return stamps.seconds_per_step()

    run()  # Trace, compile, warm up.
    return run


class StepTimes(keras.callbacks.Callback):
    """Seconds per step of one `fit` call, from the ends of its batches.

    The first batch's end starts the clock, so fit's per-call set-up (a
    new iterator, the callbacks) is not counted: in fit's favour.
    """

    def __init__(self):
        super().__init__()
        self.ends = []

    def on_train_begin(self, logs=None):
        self.ends = []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())

    def seconds_per_step(self):
        """Mean seconds between the ends of the first and last batches.

        Raises:
            ValueError: if fit ran fewer than 2 steps.
        """
        if len(self.ends) < 2:
            raise ValueError("timing fit needs at least 2 steps")
        return (self.ends[-1] - self.ends[0]) / (len(self.ends) - 1)


def model_garden_command(batch, steps, precision="float32",
                         enable_xla=False):
    """The command line of Model Garden's ResNet-50 custom loop (without
    --model_dir): synthetic data, one device, a per-step log, `precision`
    as its `--dtype` flag (`MODEL_GARDEN_DTYPE`; fp16 brings its own loss
    scaling), its step compiled by XLA if `enable_xla`."""
    return [
        sys.executable, "-m",
        "official.legacy.image_classification.resnet.resnet_ctl_imagenet_main",
        "--use_synthetic_data", f"--batch_size={batch}",
        f"--train_steps={steps}", "--steps_per_loop=1",
        "--distribution_strategy=one_device", "--num_gpus=0", "--skip_eval",
        "--log_steps=1", "--data_format=channels_last",
        f"--dtype={MODEL_GARDEN_DTYPE[precision]}",
        f"--enable_xla={str(enable_xla).lower()}"]


def model_garden(batch, steps, warmup_steps=2, precision="float32",
                 enable_xla=False):
    """Returns a runner of Model Garden's ResNet-50 custom loop (s/step).

    Each call is a fresh process (`model_garden_command`) that trains
    `warmup_steps + steps` steps; the seconds of the steps after the
    warm-up count.
    """
    command = model_garden_command(batch, warmup_steps + steps, precision,
                                   enable_xla)

    def run():
        with tempfile.TemporaryDirectory() as model_dir:
            result = subprocess.run(command + [f"--model_dir={model_dir}"],
                                    capture_output=True, text=True,
                                    check=False)
        if result.returncode:
            raise RuntimeError(
                f"Model Garden's loop failed ({result.returncode}):\n"
                f"{result.stderr[-3000:]}")
        return seconds_per_step_from_log(result.stderr + result.stdout,
                                         warmup_steps)
    return run


def seconds_per_step_from_log(log, warmup_steps):
    """Mean seconds per step of the TimeHistory lines after the warm-up.

    Raises:
        ValueError: if `log` has no such line after `warmup_steps`.
    """
    seconds = steps = 0
    for match in _TIME_HISTORY.finditer(log):
        first, last = int(match.group(2)), int(match.group(3))
        if first >= warmup_steps:
            seconds += float(match.group(1))
            steps += last - first
    if not steps:
        raise ValueError(f"no TimeHistory line after step {warmup_steps} in "
                         f"the log:\n{log[-2000:]}")
    return seconds / steps


def gflop_per_image(model):
    """Training FLOP of one image: 3 x forward multiply-adds x 2."""
    return 3 * flops.multiply_adds(model) * 2 / 1e9


def milliseconds(seconds):
    """A table cell of `seconds` in ms: whole ms from 1 s up (no exponent)."""
    ms = seconds * 1000
    return round(ms) if ms >= 1000 else ms


def summarize(seconds_per_step, global_batch, gflop, peaks,
              reference="ours"):
    """Table rows and JSON records: images/s, ratios, shares of the peaks.

    Args:
        seconds_per_step: dict peer -> list of seconds per step (one per
            round).
        global_batch: images per step.
        gflop: training GFLOP per image.
        peaks: {"matmul": GFLOP/s, "conv": GFLOP/s} measured in the
            precision's compute dtype.
        reference: the peer every ratio is taken of (ours / peer).

    Returns:
        (rows, records): rows for `tables.markdown_table`, and a dict peer
        -> {seconds_per_step, median_s_per_step, images_per_second, gflops,
        peak_fraction (of the matmul peak), conv_peak_fraction,
        ours_speedup}.
    """
    medians = {peer: benchmark.median(values)
               for peer, values in seconds_per_step.items()}
    records, rows = {}, []
    for peer, seconds in medians.items():
        rate = global_batch / seconds
        record = {
            "seconds_per_step": seconds_per_step[peer],
            "median_s_per_step": seconds,
            "images_per_second": rate,
            "gflops": rate * gflop,
            "peak_fraction": rate * gflop / peaks["matmul"],
            "conv_peak_fraction": rate * gflop / peaks["conv"],
            "ours_speedup": seconds / medians[reference],
        }
        records[peer] = record
        rows.append([peer, milliseconds(seconds), rate, record["gflops"],
                     f"{100 * record['peak_fraction']:.0f}%",
                     f"{100 * record['conv_peak_fraction']:.0f}%",
                     f"{record['ours_speedup']:.2f}x"])
    return rows, records


def speed_ratios(records_by_precision):
    """Each later precision's speed over the first's, per peer in both.

    Args:
        records_by_precision: dict precision -> peer -> record of
            `summarize` (the first precision is the base).

    Returns:
        dict "<precision>/<base>" -> peer -> base median s/step over the
        precision's (above 1: faster than the base).
    """
    base, *others = list(records_by_precision)
    first = records_by_precision[base]
    return {f"{name}/{base}": {
        peer: first[peer]["median_s_per_step"] / record["median_s_per_step"]
        for peer, record in records_by_precision[name].items()
        if peer in first} for name in others}


def ratio_table(records_by_precision):
    """Markdown: per peer, ms/step in each precision and the speed ratios
    of `speed_ratios`."""
    names = list(records_by_precision)
    ratios = speed_ratios(records_by_precision)
    peers = [peer for peer in records_by_precision[names[0]]
             if all(peer in records_by_precision[name] for name in names)]
    header = (["peer"] + [f"{name} ms/step" for name in names]
              + [f"{key} speed" for key in ratios])
    rows = [[peer] + [milliseconds(records_by_precision[name][peer][
        "median_s_per_step"]) for name in names]
            + [f"{ratios[key][peer]:.2f}x" for key in ratios]
            for peer in peers]
    return tables.markdown_table(header, rows)


def default_peers(model_name):
    """Every peer; Model Garden's loop only for its model, ResNet-50."""
    return (["ours", "ours_xla", "keras_fit", "keras_fit_xla"]
            + (["model_garden", "model_garden_xla"]
               if model_name == "resnet50" else []))


def _runner(peer, strategy, spec, per_replica, steps, precision):
    """(runner of `peer` in `precision`, our model or None).

    Raises:
        ValueError: for a peer not in `default_peers('resnet50')`.
    """
    if peer not in default_peers("resnet50"):
        raise ValueError(f"unknown peer {peer!r}; the peers are "
                         f"{default_peers('resnet50')}")
    jit = peer.endswith("_xla")
    if peer.startswith("ours"):
        return ours(strategy, spec, per_replica, steps, jit, precision)
    if peer.startswith("keras_fit"):
        return keras_fit(strategy, spec, per_replica, steps,
                         True if jit else "auto", precision), None
    return model_garden(per_replica * strategy.num_replicas_in_sync, steps,
                        precision=precision, enable_xla=jit), None


def failure_reason(error):
    """One line of why a peer failed: the error's type and the last line of
    its message that is not TensorFlow's traceback framing ("Graph
    execution error:", "Detected at node", "File ...", "[[node]]")."""
    framing = ("Graph execution error", "Detected at node", "File ", "[[",
               "Cf. ")
    lines = [line.strip() for line in str(error).splitlines()]
    reasons = [line for line in lines
               if line and not line.startswith(framing)]
    return f"{type(error).__name__}: {(reasons or lines or [''])[-1]}"


DEFAULT_THREADS_SUFFIX = "_default_threads"


def peer_runner(model_name, peer, precision, batch=None, steps=None,
                replicas=None):
    """The runner of one peer (s/step per call), for a process of its own
    (`child_peer`; its threads set before by the caller).

    Raises:
        ValueError: for an unknown model, peer or precision.
    """
    check_precisions([precision])
    spec = dict(MODELS[model_name])
    spec["replicas"] = replicas or spec["replicas"]
    per_replica = (batch // spec["replicas"] if batch
                   else spec["per_replica_batch"])
    return _runner(peer, strategy_for(spec["replicas"]), spec, per_replica,
                   steps or spec["steps"], precision)[0]


def _check_default_threads_peers(peers, child_command):
    """Raises ValueError for an unknown peer, or peers without a command."""
    for peer in peers:
        if peer not in default_peers("resnet50"):
            raise ValueError(f"unknown peer {peer!r}; the peers are "
                             f"{default_peers('resnet50')}")
    if peers and child_command is None:
        raise ValueError("default_threads_peers needs a child_command")


def _child_runners(peers, precisions, child_command):
    """(precision, peer + DEFAULT_THREADS_SUFFIX) -> `child_peer.ChildPeer`
    of `child_command(peer, precision)`, and the failures (same keys)."""
    runners, failures = {}, {}
    for precision in precisions:
        for peer in peers:
            key = (precision, peer + DEFAULT_THREADS_SUFFIX)
            try:
                runners[key] = child_peer.ChildPeer(
                    child_command(peer, precision))
            except RuntimeError as error:
                failures[key] = failure_reason(error)
    return runners, failures


def _runners(peers, strategy, spec, per_replica, steps, precisions,
             ours_strategy=None):
    """(runners: (precision, peer) -> runner, a model of ours or None,
    failures: (precision, peer) -> why); our peers run under
    `ours_strategy` if given (packed workers)."""
    runners, model, failures = {}, None, {}
    for precision in precisions:
        for peer in peers:
            peer_strategy = (ours_strategy if ours_strategy is not None
                             and peer.startswith("ours") else strategy)
            try:
                runner, built = _runner(peer, peer_strategy, spec,
                                        per_replica, steps, precision)
            except (tf.errors.OpError, RuntimeError) as error:
                # A peer that cannot run this configuration is reported,
                # not hidden (Keras' fit with XLA under a multi-device
                # strategy).
                failures[precision, peer] = failure_reason(error)
                continue
            runners[precision, peer] = runner
            model = model or built
    return runners, model, failures


def peak_dtypes(precisions):
    """float32 and bfloat16, and the compute dtype of any other precision."""
    dtypes = ["float32", "bfloat16"]
    for name in precisions:
        dtype = peaks_lib.COMPUTE_DTYPE[name]
        if dtype not in dtypes:
            dtypes.append(dtype)
    return dtypes


def _failures_of(failures, precision):
    """peer -> why, of the (precision, peer) -> why `failures`."""
    return {peer: why for (name, peer), why in failures.items()
            if name == precision}


def _peer_table(precision, rows, peaks, reference, failures):
    """One precision's heading line, peer table and failed peers."""
    dtype = peaks_lib.COMPUTE_DTYPE[precision]
    header = ["peer", "ms/step", "images/s", "GFLOP/s",
              f"of {dtype} matmul peak", f"of {dtype} conv peak",
              f"{reference} speed-up"]
    return (f"{precision} (computing in {dtype}; peaks: matmul "
            f"{peaks['matmul']:.1f}, conv {peaks['conv']:.1f} GFLOP/s)\n\n"
            + tables.markdown_table(header, rows)
            + _failure_lines(precision, failures))


def _failure_lines(precision, failures):
    """A paragraph per peer of `failures` (peer -> why)."""
    return "".join(f"\n\n{peer} ({precision}) could not run: {why[:300]}"
                   for peer, why in failures.items())


def _by_precision(precisions, results, failures, global_batch, gflop, peaks):
    """Summaries of each precision's peers against its dtype's peaks.

    Returns:
        (sections: markdown per precision that has a measured peer, and the
        ratio table if there are several; dict precision -> {compute_dtype,
        reference, peers: records of `summarize`, failed_peers}).
    """
    sections, by_precision = [], {}
    for precision in precisions:
        measured = {peer: values for (name, peer), values in results.items()
                    if name == precision}
        failed = _failures_of(failures, precision)
        if not measured:
            sections.append(f"{precision}: no peer ran"
                            + _failure_lines(precision, failed))
            continue
        dtype = peaks_lib.COMPUTE_DTYPE[precision]
        dtype_peaks = {kernel: peaks[kernel][dtype] for kernel in peaks}
        reference = ("ours_xla" if "ours_xla" in measured
                     else next(iter(measured)))
        rows, records = summarize(measured, global_batch, gflop,
                                  dtype_peaks, reference)
        sections.append(_peer_table(precision, rows, dtype_peaks, reference,
                                    failed))
        by_precision[precision] = {"compute_dtype": dtype,
                                   "reference": reference, "peers": records,
                                   "failed_peers": failed}
    records = {name: entry["peers"] for name, entry in by_precision.items()}
    if len(records) > 1:
        sections.append(f"Speed of each precision over {next(iter(records))}"
                        f" (same rounds)\n\n{ratio_table(records)}")
    return sections, by_precision


def run_benchmark(model_name, rounds, batch=None, steps=None, peers=None,
                  replicas=None, precisions=("float32",),
                  peak_matmul_size=peaks_lib.MATMUL_SIZE,
                  peak_conv_batch=peaks_lib.CONV_SHAPE["batch"], peak_runs=5,
                  cpu_threads=cpu_threads_lib.DEFAULT, pack_workers=False,
                  default_threads_peers=(), child_command=None):
    """Measures the peers of `model_name` in each precision, interleaved.

    Each round runs the peak kernels (matmul and conv in float32, bfloat16
    and any other compute dtype asked for), then every peer in every
    precision: the ratios between precisions are measured side by side.

    Args:
        model_name: A key of MODELS.
        rounds: Rounds per peer.
        batch: Global batch; None for the model's.
        steps: Steps per timing; None for the model's.
        peers: Peers to run; None for `default_peers`.
        replicas: Replicas; None for the model's.
        precisions: Names of `precision.PRECISIONS`; the first is the base
            of the speed ratios and of the payload's top-level fields.
        peak_matmul_size: The peak matmul's side (2048; smaller for tests).
        peak_conv_batch: The peak convolution's batch (16; 1 for tests).
        peak_runs: Timed runs of each peak kernel per round (the median
            counts).
        cpu_threads: TensorFlow's thread counts for every peer of this
            process (`cpu_threads.choose`: 'default', 'auto' for what the
            project's runs choose, or (inter_op, intra_op)); Model Garden's
            loop, a process of its own, keeps TensorFlow's default.
        pack_workers: run our peers' `replicas` simulated workers on fewer
            replicas with ghost BN per worker (`worker_packing.choose`:
            True, False, or 'auto' as the project's runs choose); the other
            peers keep one replica per worker (Keras' fit has no ghost BN).
        default_threads_peers: peers also measured each in a process of its
            own with TensorFlow's default threads, as their users run them
            (`child_peer`), named peer + DEFAULT_THREADS_SUFFIX: beside
            `cpu_threads='auto'`, the project's choice against theirs in
            the same rounds.
        child_command: callable(peer, precision) -> the argv of such a
            process (the tool's `--serve_peer`); needed with
            `default_threads_peers`.

    Returns:
        (table: markdown with a heading line, the CPU's bfloat16 line, the
        peaks, a table per precision with the peers that could not run, and
        the speed ratios between precisions; payload: every measurement, for
        `benchmark.write_json`: the first precision's in the top-level
        fields as before, every precision's in `by_precision`).

    Raises:
        ValueError: for an unknown or repeated precision, or unknown peer.
    """
    precisions = check_precisions(precisions)
    _check_default_threads_peers(default_threads_peers, child_command)
    spec = dict(MODELS[model_name])
    spec["replicas"] = replicas or spec["replicas"]
    per_replica = (batch // spec["replicas"] if batch
                   else spec["per_replica_batch"])
    global_batch = per_replica * spec["replicas"]
    steps = steps or spec["steps"]
    cpu_threads_lib.configure(cpu_threads, spec["replicas"],
                              where="--")  # Before TF starts.
    threads = cpu_threads_lib.chosen()
    strategy = strategy_for(spec["replicas"])
    ours_strategy, packing = packed_strategy(spec["replicas"], pack_workers)
    conv_shape = dict(peaks_lib.CONV_SHAPE, batch=peak_conv_batch)
    kernels = peaks_lib.peak_kernels(peak_dtypes(precisions),
                                     peak_matmul_size, conv_shape, peak_runs)
    runners, model, failures = _runners(
        peers or default_peers(model_name), strategy, spec, per_replica,
        steps, precisions, ours_strategy)
    children, child_failures = _child_runners(
        default_threads_peers, precisions, child_command)
    runners.update(children)
    failures.update(child_failures)
    if model is None:
        model = spec["model_fn"](input_shape=spec["image_shape"],
                                 num_classes=spec["num_classes"])
    try:
        results = benchmark.interleaved({**kernels, **runners}, rounds)
    finally:
        for child in children.values():
            child.close()
    peaks = peaks_lib.median_peaks({key: results.pop(key) for key in kernels})
    gflop = gflop_per_image(model)
    sections, by_precision = _by_precision(precisions, results, failures,
                                           global_batch, gflop, peaks)
    capability = peaks_lib.cpu_capability()
    table = "\n\n".join([
        f"{model_name}: global batch {global_batch} "
        f"({spec['replicas']} replica(s)), {steps} steps per timing, "
        f"{rounds} rounds, median; training {gflop:.3g} GFLOP/image; "
        f"CPU {machine.cpu_model()}; threads per op "
        f"{threads['intra_op'] or 'all'} ({threads['reason']}); ours: "
        f"{packing}",
        peaks_lib.peaks_table(peaks, capability, peak_matmul_size,
                              conv_shape),
        *sections])
    base = by_precision.get(precisions[0], {})
    records = {name: entry["peers"] for name, entry in by_precision.items()}
    payload = {"model": model_name, "global_batch": global_batch,
               "replicas": spec["replicas"], "steps": steps,
               "rounds": rounds, "gflop_per_image": gflop,
               "matmul_peak_gflops": peaks["matmul"]["float32"],
               "reference": base.get("reference"),
               "peers": base.get("peers", {}),
               "failed_peers": _failures_of(failures, precisions[0]),
               "precision": precisions[0], "precisions": precisions,
               "by_precision": by_precision,
               "speed_ratios": (speed_ratios(records) if len(records) > 1
                                else {}),
               "peaks_gflops": peaks,
               "peak_shapes": {"matmul_size": peak_matmul_size,
                               "conv": conv_shape, "runs": peak_runs},
               "cpu_bfloat16": capability,
               "threads": threads,
               "ours_packing": {"replicas": (
                   ours_strategy.num_replicas_in_sync if ours_strategy
                   else spec["replicas"]), "reason": packing}}
    return table, payload
