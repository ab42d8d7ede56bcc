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

from absl import app
from absl import flags

from tf_lbsgd import cluster

_HOSTS = flags.DEFINE_list("hosts", None, "host:port of every worker.")
_INDEX = flags.DEFINE_integer("index", None, "This worker's index in --hosts.")
_SLURM = flags.DEFINE_bool("slurm", False, "Read hosts and index from SLURM.")
_PORT = flags.DEFINE_integer("port", 12345, "Port of every worker (--slurm).")


def _tf_config():
    """The TF_CONFIG dict the flags ask for."""
    if _SLURM.value:
        return cluster.for_slurm(os.environ, _PORT.value)
    for flag in (_HOSTS, _INDEX):
        if flag.value is None:
            raise ValueError(f"--{flag.name} is required (or use --slurm)")
    return cluster.for_hosts(_HOSTS.value, _INDEX.value)


def main(argv):
    del argv
    try:
        config = _tf_config()
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    print(json.dumps(config))

if __name__ == "__main__":
    app.run(main)
