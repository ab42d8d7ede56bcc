"""Tests of the allreduce cost model of tf_lbsgd.analysis (collective_costs,
backprop_overlap, allreduce_calibration, comm_model) and tools/comm_model.py.

The collective costs are checked against step-by-step simulations written
here, which move real numpy data between simulated workers (so they also
check that the schedule computes the sum) and charge alpha + m beta per
step for the largest message m, plus m gamma where it is reduced.
"""

import dataclasses
import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tf_lbsgd.analysis import allreduce_calibration
from tf_lbsgd.analysis import backprop_overlap
from tf_lbsgd.analysis import collective_costs
from tf_lbsgd.analysis import comm_model

# abspath, not resolve(): under Bazel the test file is a symlink into the
# checkout, and the tool must come from the runfiles next to it.
TOOL = pathlib.Path(os.path.abspath(__file__)).parents[1] / "tools" / (
    "comm_model.py")

ALPHA, BETA, GAMMA = 3e-5, 2e-9, 5e-10
ITEMSIZE = 8  # float64 elements in the simulations.
MIB = collective_costs.MIB


def worker_vectors(workers, elements, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(elements) for _ in range(workers)]


def step_seconds(messages, reduced):
    """One step: every worker sends at once; the largest message counts."""
    size = max(message.nbytes for message in messages)
    return ALPHA + size * BETA + (size * GAMMA if reduced else 0.0)


def simulate_ring(vectors):
    """Ring reduce-scatter then allgather; returns (results, seconds)."""
    p = len(vectors)
    chunks = [np.array_split(v.copy(), p) for v in vectors]
    seconds = 0.0
    for step in range(p - 1):  # Reduce-scatter.
        sends = [(i, (i - step) % p) for i in range(p)]
        messages = [chunks[i][c].copy() for i, c in sends]
        for (i, c), message in zip(sends, messages):
            chunks[(i + 1) % p][c] += message
        seconds += step_seconds(messages, reduced=True)
    for step in range(p - 1):  # Allgather.
        sends = [(i, (i + 1 - step) % p) for i in range(p)]
        messages = [chunks[i][c].copy() for i, c in sends]
        for (i, c), message in zip(sends, messages):
            chunks[(i + 1) % p][c] = message
        seconds += step_seconds(messages, reduced=False)
    return [np.concatenate(c) for c in chunks], seconds


def simulate_halving_doubling(vectors):
    """Recursive halving then doubling (p a power of two)."""
    p = len(vectors)
    data = [v.copy() for v in vectors]
    segments = [(0, len(vectors[0]))] * p
    seconds, distance = 0.0, p // 2
    while distance >= 1:  # Recursive halving: reduce-scatter.
        kept = []
        for i in range(p):
            low, high = segments[i]
            middle = (low + high) // 2
            kept.append((low, middle) if i < i ^ distance
                        else (middle, high))
        messages = [data[i ^ distance][slice(*kept[i])].copy()
                    for i in range(p)]
        for i, message in enumerate(messages):
            data[i][slice(*kept[i])] += message
        seconds += step_seconds(messages, reduced=True)
        segments, distance = kept, distance // 2
    distance = 1
    while distance < p:  # Recursive doubling: allgather.
        messages = [data[i ^ distance][slice(*segments[i ^ distance])].copy()
                    for i in range(p)]
        merged = []
        for i, message in enumerate(messages):
            partner = segments[i ^ distance]
            data[i][slice(*partner)] = message
            merged.append((min(segments[i][0], partner[0]),
                           max(segments[i][1], partner[1])))
        seconds += step_seconds(messages, reduced=False)
        segments, distance = merged, distance * 2
    return data, seconds


