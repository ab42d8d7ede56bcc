"""Seconds of the allreduce collectives of Goyal et al. 2017, Sec. 4.

Hockney's alpha-beta model as Thakur, Rabenseifner and Gropp 2005 apply it:
a message of m bytes costs alpha + m beta seconds, reducing m bytes costs
m gamma; every worker sends and receives at once (full duplex) and a step
lasts as long as its largest message.
"""

import dataclasses
import math

GBIT_PER_SECOND = 1e9 / 8  # Bytes per second of 1 Gbit/s.
MIB = 2**20
US = 1e-6

RING = "ring"
HALVING_DOUBLING = "halving_doubling"
ALGORITHMS = (RING, HALVING_DOUBLING)


def ring_allreduce_seconds(nbytes, workers, alpha, beta, gamma=0.0):
    """Seconds of a ring ("bucket") allreduce: reduce-scatter then allgather.

        T = 2 (p - 1) alpha + 2 (p - 1)/p n beta + (p - 1)/p n gamma.

    Args:
        nbytes: n, bytes of the vector every worker contributes.
        workers: p, the number of workers (p = 1 costs nothing).
        alpha: seconds of latency per message.
        beta: seconds per byte sent (1 / bandwidth).
        gamma: seconds per byte reduced (summed).

    Returns:
        The seconds, a float.

    Raises:
        ValueError: `workers` is not a positive integer.
    """
    p = _check_workers(workers)
    if p == 1:
        return 0.0
    share = (p - 1) / p * nbytes
    return 2 * (p - 1) * alpha + 2 * share * beta + share * gamma


def halving_doubling_allreduce_seconds(nbytes, workers, alpha, beta,
                                       gamma=0.0):
    """Seconds of a recursive halving-doubling allreduce (Rabenseifner).

    For p a power of two: T = 2 log2(p) alpha + 2 (p - 1)/p n beta
    + (p - 1)/p n gamma. Otherwise (Thakur et al. 2005) the r = p - p'
    workers beyond the largest power of two p' first hand their vector to a
    partner and get the result back: 2 alpha + 2 n beta + n gamma more.

    Args and returns as `ring_allreduce_seconds`.
    """
    p = _check_workers(workers)
    if p == 1:
        return 0.0
    power = 2 ** int(math.floor(math.log2(p)))
    share = (power - 1) / power * nbytes
    seconds = (2 * int(math.log2(power)) * alpha + 2 * share * beta
               + share * gamma)
    if power < p:
        seconds += 2 * alpha + 2 * nbytes * beta + nbytes * gamma
    return seconds


def allreduce_seconds(algorithm, nbytes, workers, alpha, beta, gamma=0.0):
    """Seconds of `algorithm` ("ring" or "halving_doubling")."""
    if algorithm == RING:
        return ring_allreduce_seconds(nbytes, workers, alpha, beta, gamma)
    if algorithm == HALVING_DOUBLING:
        return halving_doubling_allreduce_seconds(nbytes, workers, alpha,
                                                  beta, gamma)
    raise ValueError(f"unknown algorithm {algorithm!r}; expected one of "
                     f"{ALGORITHMS}")


def pipelined_chain_seconds(nbytes, workers, alpha, beta, gamma=0.0):
    """Seconds of NCCL's chunked chain reduce (or broadcast, gamma = 0) over
    the g GPUs of a server: T = (g - 1) alpha + n beta + n gamma.

    Args and returns as `ring_allreduce_seconds`.
    """
    g = _check_workers(workers)
    if g == 1:
        return 0.0
    return (g - 1) * alpha + nbytes * beta + nbytes * gamma


def alpha_for_speedup(nbytes, workers, beta, speedup, gamma=0.0):
    """The alpha at which halving-doubling is `speedup` x faster than ring
    over `workers` (a power of two); inf if no alpha is."""
    shared = ring_allreduce_seconds(nbytes, workers, 0.0, beta, gamma)
    denominator = 2 * (workers - 1) - speedup * 2 * math.log2(workers)
    if denominator <= 0:
        return math.inf
    return (speedup - 1) * shared / denominator


@dataclasses.dataclass(frozen=True)
class Cluster:
    """Servers of `gpus_per_server` GPUs joined by a network.

    Attributes:
        gpus_per_server: g, GPUs sharing one server (NVLink / PCIe).
        inter_alpha: seconds of latency per message between servers.
        inter_beta: seconds per byte through one server's network interface.
        intra_alpha: seconds of latency per message inside a server.
        intra_beta: seconds per byte over one intra-server link.
        gamma: seconds per byte reduced (summed) on a GPU.
    """
    gpus_per_server: int
    inter_alpha: float
    inter_beta: float
    intra_alpha: float
    intra_beta: float
    gamma: float = 0.0

    def servers(self, gpus):
        """Servers holding `gpus` GPUs (whole servers beyond the first)."""
        if gpus > self.gpus_per_server and gpus % self.gpus_per_server:
            raise ValueError(f"{gpus} GPUs do not fill servers of "
                             f"{self.gpus_per_server}")
        return max(1, gpus // self.gpus_per_server)


def hierarchical_allreduce_seconds(nbytes, gpus, cluster, algorithm):
    """Seconds of the paper's three-phase allreduce of `nbytes` per GPU.

    Each server chain-reduces its GPUs' buffers, the servers allreduce them
    with `algorithm`, each server chain-broadcasts the result; one after
    another. g = 1 gives a flat allreduce; one server, reduce + broadcast.

    Args:
        nbytes: bytes of every GPU's vector.
        gpus: GPUs taking part (whole servers beyond the first).
        cluster: the `Cluster`.
        algorithm: the inter-server algorithm, one of `ALGORITHMS`.

    Returns:
        The seconds, a float.
    """
    local = min(gpus, cluster.gpus_per_server)
    servers = cluster.servers(gpus)
    reduce_seconds = pipelined_chain_seconds(
        nbytes, local, cluster.intra_alpha, cluster.intra_beta,
        cluster.gamma)
    inter_seconds = allreduce_seconds(
        algorithm, nbytes, servers, cluster.inter_alpha, cluster.inter_beta,
        cluster.gamma)
    broadcast_seconds = pipelined_chain_seconds(
        nbytes, local, cluster.intra_alpha, cluster.intra_beta)
    return reduce_seconds + inter_seconds + broadcast_seconds


def _check_workers(workers):
    if int(workers) != workers or workers < 1:
        raise ValueError(f"workers must be a positive integer, got "
                         f"{workers!r}")
    return int(workers)
