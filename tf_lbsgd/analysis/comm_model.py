"""Alpha-beta communication cost model of large-minibatch synchronous SGD.

Models the gradient allreduce of Goyal et al. 2017 ("Accurate, Large
Minibatch SGD: Training ImageNet in 1 Hour", Sec. 4 "Communication"):
ring and recursive halving-doubling allreduce, the paper's hierarchical
three-phase allreduce (intra-server reduce, inter-server allreduce,
intra-server broadcast) and its overlap with backprop per gradient bucket.
tools/comm_model.py is its command line.

Scenarios (`analyse` computes them, `report` prints one table each):
  paper  ResNet-50, 8 P100 per server, 50 Gbit/s Ethernet, 8..256 GPUs.
         The only quantity fitted to the paper is the time outside
         backprop (`solve_forward_seconds`), so that one 8-GPU server takes
         0.26 s x 0.90 per iteration; the 256-GPU efficiency is predicted.
  h100   ResNet-50, 8 H100 per host, 400 Gbit/s per host, 8..max_gpus
         GPUs, ring vs halving-doubling, with and without overlap.
  local  With a calibration only: alpha and beta fitted to a measured
         2-worker allreduce sweep (`calibrate`), 1 and 2 workers.

Cost model (Thakur, Rabenseifner and Gropp 2005; Hockney's alpha-beta):
sending a message of m bytes costs alpha + m * beta seconds, reducing m
bytes costs m * gamma; every worker sends and receives at the same time
(full duplex), a step lasts as long as its largest message.

Calibration file (`read_calibration`): a JSON object whose key
"allreduce_sweep" holds a list of {"bytes": int, "workers": int,
"seconds": float}; optional keys "step_seconds" (measured compute seconds
of one training step on one worker, for the local scenario),
"gradient_bytes" (bytes allreduced per step, default ResNet-50's fp32
gradients) and "images_per_worker" (per step, default 1: the images/s
column is then steps/s x workers); other keys are ignored.

Known gap: with its default constants the model gives about 97-98%
efficiency at 256 GPUs for halving-doubling, above the paper's ~90%; it
holds only communication (alpha, beta, gamma) and its overlap with
backprop. Stragglers (each iteration waits for the slowest of p GPUs),
contention of communication with compute (PCIe, host staging, memory
bandwidth) and imperfect overlap are not modelled; `paper_checks` gives
the seconds per iteration the paper's 90% implies beyond the model, and
`paper_sensitivity` the efficiency for other latencies and bucket sizes.

Pure Python and numpy; `write_plot` imports matplotlib when called.
"""

import dataclasses
import json
import math

import numpy as np

from tf_lbsgd.analysis import tables
from tf_lbsgd.models import resnet_spec

# --- units and the paper's numbers (docs/paper.md, "Systems facts") -----------

GBIT_PER_SECOND = 1e9 / 8  # Bytes per second of 1 Gbit/s.
MIB = 2**20
US = 1e-6

RESNET50_PARAMS = 25_557_032  # R15 (docs/paper.md) (torchvision's count).
RESNET50_FORWARD_MACS = 4.09e9  # R15 (docs/paper.md), per 224x224 image.
FP32_BYTES = 4

PAPER_SECONDS_PER_ITERATION_256 = 0.26  # kn = 8k on 256 GPUs.
PAPER_EFFICIENCY_256 = 0.90  # Throughput vs linear scaling from 8 GPUs.
PAPER_HD_OVER_RING_SPEEDUP_32_SERVERS = 3.0  # Sec. 4, Gloo measurements.

RING = "ring"
HALVING_DOUBLING = "halving_doubling"
ALGORITHMS = (RING, HALVING_DOUBLING)


# --- collectives ----------------------------------------------------------


def ring_allreduce_seconds(nbytes, workers, alpha, beta, gamma=0.0):
    """Seconds of a ring (bucket) allreduce of `nbytes` over `workers`.

    Reduce-scatter then allgather, each p - 1 steps in which every worker
    sends one n/p-byte chunk to its right neighbour (Goyal et al. 2017,
    Sec. 4, "bucket algorithm"; Thakur et al. 2005):

        T = 2 (p - 1) alpha + 2 (p - 1)/p n beta + (p - 1)/p n gamma.

    Args:
        nbytes: bytes of the vector every worker contributes.
        workers: p, the number of workers (p = 1 costs nothing).
        alpha: seconds of latency per message.
        beta: seconds per byte sent (1 / bandwidth).
        gamma: seconds per byte reduced (summed).

    Returns:
        The seconds, a float.
    """
    p = _check_workers(workers)
    if p == 1:
        return 0.0
    share = (p - 1) / p * nbytes
    return 2 * (p - 1) * alpha + 2 * share * beta + share * gamma


