"""A profile of our training step by kind of op, per precision (issue 19).

Builds the benchmark's `SyntheticTrainer` (`step_peers.MODELS`, one
precision at a time), warms it up, times a loop, then traces one loop of
`steps` steps with `tf.profiler.experimental` and sums the trace's op self
times by kind (`analysis.op_profile`). The trace stays under `logdir` for
TensorBoard's Profile tab.
"""

import os

import tensorflow as tf

from tf_lbsgd import benchmark
from tf_lbsgd.analysis import op_profile
from tf_lbsgd.benchmarks import step_peers


def profile_step(model_name, precision, steps, logdir, batch=None,
                 replicas=None):
    """Traces `steps` training steps of our Trainer.

    Args:
        model_name: a key of `step_peers.MODELS`.
        precision: a Keras precision policy name.
        steps: steps in the timed and in the traced loop.
        logdir: the trace goes to `logdir`/plugins/profile/.
        batch: global batch (default: the model's).
        replicas: replicas (default: the model's).

    Returns:
        dict: `precision`, `step_ms` (the untraced loop's), `traced_ms`,
        `trace` (the xplane path) and `kinds` (`op_profile.breakdown`).
    """
    spec = step_peers.MODELS[model_name]
    replicas = replicas or spec["replicas"]
    per_replica = (batch // replicas if batch else spec["per_replica_batch"])
    bench = benchmark.SyntheticTrainer(
        step_peers.strategy_for(replicas), spec["model_fn"], per_replica,
        spec["image_shape"], spec["num_classes"], precision=precision)
    bench.time_loop(steps)  # Trace, compile, warm up.
    step_ms = 1000.0 * bench.time_loop(steps) / steps
    os.makedirs(logdir, exist_ok=True)
    tf.profiler.experimental.start(logdir)
    try:
        traced_ms = 1000.0 * bench.time_loop(steps) / steps
    finally:
        tf.profiler.experimental.stop()
    trace = op_profile.find_trace(logdir)
    kinds = op_profile.breakdown(op_profile.op_self_times(trace), steps,
                                 update_scope=bench.optimizer.name)
    return {"precision": precision, "step_ms": step_ms,
            "traced_ms": traced_ms, "trace": trace, "kinds": kinds}


def report(profiles):
    """A markdown section per profile (`profile_step`'s results)."""
    sections = []
    for profile in profiles:
        sections.append(
            f"{profile['precision']} (untraced loop {profile['step_ms']:.0f} "
            f"ms/step; trace: {profile['trace']})\n\n"
            + op_profile.breakdown_table(profile["kinds"],
                                         profile["traced_ms"]))
    return "\n\n".join(sections)
