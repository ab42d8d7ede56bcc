"""Threads per op for simulated workers on one CPU: `cpu_threads = 'auto'`.

k logical CPU devices (`distribute.logical_cpu_strategy`, the default job's
8 simulated workers) share the host's cores. TensorFlow's default gives
every op all the cores (intra-op threads) and runs as many ops side by side
(inter-op threads); with k replicas of a small model every op is small, and
splitting it costs more than it gains. One thread per op, ops of different
replicas side by side, was measured (`tools/bench_train_step.py
--model=small --cpu_threads=default`, then `auto`: ours, 8 replicas x 32
on 2 cores):

- Intel Xeon with AMX (2026-12-03): 126 -> 93 ms/step in float32 (XLA off,
  the 'auto' choice there), 109 -> 62 ms in mixed_bfloat16, and with XLA
  122 -> 105 ms.
- AMD EPYC without bfloat16 units: not measured, so TensorFlow's default
  is kept there.

'auto' therefore takes one thread per op where it was measured faster: a
CPU with AMX or AVX512_BF16 (`analysis.machine`) running several logical
replicas; TensorFlow's default anywhere else.
"""

import os

from absl import logging
import tensorflow as tf

from tf_lbsgd.analysis import machine

AUTO = "auto"
DEFAULT = "default"
_chosen = {"inter_op": 0, "intra_op": 0,
           "reason": "TensorFlow's default (not set)"}


def choose(setting, num_replicas, cpuinfo_text=None,
           where="distribute.build_strategy."):
    """Resolves a `cpu_threads` setting for `num_replicas` logical CPUs.

    Args:
        setting: 'auto', 'default' (TensorFlow's: 0 and 0, all cores per
            op) or a pair (inter_op, intra_op) of thread counts, 0 for
            TensorFlow's default of either.
        num_replicas: the logical CPU replicas the host will run.
        cpuinfo_text: /proc/cpuinfo's text; None to read this host's.
        where: the setting's prefix in the error message.

    Returns:
        (inter_op, intra_op, reason): the counts (0: TensorFlow's default)
        and one line saying why.

    Raises:
        ValueError: for another setting.
    """
    if setting == DEFAULT:
        return 0, 0, "set: TensorFlow's default"
    if setting == AUTO:
        if num_replicas < 2:
            return 0, 0, "auto: one replica, TensorFlow's default"
        if cpuinfo_text is None:
            cpuinfo_text = machine.read_cpuinfo()
        if machine.bfloat16_capability(cpuinfo_text)["native"]:
            inter = min(num_replicas, os.cpu_count() or 1)
            return inter, 1, (f"auto: one thread per op, {inter} ops side "
                              f"by side for {num_replicas} replicas on a CPU "
                              f"with bfloat16 units, where it measured "
                              f"faster")
        return 0, 0, ("auto: TensorFlow's default (one thread per op was "
                      "not measured on this kind of CPU)")
    if (isinstance(setting, (tuple, list)) and len(setting) == 2
            and all(isinstance(count, int) and not isinstance(count, bool)
                    and count >= 0 for count in setting)):
        return int(setting[0]), int(setting[1]), f"set: {tuple(setting)}"
    raise ValueError(f"{where}cpu_threads must be '{AUTO}', '{DEFAULT}' or "
                     f"a pair (inter_op, intra_op) of thread counts >= 0, "
                     f"got {setting!r}")


def parse_flag(text):
    """A `--cpu_threads` flag's setting: 'auto', 'default' or
    'inter_op,intra_op' as a pair of ints.

    Raises:
        ValueError: naming the flag and its value otherwise.
    """
    setting = text
    if text not in (AUTO, DEFAULT):
        try:
            setting = tuple(int(count) for count in text.split(","))
        except ValueError:
            pass  # Refused with the setting's own message below.
    choose(setting, 1, where="--")
    return setting


def apply(inter_op, intra_op, reason):
    """Sets TensorFlow's thread counts and remembers the choice for
    `chosen()`. They can only be set before TensorFlow initialises; after,
    the counts it runs with are kept, and `chosen()` says so (a speed
    setting does not fail a run).
    """
    try:
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
    except RuntimeError:
        current = (tf.config.threading.get_inter_op_parallelism_threads(),
                   tf.config.threading.get_intra_op_parallelism_threads())
        if current != (inter_op, intra_op):
            reason = (f"{reason}; not applied: TensorFlow was initialised "
                      f"before, with {current}")
            logging.warning("cpu_threads: %s", reason)
            inter_op, intra_op = current
    _chosen.update(inter_op=inter_op, intra_op=intra_op, reason=reason)


def configure(setting, num_replicas, where="distribute.build_strategy."):
    """`apply` what `choose` resolves `setting` to for `num_replicas`.

    Raises:
        ValueError: for a bad setting (`choose`).
    """
    apply(*choose(setting, num_replicas, where=where))


def chosen():
    """The thread counts in force and why: a dict of `inter_op`,
    `intra_op` (0: TensorFlow's default) and `reason`."""
    return dict(_chosen)