def halving_doubling_allreduce_seconds(nbytes, workers, alpha, beta,
                                       gamma=0.0):
    """Seconds of a recursive halving-doubling allreduce (Rabenseifner).

    For p a power of two: log2(p) steps of recursive halving
    (reduce-scatter; at step k a worker exchanges n/2^k bytes with the
    partner at distance p/2^k) then log2(p) steps of recursive doubling
    (allgather, the same messages in reverse order) (Goyal et al. 2017,
    Sec. 4; Thakur et al. 2005, Sec. 4.4):

        T = 2 log2(p) alpha + 2 (p - 1)/p n beta + (p - 1)/p n gamma.

    Other p (Thakur et al. 2005): with p' the largest power of two below p
    and r = p - p', r workers first send their whole vector to a partner,
    which sums it (alpha + n beta + n gamma); the p' remaining workers run
    the algorithm above; the partners then send the result back
    (alpha + n beta). (Gloo's "binary blocks" variant, also cited by the
    paper, avoids sending whole vectors; this model takes the simpler and
    slower textbook handling.)

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
    """Seconds of a pipelined chain reduce (or broadcast, gamma = 0).

    NCCL's ring reduce / broadcast inside a server: the vector is cut into
    many chunks that flow along the g GPUs, so every byte crosses every
    link once and the links work in parallel:

        T = (g - 1) alpha + n beta + n gamma

    ((g - 1) alpha fills the pipeline; the per-chunk latencies of a
    finite number of chunks are neglected.) g = 1 costs nothing.
    """
    g = _check_workers(workers)
    if g == 1:
        return 0.0
    return (g - 1) * alpha + nbytes * beta + nbytes * gamma


@dataclasses.dataclass(frozen=True)
class Cluster:
    """Servers of `gpus_per_server` GPUs joined by a network.

    Attributes:
        gpus_per_server: g, GPUs sharing one server (NVLink / PCIe).
        inter_alpha: seconds of latency per message between servers.
        inter_beta: seconds per byte through one server's network
            interface (1 / its bandwidth): the inter-server phase runs
            one allreduce per server, on the server's reduced vector.
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

    Goyal et al. 2017, Sec. 4: (1) the g GPUs of each server reduce their
    buffers into one (`pipelined_chain_seconds` at the intra-server
    alpha/beta, with gamma); (2) the servers allreduce these buffers with
    `algorithm` over s = gpus / g servers at the inter-server alpha/beta;
    (3) each server broadcasts the result to its GPUs (a chain without
    reduction). The phases run one after another:

        T = chain(n, g) + allreduce(n, s) + chain(n, g, gamma = 0).

    With g = 1 it is a flat allreduce over the GPUs; on one server it is
    reduce + broadcast only.
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


# --- ResNet-50's layers ---------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Layer:
    """One layer's trainable parameters and forward multiply-adds/image."""
    name: str
    params: int
    macs: int


def resnet50_layers(image_size=224, num_classes=1000):
    """ResNet-50 v1.5's layers in forward order (R15, docs/paper.md), from
    `models.resnet_spec`.

    Each conv layer (no bias) carries its BN's gamma and beta (moving
    statistics are not trainable); a projection shortcut in each stage's
    first block; fc 2048 x 1000 + bias. 25,557,032 parameters, 4.09 G forward
    multiply-adds per image.
    """
    layers = []

    def conv(name, kernel, cin, cout, out_size):
        weights = kernel * kernel * cin * cout
        layers.append(Layer(name, weights + 2 * cout,
                            weights * out_size * out_size))

    size = image_size // 2
    conv("conv1", 7, 3, resnet_spec.STEM_WIDTH, size)
    size //= 2  # Max pool.
    cin = resnet_spec.STEM_WIDTH
    stages = zip(resnet_spec.blocks_per_stage(50), resnet_spec.STAGE_WIDTHS,
                 resnet_spec.STAGE_STRIDES)
    for stage, (blocks, width, stride) in enumerate(stages, start=2):
        cout = resnet_spec.EXPANSION * width
        for block in range(1, blocks + 1):
            out_size = size // stride if block == 1 else size
            prefix = f"conv{stage}_block{block}"
            if block == 1:
                conv(prefix + "_0", 1, cin, cout, out_size)
            conv(prefix + "_1", 1, cin, width, size)
            conv(prefix + "_2", 3, width, width, out_size)
            conv(prefix + "_3", 1, width, cout, out_size)
            cin, size = cout, out_size
    layers.append(Layer("fc", cin * num_classes + num_classes,
                        cin * num_classes))
    return tuple(layers)


# --- overlap of the allreduce with backprop -------------------------------


@dataclasses.dataclass(frozen=True)
class Bucket:
    """Gradient bytes allreduced together, ready `ready_seconds` after the
    start of backprop."""
    ready_seconds: float
    nbytes: float


