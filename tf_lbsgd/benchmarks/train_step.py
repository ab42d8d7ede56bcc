"""Train-step throughput: ours vs tf-models-official's loop vs Keras fit.

The models, the peers and how each applies a precision are in
`tf_lbsgd.benchmarks.step_peers`; here they are timed round by round in one
run (and, for `default_threads_peers`, in processes of their own), beside
the CPU's peaks, and tabled.

The achieved rate is also given in GFLOP/s (3 x forward multiply-adds x 2
per image: forward, and backward for activations and weights) against the
peaks of the precision's compute dtype (`peaks`: a matmul and a 3x3
convolution), measured in the same rounds, with the CPU's bfloat16 units.
"""

import tensorflow as tf

from tf_lbsgd import benchmark
from tf_lbsgd import cpu_threads as cpu_threads_lib
from tf_lbsgd.analysis import machine
from tf_lbsgd.analysis import tables
from tf_lbsgd.benchmarks import child_peer
from tf_lbsgd.benchmarks import peaks as peaks_lib
from tf_lbsgd.benchmarks import step_peers
from tf_lbsgd.models import flops


def gflop_per_image(model):
    """Training FLOP of one image: 3 x forward multiply-adds x 2."""
    return 3 * flops.multiply_adds(model) * 2 / 1e9


def milliseconds(seconds):
    """A table cell of `seconds` in ms: whole ms from 1 s up (no exponent)."""
    ms = seconds * 1000
    return round(ms) if ms >= 1000 else ms


def summarize(seconds_per_step, global_batch, gflop, peaks,
              reference="ours"):
    """Table rows and JSON records: images/s, ratios, shares of the peaks.

    Args:
        seconds_per_step: dict peer -> list of seconds per step (one per
            round).
        global_batch: images per step.
        gflop: training GFLOP per image.
        peaks: {"matmul": GFLOP/s, "conv": GFLOP/s} measured in the
            precision's compute dtype.
        reference: the peer every ratio is taken of (ours / peer).

    Returns:
        (rows, records): rows for `tables.markdown_table`, and a dict peer
        -> {seconds_per_step, median_s_per_step, images_per_second, gflops,
        peak_fraction (of the matmul peak), conv_peak_fraction,
        ours_speedup}.
    """
    medians = {peer: benchmark.median(values)
               for peer, values in seconds_per_step.items()}
    records, rows = {}, []
    for peer, seconds in medians.items():
        rate = global_batch / seconds
        record = {
            "seconds_per_step": seconds_per_step[peer],
            "median_s_per_step": seconds,
            "images_per_second": rate,
            "gflops": rate * gflop,
            "peak_fraction": rate * gflop / peaks["matmul"],
            "conv_peak_fraction": rate * gflop / peaks["conv"],
            "ours_speedup": seconds / medians[reference],
        }
        records[peer] = record
        rows.append([peer, milliseconds(seconds), rate, record["gflops"],
                     f"{100 * record['peak_fraction']:.0f}%",
                     f"{100 * record['conv_peak_fraction']:.0f}%",
                     f"{record['ours_speedup']:.2f}x"])
    return rows, records


def speed_ratios(records_by_precision):
    """Each later precision's speed over the first's, per peer in both.

    Args:
        records_by_precision: dict precision -> peer -> record of
            `summarize` (the first precision is the base).

    Returns:
        dict "<precision>/<base>" -> peer -> base median s/step over the
        precision's (above 1: faster than the base).
    """
    base, *others = list(records_by_precision)
    first = records_by_precision[base]
    return {f"{name}/{base}": {
        peer: first[peer]["median_s_per_step"] / record["median_s_per_step"]
        for peer, record in records_by_precision[name].items()
        if peer in first} for name in others}


