"""Scenarios of the allreduce cost model, their tables, checks and plot.

`collective_costs` prices the collectives, `backprop_overlap` an iteration
that overlaps them with backprop; `analyse` computes three scenarios and
`report` prints one table each (tools/comm_model.py is the command line):

  paper  ResNet-50, 8 P100 per server, 50 Gbit/s Ethernet, 8..256 GPUs; only
         the time outside backprop is fitted (one server takes 0.26 s x
         0.90), the 256-GPU efficiency is predicted.
  h100   ResNet-50, 8 H100 per host, 400 Gbit/s per host, 8..max_gpus GPUs,
         ring vs halving-doubling, with and without overlap.
  local  With a calibration (`allreduce_calibration`): 1 and 2 workers.

Known gap: the model gives ~97-98% efficiency at 256 GPUs, above the paper's
~90%: stragglers, contention of communication with compute and imperfect
overlap are not modelled; `paper_checks` gives the seconds per iteration the
paper's 90% implies beyond the model, `paper_sensitivity` the efficiency for
other latencies and bucket sizes. `write_plot` imports matplotlib.
"""

import dataclasses

from tf_lbsgd.analysis import allreduce_calibration
from tf_lbsgd.analysis import backprop_overlap
from tf_lbsgd.analysis import collective_costs
from tf_lbsgd.analysis import link_model
from tf_lbsgd.analysis import tables

# The paper's numbers (docs/paper.md, "Systems facts").
PAPER_SECONDS_PER_ITERATION_256 = 0.26  # kn = 8k on 256 GPUs.
PAPER_EFFICIENCY_256 = 0.90  # Throughput vs linear scaling from 8 GPUs.
PAPER_HD_OVER_RING_SPEEDUP_32_SERVERS = 3.0  # Sec. 4, Gloo measurements.


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
    bytes_per_param: float = backprop_overlap.FP32_BYTES  # 102.2 MB in fp32.
    # Bucket size, an assumption: PyTorch DDP's default. The paper
    # allreduces "as soon as the gradient for a layer is computed": pass
    # --paper_bucket_mib=0 for one bucket per layer (`paper_sensitivity`
    # shows both).
    bucket_mib: float = 25.0
    # Host time per byte a server sends, added to the link's (`HOST_COST`).
    host_ns_per_byte: float = 0.0


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
    # fp32 gradients (AMP's default).
    bytes_per_param: float = backprop_overlap.FP32_BYTES
    bucket_mib: float = 25.0
    host_ns_per_byte: float = 0.0  # As PaperSetting's (`HOST_COST`).


# HOST_COST: the emulated links (`link_model`, tools/bench_links.py) showed
# an all-reduce over TensorFlow's gRPC transport taking the ring model's
# time on the link plus its own host time (copies, serialisation, sums) one
# after the other. `host_ns_per_byte` adds that host time per byte sent to
# the inter-server beta: 0 for a transport that offloads it (NCCL, RDMA,
# the settings' default), or this machine's measured cost
# (`link_model.host_seconds_per_byte`, `analyse`'s `link_records`).


def _cluster(setting):
    """The `collective_costs.Cluster` of a PaperSetting or H100Setting."""
    return collective_costs.Cluster(
        gpus_per_server=setting.gpus_per_server,
        inter_alpha=setting.inter_alpha_us * collective_costs.US,
        inter_beta=1 / (setting.inter_gbits
                        * collective_costs.GBIT_PER_SECOND)
        + setting.host_ns_per_byte * 1e-9,
        intra_alpha=setting.intra_alpha_us * collective_costs.US,
        intra_beta=1 / (setting.intra_gbytes * 1e9),
        gamma=setting.gamma_ns_per_byte * 1e-9)


def paper_scenario(setting=PaperSetting()):
    """Rows and parameters of the paper's cluster, 8..256 GPUs."""
    cluster = _cluster(setting)
    workload = backprop_overlap.Workload(
        forward_seconds=0.0, backward_seconds=setting.backward_seconds,
        bytes_per_param=setting.bytes_per_param,
        bucket_bytes=setting.bucket_mib * collective_costs.MIB,
        images_per_gpu=setting.images_per_gpu)
    base = setting.gpus_per_server
    forward = backprop_overlap.solve_forward_seconds(
        setting.base_iteration_seconds, workload, cluster, base,
        collective_costs.HALVING_DOUBLING)
    workload = dataclasses.replace(workload, forward_seconds=forward)
    gpu_counts = powers_of_two(base, setting.max_gpus)
    variants = [(collective_costs.RING, True),
                (collective_costs.HALVING_DOUBLING, True)]
    return _scenario("paper", setting, cluster, workload, gpu_counts,
                     variants)