def gradient_buckets(layers, bytes_per_param, bucket_bytes,
                     backward_seconds):
    """Groups the layers' gradients into buckets, in backprop order.

    Backprop visits the layers in reverse; each layer takes a share of
    `backward_seconds` proportional to its forward multiply-adds (its
    backward pass costs about twice its forward one whatever the layer).
    Layers join the open bucket until it holds at least `bucket_bytes`
    (PyTorch DDP's rule, so a bucket may exceed it by one layer); a bucket
    is ready when its last layer's gradient is. The last bucket is ready at
    the end of backprop. `bucket_bytes = inf` gives one bucket: no overlap.

    Returns:
        A list of `Bucket`, in the order they become ready.
    """
    total_macs = sum(layer.macs for layer in layers)
    buckets, pending, done_macs = [], 0.0, 0
    for layer in reversed(layers):
        done_macs += layer.macs
        pending += layer.params * bytes_per_param
        if pending >= bucket_bytes:
            ready = backward_seconds * done_macs / total_macs
            buckets.append(Bucket(ready, pending))
            pending = 0.0
    if pending:
        buckets.append(Bucket(backward_seconds, pending))
    return buckets


def communication_end_seconds(buckets, seconds_of_bytes):
    """When the last bucket's allreduce ends, from the start of backprop.

    One communication channel: a bucket's allreduce starts when the bucket
    is ready and the previous bucket's allreduce has finished (Goyal et al.
    2017, Sec. 4: gradients are allreduced as soon as backprop produces
    them, overlapped with the rest of backprop).

    Args:
        buckets: `Bucket`s in ready order.
        seconds_of_bytes: callable, bytes -> seconds of their allreduce.
    """
    channel_free = 0.0
    for bucket in buckets:
        start = max(bucket.ready_seconds, channel_free)
        channel_free = start + seconds_of_bytes(bucket.nbytes)
    return channel_free


@dataclasses.dataclass(frozen=True)
class Workload:
    """One training iteration on one GPU.

    Attributes:
        forward_seconds: everything of the iteration before backprop that
            communication cannot hide (forward pass, input, loss).
        backward_seconds: backprop, during which buckets are allreduced.
        update_seconds: the optimizer step after the allreduce.
        bytes_per_param: gradient bytes per parameter (4 for fp32).
        bucket_bytes: bucket size of the overlap (0: one per layer).
        images_per_gpu: n, the per-GPU minibatch.
        layers: the model's `Layer`s in forward order.
    """
    forward_seconds: float
    backward_seconds: float
    update_seconds: float = 0.0
    bytes_per_param: float = FP32_BYTES
    bucket_bytes: float = 25 * MIB
    images_per_gpu: int = 32
    layers: tuple = dataclasses.field(default_factory=resnet50_layers)

    @property
    def compute_seconds(self):
        return self.forward_seconds + self.backward_seconds + \
            self.update_seconds

    @property
    def gradient_bytes(self):
        return sum(layer.params for layer in self.layers) * \
            self.bytes_per_param


def iteration(workload, cluster, gpus, algorithm, overlap=True):
    """Times one synchronous SGD iteration on `gpus` GPUs.

    iteration = forward + max(backward, end of the last allreduce)
                + update,

    the allreduces overlapping backprop per bucket (`overlap`) or one
    allreduce of all gradients after backprop (no overlap).

    Returns:
        dict with iteration_seconds, compute_seconds, comm_seconds (the
        allreduce time summed over buckets, hidden or not),
        exposed_comm_seconds (iteration - compute), buckets, servers.
    """
    bucket_bytes = workload.bucket_bytes if overlap else math.inf
    buckets = gradient_buckets(workload.layers, workload.bytes_per_param,
                               bucket_bytes, workload.backward_seconds)

    def seconds_of_bytes(nbytes):
        return hierarchical_allreduce_seconds(nbytes, gpus, cluster,
                                              algorithm)

    comm_end = communication_end_seconds(buckets, seconds_of_bytes)
    comm_seconds = sum(seconds_of_bytes(b.nbytes) for b in buckets)
    iteration_seconds = (workload.forward_seconds
                         + max(workload.backward_seconds, comm_end)
                         + workload.update_seconds)
    return {
        "iteration_seconds": iteration_seconds,
        "compute_seconds": workload.compute_seconds,
        "comm_seconds": comm_seconds,
        "exposed_comm_seconds": iteration_seconds - workload.compute_seconds,
        "buckets": len(buckets),
        "servers": cluster.servers(gpus),
    }