def simulate_halving_doubling_any(vectors):
    """Thakur et al. 2005's handling of p not a power of two."""
    p = len(vectors)
    power = 2 ** int(math.log2(p))
    extra = p - power
    if not extra:
        return simulate_halving_doubling(vectors)
    vectors = [v.copy() for v in vectors]
    # Ranks 0, 2, ..., 2 extra - 2 send everything to their odd neighbour.
    messages = [vectors[i] for i in range(0, 2 * extra, 2)]
    for i in range(0, 2 * extra, 2):
        vectors[i + 1] += vectors[i]
    seconds = step_seconds(messages, reduced=True)
    group = [i for i in range(p) if i >= 2 * extra or i % 2]
    reduced, core = simulate_halving_doubling([vectors[i] for i in group])
    results = dict(zip(group, reduced))
    for i in range(0, 2 * extra, 2):
        results[i] = results[i + 1].copy()
    seconds += core + step_seconds(messages, reduced=False)
    return [results[i] for i in range(p)], seconds


@pytest.mark.parametrize("workers", [2, 3, 4, 5, 8])
def test_ring_matches_step_by_step_simulation(workers):
    vectors = worker_vectors(workers, elements=workers * 60)
    results, seconds = simulate_ring(vectors)
    for result in results:
        np.testing.assert_allclose(result, np.sum(vectors, axis=0))
    nbytes = vectors[0].nbytes
    assert collective_costs.ring_allreduce_seconds(
        nbytes, workers, ALPHA, BETA, GAMMA) == pytest.approx(seconds)


@pytest.mark.parametrize("workers", [2, 4, 8, 16])
def test_halving_doubling_matches_simulation(workers):
    vectors = worker_vectors(workers, elements=16 * 48)
    results, seconds = simulate_halving_doubling(vectors)
    for result in results:
        np.testing.assert_allclose(result, np.sum(vectors, axis=0))
    assert collective_costs.halving_doubling_allreduce_seconds(
        vectors[0].nbytes, workers, ALPHA, BETA, GAMMA) == pytest.approx(
            seconds)
    # 2 log2(p) latencies against the ring's 2 (p - 1), same bandwidth.
    ring = collective_costs.ring_allreduce_seconds(
        vectors[0].nbytes, workers, ALPHA, BETA, GAMMA)
    assert ring - seconds == pytest.approx(
        (2 * (workers - 1) - 2 * math.log2(workers)) * ALPHA)


@pytest.mark.parametrize("workers", [3, 5, 6, 12])
def test_halving_doubling_other_counts_match_simulation(workers):
    vectors = worker_vectors(workers, elements=16 * 48)
    results, seconds = simulate_halving_doubling_any(vectors)
    for result in results:
        np.testing.assert_allclose(result, np.sum(vectors, axis=0))
    assert collective_costs.halving_doubling_allreduce_seconds(
        vectors[0].nbytes, workers, ALPHA, BETA, GAMMA) == pytest.approx(
            seconds)


@pytest.mark.parametrize("function", [
    collective_costs.ring_allreduce_seconds,
    collective_costs.halving_doubling_allreduce_seconds,
    collective_costs.pipelined_chain_seconds])
def test_one_worker_costs_nothing(function):
    assert function(10**8, 1, ALPHA, BETA, GAMMA) == 0.0


@pytest.mark.parametrize("workers", [0, -2, 2.5])
def test_bad_worker_counts_raise(workers):
    with pytest.raises(ValueError, match="positive integer"):
        collective_costs.ring_allreduce_seconds(100, workers, ALPHA, BETA)


def test_unknown_algorithm_raises():
    with pytest.raises(ValueError, match="'tree'"):
        collective_costs.allreduce_seconds("tree", 100, 4, ALPHA, BETA)


def test_chain_formula_is_the_limit_of_a_chunked_pipeline():
    # g GPUs in a chain, C chunks: (g - 1 + C - 1) steps of one chunk.
    gpus, nbytes, chunks = 8, 10**8, 10**5
    pipeline = (gpus - 1 + chunks - 1) * (nbytes / chunks) * (BETA + GAMMA)
    formula = collective_costs.pipelined_chain_seconds(nbytes, gpus, 0.0,
                                                       BETA, GAMMA)
    assert formula == pytest.approx(pipeline, rel=1e-3)


def cluster(gpus_per_server=8):
    return collective_costs.Cluster(
        gpus_per_server=gpus_per_server, inter_alpha=ALPHA, inter_beta=BETA,
        intra_alpha=1e-6, intra_beta=BETA / 10, gamma=GAMMA)


