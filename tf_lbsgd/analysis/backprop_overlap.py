"""One synchronous SGD iteration with its allreduce overlapped with backprop.

Goyal et al. 2017, Sec. 4: gradients are allreduced per bucket as soon as
backprop produces them, on one communication channel, so an iteration lasts
forward + max(backward, end of the last allreduce) + update.
"""

import dataclasses
import math

from tf_lbsgd.analysis import collective_costs
from tf_lbsgd.models import resnet_spec

FP32_BYTES = 4


@dataclasses.dataclass(frozen=True)
class Layer:
    """One layer's trainable parameters and forward multiply-adds/image."""
    name: str
    params: int
    macs: int


def resnet50_layers(image_size=224, num_classes=1000):
    """ResNet-50 v1.5's `Layer`s in forward order, from `models.resnet_spec`.

    A conv layer (no bias) carries its BN's gamma and beta; fc has a bias.
    25,557,032 parameters, 4.09 G forward multiply-adds per image (R15,
    docs/paper.md).
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


@dataclasses.dataclass(frozen=True)
class Bucket:
    """Gradient bytes allreduced together, ready `ready_seconds` after the
    start of backprop."""
    ready_seconds: float
    nbytes: float


def gradient_buckets(layers, bytes_per_param, bucket_bytes,
                     backward_seconds):
    """Groups the layers' gradients into buckets, in backprop order.

    Each layer takes a share of `backward_seconds` proportional to its
    forward multiply-adds. Layers join the open bucket until it holds at
    least `bucket_bytes` (PyTorch DDP's rule); the last bucket is ready at
    the end of backprop. `bucket_bytes = inf` gives one bucket: no overlap.

    Args:
        layers: `Layer`s in forward order.
        bytes_per_param: gradient bytes per parameter.
        bucket_bytes: the bucket size (0: one bucket per layer).
        backward_seconds: the duration of backprop.

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
    """When the last bucket's allreduce ends, from the start of backprop: a
    bucket's allreduce starts once it is ready and the channel is free.

    Args:
        buckets: `Bucket`s in ready order.
        seconds_of_bytes: callable, bytes -> seconds of their allreduce.

    Returns:
        The seconds, a float.
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
    bucket_bytes: float = 25 * collective_costs.MIB
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

    Args:
        workload: the `Workload`.
        cluster: the `collective_costs.Cluster`.
        gpus: the GPU count.
        algorithm: the inter-server allreduce, one of
            `collective_costs.ALGORITHMS`.
        overlap: allreduce per bucket during backprop, or all gradients
            after it.

    Returns:
        dict with iteration_seconds, compute_seconds, comm_seconds (the
        allreduce time summed over buckets, hidden or not),
        exposed_comm_seconds (iteration - compute), buckets, servers.
    """
    bucket_bytes = workload.bucket_bytes if overlap else math.inf
    buckets = gradient_buckets(workload.layers, workload.bytes_per_param,
                               bucket_bytes, workload.backward_seconds)

    def seconds_of_bytes(nbytes):
        return collective_costs.hierarchical_allreduce_seconds(
            nbytes, gpus, cluster, algorithm)

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

    Efficiency at p GPUs is the iteration time at the base size (the first
    of `gpu_counts`) over the time at p, same variant: the paper's
    throughput against linear scaling. Speedup = efficiency * p / base.

    Args:
        workload: `Workload`.
        cluster: `collective_costs.Cluster`.
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
    `target_seconds` (the rest of the iteration does not depend on it).

    Raises:
        ValueError: backprop and communication alone exceed the target.
    """
    without = dataclasses.replace(workload, forward_seconds=0.0)
    rest = iteration(without, cluster, gpus, algorithm)["iteration_seconds"]
    if rest > target_seconds:
        raise ValueError(f"backprop and communication alone take {rest:.4f}"
                         f" s, more than the target {target_seconds} s")
    return target_seconds - rest