def scaling_rows(workload, cluster, gpu_counts, variants):
    """Weak scaling: one row per (GPU count, algorithm, overlap).

    Efficiency at p GPUs = iteration time at the base size (the first of
    `gpu_counts`) / iteration time at p, same algorithm and overlap; it is
    the throughput against linear scaling from the base size (the paper's
    definition, from one 8-GPU server). Speedup = efficiency * p / base.

    Args:
        workload: `Workload`.
        cluster: `Cluster`.
        gpu_counts: increasing GPU counts; the first is the base size.
        variants: (algorithm, overlap) pairs.

    Returns:
        A list of dicts (`iteration`'s keys plus gpus, algorithm, overlap,
        efficiency, speedup, images_per_second).
    """
    base = gpu_counts[0]
    rows = []
    for algorithm, overlap in variants:
        base_seconds = iteration(workload, cluster, base, algorithm,
                                 overlap)["iteration_seconds"]
        for gpus in gpu_counts:
            row = iteration(workload, cluster, gpus, algorithm, overlap)
            efficiency = base_seconds / row["iteration_seconds"]
            row.update(
                gpus=gpus, algorithm=algorithm, overlap=overlap,
                efficiency=efficiency, speedup=efficiency * gpus / base,
                images_per_second=(gpus * workload.images_per_gpu
                                   / row["iteration_seconds"]))
            rows.append(row)
    return rows


def solve_forward_seconds(target_seconds, workload, cluster, gpus,
                          algorithm):
    """The forward_seconds making the iteration on `gpus` last
    `target_seconds` (the iteration is forward_seconds + a term that does
    not depend on it)."""
    without = dataclasses.replace(workload, forward_seconds=0.0)
    rest = iteration(without, cluster, gpus, algorithm)["iteration_seconds"]
    if rest > target_seconds:
        raise ValueError(f"backprop and communication alone take {rest:.4f}"
                         f" s, more than the target {target_seconds} s")
    return target_seconds - rest


def alpha_for_speedup(nbytes, workers, beta, speedup, gamma=0.0):
    """The alpha at which halving-doubling is `speedup` x faster than ring.

    Solves 2 (p-1) a + B = speedup (2 log2(p) a + B), B the bandwidth and
    reduction terms shared by both (p a power of two).
    """
    shared = ring_allreduce_seconds(nbytes, workers, 0.0, beta, gamma)
    denominator = 2 * (workers - 1) - speedup * 2 * math.log2(workers)
    if denominator <= 0:
        return math.inf
    return (speedup - 1) * shared / denominator


# --- calibration ----------------------------------------------------------


def calibrate(measurements):
    """Least-squares alpha and beta of the ring formula from measurements.

    Fits seconds = 2 (p - 1) alpha + 2 (p - 1)/p n beta; a reduction cost
    gamma is folded into beta (it has the same form, with half the
    weight). Measurements with p = 1 are left out (they cost nothing in the
    model). Both coefficients are constrained to be non-negative: if the
    unconstrained fit gives a negative one, it is set to 0 and the other
    refitted alone.

    Args:
        measurements: iterable of dicts {"bytes", "workers", "seconds"}.

    Returns:
        dict with alpha, beta, bandwidth_bytes_per_second,
        residual_rms_seconds, relative_residual_rms (of residual/seconds),
        count.
    """
    rows = [m for m in measurements if int(m["workers"]) > 1]
    if len(rows) < 2 or len({int(m["bytes"]) for m in rows}) < 2:
        raise ValueError("calibration needs measurements of at least two "
                         "message sizes with more than one worker")
    p = np.array([float(m["workers"]) for m in rows])
    n = np.array([float(m["bytes"]) for m in rows])
    seconds = np.array([float(m["seconds"]) for m in rows])
    design = np.stack([2 * (p - 1), 2 * (p - 1) / p * n], axis=1)
    coefficients = np.linalg.lstsq(design, seconds, rcond=None)[0]
    if coefficients.min() < 0:
        coefficients = _best_single_coefficient(design, seconds)
    alpha, beta = (float(c) for c in coefficients)
    residual = seconds - design @ coefficients
    return {
        "alpha": alpha,
        "beta": beta,
        "bandwidth_bytes_per_second": 1 / beta if beta > 0 else math.inf,
        "residual_rms_seconds": float(np.sqrt(np.mean(residual**2))),
        "relative_residual_rms": float(
            np.sqrt(np.mean((residual / seconds)**2))),
        "count": len(rows),
    }


def _best_single_coefficient(design, seconds):
    """Non-negative fit with one coefficient zero (the better one)."""
    best, best_error = None, math.inf
    for keep in range(design.shape[1]):
        column = design[:, keep]
        value = max(0.0, float(column @ seconds / (column @ column)))
        coefficients = np.zeros(design.shape[1])
        coefficients[keep] = value
        error = float(np.sum((seconds - design @ coefficients)**2))
        if error < best_error:
            best, best_error = coefficients, error
    return best