def h100_scenario(setting=H100Setting()):
    """Rows and parameters of 8-H100 hosts, 8..max_gpus GPUs."""
    cluster = _cluster(setting)
    compute = setting.images_per_gpu / setting.images_per_second_per_gpu
    workload = backprop_overlap.Workload(
        forward_seconds=compute * (1 - setting.backward_share),
        backward_seconds=compute * setting.backward_share,
        bytes_per_param=setting.bytes_per_param,
        bucket_bytes=setting.bucket_mib * collective_costs.MIB,
        images_per_gpu=setting.images_per_gpu)
    gpu_counts = powers_of_two(setting.gpus_per_server, setting.max_gpus)
    variants = [(algorithm, overlap) for overlap in (True, False)
                for algorithm in collective_costs.ALGORITHMS]
    return _scenario("h100", setting, cluster, workload, gpu_counts,
                     variants)


def local_scenario(calibration, step_seconds, gradient_bytes=None,
                   bucket_mib=25.0, backward_share=2 / 3,
                   images_per_worker=1):
    """The calibrated local cluster: 1 and 2 workers, flat ring, ResNet-50's
    layer profile scaled to `gradient_bytes`.

    Args:
        calibration: `allreduce_calibration.calibrate`'s alpha and beta.
        step_seconds: measured compute seconds of a step on one worker.
        gradient_bytes: allreduced per step; default ResNet-50's in fp32.
        bucket_mib: the bucket size of the overlap.
        backward_share: the share of `step_seconds` that is backprop.
        images_per_worker: per step.

    Returns:
        The scenario: dict with name, parameters and rows.
    """
    cluster = collective_costs.Cluster(
        gpus_per_server=1, inter_alpha=calibration["alpha"],
        inter_beta=calibration["beta"], intra_alpha=0.0, intra_beta=0.0)
    params = sum(layer.params for layer in backprop_overlap.resnet50_layers())
    if gradient_bytes is None:
        gradient_bytes = params * backprop_overlap.FP32_BYTES
    workload = backprop_overlap.Workload(
        forward_seconds=step_seconds * (1 - backward_share),
        backward_seconds=step_seconds * backward_share,
        bytes_per_param=gradient_bytes / params,
        bucket_bytes=bucket_mib * collective_costs.MIB,
        images_per_gpu=images_per_worker)
    variants = [(collective_costs.RING, True), (collective_costs.RING, False)]
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
        "rows": backprop_overlap.scaling_rows(workload, cluster, gpu_counts,
                                              variants),
    }


def paper_checks(paper):
    """The paper's claims next to the model's halving-doubling numbers."""
    last = [row for row in paper["rows"]
            if row["algorithm"] == collective_costs.HALVING_DOUBLING][-1]
    cluster = paper["parameters"]["cluster"]
    servers = 32
    nbytes = paper["parameters"]["gradient_bytes"]
    beta, gamma = cluster["inter_beta"], cluster["gamma"]
    alpha = cluster["inter_alpha"]

    def ratio(size):
        args = (size, servers, alpha, beta, gamma)
        return (collective_costs.ring_allreduce_seconds(*args)
                / collective_costs.halving_doubling_allreduce_seconds(*args))

    def alpha_us_for_paper_speedup(size):
        return collective_costs.alpha_for_speedup(
            size, servers, beta, PAPER_HD_OVER_RING_SPEEDUP_32_SERVERS,
            gamma) / collective_costs.US

    bucket = 25 * collective_costs.MIB
    layers = backprop_overlap.resnet50_layers()
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
        "alpha_us_for_paper_speedup_25mib_bucket":
            alpha_us_for_paper_speedup(bucket),
        "alpha_us_for_paper_speedup_mean_layer":
            alpha_us_for_paper_speedup(mean_layer),
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