def ratio_table(records_by_precision):
    """Markdown: per peer, ms/step in each precision and the speed ratios
    of `speed_ratios`."""
    names = list(records_by_precision)
    ratios = speed_ratios(records_by_precision)
    peers = [peer for peer in records_by_precision[names[0]]
             if all(peer in records_by_precision[name] for name in names)]
    header = (["peer"] + [f"{name} ms/step" for name in names]
              + [f"{key} speed" for key in ratios])
    rows = [[peer] + [milliseconds(records_by_precision[name][peer][
        "median_s_per_step"]) for name in names]
            + [f"{ratios[key][peer]:.2f}x" for key in ratios]
            for peer in peers]
    return tables.markdown_table(header, rows)


def failure_reason(error):
    """One line of why a peer failed: the error's type and the last line of
    its message that is not TensorFlow's traceback framing ("Graph
    execution error:", "Detected at node", "File ...", "[[node]]")."""
    framing = ("Graph execution error", "Detected at node", "File ", "[[",
               "Cf. ")
    lines = [line.strip() for line in str(error).splitlines()]
    reasons = [line for line in lines
               if line and not line.startswith(framing)]
    return f"{type(error).__name__}: {(reasons or lines or [''])[-1]}"


DEFAULT_THREADS_SUFFIX = "_default_threads"


def _check_default_threads_peers(peers, child_command):
    """Raises ValueError for an unknown peer, or peers without a command."""
    for peer in peers:
        if peer not in step_peers.default_peers("resnet50"):
            raise ValueError(f"unknown peer {peer!r}; the peers are "
                             f"{step_peers.default_peers('resnet50')}")
    if peers and child_command is None:
        raise ValueError("default_threads_peers needs a child_command")


def _child_runners(peers, precisions, child_command):
    """(precision, peer + DEFAULT_THREADS_SUFFIX) -> `child_peer.ChildPeer`
    of `child_command(peer, precision)`, and the failures (same keys)."""
    runners, failures = {}, {}
    for precision in precisions:
        for peer in peers:
            key = (precision, peer + DEFAULT_THREADS_SUFFIX)
            try:
                runners[key] = child_peer.ChildPeer(
                    child_command(peer, precision))
            except RuntimeError as error:
                failures[key] = failure_reason(error)
    return runners, failures


def _runners(peers, strategy, spec, per_replica, steps, precisions,
             ours_strategy=None):
    """(runners: (precision, peer) -> runner, a model of ours or None,
    failures: (precision, peer) -> why); our peers run under
    `ours_strategy` if given (packed workers)."""
    runners, model, failures = {}, None, {}
    for precision in precisions:
        for peer in peers:
            peer_strategy = (ours_strategy if ours_strategy is not None
                             and peer.startswith("ours") else strategy)
            try:
                runner, built = step_peers.runner(
                    peer, peer_strategy, spec, per_replica, steps, precision)
            except (tf.errors.OpError, RuntimeError) as error:
                # A peer that cannot run this configuration is reported,
                # not hidden (Keras' fit with XLA under a multi-device
                # strategy).
                failures[precision, peer] = failure_reason(error)
                continue
            runners[precision, peer] = runner
            model = model or built
    return runners, model, failures


def peak_dtypes(precisions):
    """float32 and bfloat16, and the compute dtype of any other precision."""
    dtypes = ["float32", "bfloat16"]
    for name in precisions:
        dtype = peaks_lib.COMPUTE_DTYPE[name]
        if dtype not in dtypes:
            dtypes.append(dtype)
    return dtypes


def _failures_of(failures, precision):
    """peer -> why, of the (precision, peer) -> why `failures`."""
    return {peer: why for (name, peer), why in failures.items()
            if name == precision}


def _peer_table(precision, rows, peaks, reference, failures):
    """One precision's heading line, peer table and failed peers."""
    dtype = peaks_lib.COMPUTE_DTYPE[precision]
    header = ["peer", "ms/step", "images/s", "GFLOP/s",
              f"of {dtype} matmul peak", f"of {dtype} conv peak",
              f"{reference} speed-up"]
    return (f"{precision} (computing in {dtype}; peaks: matmul "
            f"{peaks['matmul']:.1f}, conv {peaks['conv']:.1f} GFLOP/s)\n\n"
            + tables.markdown_table(header, rows)
            + _failure_lines(precision, failures))


