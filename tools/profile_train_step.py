"""Where our training step's time goes, by kind of op, per precision.

Usage:
    python tools/profile_train_step.py --model=resnet50 \
        --precision=float32,mixed_bfloat16 --logdir=/tmp/step_profile

For each --precision: our Trainer on synthetic data (as in
`tools/bench_train_step.py`), a timed loop, then a profiler trace of
--steps steps summed by kind of op (`tf_lbsgd.benchmarks.step_profile`).
Prints a table per precision; the traces stay under --logdir/<precision>
for TensorBoard's Profile tab; --out_json gets the breakdowns and the
machine. Needs the profile plugin (`pip install '.[profile]'`).
"""

import os

from absl import app
from absl import flags

from tf_lbsgd import benchmark
from tf_lbsgd import cpu_threads
from tf_lbsgd.benchmarks import step_profile
from tf_lbsgd.benchmarks import step_peers

_MODEL = flags.DEFINE_enum("model", "resnet50", list(step_peers.MODELS),
                          "Which model.")
_PRECISION = flags.DEFINE_list("precision", ["float32", "mixed_bfloat16"],
                               "Precisions to profile, one after the other.")
_STEPS = flags.DEFINE_integer("steps", 3, "Steps in the traced loop.")
_BATCH = flags.DEFINE_integer("batch", None, "Global batch (default per "
                                             "model).")
_REPLICAS = flags.DEFINE_integer("replicas", None,
                                 "Replicas (default per model).")
_CPU_THREADS = flags.DEFINE_string(
    "cpu_threads", "default",
    "TensorFlow's threads: 'default', 'auto' (what the project's runs "
    "choose for the replicas on this CPU) or 'inter_op,intra_op'.")
_LOGDIR = flags.DEFINE_string("logdir", "runs/step_profile",
                              "Traces go to <logdir>/<precision>.")
_OUT_JSON = flags.DEFINE_string("out_json", None, "Write the breakdowns "
                                                  "here.")


def main(argv):
    """Profiles each precision; prints the tables; writes the JSON."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        precisions = step_peers.check_precisions(_PRECISION.value)
    except ValueError as error:
        raise app.UsageError(f"--precision: {error}") from error
    if _STEPS.value < 1:
        raise app.UsageError(f"--steps must be at least 1, got {_STEPS.value}")
    try:
        threads = cpu_threads.parse_flag(_CPU_THREADS.value)
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    replicas = _REPLICAS.value or step_peers.MODELS[_MODEL.value]["replicas"]
    cpu_threads.configure(threads, replicas, where="--")
    profiles = [step_profile.profile_step(
        _MODEL.value, precision, _STEPS.value,
        os.path.join(_LOGDIR.value, precision), batch=_BATCH.value,
        replicas=replicas)
        for precision in precisions]
    print(f"threads: {cpu_threads.chosen()}\n")
    print(step_profile.report(profiles))
    benchmark.write_json(_OUT_JSON.value, {"model": _MODEL.value,
                                           "threads": cpu_threads.chosen(),
                                           "profiles": profiles})
    benchmark.exit_without_teardown()


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    app.run(main)
