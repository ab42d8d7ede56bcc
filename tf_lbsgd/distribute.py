"""Distribution strategies chosen in gin: k workers on one host or many.

`mirrored` over k logical CPU devices simulates k workers on one machine with
real per-replica BN (R9) and a real allreduce; on a GPU host it mirrors over
the local GPUs. `multi_worker_mirrored` reads TF_CONFIG (NCCL on GPUs, RING on
CPUs). Chief helpers decide who writes summaries, configs and metrics.
"""

import gin
import tensorflow as tf

from tf_lbsgd import checks
from tf_lbsgd import cluster
from tf_lbsgd import cpu_threads as cpu_threads_lib
from tf_lbsgd import worker_packing

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker_mirrored",
              "tpu")
COLLECTIVES = {
    "auto": tf.distribute.experimental.CommunicationImplementation.AUTO,
    "nccl": tf.distribute.experimental.CommunicationImplementation.NCCL,
    "ring": tf.distribute.experimental.CommunicationImplementation.RING,
}
# Simulated workers on one host's CPU: each replica costs memory and a share
# of the host's threads, and tracing and all-reduce grow with their number.
# On a 2-core host, 256 logical CPUs built a strategy in 1.7 s and ran a first
# all-reduce of one scalar in 19 s; 1024 took 43 s to build and over 200 s for
# that step (100000 printed nothing for minutes).
MAX_LOGICAL_CPU_REPLICAS = 256


