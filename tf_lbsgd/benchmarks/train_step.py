"""Train-step throughput: ours vs tf-models-official's loop vs Keras fit.

`resnet50`: ResNet-50 v1.5, synthetic 224x224x3 data, float32, a global
batch of 16 on one device by default. Peers, each measured once per round,
round-robin in one process (after a warm-up that traces and compiles):

- `ours`: `tf_lbsgd.trainer.Trainer` (orbit loop of `steps` steps inside
  one tf.function, explicit allreduce, MomentumSGD), XLA off, and
  `ours_xla` with the forward/backward compiled (`jit_compile`);
- `keras_fit`: Keras 3 `model.fit` on the same model and data, SGD with
  momentum, compiled with the defaults (`jit_compile='auto'`, which is off
  on a CPU-only machine), and `keras_fit_xla` (jit_compile=True);
- `model_garden`: `official.legacy.image_classification.resnet.
  resnet_ctl_imagenet_main` (its custom loop, tf_keras) in a subprocess,
  timed by its own per-step TimeHistory log after the first steps.

`small`: the default job's ResNet-8 (width 32) on 28x28x1 inputs, k = 8
logical-CPU replicas of MirroredStrategy x n = 32 (kn = 256), ours vs
`model.fit` under the same strategy.

The achieved rate is also given in GFLOP/s (3 x forward multiply-adds x 2
per image: forward, and backward for activations and weights) against the
fp32 matmul GFLOP/s measured in the same run, the practical peak.
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
from tf_lbsgd import distribute
from tf_lbsgd.analysis import tables
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
_TIME_HISTORY = re.compile(
    r"TimeHistory: ([\d.]+) seconds, [\d.]+ examples/second between steps "
    r"(\d+) and (\d+)")


def strategy_for(replicas):
    """One device, or `replicas` logical-CPU replicas of MirroredStrategy."""
    if replicas == 1:
        return tf.distribute.OneDeviceStrategy("/cpu:0")
    return distribute.logical_cpu_strategy(replicas)


def ours(strategy, spec, per_replica_batch, steps, jit_compile):
    """Returns (a runner timing one loop of our Trainer in seconds per
    step, the model)."""
    bench = benchmark.SyntheticTrainer(
        strategy, spec["model_fn"], per_replica_batch, spec["image_shape"],
        spec["num_classes"], jit_compile=jit_compile)
    bench.time_loop(steps)  # Trace, compile, warm up.
    return lambda: bench.time_loop(steps) / steps, bench.model


def keras_fit(strategy, spec, per_replica_batch, steps, jit_compile):
    """Returns a runner timing `model.fit` of `steps` steps: s per step."""
    global_batch = per_replica_batch * strategy.num_replicas_in_sync
    with strategy.scope():
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


def model_garden(batch, steps, warmup_steps=2):
    """Returns a runner of Model Garden's ResNet-50 custom loop (s/step).

    Each call is a fresh process that trains `warmup_steps + steps` steps
    with a per-step log; the seconds of the steps after the warm-up count.
    """
    command = [
        sys.executable, "-m",
        "official.legacy.image_classification.resnet.resnet_ctl_imagenet_main",
        "--use_synthetic_data", f"--batch_size={batch}",
        f"--train_steps={warmup_steps + steps}", "--steps_per_loop=1",
        "--distribution_strategy=one_device", "--num_gpus=0", "--skip_eval",
        "--log_steps=1", "--data_format=channels_last", "--dtype=fp32"]

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


def summarize(seconds_per_step, global_batch, gflop, peak_gflops,
              reference="ours"):
    """Table rows and JSON records: images/s, ratios, share of the peak.

    Args:
        seconds_per_step: dict peer -> list of seconds per step (one per
            round).
        global_batch: images per step.
        gflop: training GFLOP per image.
        peak_gflops: the measured matmul GFLOP/s.
        reference: the peer every ratio is taken of (ours / peer).

    Returns:
        (rows, records): rows for `tables.markdown_table`, and a dict peer
        -> {median_s_per_step, images_per_second, gflops, peak_fraction,
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
            "peak_fraction": rate * gflop / peak_gflops,
            "ours_speedup": seconds / medians[reference],
        }
        records[peer] = record
        rows.append([peer, seconds * 1000, rate, record["gflops"],
                     f"{100 * record['peak_fraction']:.0f}%",
                     f"{record['ours_speedup']:.2f}x"])
    return rows, records