def read_calibration(path):
    """Reads the calibration JSON (see the module docstring)."""
    with open(path, encoding="utf-8") as stream:
        data = json.load(stream)
    if not isinstance(data, dict) or "allreduce_sweep" not in data:
        raise ValueError(f"{path}: expected an object with the key "
                         f"'allreduce_sweep'")
    return data


# --- scenarios ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PaperSetting:
    """Goyal et al. 2017's cluster (docs/paper.md, "Systems facts").

    Every number is a documented assumption or a fact of docs/paper.md.
    """
    gpus_per_server: int = 8  # 8 P100 per server (docs/paper.md).
    max_gpus: int = 256  # 32 servers (docs/paper.md).
    inter_gbits: float = 50.0  # 50 Gbit/s Ethernet per server (docs/paper.md).
    # TCP over datacenter Ethernet: a one-way small-message latency of
    # ~10-50 us (kernel stack and switch); assumption.
    inter_alpha_us: float = 25.0
    # NVLink 1.0 between P100s: 20 GB/s per link and direction; NCCL's
    # chain moves every byte over one link (assumption: one link's worth).
    intra_gbytes: float = 20.0
    intra_alpha_us: float = 5.0  # NCCL per-hop latency (assumption).
    # Reduction on the GPU: 3 bytes of HBM2 traffic per byte summed at
    # P100's 732 GB/s (assumption: sums on the GPU, not the host).
    gamma_ns_per_byte: float = 3 / 732.0
    backward_seconds: float = 0.120  # "backprop ~120 ms" (docs/paper.md).
    # 8-GPU iteration = 0.26 s x 0.90 (both docs/paper.md): the 256-GPU time
    # and the efficiency from 8 to 256; the rest of the iteration
    # (forward, update, input) is solved for so that 8 GPUs take this.
    base_iteration_seconds: float = (PAPER_SECONDS_PER_ITERATION_256
                                     * PAPER_EFFICIENCY_256)
    images_per_gpu: int = 32  # n = 32 (R9, docs/paper.md).
    bytes_per_param: float = FP32_BYTES  # fp32 gradients: 102.2 MB.
    # Bucket size, an assumption: PyTorch DDP's default. The paper
    # allreduces "as soon as the gradient for a layer is computed": pass
    # --paper_bucket_mib=0 for one bucket per layer (`paper_sensitivity`
    # shows both).
    bucket_mib: float = 25.0


@dataclasses.dataclass(frozen=True)
class H100Setting:
    """Today's cluster: hosts of 8 H100 (DGX H100-like).

    Every number is a documented assumption.
    """
    gpus_per_server: int = 8
    max_gpus: int = 1024  # 128 hosts.
    # 400 Gbit/s per host, as in the issue. A DGX H100 has one 400 Gbit/s
    # NIC per GPU (3200 Gbit/s per host): pass --h100_inter_gbits=3200 for it.
    inter_gbits: float = 400.0
    inter_alpha_us: float = 5.0  # RDMA (InfiniBand / RoCE), ~2-5 us.
    # NVLink 4: 450 GB/s per GPU and direction; ~80% of it usable.
    intra_gbytes: float = 360.0
    intra_alpha_us: float = 3.0  # NCCL per-hop latency over NVLink.
    gamma_ns_per_byte: float = 3 / 3350.0  # HBM3 at 3.35 TB/s.
    # ResNet-50 v1.5 training, mixed precision: ~3000 images/s per H100
    # (assumption: NVIDIA's published ~2.5-3k/s per A100-class GPU and
    # more on H100; assumed to hold at the paper's n = 32).
    images_per_second_per_gpu: float = 3000.0
    images_per_gpu: int = 32  # The paper's n (R9), kn = 32k at 1024.
    backward_share: float = 2 / 3  # Backward ~ 2x forward multiply-adds.
    bytes_per_param: float = FP32_BYTES  # fp32 gradients (AMP's default).
    bucket_mib: float = 25.0


def _cluster(setting):
    """The `Cluster` of a PaperSetting or H100Setting (SI units)."""
    return Cluster(
        gpus_per_server=setting.gpus_per_server,
        inter_alpha=setting.inter_alpha_us * US,
        inter_beta=1 / (setting.inter_gbits * GBIT_PER_SECOND),
        intra_alpha=setting.intra_alpha_us * US,
        intra_beta=1 / (setting.intra_gbytes * 1e9),
        gamma=setting.gamma_ns_per_byte * 1e-9)


