"""The peers of the train-step benchmark, and how each is run.

Train-step throughput: ours vs tf-models-official's loop vs Keras fit.

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

`tf_lbsgd.benchmarks.train_step` times them, interleaved, and makes the
tables.
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
from tf_lbsgd.benchmarks import child_peer
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
    if replicas == workers:  # Built only when packed.
        return None, reason
    return distribute.simulated_workers(workers, pack_workers,
                                        where="--"), reason


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


def default_peers(model_name):
    """Every peer; Model Garden's loop only for its model, ResNet-50."""
    return (["ours", "ours_xla", "keras_fit", "keras_fit_xla"]
            + (["model_garden", "model_garden_xla"]
               if model_name == "resnet50" else []))


def runner(peer, strategy, spec, per_replica, steps, precision):
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
    return runner(peer, strategy_for(spec["replicas"]), spec, per_replica,
                  steps or spec["steps"], precision)[0]


def serve_peer(model_name, peer, precision, batch, steps, replicas,
               cpu_threads, lines, write):
    """Be the process of one peer timed from another (`child_peer.serve`
    over `lines` and `write`), with `cpu_threads` applied first."""
    cpu_threads_lib.configure(
        cpu_threads, replicas or MODELS[model_name]["replicas"], where="--")
    child_peer.serve(peer_runner(model_name, peer, precision, batch, steps,
                                 replicas), lines, write)