def default_peers(model_name):
    """Every peer; Model Garden's loop only for its model, ResNet-50."""
    return (["ours", "ours_xla", "keras_fit", "keras_fit_xla"]
            + (["model_garden"] if model_name == "resnet50" else []))


def _runners(peers, strategy, spec, per_replica, steps):
    """(runners, model of ours or None, failures: peer -> why) of `peers`."""
    runners, model, failures = {}, None, {}
    for peer in peers:
        jit = peer.endswith("_xla")
        try:
            if peer.startswith("ours"):
                runners[peer], model = ours(strategy, spec, per_replica,
                                            steps, jit)
            elif peer.startswith("keras_fit"):
                runners[peer] = keras_fit(strategy, spec, per_replica, steps,
                                          True if jit else "auto")
            elif peer == "model_garden":
                runners[peer] = model_garden(
                    per_replica * strategy.num_replicas_in_sync, steps)
            else:
                raise ValueError(f"unknown peer {peer!r}; the peers are "
                                 f"{default_peers('resnet50')}")
        except (tf.errors.OpError, RuntimeError) as error:
            # A peer that cannot run this configuration is reported, not
            # hidden (Keras' fit with XLA under a multi-device strategy).
            failures[peer] = f"{type(error).__name__}: {error}".splitlines()[0]
    return runners, model, failures


def run_benchmark(model_name, rounds, batch=None, steps=None, peers=None,
                  replicas=None):
    """Measures the peers of `model_name`, interleaved.

    Args:
        model_name: A key of MODELS.
        rounds: Rounds per peer.
        batch: Global batch; None for the model's.
        steps: Steps per timing; None for the model's.
        peers: Peers to run; None for `default_peers`.
        replicas: Replicas; None for the model's.

    Returns:
        (table: markdown with a heading line and the peers that could not
        run, payload: every measurement, for `benchmark.write_json`).
    """
    spec = dict(MODELS[model_name])
    spec["replicas"] = replicas or spec["replicas"]
    strategy = strategy_for(spec["replicas"])
    per_replica = (batch // spec["replicas"] if batch
                   else spec["per_replica_batch"])
    global_batch = per_replica * spec["replicas"]
    steps = steps or spec["steps"]
    peak = benchmark.matmul_gflops()
    runners, model, failures = _runners(peers or default_peers(model_name),
                                        strategy, spec, per_replica, steps)
    if model is None:
        model = spec["model_fn"](input_shape=spec["image_shape"],
                                 num_classes=spec["num_classes"])
    results = benchmark.interleaved(runners, rounds)
    peak = max(peak, benchmark.matmul_gflops())
    gflop = gflop_per_image(model)
    reference = "ours_xla" if "ours_xla" in results else next(iter(results))
    rows, records = summarize(results, global_batch, gflop, peak, reference)
    header = ["peer", "ms/step", "images/s", "GFLOP/s",
              "of matmul peak", f"{reference} speed-up"]
    table = (f"{model_name}: global batch {global_batch} "
             f"({spec['replicas']} replica(s)), {steps} steps per timing, "
             f"{rounds} rounds, median; training {gflop:.3g} GFLOP/image; "
             f"fp32 matmul peak {peak:.1f} GFLOP/s\n\n"
             + tables.markdown_table(header, rows)
             + "".join(f"\n\n{peer} could not run: {why[:300]}"
                       for peer, why in failures.items()))
    payload = {"model": model_name, "global_batch": global_batch,
               "replicas": spec["replicas"], "steps": steps,
               "rounds": rounds, "gflop_per_image": gflop,
               "matmul_peak_gflops": peak, "reference": reference,
               "peers": records, "failed_peers": failures,
               "threads": {"intra_op": tf.config.threading
                           .get_intra_op_parallelism_threads(),
                           "inter_op": tf.config.threading
                           .get_inter_op_parallelism_threads()}}
    return table, payload