def paper_scenario(setting=PaperSetting()):
    """Rows and parameters of the paper's cluster, 8..256 GPUs."""
    cluster = _cluster(setting)
    workload = Workload(
        forward_seconds=0.0, backward_seconds=setting.backward_seconds,
        bytes_per_param=setting.bytes_per_param,
        bucket_bytes=setting.bucket_mib * MIB,
        images_per_gpu=setting.images_per_gpu)
    base = setting.gpus_per_server
    forward = solve_forward_seconds(setting.base_iteration_seconds,
                                    workload, cluster, base,
                                    HALVING_DOUBLING)
    workload = dataclasses.replace(workload, forward_seconds=forward)
    gpu_counts = powers_of_two(base, setting.max_gpus)
    variants = [(RING, True), (HALVING_DOUBLING, True)]
    return _scenario("paper", setting, cluster, workload, gpu_counts,
                     variants)


def h100_scenario(setting=H100Setting()):
    """Rows and parameters of 8-H100 hosts, 8..max_gpus GPUs."""
    cluster = _cluster(setting)
    compute = setting.images_per_gpu / setting.images_per_second_per_gpu
    workload = Workload(
        forward_seconds=compute * (1 - setting.backward_share),
        backward_seconds=compute * setting.backward_share,
        bytes_per_param=setting.bytes_per_param,
        bucket_bytes=setting.bucket_mib * MIB,
        images_per_gpu=setting.images_per_gpu)
    gpu_counts = powers_of_two(setting.gpus_per_server, setting.max_gpus)
    variants = [(algorithm, overlap) for overlap in (True, False)
                for algorithm in ALGORITHMS]
    return _scenario("h100", setting, cluster, workload, gpu_counts,
                     variants)


def local_scenario(calibration, step_seconds, gradient_bytes=None,
                   bucket_mib=25.0, backward_share=2 / 3,
                   images_per_worker=1):
    """Rows of the calibrated local cluster: 1 and 2 workers, flat ring.

    One worker per "server" (g = 1): the calibrated alpha and beta (gamma
    folded in) are the only costs. The compute time is the measured
    `step_seconds` of one worker, `backward_share` of it backprop; the
    layer profile is ResNet-50's, scaled to `gradient_bytes`.
    """
    cluster = Cluster(gpus_per_server=1, inter_alpha=calibration["alpha"],
                      inter_beta=calibration["beta"], intra_alpha=0.0,
                      intra_beta=0.0)
    if gradient_bytes is None:
        gradient_bytes = RESNET50_PARAMS * FP32_BYTES
    workload = Workload(
        forward_seconds=step_seconds * (1 - backward_share),
        backward_seconds=step_seconds * backward_share,
        bytes_per_param=gradient_bytes / RESNET50_PARAMS,
        bucket_bytes=bucket_mib * MIB, images_per_gpu=images_per_worker)
    variants = [(RING, True), (RING, False)]
    setting = {"step_seconds": step_seconds,
               "gradient_bytes": gradient_bytes, "bucket_mib": bucket_mib,
               "backward_share": backward_share}
    return _scenario("local", setting, cluster, workload, [1, 2], variants)


def powers_of_two(low, high):
    """low, 2 low, 4 low, ... up to high."""
    counts = [low]
    while counts[-1] * 2 <= high:
        counts.append(counts[-1] * 2)
    return counts


def _scenario(name, setting, cluster, workload, gpu_counts, variants):
    parameters = (dataclasses.asdict(setting)
                  if dataclasses.is_dataclass(setting) else dict(setting))
    parameters.update(
        derived_forward_seconds=workload.forward_seconds,
        derived_backward_seconds=workload.backward_seconds,
        gradient_bytes=workload.gradient_bytes,
        cluster=dataclasses.asdict(cluster))
    return {
        "name": name,
        "parameters": parameters,
        "rows": scaling_rows(workload, cluster, gpu_counts, variants),
    }


def paper_checks(paper):
    """The paper's claims next to the model's halving-doubling numbers."""
    last = [row for row in paper["rows"]
            if row["algorithm"] == HALVING_DOUBLING][-1]
    cluster = paper["parameters"]["cluster"]
    servers = 32
    nbytes = paper["parameters"]["gradient_bytes"]
    beta, gamma = cluster["inter_beta"], cluster["gamma"]
    alpha = cluster["inter_alpha"]

    def ratio(size):
        return (ring_allreduce_seconds(size, servers, alpha, beta, gamma)
                / halving_doubling_allreduce_seconds(size, servers, alpha,
                                                     beta, gamma))

    bucket = 25 * MIB
    layers = resnet50_layers()
    mean_layer = nbytes / len(layers)
    target = (paper["parameters"]["base_iteration_seconds"]
              / PAPER_EFFICIENCY_256)
    return {
        "gpus": last["gpus"],
        "paper_iteration_seconds": PAPER_SECONDS_PER_ITERATION_256,
        "model_iteration_seconds": last["iteration_seconds"],
        "paper_efficiency": PAPER_EFFICIENCY_256,
        "model_efficiency": last["efficiency"],
        "paper_hd_over_ring_speedup_32_servers":
            PAPER_HD_OVER_RING_SPEEDUP_32_SERVERS,
        "model_hd_over_ring_speedup_whole_gradient": ratio(nbytes),
        "model_hd_over_ring_speedup_25mib_bucket": ratio(bucket),
        "model_hd_over_ring_speedup_mean_layer": ratio(mean_layer),
        "mean_layer_bytes": mean_layer,
        "alpha_us_for_paper_speedup_25mib_bucket": alpha_for_speedup(
            bucket, servers, beta, PAPER_HD_OVER_RING_SPEEDUP_32_SERVERS,
            gamma) / US,
        "alpha_us_for_paper_speedup_mean_layer": alpha_for_speedup(
            mean_layer, servers, beta, PAPER_HD_OVER_RING_SPEEDUP_32_SERVERS,
            gamma) / US,
        # What the paper's 90% implies that the model leaves out: seconds
        # per iteration at 256 GPUs beyond the model's.
        "unmodelled_seconds_at_paper_efficiency":
            target - last["iteration_seconds"],
    }


