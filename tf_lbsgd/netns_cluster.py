"""An emulated cluster on one machine: hosts in network namespaces (issue 21).

Every host of `EmulatedCluster` is a Linux network namespace with one
interface, ``eth0``, at 10.77.0.<i + 1>/24, joined by a veth pair to a
bridge in a namespace of its own (the switch). With ``rate_mbit`` each link
is shaped with ``tbf`` in both directions (the host's egress and the
switch port's), so a collective between two hosts crosses two shaped links
of that rate; latency cannot be added (the kernel has no ``netem`` here).
Nothing is created in the machine's own namespace: deleting the namespaces
deletes the bridge and every veth, so `stop` leaves nothing behind, and it
runs on exit, on failure and on Ctrl-C (use the cluster as a context
manager). Needs root (``ip netns add``); `check_available` says why not.

A process runs on host i with ``ip netns exec``: `EmulatedCluster.wrap`.
This module imports neither TensorFlow nor absl's flags.
"""

import os
import shutil
import subprocess

SUBNET = "10.77.0"
INTERFACE = "eth0"
BRIDGE = "br0"
# tbf's bucket: enough for veth's 64 KiB offloaded segments at any rate.
BURST_BYTES = 256 * 1024
QUEUE_LATENCY_MS = 100


class NamespacesUnavailable(RuntimeError):
    """This machine or user cannot create network namespaces."""


class ClusterError(RuntimeError):
    """A command that builds or changes the emulated cluster failed."""


def _ip(*args, check=True):
    """Runs ``ip args``; returns its stdout.

    Raises:
        ClusterError: naming the command and its error, if it fails and
            `check` is set.
    """
    result = subprocess.run(["ip", *args], capture_output=True, text=True,
                            check=False)
    if check and result.returncode:
        raise ClusterError(f"'ip {' '.join(args)}' failed: "
                           f"{result.stderr.strip() or result.returncode}")
    return result.stdout


def check_available():
    """Raises `NamespacesUnavailable` with the reason if namespaces cannot
    be made here: not root, no ``ip`` or ``tc``, or the kernel refuses."""
    if os.geteuid() != 0:
        raise NamespacesUnavailable(
            "network namespaces need root (ip netns add); this process runs "
            f"as uid {os.geteuid()}")
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            raise NamespacesUnavailable(
                f"'{tool}' is not installed (Debian: apt-get install "
                f"iproute2)")
    probe = f"lbprobe{os.getpid()}"
    result = subprocess.run(["ip", "netns", "add", probe],
                            capture_output=True, text=True, check=False)
    if result.returncode:
        raise NamespacesUnavailable(
            f"'ip netns add' is refused here: {result.stderr.strip()}")
    _ip("netns", "del", probe, check=False)


def unavailable_reason():
    """None where namespaces can be made here, else why not (for a test's
    skip)."""
    try:
        check_available()
    except NamespacesUnavailable as e:
        return str(e)
    return None


def namespaces():
    """The names of the machine's network namespaces."""
    return [line.split()[0] for line in _ip("netns", "list").splitlines()
            if line.strip()]