def analyse(paper=PaperSetting(), h100=H100Setting(), calibration_data=None,
            link_records=None, link_pack_bytes=4 * collective_costs.MIB):
    """Every scenario and check of the model, as one JSON-ready dict.

    Args:
        paper: the `PaperSetting` of the paper scenario.
        h100: the `H100Setting` of the h100 scenario.
        calibration_data: None (calibration skipped) or the object of
            `allreduce_calibration.read_calibration`; with its
            "step_seconds", the local scenario is added.
        link_records: None, or the records of tools/bench_links.py
            (emulated links): the host cost per byte of this machine's
            gRPC all-reduce in packs of `link_pack_bytes` is fitted
            (`link_model.host_seconds_per_byte`) and the paper and h100
            scenarios are projected again with it (`HOST_COST`), as
            "paper + gRPC host" and "h100 + gRPC host".

    Returns:
        dict with paper_checks, paper_sensitivity, calibration (the fit of
        `allreduce_calibration.calibrate`, or {"skipped": True}),
        link_calibration ({"skipped": True} or host_ns_per_byte and the
        pack size) and scenarios (name -> scenario, in the order paper,
        h100, the two projections with the host cost, local).
    """
    scenarios = [paper_scenario(paper), h100_scenario(h100)]
    result = {"paper_checks": paper_checks(scenarios[0]),
              "paper_sensitivity": paper_sensitivity(paper),
              "calibration": {"skipped": True},
              "link_calibration": {"skipped": True}}
    if link_records is not None:
        host_ns = 1e9 * link_model.host_seconds_per_byte(link_records,
                                                         link_pack_bytes)
        result["link_calibration"] = {"host_ns_per_byte": host_ns,
                                      "bytes_per_pack": link_pack_bytes}
        for base, setting, build in ((scenarios[0], paper, paper_scenario),
                                     (scenarios[1], h100, h100_scenario)):
            projected = build(dataclasses.replace(
                setting, host_ns_per_byte=host_ns))
            projected["name"] = f"{base['name']} + gRPC host"
            projected["rows"] = [r for r in projected["rows"]
                                 if r["overlap"]]
            scenarios.append(projected)
    if calibration_data is not None:
        calibration = allreduce_calibration.calibrate(
            calibration_data["allreduce_sweep"])
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
    lines = [_calibration_line(result["calibration"])]
    link = result.get("link_calibration", {"skipped": True})
    if not link.get("skipped"):
        lines.append(
            f"host cost of this machine's gRPC all-reduce (unshaped links, "
            f"{link['bytes_per_pack'] / collective_costs.MIB:g} MiB packs): "
            f"{link['host_ns_per_byte']:.2f} ns per byte sent "
            f"({1 / link['host_ns_per_byte']:.2f} GB/s), added to the "
            f"inter-server link in the '+ gRPC host' scenarios")
    lines.append("")
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
    alpha_us = calibration["alpha"] / collective_costs.US
    return (f"calibration: alpha = {alpha_us:.1f} us, "
            f"bandwidth = {gbytes:.3f} GB/s, relative residual rms = "
            f"{calibration['relative_residual_rms']:.3f} "
            f"({calibration['count']} measurements)")


def write_plot(scenarios, path):
    """Efficiency and iteration time vs GPUs (log2 axis) as a PNG."""
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    from matplotlib import pyplot  # pylint: disable=import-outside-toplevel

    figure, (left, right) = pyplot.subplots(1, 2, figsize=(12, 4.8))
    # A colour per scenario; the line says the algorithm and overlap.
    colors = pyplot.rcParams["axes.prop_cycle"].by_key()["color"]
    lines = {(collective_costs.RING, True): ("-", "o"),
             (collective_costs.HALVING_DOUBLING, True): ("-.", "s"),
             (collective_costs.RING, False): (":", "o"),
             (collective_costs.HALVING_DOUBLING, False): (":", "s")}
    for index, scenario in enumerate(scenarios):
        for (algorithm, overlap), rows in _variants(scenario).items():
            label = (f"{scenario['name']} {algorithm}"
                     + ("" if overlap else " no overlap"))
            style, marker = lines.get((algorithm, overlap), ("--", "x"))
            gpus = [row["gpus"] for row in rows]
            options = {"linestyle": style, "marker": marker, "label": label,
                       "color": colors[index % len(colors)],
                       "markersize": 4}
            left.plot(gpus, [row["efficiency"] for row in rows], **options)
            right.plot(gpus, [1e3 * row["iteration_seconds"] for row in rows],
                       **options)
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