def paper_sensitivity(setting=PaperSetting(), alphas_us=(10.0, 25.0, 50.0),
                      buckets_mib=(0.0, 1.0, 4.0, 25.0)):
    """Efficiency at setting.max_gpus for other latencies and buckets.

    Each combination re-solves the time outside backprop so that one
    server still takes `setting.base_iteration_seconds`.

    Returns:
        A list of dicts: alpha_us, bucket_mib (0: one bucket per layer),
        algorithm, efficiency, iteration_seconds.
    """
    rows = []
    for alpha_us in alphas_us:
        for bucket_mib in buckets_mib:
            varied = dataclasses.replace(setting, inter_alpha_us=alpha_us,
                                         bucket_mib=bucket_mib)
            for row in paper_scenario(varied)["rows"]:
                if row["gpus"] == setting.max_gpus:
                    rows.append({
                        "alpha_us": alpha_us, "bucket_mib": bucket_mib,
                        "algorithm": row["algorithm"],
                        "efficiency": row["efficiency"],
                        "iteration_seconds": row["iteration_seconds"]})
    return rows


def sensitivity_table(rows):
    """`paper_sensitivity` rows as a markdown table of efficiencies."""
    buckets = sorted({row["bucket_mib"] for row in rows})
    header = ["alpha us", "algorithm"] + [
        "per layer" if mib == 0 else f"{mib:g} MiB" for mib in buckets]
    cells = {}
    for row in rows:
        key = (row["alpha_us"], row["algorithm"])
        cells.setdefault(key, {})[row["bucket_mib"]] = row["efficiency"]
    return tables.markdown_table(
        header, [[f"{alpha_us:g}", algorithm]
                 + [f"{by_bucket[mib]:.3f}" for mib in buckets]
                 for (alpha_us, algorithm), by_bucket in cells.items()],
        align="rl" + "r" * len(buckets))


# --- results and their report ---------------------------------------------


def analyse(paper=PaperSetting(), h100=H100Setting(), calibration_data=None):
    """Every scenario and check of the model, as one JSON-ready dict.

    Args:
        paper: the `PaperSetting` of the paper scenario.
        h100: the `H100Setting` of the h100 scenario.
        calibration_data: None (calibration skipped) or the object of
            `read_calibration`; with its "step_seconds", the local scenario
            is added.

    Returns:
        dict with paper_checks, paper_sensitivity, calibration (the fit of
        `calibrate`, or {"skipped": True}) and scenarios (name -> scenario,
        in the order paper, h100, local).
    """
    scenarios = [paper_scenario(paper), h100_scenario(h100)]
    result = {"paper_checks": paper_checks(scenarios[0]),
              "paper_sensitivity": paper_sensitivity(paper),
              "calibration": {"skipped": True}}
    if calibration_data is not None:
        calibration = calibrate(calibration_data["allreduce_sweep"])
        result["calibration"] = calibration
        if "step_seconds" in calibration_data:
            scenarios.append(local_scenario(
                calibration, float(calibration_data["step_seconds"]),
                calibration_data.get("gradient_bytes"),
                images_per_worker=int(
                    calibration_data.get("images_per_worker", 1))))
    result["scenarios"] = {s["name"]: s for s in scenarios}
    return result


def scenario_table(scenario):
    """The scenario's rows as a markdown table (times in ms)."""
    header = ["GPUs", "servers", "algorithm", "overlap", "iteration ms",
              "allreduce ms", "exposed ms", "efficiency", "speedup",
              "images/s"]
    rows = [[row["gpus"], row["servers"], row["algorithm"],
             "yes" if row["overlap"] else "no",
             f"{1e3 * row['iteration_seconds']:.1f}",
             f"{1e3 * row['comm_seconds']:.1f}",
             f"{1e3 * row['exposed_comm_seconds']:.1f}",
             f"{row['efficiency']:.3f}", f"{row['speedup']:.1f}",
             _rate(row["images_per_second"])] for row in scenario["rows"]]
    return tables.markdown_table(header, rows, align="rrlrrrrrrr")


