"""k simulated workers on fewer replicas: `pack_workers` (R9, issue 19).

On one host's CPU, k simulated workers are k logical-CPU replicas, each
running every op of the model on its n examples. With more workers than
cores the replicas only take turns on the cores; packing k/r workers onto
each of r replicas (r the cores, or the largest divisor of k below them)
computes the same thing with r times fewer, larger ops: each replica takes
the batches of its k/r workers and normalises each worker's n examples with
their own moments (ghost batch norm, `models.layers.WorkerBatchNorm` with
`group_size = n`), so R9's per-worker statistics hold; the loss is still
divided by kn and the gradients summed over all examples
(tests/test_equivalence.py trains both ways to the same weights).

Measured (`tools/bench_train_step.py --model=small`, the default job's
ResNet-8, kn = 256 = 8 workers x 32, one thread per op, XLA off, same run):

- Intel Xeon with AMX (2 cores, 2026-12-03): 8 replicas 86 ms/step, the 8
  workers packed onto 2 replicas 76 ms in float32; 55 -> 43 ms in
  mixed_bfloat16.
- AMD EPYC without bfloat16 units: not measured, so 'auto' does not pack
  there.
"""

import os
import weakref

from tf_lbsgd.analysis import machine
from tf_lbsgd.models import layers

AUTO = "auto"
_packed = weakref.WeakKeyDictionary()


def replicas_for(num_workers, cores):
    """The largest divisor of `num_workers` that is at most `cores` (>= 1)."""
    return max(r for r in range(1, min(num_workers, max(cores, 1)) + 1)
               if num_workers % r == 0)


def choose(setting, num_workers, cores=None, cpuinfo_text=None,
           where="distribute.build_strategy."):
    """Resolves a `pack_workers` setting for `num_workers` CPU workers.

    Args:
        setting: True (pack onto as many replicas as cores), False (one
            replica per worker) or 'auto' (pack where it measured faster:
            a CPU with bfloat16 units).
        num_workers: k, the simulated workers.
        cores: the host's cores; None for `os.cpu_count()`.
        cpuinfo_text: /proc/cpuinfo's text; None to read this host's.
        where: the setting's prefix in the error message.

    Returns:
        (replicas, reason): the logical-CPU replicas to build (k when not
        packing) and one line saying why.

    Raises:
        ValueError: for a setting other than True, False or 'auto'.
    """
    if not (isinstance(setting, bool) or setting == AUTO):
        raise ValueError(f"{where}pack_workers must be True, False or "
                         f"'{AUTO}', got {setting!r}")
    if setting is False:
        return num_workers, "set: one replica per worker"
    cores = cores or os.cpu_count() or 1
    replicas = replicas_for(num_workers, cores)
    how = "set" if setting is True else AUTO
    if replicas == num_workers:
        return num_workers, (f"{how}: {num_workers} worker(s) fit "
                             f"{cores} core(s), nothing to pack")
    if setting == AUTO:
        if cpuinfo_text is None:
            cpuinfo_text = machine.read_cpuinfo()
        if not machine.bfloat16_capability(cpuinfo_text)["native"]:
            return num_workers, ("auto: one replica per worker (packing "
                                 "was not measured on this kind of CPU)")
    return replicas, (f"{how}: {num_workers} workers packed onto "
                      f"{replicas} replicas ({num_workers // replicas} "
                      f"each, ghost batch norm per worker) for {cores} "
                      f"core(s)" + (", where it measured faster"
                                    if setting == AUTO else ""))


def parse_flag(text):
    """A `--pack_workers` flag's setting: 'auto', or True / False from
    'true' / 'false'.

    Raises:
        ValueError: for other text.
    """
    settings = {"auto": AUTO, "true": True, "false": False}
    if text.lower() not in settings:
        raise ValueError(f"--pack_workers must be auto, true or false, got "
                         f"{text!r}")
    return settings[text.lower()]


def register(strategy, workers_per_replica, reason):
    """Records that each replica of `strategy` runs `workers_per_replica`
    simulated workers (`workers_per_replica`, `describe` read it)."""
    _packed[strategy] = {"workers_per_replica": int(workers_per_replica),
                         "reason": reason}


def describe(strategy):
    """{workers, replicas, workers_per_replica, reason} of `strategy` (one
    worker per replica unless `register`ed)."""
    record = _packed.get(strategy, {"workers_per_replica": 1,
                                    "reason": "one replica per worker"})
    replicas = strategy.num_replicas_in_sync
    return {"workers": replicas * record["workers_per_replica"],
            "replicas": replicas, **record}


def workers_per_replica(strategy):
    """The simulated workers each replica of `strategy` runs."""
    return describe(strategy)["workers_per_replica"]


def group_batch_norm(model, per_worker_batch):
    """Normalises each worker's examples on its own in a packed replica.

    Sets `group_size = per_worker_batch` on every `WorkerBatchNorm` of
    `model` that has none (one that has a group size keeps it: its groups
    lie within each worker's examples).

    Raises:
        ValueError: if `model` has another batch normalisation layer (its
            statistics would span the workers of a replica, not R9's), or
            a group size that does not divide `per_worker_batch`.
    """
    for layer in model._flatten_layers(include_self=False):  # pylint: disable=protected-access
        if isinstance(layer, layers.WorkerBatchNorm):
            if layer.group_size is None:
                layer.group_size = per_worker_batch
            elif per_worker_batch % layer.group_size:
                raise ValueError(
                    f"layer {layer.name}: group_size {layer.group_size} "
                    f"does not divide the per-worker batch "
                    f"{per_worker_batch}")
        elif "BatchNorm" in type(layer).__name__:
            raise ValueError(
                f"layer {layer.name} ({type(layer).__name__}) normalises "
                f"over the whole replica's batch, so packed workers would "
                f"share its statistics; use "
                f"tf_lbsgd.models.layers.WorkerBatchNorm or set "
                f"distribute.build_strategy.pack_workers = False")
