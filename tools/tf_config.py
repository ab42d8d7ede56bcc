"""Prints the TF_CONFIG of one worker of a multi-worker cluster.

    python tools/tf_config.py --hosts=node1:12345,node2:12345 --index=1
    export TF_CONFIG=$(python tools/tf_config.py --hosts=... --index=$RANK)

Under SLURM, `--slurm` reads the node list (SLURM_JOB_NODELIST, expanded by
tf_lbsgd.hostlist as `scontrol show hostnames` does) and this node's index
(SLURM_NODEID) from the environment, with the port `--port` (default 12345)
instead (one worker per node; TensorFlow's `SlurmClusterResolver` is the
alternative when the strategy is built in code).
"""

import json
import os
import re

from absl import app
from absl import flags

from tf_lbsgd import hostlist

_HOSTS = flags.DEFINE_list("hosts", None, "host:port of every worker.")
_INDEX = flags.DEFINE_integer("index", None, "This worker's index in --hosts.")
_SLURM = flags.DEFINE_bool("slurm", False, "Read hosts and index from SLURM.")
_PORT = flags.DEFINE_integer("port", 12345, "Port of every worker (--slurm).")


def tf_config(hosts, index):
    """Returns the TF_CONFIG dict of worker `index` among `hosts`.

    Raises:
        ValueError: for an empty host list, a host without a port, or an
            index out of range.
    """
    if not hosts:
        raise ValueError("no hosts given")
    for host in hosts:
        if not re.fullmatch(r"[^:\s]+:\d+", host):
            raise ValueError(f"host {host!r} is not of the form name:port")
    if not 0 <= index < len(hosts):
        raise ValueError(f"index {index} is out of range for {len(hosts)} "
                         f"hosts")
    return {"cluster": {"worker": list(hosts)},
            "task": {"type": "worker", "index": index}}


def slurm_tf_config(env, port):
    """TF_CONFIG from SLURM_JOB_NODELIST and SLURM_NODEID (one worker/node).

    Raises:
        ValueError: naming the SLURM variable that is missing, or the
            malformed node list (see tf_lbsgd.hostlist.expand).
    """
    for name in ("SLURM_JOB_NODELIST", "SLURM_NODEID"):
        if name not in env:
            raise ValueError(f"{name} is not set: not inside a SLURM job?")
    hosts = [f"{node}:{port}"
             for node in hostlist.expand(env["SLURM_JOB_NODELIST"])]
    return tf_config(hosts, int(env["SLURM_NODEID"]))


def main(argv):
    del argv
    try:
        if _SLURM.value:
            config = slurm_tf_config(os.environ, _PORT.value)
        else:
            if _INDEX.value is None:
                raise ValueError("--index is required (or use --slurm)")
            config = tf_config(_HOSTS.value, _INDEX.value)
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    print(json.dumps(config))


if __name__ == "__main__":
    app.run(main)