def _rate(value):
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def report(result):
    """The text report of an `analyse` result: the calibration, one table
    per scenario, the sensitivity table and the paper's claims."""
    lines = [_calibration_line(result["calibration"]), ""]
    for name, scenario in result["scenarios"].items():
        lines += [f"## {name}", "", scenario_table(scenario), ""]
    checks = result["paper_checks"]
    lines += [f"## paper: efficiency at {checks['gpus']} GPUs by "
              f"inter-server latency and bucket size", "",
              sensitivity_table(result["paper_sensitivity"]), ""]
    lines.append(
        f"paper at {checks['gpus']} GPUs: "
        f"{checks['paper_iteration_seconds']} s/iteration, "
        f"{checks['paper_efficiency']:.0%} efficiency; model "
        f"(halving-doubling): {checks['model_iteration_seconds']:.3f} s, "
        f"{checks['model_efficiency']:.1%}")
    lines.append(
        f"halving-doubling over ring at 32 servers: paper "
        f"{checks['paper_hd_over_ring_speedup_32_servers']:.0f}x; model "
        f"{checks['model_hd_over_ring_speedup_whole_gradient']:.2f}x "
        f"(whole gradient), "
        f"{checks['model_hd_over_ring_speedup_25mib_bucket']:.2f}x (25 MiB), "
        f"{checks['model_hd_over_ring_speedup_mean_layer']:.2f}x (mean "
        f"layer, {checks['mean_layer_bytes'] / 1e6:.1f} MB); the paper's 3x "
        f"needs alpha = "
        f"{checks['alpha_us_for_paper_speedup_25mib_bucket']:.0f} us "
        f"(25 MiB) or "
        f"{checks['alpha_us_for_paper_speedup_mean_layer']:.0f} us "
        f"(mean layer)")
    lines.append(
        f"the paper's efficiency implies "
        f"{1e3 * checks['unmodelled_seconds_at_paper_efficiency']:.1f} ms "
        f"per iteration that the model does not contain")
    return "\n".join(lines)


def _calibration_line(calibration):
    if calibration.get("skipped"):
        return "calibration skipped: no --calibration_json given"
    gbytes = calibration["bandwidth_bytes_per_second"] / 1e9
    return (f"calibration: alpha = {calibration['alpha'] / US:.1f} us, "
            f"bandwidth = {gbytes:.3f} GB/s, relative residual rms = "
            f"{calibration['relative_residual_rms']:.3f} "
            f"({calibration['count']} measurements)")


def write_plot(scenarios, path):
    """Efficiency and iteration time vs GPUs (log2 axis) as a PNG."""
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    from matplotlib import pyplot  # pylint: disable=import-outside-toplevel

    figure, (left, right) = pyplot.subplots(1, 2, figsize=(12, 4.8))
    for scenario in scenarios:
        for (algorithm, overlap), rows in _variants(scenario).items():
            label = (f"{scenario['name']} {algorithm}"
                     + ("" if overlap else " no overlap"))
            style = "-" if overlap else "--"
            gpus = [row["gpus"] for row in rows]
            left.plot(gpus, [row["efficiency"] for row in rows], style,
                      marker="o", label=label)
            right.plot(gpus, [1e3 * row["iteration_seconds"] for row in rows],
                       style, marker="o", label=label)
    left.plot([256], [PAPER_EFFICIENCY_256], "k*", markersize=14,
              label="paper: ~90% at 256 GPUs")
    right.plot([256], [1e3 * PAPER_SECONDS_PER_ITERATION_256], "k*",
               markersize=14, label="paper: ~0.26 s at 256 GPUs")
    left.set_ylabel("weak-scaling efficiency vs base size")
    right.set_ylabel("iteration time (ms)")
    right.set_yscale("log")
    counts = sorted({row["gpus"] for scenario in scenarios
                     for row in scenario["rows"]})
    for axes in (left, right):
        axes.set_xscale("log", base=2)
        axes.set_xticks(counts, [str(count) for count in counts])
        axes.set_xlabel("GPUs")
        axes.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=7)
    figure.suptitle("Alpha-beta allreduce model, overlapped with backprop "
                    "(Goyal et al. 2017, Sec. 4)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def _variants(scenario):
    grouped = {}
    for row in scenario["rows"]:
        grouped.setdefault((row["algorithm"], row["overlap"]), []).append(row)
    return grouped
