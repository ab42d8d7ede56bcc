"""TF_CONFIG, the cluster of a multi-worker job: validated, and written.

`validate_tf_config` is the one check of a TF_CONFIG: the CLI runs it before
it imports TensorFlow (a bad one fails at once), `distribute.build_strategy`
before it builds a strategy, and the TF_CONFIGs written here, for a host
list or a SLURM job, pass through it. This module does not import
TensorFlow.
"""

import json
import os
import re

from tf_lbsgd import hostlist

# A task's address: a host (a name, an IPv4 address or a bracketed IPv6 one)
# and a port.
_ADDRESS = re.compile(r"\S+:\d+")
_TASK_EXAMPLE = '{"type": "worker", "index": 0}'


def validate_tf_config(env=None):
    """Parses and checks TF_CONFIG; returns the dict, or {} if unset.

    Args:
        env: the environment to read TF_CONFIG from; None for os.environ.

    Returns:
        The parsed TF_CONFIG, or {} when it is unset or blank.

    Raises:
        ValueError: naming what is wrong (bad JSON, not an object, no
            cluster, a job that is not a list of host:port addresses, a task
            that is not an object, a task type not in the cluster, an index
            that is not an integer or out of range).
    """
    raw = (env if env is not None else os.environ).get("TF_CONFIG", "")
    if not raw.strip():
        return {}
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON ({e}): {raw!r}") from e
    if not isinstance(config, dict):
        raise ValueError(f"TF_CONFIG must be a JSON object with 'cluster' and "
                         f"'task', got {raw!r}")
    cluster = config.get("cluster")
    if not isinstance(cluster, dict) or not cluster:
        raise ValueError(f"TF_CONFIG has no 'cluster' dict: {raw!r}")
    for job, addresses in cluster.items():
        if not (isinstance(addresses, list) and addresses and all(
                isinstance(a, str) and _ADDRESS.fullmatch(a)
                for a in addresses)):
            raise ValueError(f"TF_CONFIG cluster job {job!r} must be a "
                             f"non-empty list of 'host:port' addresses, got "
                             f"{addresses!r}")
    task = config.get("task", {})
    if not isinstance(task, dict):
        raise ValueError(f"TF_CONFIG 'task' must be an object like "
                         f"{_TASK_EXAMPLE}, got {task!r}")
    kind, index = task.get("type"), task.get("index", 0)
    if kind not in cluster:
        raise ValueError(f"TF_CONFIG task type {kind!r} is not in the cluster "
                         f"jobs {sorted(cluster)}")
    if not isinstance(index, int) or isinstance(index, bool):
        raise ValueError(f"TF_CONFIG task index must be an integer, got "
                         f"{index!r}")
    if not 0 <= index < len(cluster[kind]):
        raise ValueError(f"TF_CONFIG task index {index} is out of range for "
                         f"{len(cluster[kind])} {kind!r} tasks")
    return config


def for_hosts(hosts, index):
    """The TF_CONFIG of worker `index` of a cluster of workers on `hosts`.

    Args:
        hosts: the "host:port" address of every worker, worker 0 (the
            chief) first.
        index: this worker's position in `hosts`.

    Returns:
        The TF_CONFIG dict, checked by `validate_tf_config`.

    Raises:
        ValueError: for no hosts, an address without a port, or an index
            out of range (`validate_tf_config`'s messages).
    """
    config = {"cluster": {"worker": list(hosts)},
              "task": {"type": "worker", "index": index}}
    return validate_tf_config({"TF_CONFIG": json.dumps(config)})


def for_slurm(env, port):
    """TF_CONFIG from SLURM_JOB_NODELIST and SLURM_NODEID (one worker/node).

    Args:
        env: the environment of the SLURM task.
        port: the port of every worker.

    Returns:
        The TF_CONFIG dict of this node's worker.

    Raises:
        ValueError: naming the SLURM variable that is missing, or the
            malformed node list (see `hostlist.expand`).
    """
    for name in ("SLURM_JOB_NODELIST", "SLURM_NODEID"):
        if name not in env:
            raise ValueError(f"{name} is not set: not inside a SLURM job?")
    hosts = [f"{node}:{port}"
             for node in hostlist.expand(env["SLURM_JOB_NODELIST"])]
    return for_hosts(hosts, int(env["SLURM_NODEID"]))


def worker_count(tf_config):
    """The chief and worker tasks of a `validate_tf_config` dict (0 if {})."""
    cluster = tf_config.get("cluster", {})
    return sum(len(cluster.get(job, ())) for job in ("chief", "worker"))


def is_chief_role(cluster, task_type, task_id):
    """True for the task that writes summaries, configs and metrics.

    That is the `chief` task, else worker 0; without a cluster, this task.

    Args:
        cluster: the cluster spec as a dict of job names to addresses.
        task_type: this task's job name, None for none.
        task_id: this task's index in its job.
    """
    if not cluster:
        return True
    return task_type in (None, "chief") or (
        task_type == "worker" and int(task_id or 0) == 0
        and "chief" not in cluster)


def is_chief_task(tf_config):
    """`is_chief_role` of a `validate_tf_config` dict, before any strategy
    exists: the CLI's chief takes the model_dir lock."""
    task = tf_config.get("task", {})
    return is_chief_role(tf_config.get("cluster", {}), task.get("type"),
                         task.get("index", 0))
