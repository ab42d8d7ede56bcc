"""Prints the TF_CONFIG of one worker of a multi-worker cluster.

    tf-lbsgd-tf-config --hosts=node1:12345,node2:12345 --index=1
    export TF_CONFIG=$(tf-lbsgd-tf-config --hosts=... --index=$RANK)

(`python tools/tf_config.py ...` in a source checkout is the same.) Under
SLURM, `--slurm` reads the node list (SLURM_JOB_NODELIST, expanded by
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
from tf_lbsgd.scripts import usage

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


def _parse_flags(argv):
    """absl's flag parsing, after `usage.exit_if_help`."""
    usage.exit_if_help(argv[1:])
    return app.parse_flags_with_usage(argv)


def main(argv):
    del argv
    try:
        config = _tf_config()
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    print(json.dumps(config))


def run():
    """Console-script entry point (`tf-lbsgd-tf-config`)."""
    usage.adopt_as_main(__doc__, (_HOSTS, _INDEX, _SLURM, _PORT))
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