class EmulatedCluster:
    """``hosts`` namespaces joined by a bridge, links of ``rate_mbit``.

    Args:
        hosts: the number of hosts, 1 to 250.
        rate_mbit: each link's rate in Mbit/s, both ways; None: unshaped.
        name: the prefix of the namespaces, at most 8 characters (default
            ``lb<pid>``), so that two clusters can run at once.

    Raises:
        ValueError: a host count or rate out of range, a bad name.
    """

    def __init__(self, hosts, rate_mbit=None, name=None):
        if not 1 <= hosts <= 250:
            raise ValueError(f"hosts must be 1 to 250, got {hosts}")
        if rate_mbit is not None and not rate_mbit > 0:
            raise ValueError(f"rate_mbit must be > 0 or None, got "
                             f"{rate_mbit}")
        name = name or f"lb{os.getpid() % 1000000}"
        if len(name) > 8 or not name.isalnum():
            raise ValueError(f"name must be at most 8 letters and digits, "
                             f"got {name!r}")
        self.hosts = hosts
        self.rate_mbit = rate_mbit
        self.name = name
        self._created = []  # Namespaces this object made, to delete.

    @property
    def switch(self):
        """The namespace of the bridge."""
        return f"{self.name}-sw"

    def namespace(self, index):
        """The namespace of host `index`."""
        return f"{self.name}-h{index}"

    def address(self, index):
        """The IPv4 address of host `index`."""
        return f"{SUBNET}.{index + 1}"

    def _port(self, index):
        """The switch's end of host `index`'s link."""
        return f"{self.name}p{index}"

    def start(self):
        """Builds the namespaces, links, addresses and shaping.

        Raises:
            ClusterError: if a step fails; what was built is removed first.
        """
        try:
            self._add_namespace(self.switch)
            _ip("-n", self.switch, "link", "set", "lo", "up")
            _ip("-n", self.switch, "link", "add", BRIDGE, "type", "bridge")
            _ip("-n", self.switch, "link", "set", BRIDGE, "up")
            for index in range(self.hosts):
                self._add_host(index)
            if self.rate_mbit is not None:
                self.set_rate(self.rate_mbit)
        except BaseException:
            self.stop()
            raise
        return self

    def _add_namespace(self, namespace):
        _ip("netns", "add", namespace)
        self._created.append(namespace)

    def _add_host(self, index):
        host, port = self.namespace(index), self._port(index)
        self._add_namespace(host)
        # Created inside the namespaces: nothing in the machine's own.
        _ip("link", "add", f"{self.name}h{index}", "netns", host, "type",
            "veth", "peer", "name", port, "netns", self.switch)
        _ip("-n", host, "link", "set", f"{self.name}h{index}", "name",
            INTERFACE)
        _ip("-n", host, "addr", "add", f"{self.address(index)}/24", "dev",
            INTERFACE)
        for device in ("lo", INTERFACE):
            _ip("-n", host, "link", "set", device, "up")
        _ip("-n", self.switch, "link", "set", port, "master", BRIDGE)
        _ip("-n", self.switch, "link", "set", port, "up")

    def _tc(self, namespace, device, *args):
        result = subprocess.run(
            ["ip", "netns", "exec", namespace, "tc", "qdisc", *args, "dev",
             device, *(["root"] if args[0] != "show" else [])],
            capture_output=True, text=True, check=False)
        if result.returncode:
            raise ClusterError(f"tc qdisc {' '.join(args)} on {device} in "
                               f"{namespace} failed: {result.stderr.strip()}")
        return result.stdout

    def _shape(self, namespace, device, rate_mbit):
        if rate_mbit is None:
            subprocess.run(["ip", "netns", "exec", namespace, "tc", "qdisc",
                            "del", "dev", device, "root"],
                           capture_output=True, check=False)
            return
        subprocess.run(
            ["ip", "netns", "exec", namespace, "tc", "qdisc", "replace",
             "dev", device, "root", "tbf", "rate", f"{rate_mbit}mbit",
             "burst", str(BURST_BYTES), "latency", f"{QUEUE_LATENCY_MS}ms"],
            capture_output=True, text=True, check=True)

    def set_rate(self, rate_mbit):
        """Shapes every link to `rate_mbit` both ways (None: unshaped)."""
        for index in range(self.hosts):
            try:
                self._shape(self.namespace(index), INTERFACE, rate_mbit)
                self._shape(self.switch, self._port(index), rate_mbit)
            except subprocess.CalledProcessError as e:
                raise ClusterError(
                    f"tc cannot shape host {index}'s link to {rate_mbit} "
                    f"Mbit/s: {e.stderr.strip()}") from None
        self.rate_mbit = rate_mbit

    def qdisc(self, index):
        """`tc qdisc show` of host `index`'s interface (for the tests)."""
        return self._tc(self.namespace(index), INTERFACE, "show")

    def set_link(self, index, up):
        """Takes host `index`'s link down (its switch port) or up again."""
        _ip("-n", self.switch, "link", "set", self._port(index),
            "up" if up else "down")

    def wrap(self, index, argv):
        """The command line that runs `argv` on host `index`."""
        return ["ip", "netns", "exec", self.namespace(index), *argv]

    def leftovers(self):
        """The namespaces this cluster made that still exist."""
        existing = set(namespaces())
        return [ns for ns in self._created if ns in existing]

    def stop(self):
        """Deletes every namespace the cluster made (and so its bridge,
        links and shaping); harmless to call again. Returns what is left:
        [] unless the kernel refused."""
        for ns in reversed(self._created):
            _ip("netns", "del", ns, check=False)
        left = self.leftovers()
        self._created = left
        return left

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()


# The port of the first worker on each host: namespaces are fresh, so it is
# free; a host's next workers take the next ports.
WORKER_PORT = 20000


class Placement:
    """`launch.run`'s placement on an emulated cluster: worker i on host
    i % hosts (round robin), reached at that host's address."""

    tool = "emulated_cluster"
    # Across links, each pack's all-reduce must start during backprop: with
    # one inter-op thread TensorFlow starts none before the backward pass
    # ends. Pinned to one core, 2 threads took ResNet-50's 2-host step at
    # 1 Gbit/s from 2672 to 2113 ms (README, overlap section).
    min_interop_threads = 2

    def __init__(self, cluster):
        self.cluster = cluster

    def addresses(self, workers):
        """The `address:port` of each worker, for TF_CONFIG."""
        hosts = self.cluster.hosts
        return [f"{self.cluster.address(i % hosts)}:{WORKER_PORT + i // hosts}"
                for i in range(workers)]

    def wrap(self, index, command):
        """Worker `index`'s command, run in its host's namespace."""
        return self.cluster.wrap(index % self.cluster.hosts, command)