@pytest.mark.parametrize("algorithm", collective_costs.ALGORITHMS)
def test_hierarchical_phases(algorithm):
    nbytes = 10**7
    flat = collective_costs.hierarchical_allreduce_seconds(
        nbytes, 16, cluster(1), algorithm)
    assert flat == pytest.approx(collective_costs.allreduce_seconds(
        algorithm, nbytes, 16, ALPHA, BETA, GAMMA))
    # One server: reduce (summing) then broadcast, (g - 1) hops each.
    one_server = collective_costs.hierarchical_allreduce_seconds(
        nbytes, 8, cluster(), algorithm)
    assert one_server == pytest.approx(
        2 * 7 * 1e-6 + 2 * nbytes * BETA / 10 + nbytes * GAMMA)
    four_servers = collective_costs.hierarchical_allreduce_seconds(
        nbytes, 32, cluster(), algorithm)
    assert four_servers - one_server == pytest.approx(
        collective_costs.allreduce_seconds(algorithm, nbytes, 4, ALPHA,
                                           BETA, GAMMA))


def test_partial_servers_raise():
    with pytest.raises(ValueError, match="12 GPUs"):
        collective_costs.hierarchical_allreduce_seconds(100, 12, cluster(),
                                                        "ring")


def test_resnet50_profile():
    layers = backprop_overlap.resnet50_layers()
    assert sum(layer.params for layer in layers) == 25_557_032
    # 4.09 G forward multiply-adds per 224x224 image (R15, docs/paper.md).
    assert sum(layer.macs for layer in layers) == pytest.approx(4.09e9,
                                                                rel=1e-3)
    assert len(layers) == 54  # 53 conv layers (with their BN) and fc.
    assert layers[0].params == 7 * 7 * 3 * 64 + 2 * 64
    assert layers[-1].params == 2048 * 1000 + 1000


@pytest.mark.parametrize("bucket_mib", [0, 1, 25, math.inf])
def test_buckets_cover_the_gradients_in_backprop_order(bucket_mib):
    layers = backprop_overlap.resnet50_layers()
    buckets = backprop_overlap.gradient_buckets(
        layers, 4, bucket_mib * 2**20, backward_seconds=0.12)
    assert sum(b.nbytes for b in buckets) == 4 * 25_557_032
    ready = [b.ready_seconds for b in buckets]
    assert ready == sorted(ready)
    assert ready[-1] == pytest.approx(0.12)
    expected_count = {0: len(layers), math.inf: 1}.get(bucket_mib)
    if expected_count:
        assert len(buckets) == expected_count
    # The first bucket closes on the fc layer (8.2 MB) at its share of
    # backprop whenever the bucket is not larger than it.
    if bucket_mib in (0, 1):
        assert buckets[0].nbytes == 4 * (2048 * 1000 + 1000)
        fc_share = 2048 * 1000 / sum(layer.macs for layer in layers)
        assert buckets[0].ready_seconds == pytest.approx(0.12 * fc_share)


def test_communication_timeline_by_hand():
    buckets = [backprop_overlap.Bucket(1.0, 3.0),
               backprop_overlap.Bucket(2.0, 0.5),
               backprop_overlap.Bucket(6.0, 1.0)]
    # 1 -> 4, then waits for the channel: 4 -> 4.5, then 6 -> 7.
    assert backprop_overlap.communication_end_seconds(buckets, float) == 7.0


def paper_like_workload():
    return backprop_overlap.Workload(forward_seconds=0.1,
                                     backward_seconds=0.12,
                                     update_seconds=0.01)


@pytest.mark.parametrize("algorithm", collective_costs.ALGORITHMS)
@pytest.mark.parametrize("overlap", [True, False])
@pytest.mark.parametrize("inter_beta", [BETA, 1e-8, 1e-7])
@pytest.mark.parametrize("gpus", [8, 64, 256])
def test_overlap_bounds(algorithm, overlap, inter_beta, gpus):
    workload = paper_like_workload()
    slow = dataclasses.replace(cluster(), inter_beta=inter_beta)
    row = backprop_overlap.iteration(workload, slow, gpus, algorithm, overlap)
    compute = workload.compute_seconds
    comm = row["comm_seconds"]
    assert row["iteration_seconds"] >= compute
    assert row["iteration_seconds"] >= max(
        compute, workload.forward_seconds + comm + workload.update_seconds)
    assert row["iteration_seconds"] <= compute + comm + 1e-12
    if not overlap:
        assert row["iteration_seconds"] == pytest.approx(compute + comm)