def _failure_lines(precision, failures):
    """A paragraph per peer of `failures` (peer -> why)."""
    return "".join(f"\n\n{peer} ({precision}) could not run: {why[:300]}"
                   for peer, why in failures.items())


def _by_precision(precisions, results, failures, global_batch, gflop, peaks):
    """Summaries of each precision's peers against its dtype's peaks.

    Returns:
        (sections: markdown per precision that has a measured peer, and the
        ratio table if there are several; dict precision -> {compute_dtype,
        reference, peers: records of `summarize`, failed_peers}).
    """
    sections, by_precision = [], {}
    for precision in precisions:
        measured = {peer: values for (name, peer), values in results.items()
                    if name == precision}
        failed = _failures_of(failures, precision)
        if not measured:
            sections.append(f"{precision}: no peer ran"
                            + _failure_lines(precision, failed))
            continue
        dtype = peaks_lib.COMPUTE_DTYPE[precision]
        dtype_peaks = {kernel: peaks[kernel][dtype] for kernel in peaks}
        reference = ("ours_xla" if "ours_xla" in measured
                     else next(iter(measured)))
        rows, records = summarize(measured, global_batch, gflop,
                                  dtype_peaks, reference)
        sections.append(_peer_table(precision, rows, dtype_peaks, reference,
                                    failed))
        by_precision[precision] = {"compute_dtype": dtype,
                                   "reference": reference, "peers": records,
                                   "failed_peers": failed}
    records = {name: entry["peers"] for name, entry in by_precision.items()}
    if len(records) > 1:
        sections.append(f"Speed of each precision over {next(iter(records))}"
                        f" (same rounds)\n\n{ratio_table(records)}")
    return sections, by_precision