def ensure_logical_cpus(count):
    """Splits the host CPU into `count` logical devices (one per worker).

    Must run before TensorFlow initialises its devices; if it already has,
    the existing logical devices are used when there are enough.

    Args:
        count: number of logical CPU devices wanted.

    Returns:
        The names of the first `count` logical CPU devices.

    Raises:
        RuntimeError: if TensorFlow was initialised with fewer devices.
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        if len(tf.config.get_logical_device_configuration(cpu) or []) < count:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError:
        pass  # Already initialised: use what exists, checked below.
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(devices) < count:
        raise RuntimeError(
            f"{count} logical CPU devices requested but TensorFlow was already "
            f"initialised with {len(devices)}; build the strategy before any "
            f"other TensorFlow op runs")
    return devices[:count]


def check_num_replicas(num_replicas, num_gpus=0):
    """Refuses a number of local replicas this host cannot run.

    Args:
        num_replicas: `build_strategy`'s num_replicas: None or a positive
            int, at most `num_gpus` on a GPU host, else at most
            MAX_LOGICAL_CPU_REPLICAS.
        num_gpus: the host's GPUs.

    Raises:
        ValueError: naming the binding and the value, with the bound.
    """
    if num_replicas is None:
        return
    name = "distribute.build_strategy.num_replicas"
    checks.positive_int(name, num_replicas)
    if num_gpus and num_replicas > num_gpus:
        raise ValueError(f"{name} = {num_replicas} but this host has "
                         f"{num_gpus} GPUs")
    if not num_gpus and num_replicas > MAX_LOGICAL_CPU_REPLICAS:
        raise ValueError(
            f"{name} = {num_replicas}: one host's CPU runs at most "
            f"{MAX_LOGICAL_CPU_REPLICAS} simulated workers (each costs "
            f"memory and threads; 1024 take minutes to start); for a larger "
            f"k, use fewer replicas with ghost batch norm, "
            f"resnet_cifar.bn_group_size = n, which computes the same")


def _mirrored(num_replicas, cpu_threads, pack_workers):
    # Physical, not logical: listing logical devices would initialise TF
    # before the CPU can be split.
    if tf.config.list_physical_devices("GPU"):
        gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
        devices = gpus[:num_replicas] if num_replicas else gpus
        return tf.distribute.MirroredStrategy(devices)
    return simulated_workers(num_replicas or 1, pack_workers, cpu_threads)


def simulated_workers(workers, pack_workers=False, cpu_threads=None,
                      where="distribute.build_strategy."):
    """`logical_cpu_strategy` for `workers` simulated workers, packed onto
    fewer replicas as `worker_packing.choose` resolves `pack_workers`
    (the packing is `register`ed with the strategy).

    Args:
        workers: k.
        pack_workers: True, False or 'auto'.
        cpu_threads: applied for the replicas chosen (`cpu_threads.choose`)
            before the CPU is split; None leaves the threads as they are.
        where: the settings' prefix in error messages.
    """
    replicas, reason = worker_packing.choose(pack_workers, workers,
                                             where=where)
    if cpu_threads is not None:
        cpu_threads_lib.configure(cpu_threads, replicas, where=where)
    strategy = logical_cpu_strategy(replicas)
    worker_packing.register(strategy, workers // replicas, reason)
    return strategy


def logical_cpu_strategy(num_replicas):
    """MirroredStrategy over `num_replicas` logical CPUs: k simulated workers.

    Gradients are summed on the first device and broadcast
    (`ReductionToOneDevice`): on one host's memory that is the cheapest
    allreduce, and unlike the default collective ops it lets several such
    strategies coexist in one process (collective instance keys of separate
    strategies collide otherwise, tensorflow/tensorflow#61314).
    """
    devices = ensure_logical_cpus(num_replicas)
    return tf.distribute.MirroredStrategy(
        devices, cross_device_ops=tf.distribute.ReductionToOneDevice(
            reduce_to_device=devices[0]))


def communication_options(collective="auto", bytes_per_pack=0,
                          timeout_seconds=None):
    """The `CommunicationOptions` of the cross-worker collectives.

    Args:
        collective: `nccl` (GPU hosts: NVIDIA's ring/tree kernels inside and
            across servers), `ring` (TensorFlow's own ring, gRPC between
            hosts; the one for CPUs) or `auto` (NCCL when every worker has
            GPUs, else ring).
        bytes_per_pack: split an all-reduce of many tensors into packs of
            about this many bytes, each its own collective launched as soon
            as its gradients exist (the paper's per-layer-group buckets
            overlapped with backprop); 0 packs everything into one.
        timeout_seconds: abort a collective that waits longer (a dead peer),
            None to wait forever.

    Raises:
        ValueError: naming an unknown collective, a negative pack size or a
            non-positive timeout.
    """
    if collective not in COLLECTIVES:
        raise ValueError(f"Unknown collective {collective!r}; expected one of "
                         f"{sorted(COLLECTIVES)}")
    if (isinstance(bytes_per_pack, bool)
            or not isinstance(bytes_per_pack, (int, float))
            or bytes_per_pack != int(bytes_per_pack) or bytes_per_pack < 0):
        raise ValueError(f"bytes_per_pack must be a non-negative integer, got "
                         f"{bytes_per_pack!r}")
    if timeout_seconds is not None and (
            isinstance(timeout_seconds, bool)
            or not isinstance(timeout_seconds, (int, float))
            or not timeout_seconds > 0):
        raise ValueError(f"timeout_seconds must be positive or None, got "
                         f"{timeout_seconds!r}")
    return tf.distribute.experimental.CommunicationOptions(
        bytes_per_pack=int(bytes_per_pack), timeout_seconds=timeout_seconds,
        implementation=COLLECTIVES[collective])


def _multi_worker(collective, timeout_seconds):
    options = communication_options(collective,
                                    timeout_seconds=timeout_seconds)
    return tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=options)


def check_cluster_kind(kind, env=None):
    """Refuses a single-worker strategy when TF_CONFIG names several tasks.

    Each worker would otherwise train its own model alone and all would
    write to the same model_dir.

    Args:
        kind: the strategy kind, one of STRATEGIES.
        env: the environment to read TF_CONFIG from; None for os.environ.

    Raises:
        ValueError: naming the kind and the cluster, or what is wrong with
            TF_CONFIG (`cluster.validate_tf_config`).
    """
    tasks = cluster.worker_count(cluster.validate_tf_config(env))
    if tasks > 1 and kind not in ("multi_worker_mirrored", "tpu"):
        raise ValueError(
            f"TF_CONFIG describes a cluster of {tasks} workers but the "
            f"strategy kind is {kind!r}; bind distribute.build_strategy.kind "
            f"= 'multi_worker_mirrored' (e.g. --gin_file=distribute/"
            f"multi_worker_ring) or unset TF_CONFIG")


def _tpu(tpu_address):
    """TPUStrategy over the TPU at `tpu_address` ('local': this TPU VM's).

    Raises:
        ValueError: naming the address when TensorFlow finds no TPU there
            (a host without TPUs, or a TensorFlow build without TPU
            kernels), before anything is written.
    """
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu_address)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (tf.errors.OpError, ValueError, RuntimeError) as error:
        # Its first sentence ("TPUs not found in the cluster"), not the
        # kernel listing after it.
        cause = str(error).strip().splitlines()[0].split(". ")[0]
        raise ValueError(
            f"distribute.build_strategy.kind = 'tpu' but no TPU was found at "
            f"tpu_address {tpu_address!r} ({type(error).__name__}: {cause}); "
            f"run on a Cloud TPU VM with TensorFlow's TPU build (tensorflow-tpu and libtpu), or bind "
            f"distribute.build_strategy.tpu_address to your TPU's name, or "
            f"choose another kind (e.g. --gin_file=distribute/"
            f"multi_worker_nccl for GPUs)") from error
    return tf.distribute.TPUStrategy(resolver)


@gin.configurable
def build_strategy(kind="mirrored", num_replicas=None, collective="auto",
                   timeout_seconds=None, tpu_address="local",
                   cpu_threads=cpu_threads_lib.AUTO, pack_workers=False):
    """Builds the tf.distribute strategy named by `kind`.

    Args:
        kind: one of STRATEGIES.
        num_replicas: for `mirrored`, the number of local replicas k (logical
            CPU devices when there is no GPU); None uses every GPU, or 1 CPU.
        collective: `auto`, `nccl` (GPU hosts) or `ring` (CPU): the
            implementation of every collective of `multi_worker_mirrored`,
            the gradient all-reduce's too (whose packing and compression are
            `allreduce.GradientAllReduce`'s).
        timeout_seconds: the timeout of every collective, None for none.
        tpu_address: for `tpu`: 'local' (the TPUs of this Cloud TPU VM),
            or a TPU's name or grpc:// address.
        cpu_threads: for `mirrored` on a CPU: 'auto' (one thread per op
            for several replicas where that measured faster), 'default'
            (TensorFlow's) or (inter_op, intra_op) (`cpu_threads.choose`);
            applied before TensorFlow initialises.
        pack_workers: for `mirrored` on a CPU: run the num_replicas = k
            simulated workers on fewer replicas, one per core, each
            normalising every worker's examples on their own (the same
            computation, `worker_packing`): True, False, or 'auto' where
            it measured faster. The strategy then has fewer replicas than
            workers; `train_lib` reads the packing from it.

    Returns:
        A `tf.distribute.Strategy`.

    Raises:
        ValueError: for an unknown kind or collective, a bad TF_CONFIG, or
            a TF_CONFIG cluster of several workers with a one-worker kind,
            `tpu` on a host without a TPU, or a num_replicas that is not a
            positive int or more than the host can run
            (`check_num_replicas`).
    """
    check_cluster_kind(kind)
    check_num_replicas(num_replicas,
                       len(tf.config.list_physical_devices("GPU")))
    cpu_threads_lib.choose(cpu_threads, 1)  # A bad setting fails first.
    worker_packing.choose(pack_workers, 1)
    if kind == "default":
        return tf.distribute.get_strategy()
    if kind == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus
                                               else "/cpu:0")
    if kind == "mirrored":
        return _mirrored(num_replicas, cpu_threads, pack_workers)
    if kind == "multi_worker_mirrored":
        return _multi_worker(collective, timeout_seconds)
    if kind == "tpu":
        return _tpu(tpu_address)
    raise ValueError(f"Unknown strategy kind {kind!r}; expected one of "
                     f"{STRATEGIES}")


def is_chief(strategy):
    """True on the worker that writes summaries, configs and metrics."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return True
    return cluster.is_chief_role(resolver.cluster_spec().as_dict(),
                                 resolver.task_type, resolver.task_id)