def test_efficiency_is_one_at_the_base_size():
    variants = [(a, o) for a in collective_costs.ALGORITHMS
                for o in (True, False)]
    rows = backprop_overlap.scaling_rows(paper_like_workload(), cluster(),
                                         [8, 16, 32], variants)
    assert len(rows) == 3 * len(variants)
    for row in rows:
        if row["gpus"] == 8:
            assert row["efficiency"] == 1.0
            assert row["speedup"] == 1.0
        assert 0 < row["efficiency"] <= 1.0
        assert row["images_per_second"] == pytest.approx(
            row["gpus"] * 32 / row["iteration_seconds"])


def test_solve_forward_seconds_hits_the_target():
    workload = paper_like_workload()
    forward = backprop_overlap.solve_forward_seconds(0.3, workload,
                                                     cluster(), 8, "ring")
    solved = dataclasses.replace(workload, forward_seconds=forward)
    assert backprop_overlap.iteration(solved, cluster(), 8, "ring")[
        "iteration_seconds"] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="more than the target"):
        backprop_overlap.solve_forward_seconds(0.1, workload, cluster(), 8,
                                               "ring")


def test_alpha_for_speedup():
    nbytes, servers = 2 * 10**6, 32
    alpha = collective_costs.alpha_for_speedup(nbytes, servers, BETA, 3.0)
    ring = collective_costs.ring_allreduce_seconds(nbytes, servers, alpha,
                                                   BETA)
    halving = collective_costs.halving_doubling_allreduce_seconds(
        nbytes, servers, alpha, BETA)
    assert ring / halving == pytest.approx(3.0)