def run_benchmark(model_name, rounds, batch=None, steps=None, peers=None,
                  replicas=None, precisions=("float32",),
                  peak_matmul_size=peaks_lib.MATMUL_SIZE,
                  peak_conv_batch=peaks_lib.CONV_SHAPE["batch"], peak_runs=5,
                  cpu_threads=cpu_threads_lib.DEFAULT, pack_workers=False,
                  default_threads_peers=(), child_command=None):
    """Measures the peers of `model_name` in each precision, interleaved.

    Each round runs the peak kernels (matmul and conv in float32, bfloat16
    and any other compute dtype asked for), then every peer in every
    precision: the ratios between precisions are measured side by side.

    Args:
        model_name: A key of step_peers.MODELS.
        rounds: Rounds per peer.
        batch: Global batch; None for the model's.
        steps: Steps per timing; None for the model's.
        peers: Peers to run; None for `step_peers.default_peers`.
        replicas: Replicas; None for the model's.
        precisions: Names of `precision.PRECISIONS`; the first is the base
            of the speed ratios and of the payload's top-level fields.
        peak_matmul_size: The peak matmul's side (2048; smaller for tests).
        peak_conv_batch: The peak convolution's batch (16; 1 for tests).
        peak_runs: Timed runs of each peak kernel per round (the median
            counts).
        cpu_threads: TensorFlow's thread counts for every peer of this
            process (`cpu_threads.choose`: 'default', 'auto' for what the
            project's runs choose, or (inter_op, intra_op)); Model Garden's
            loop, a process of its own, keeps TensorFlow's default.
        pack_workers: run our peers' `replicas` simulated workers on fewer
            replicas with ghost BN per worker (`worker_packing.choose`:
            True, False, or 'auto' as the project's runs choose); the other
            peers keep one replica per worker (Keras' fit has no ghost BN).
        default_threads_peers: peers also measured each in a process of its
            own with TensorFlow's default threads, as their users run them
            (`child_peer`), named peer + DEFAULT_THREADS_SUFFIX: beside
            `cpu_threads='auto'`, the project's choice against theirs in
            the same rounds.
        child_command: callable(peer, precision) -> the argv of such a
            process (the tool's `--serve_peer`); needed with
            `default_threads_peers`.

    Returns:
        (table: markdown with a heading line, the CPU's bfloat16 line, the
        peaks, a table per precision with the peers that could not run, and
        the speed ratios between precisions; payload: every measurement, for
        `benchmark.write_json`: the first precision's in the top-level
        fields as before, every precision's in `by_precision`).

    Raises:
        ValueError: for an unknown or repeated precision, or unknown peer.
    """
    precisions = step_peers.check_precisions(precisions)
    _check_default_threads_peers(default_threads_peers, child_command)
    spec = dict(step_peers.MODELS[model_name])
    spec["replicas"] = replicas or spec["replicas"]
    per_replica = (batch // spec["replicas"] if batch
                   else spec["per_replica_batch"])
    global_batch = per_replica * spec["replicas"]
    steps = steps or spec["steps"]
    cpu_threads_lib.configure(cpu_threads, spec["replicas"],
                              where="--")  # Before TF starts.
    threads = cpu_threads_lib.chosen()
    strategy = step_peers.strategy_for(spec["replicas"])
    ours_strategy, packing = step_peers.packed_strategy(spec["replicas"],
                                                        pack_workers)
    conv_shape = dict(peaks_lib.CONV_SHAPE, batch=peak_conv_batch)
    kernels = peaks_lib.peak_kernels(peak_dtypes(precisions),
                                     peak_matmul_size, conv_shape, peak_runs)
    runners, model, failures = _runners(
        peers or step_peers.default_peers(model_name), strategy, spec,
        per_replica, steps, precisions, ours_strategy)
    children, child_failures = _child_runners(
        default_threads_peers, precisions, child_command)
    runners.update(children)
    failures.update(child_failures)
    if model is None:
        model = spec["model_fn"](input_shape=spec["image_shape"],
                                 num_classes=spec["num_classes"])
    try:
        results = benchmark.interleaved({**kernels, **runners}, rounds)
    finally:
        for child in children.values():
            child.close()
    peaks = peaks_lib.median_peaks({key: results.pop(key) for key in kernels})
    gflop = gflop_per_image(model)
    sections, by_precision = _by_precision(precisions, results, failures,
                                           global_batch, gflop, peaks)
    capability = peaks_lib.cpu_capability()
    table = "\n\n".join([
        f"{model_name}: global batch {global_batch} "
        f"({spec['replicas']} replica(s)), {steps} steps per timing, "
        f"{rounds} rounds, median; training {gflop:.3g} GFLOP/image; "
        f"CPU {machine.cpu_model()}; threads per op "
        f"{threads['intra_op'] or 'all'} ({threads['reason']}); ours: "
        f"{packing}",
        peaks_lib.peaks_table(peaks, capability, peak_matmul_size,
                              conv_shape),
        *sections])
    base = by_precision.get(precisions[0], {})
    records = {name: entry["peers"] for name, entry in by_precision.items()}
    payload = {"model": model_name, "global_batch": global_batch,
               "replicas": spec["replicas"], "steps": steps,
               "rounds": rounds, "gflop_per_image": gflop,
               "matmul_peak_gflops": peaks["matmul"]["float32"],
               "reference": base.get("reference"),
               "peers": base.get("peers", {}),
               "failed_peers": _failures_of(failures, precisions[0]),
               "precision": precisions[0], "precisions": precisions,
               "by_precision": by_precision,
               "speed_ratios": (speed_ratios(records) if len(records) > 1
                                else {}),
               "peaks_gflops": peaks,
               "peak_shapes": {"matmul_size": peak_matmul_size,
                               "conv": conv_shape, "runs": peak_runs},
               "cpu_bfloat16": capability,
               "threads": threads,
               "ours_packing": {"replicas": (
                   ours_strategy.num_replicas_in_sync if ours_strategy
                   else spec["replicas"]), "reason": packing}}
    return table, payload
