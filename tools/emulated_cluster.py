"""Runs a multi-worker job on an emulated cluster of this machine (issue 21).

Usage (as root):
    python tools/emulated_cluster.py --hosts 2 --rate_mbit 1000 -- \
        tf-lbsgd --gin_file=experiments/fashion_mnist_default \
        --gin_file=distribute/multi_worker_ring --model_dir=runs/two_hosts

Builds `tf_lbsgd.netns_cluster.EmulatedCluster`: one network namespace per
host at 10.77.0.<i + 1>, joined by a bridge, each link shaped to
--rate_mbit both ways. Then starts --workers_per_host workers per host with
`ip netns exec`, each with the TF_CONFIG of the cluster's addresses, and
prefixes their output "[worker i]" as tools/launch_local.py does; SIGTERM and
Ctrl-C are forwarded, the first failure stops the others. The namespaces,
links and shaping are removed on exit, on failure and on Ctrl-C.
Exit code: the workers' (0, 75 preempted, 1 failed), 2 for a bad request or
where namespaces cannot be made (not root), naming why.
"""

import sys

from absl import app
from absl import flags

from tf_lbsgd import launch
from tf_lbsgd import netns_cluster

flags.DEFINE_integer("hosts", 2, "Emulated hosts (network namespaces).")
flags.DEFINE_integer("workers_per_host", 1, "Workers on each host.")
flags.DEFINE_float("rate_mbit", None, "Each link's rate in Mbit/s, both "
                   "ways (tc tbf); unset: unshaped.")
flags.DEFINE_integer("cores_per_worker", None, "Pin each worker to this "
                     "many cores and threads, as tools/launch_local.py "
                     "--cores-per-worker does; unset: no pinning.")
flags.DEFINE_float("grace_seconds", 10.0, "Seconds between SIGTERM and "
                   "SIGKILL when stopping the workers.")
flags.DEFINE_string("name", None, "Prefix of the namespaces (at most 8 "
                    "letters and digits); default lb<pid>.")


def main(argv):
    values = flags.FLAGS
    try:
        command = launch.resolve_command(argv[1:])
        netns_cluster.check_available()
        cluster = netns_cluster.EmulatedCluster(
            values.hosts, values.rate_mbit, values.name)
    except (ValueError, netns_cluster.NamespacesUnavailable) as e:
        launch.say(f"error: {e}", sys.stderr, netns_cluster.Placement.tool)
        return 2
    if values.cores_per_worker is not None and values.cores_per_worker < 1:
        launch.say(f"error: --cores_per_worker must be >= 1, got "
                   f"{values.cores_per_worker}", sys.stderr,
                   netns_cluster.Placement.tool)
        return 2
    if values.workers_per_host < 1:
        launch.say(f"error: --workers_per_host must be >= 1, got "
                   f"{values.workers_per_host}", sys.stderr,
                   netns_cluster.Placement.tool)
        return 2
    try:
        with cluster:
            rate = (f"{values.rate_mbit:g} Mbit/s links"
                    if values.rate_mbit else "unshaped links")
            launch.say(f"{values.hosts} hosts ({cluster.name}-h0..), "
                       f"{rate}", tool=netns_cluster.Placement.tool)
            return launch.run(command,
                              values.hosts * values.workers_per_host,
                              cores_per_worker=values.cores_per_worker,
                              grace_seconds=values.grace_seconds,
                              placement=netns_cluster.Placement(cluster))
    except netns_cluster.ClusterError as e:
        launch.say(f"error: {e}", sys.stderr, netns_cluster.Placement.tool)
        return 2


if __name__ == "__main__":
    app.run(main)