def synthetic_sweep(alpha, beta, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    sweep = []
    for workers in (2, 4):
        for nbytes in (2**10, 2**14, 2**18, 2**22, 2**26):
            seconds = 2 * (workers - 1) * alpha + 2 * (
                workers - 1) / workers * nbytes * beta
            sweep.append({"bytes": nbytes, "workers": workers,
                          "seconds": seconds * (1 + noise *
                                                rng.standard_normal())})
    sweep.append({"bytes": 2**20, "workers": 1, "seconds": 1e-6})
    return sweep


def test_calibrate_recovers_alpha_and_beta():
    exact = allreduce_calibration.calibrate(synthetic_sweep(4e-5, 1e-9))
    assert exact["alpha"] == pytest.approx(4e-5)
    assert exact["beta"] == pytest.approx(1e-9)
    assert exact["residual_rms_seconds"] < 1e-12
    assert exact["count"] == 10  # The 1-worker measurement is left out.
    noisy = allreduce_calibration.calibrate(
        synthetic_sweep(4e-5, 1e-9, noise=0.01))
    assert noisy["alpha"] == pytest.approx(4e-5, rel=0.1)
    assert noisy["beta"] == pytest.approx(1e-9, rel=0.05)
    assert noisy["bandwidth_bytes_per_second"] == pytest.approx(
        1 / noisy["beta"])
    assert 0 < noisy["relative_residual_rms"] < 0.05


def test_calibrate_keeps_coefficients_non_negative():
    # Pure bandwidth with a negative offset would fit alpha < 0.
    sweep = [{"bytes": n, "workers": 2, "seconds": n * 1e-9 - 1e-6}
             for n in (2**20, 2**22, 2**24)]
    fit = allreduce_calibration.calibrate(sweep)
    assert fit["alpha"] == 0.0
    assert fit["beta"] == pytest.approx(1e-9, rel=0.01)


def test_calibrate_needs_two_sizes():
    with pytest.raises(ValueError, match="two message sizes"):
        allreduce_calibration.calibrate(
            [{"bytes": 8, "workers": 2, "seconds": 1.0}] * 3)


def test_local_scenario_two_workers():
    calibration = {"alpha": 5e-5, "beta": 2e-9}
    scenario = comm_model.local_scenario(calibration, step_seconds=0.5,
                                         gradient_bytes=4 * 10**6)
    rows = {(r["gpus"], r["overlap"]): r for r in scenario["rows"]}
    # Without overlap: step + one 2-worker ring of all bytes.
    assert rows[2, False]["iteration_seconds"] == pytest.approx(
        0.5 + 2 * 5e-5 + 4 * 10**6 * 2e-9)
    assert rows[1, True]["iteration_seconds"] == pytest.approx(0.5)


def test_paper_scenario_iteration_time():
    rows = comm_model.paper_scenario()["rows"]
    assert [r["gpus"] for r in rows[:6]] == [8, 16, 32, 64, 128, 256]
    for row in rows:
        if row["gpus"] == 8:  # Fitted: 0.26 s x 0.90 (docs/paper.md).
            assert row["iteration_seconds"] == pytest.approx(0.234)
        if row["gpus"] == 256:
            assert 0.2 <= row["iteration_seconds"] <= 0.35
            # The model is an idealisation: never below the paper's 90%.
            assert 0.90 <= row["efficiency"] <= 1.0


def test_h100_halving_doubling_scales_better_than_ring():
    rows = comm_model.h100_scenario()["rows"]
    by_key = {(r["gpus"], r["algorithm"], r["overlap"]): r for r in rows}
    assert max(r["gpus"] for r in rows) == 1024
    for (gpus, algorithm, overlap), row in by_key.items():
        if algorithm == "ring":
            halving = by_key[gpus, "halving_doubling", overlap]
            assert halving["iteration_seconds"] <= row["iteration_seconds"]


def test_tool_flags_to_json_png_and_report(tmp_path):
    calibration_path = tmp_path / "sweep.json"
    calibration_path.write_text(json.dumps({
        "allreduce_sweep": synthetic_sweep(4e-5, 1e-9),
        "step_seconds": 0.8, "machine": "ignored"}))
    result = subprocess.run(
        [sys.executable, str(TOOL), f"--calibration_json={calibration_path}",
         "--max_gpus=64", "--paper_inter_alpha_us=50",
         "--h100_inter_gbits=3200", f"--out_json={tmp_path / 'model.json'}",
         f"--out_png={tmp_path / 'model.png'}"],
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "model.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    written = json.loads((tmp_path / "model.json").read_text())
    assert set(written) == {"paper_checks", "paper_sensitivity",
                            "calibration", "link_calibration", "scenarios"}
    assert written["link_calibration"] == {"skipped": True}
    assert set(written["scenarios"]) == {"paper", "h100", "local"}
    assert written["calibration"]["alpha"] == pytest.approx(4e-5)
    paper = written["scenarios"]["paper"]["parameters"]
    h100 = written["scenarios"]["h100"]["parameters"]
    assert (paper["inter_alpha_us"], paper["max_gpus"]) == (50.0, 256)
    assert (h100["inter_gbits"], h100["max_gpus"]) == (3200.0, 64)
    assert h100["gpus_per_server"] == 8
    assert max(row["gpus"] for row in written["scenarios"]["h100"][
        "rows"]) == 64
    for scenario in written["scenarios"].values():
        assert {"parameters", "rows"} <= set(scenario)
        assert {"gpus", "algorithm", "overlap", "iteration_seconds",
                "comm_seconds", "exposed_comm_seconds",
                "efficiency"} <= set(scenario["rows"][0])
    text = result.stdout
    assert "## paper" in text and "## h100" in text and "## local" in text
    assert "| 256 | 32 | halving_doubling |" in text
    assert text.startswith("calibration: alpha = 40.0 us")


def test_analyse_without_calibration_says_skipped():
    result = comm_model.analyse(h100=comm_model.H100Setting(max_gpus=16))
    assert result["calibration"] == {"skipped": True}
    assert "calibration skipped" in comm_model.report(result)
    assert "local" not in result["scenarios"]


def test_report_tables():
    result = comm_model.analyse(h100=comm_model.H100Setting(max_gpus=16))
    lines = comm_model.scenario_table(result["scenarios"]["h100"]).split(
        "\n")
    assert lines[0].startswith("| GPUs | servers | algorithm | overlap |")
    assert lines[1] == "|---:|---:|---|" + "---:|" * 7
    assert len(lines) == 2 + 2 * 4  # 8 and 16 GPUs, four variants.
    assert lines[2].startswith("| 8 | 1 | ring | yes |")
    table = comm_model.sensitivity_table(result["paper_sensitivity"])
    assert table.split("\n")[:3] == [
        "| alpha us | algorithm | per layer | 1 MiB | 4 MiB | 25 MiB |",
        "|---:|---|---:|---:|---:|---:|",
        "| 10 | ring | " + " | ".join(
            f"{row['efficiency']:.3f}" for row in result["paper_sensitivity"]
            if row["alpha_us"] == 10 and row["algorithm"] == "ring") + " |"]


def test_read_calibration_names_the_missing_sweep(tmp_path):
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({"step_seconds": 0.5}))
    with pytest.raises(ValueError, match="'allreduce_sweep'"):
        allreduce_calibration.read_calibration(path)


def _unshaped(nbytes, seconds, pack=4 * MIB, workers=2):
    return {"rate_mbit": None, "workers": workers, "bytes": nbytes,
            "bytes_per_pack": pack, "seconds": seconds}


def test_the_links_host_cost_is_added_to_the_inter_server_beta():
    # 2 ns per byte sent: a 2-worker ring sends n bytes per worker.
    records = [_unshaped(64 * MIB, 2e-9 * 64 * MIB),
               _unshaped(16 * MIB, 2e-9 * 16 * MIB),
               _unshaped(1 * MIB, 1.0),  # Latency-bound: left out.
               _unshaped(64 * MIB, 5.0, pack=0)]  # Other packs: left out.
    h100 = comm_model.H100Setting(max_gpus=32)
    result = comm_model.analyse(h100=h100, link_records=records)
    assert result["link_calibration"] == {
        "host_ns_per_byte": pytest.approx(2.0), "bytes_per_pack": 4 * MIB}
    assert list(result["scenarios"]) == ["paper", "h100", "paper + gRPC host",
                                         "h100 + gRPC host"]
    projected = result["scenarios"]["h100 + gRPC host"]
    beta = 1 / (400 * collective_costs.GBIT_PER_SECOND)
    assert projected["parameters"]["cluster"]["inter_beta"] == pytest.approx(
        beta + 2e-9)
    assert result["scenarios"]["h100"]["parameters"]["cluster"][
        "inter_beta"] == pytest.approx(beta)
    # One server sends nothing between servers: the host cost changes
    # nothing there, and slows every larger size.
    plain = result["scenarios"]["h100"]["rows"]
    costly = projected["rows"]
    assert costly[0]["iteration_seconds"] == plain[0]["iteration_seconds"]
    assert all(c["iteration_seconds"] > p["iteration_seconds"]
               for c, p in zip(costly, plain) if c["gpus"] > 8)
    assert "2.00 ns per byte sent (0.50 GB/s)" in comm_model.report(result)
    with pytest.raises(ValueError, match="in packs of 1048576 bytes"):
        comm_model.analyse(h100=h100, link_records=records,
                           link_pack_bytes=MIB)


def test_tool_projects_with_the_links_json(tmp_path):
    links = tmp_path / "links.json"
    links.write_text(json.dumps({"records": [_unshaped(64 * MIB, 0.3)]}))
    result = subprocess.run(
        [sys.executable, str(TOOL), f"--links_json={links}", "--max_gpus=16",
         f"--out_json={tmp_path / 'model.json'}"],
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "## h100 + gRPC host" in result.stdout
    written = json.loads((tmp_path / "model.json").read_text())
    assert written["link_calibration"]["host_ns_per_byte"] == pytest.approx(
        1e9 * 0.3 / (64 * MIB))
    links.write_text(json.dumps({"hosts": 2}))
    result = subprocess.run(
        [sys.executable, str(TOOL), f"--links_json={links}"],
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode != 0
    assert "no 'records' (write it with tools/bench_links.py" in result.stderr
