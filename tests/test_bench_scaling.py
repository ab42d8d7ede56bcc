"""Weak scaling on localhost: tf_lbsgd.analysis.scaling (plan, efficiency,
table), tf_lbsgd.scaling_bench (the launcher runs) and one real run of
tools/bench_scaling.py, 1 worker vs 2 workers of the small model (RING).

No test asserts a timing: only that the numbers exist, are positive and that
the derived ones follow from the measured ones.
"""

import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

import pytest

from tf_lbsgd import scaling_bench
from tf_lbsgd.analysis import scaling

# abspath, not resolve(): under Bazel the test file is a symlink into the
# checkout, and the tools must come from the runfiles next to it.
TOOLS = pathlib.Path(os.path.abspath(__file__)).parents[1] / "tools"
LAUNCHER = (sys.executable, str(TOOLS / "launch_local.py"))


def _run(model, workers, pack, step, allreduce, batch=8):
    return {"model": model, "workers": workers, "bytes_per_pack": pack,
            "per_worker_batch": batch, "step_seconds": step,
            "allreduce_seconds": allreduce}


def test_scaling_rows_hand_numbers():
    rows = scaling.scaling_rows([
        _run("m", 1, 0, 0.5, 0.01),
        _run("m", 2, 0, 0.625, 0.125),
        _run("m", 2, 4096, 0.5, 0.1),
        _run("other", 2, 0, 0.25, 0.05, batch=4),  # No 1-worker baseline.
    ])
    assert [r["efficiency"] for r in rows] == [1.0, 0.8, 1.0, None]
    assert [r["images_per_second"] for r in rows] == [16.0, 25.6, 32.0, 32.0]
    assert [r["allreduce_share"] for r in rows] == pytest.approx(
        [0.02, 0.2, 0.2, 0.2])
    assert [r["step_ms"] for r in rows] == pytest.approx([500, 625, 500, 250])
    assert rows[1]["allreduce_ms"] == pytest.approx(125)
    assert [r["bytes_per_pack"] for r in rows] == [0, 0, 4096, 0]
    assert all(r["compute_ms"] is None for r in rows)


def test_scaling_table_and_goal_lines():
    rows = scaling.scaling_rows([_run("resnet50", 1, 0, 2.0, 0.001),
                              _run("resnet50", 2, 0, 2.5, 0.5),
                              _run("resnet50", 2, 4096, 2.0, 0.4),
                              _run("small", 2, 0, 1.0, 0.1)])
    table = scaling.scaling_table(rows).splitlines()
    assert table[0].startswith("| model | workers | bytes_per_pack |")
    assert len(table) == 2 + 4
    assert table[4] == (
        "| resnet50 | 2 | 4096 | 8 | 2000 | 400 | 8 | 1 | 0.2 | - |")
    assert table[5].split(" | ")[7] == "-"  # Efficiency without baseline.
    assert "compute ms" not in table[0]
    assert scaling.goal_lines(rows) == [
        "goal resnet50 2 workers efficiency >= 90% (bytes_per_pack=0): "
        "80.0%, NOT met",
        "goal resnet50 2 workers efficiency >= 90% (bytes_per_pack=4096): "
        "100.0%, met"]


def test_compute_column_only_when_measured():
    rows = scaling.scaling_rows([dict(_run("m", 1, 0, 0.5, 0.01),
                                   compute_seconds=0.25),
                              dict(_run("m", 2, 0, 1.0, 0.1),
                                   others_cores=[0.5, 1.25])])
    assert [r["compute_ms"] for r in rows] == [250.0, None]
    assert [r["others_cores"] for r in rows] == [None, 1.25]  # The most.
    table = scaling.scaling_table(rows).splitlines()
    assert table[0].endswith("| others' cores | compute ms (no allreduce) | "
                             "step / compute |")
    assert table[2].endswith("| 0.02 | - | 250 | 2 |")
    assert table[3].endswith("| 0.1 | 1.25 | - | - |")


def test_overlap_goal_and_columns_of_inter_op_threads_and_profiles():
    overlap = {"collectives": 20, "started_in_backward": 18,
               "exposed_ms": 40.0}
    runs = [_run("resnet50", 1, 0, 2.0, 0.001),
            dict(_run("resnet50", 2, 0, 2.5, 0.5), compute_seconds=2.4,
                 interop_threads=1,
                 overlaps=[dict(overlap, started_in_backward=0),
                           dict(overlap, started_in_backward=2,
                                exposed_ms=60.0)]),
            dict(_run("resnet50", 2, 0, 2.1, 0.5), compute_seconds=2.0,
                 interop_threads=2, overlaps=[overlap])]
    rows = scaling.scaling_rows(runs)
    assert [r["interop_threads"] for r in rows] == [None, 1, 2]
    assert rows[1]["started_in_backward"] == 1  # Median over rounds.
    assert rows[1]["exposed_ms"] == 50.0
    assert rows[0]["exposed_ms"] is None
    table = scaling.scaling_table(rows).splitlines()
    assert table[0].startswith("| model | workers | bytes_per_pack | "
                               "inter-op threads | batch/worker |")
    assert table[0].endswith("| step / compute | packs started in backprop "
                             "| exposed comm ms |")
    assert table[2].endswith("| - | - | - | - |")  # 1 worker, no profile.
    assert table[3].endswith("| 2400 | 1.04 | 1 of 20 | 50 |")
    assert table[4].endswith("| 2000 | 1.05 | 18 of 20 | 40 |")
    assert scaling.goal_lines(rows) == [
        "goal resnet50 2 workers efficiency >= 90% (bytes_per_pack=0, "
        "inter-op threads 1): 80.0%, NOT met",
        "goal resnet50 2 workers step <= 105% of compute alone "
        "(bytes_per_pack=0, inter-op threads 1): 104.2%, met",
        "goal resnet50 2 workers efficiency >= 90% (bytes_per_pack=0, "
        "inter-op threads 2): 95.2%, met",
        "goal resnet50 2 workers step <= 105% of compute alone "
        "(bytes_per_pack=0, inter-op threads 2): 105.0%, met"]


def test_others_cores():
    # 30 busy CPU seconds in 10 s, 12 of them ours: others kept 1.8 cores.
    assert scaling.others_cores(30.0, 12.0, 10.0) == pytest.approx(1.8)
    assert scaling.others_cores(10.0, 12.0, 10.0) == 0.0  # Clock granularity.
    assert scaling.others_cores(None, 12.0, 10.0) is None
    busy = scaling.busy_cpu_seconds()
    assert busy is None or busy > 0
    assert scaling.own_cpu_seconds() > 0


def test_busy_cpu_seconds_reads_proc_stat(tmp_path):
    stat = tmp_path / "stat"
    hz = os.sysconf("SC_CLK_TCK")
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text(f"cpu  {hz} 0 {2 * hz} 999999 77 0 0 {hz} 5 0\n"
                    "cpu0 1 2 3\n")
    assert scaling.busy_cpu_seconds(str(stat)) == pytest.approx(4.0)
    assert scaling.busy_cpu_seconds(str(tmp_path / "missing")) is None


def test_merge_runs_pools_rounds():
    first = {"model": "m", "workers": 2, "bytes_per_pack": 0,
             "per_worker_batch": 4, "steps_per_loop": 2,
             "loop_seconds": [2.0, 4.0], "allreduce_seconds_all": [0.1, 0.3],
             "allreduce_sweep": [{"bytes": 4, "workers": 2, "seconds": 1.0}]}
    first["wall_seconds"], first["others_cores"] = [10.0], [0.1]
    second = dict(first, loop_seconds=[3.0], allreduce_seconds_all=[0.2],
                  wall_seconds=[12.0], others_cores=[])
    other = dict(first, bytes_per_pack=8, loop_seconds=[1.0],
                 allreduce_seconds_all=[0.5], compute_loop_seconds=[0.5, 0.7])
    merged = scaling.merge_runs([first, other, second])
    assert len(merged) == 2
    assert merged[0]["loop_seconds"] == [2.0, 4.0, 3.0]
    assert merged[0]["rounds"] == 2
    assert merged[0]["step_seconds"] == 1.5  # Median of 1, 2, 1.5.
    assert merged[0]["allreduce_seconds"] == 0.2
    assert "allreduce_sweep" not in merged[0]
    assert merged[0]["compute_seconds"] is None  # Not measured.
    assert merged[0]["wall_seconds"] == [10.0, 12.0]
    assert merged[0]["others_cores"] == [0.1]
    assert merged[1]["step_seconds"] == 0.5
    assert merged[1]["compute_seconds"] == pytest.approx(0.3)


def test_local_step_keys_only_with_a_one_worker_small_run():
    runs = [dict(_run("resnet50", 1, 0, 6.0, 0.01), gradient_bytes=100),
            dict(_run("small", 2, 0, 0.2, 0.02), gradient_bytes=10),
            dict(_run("small", 1, 0, 0.1, 0.001, batch=32), gradient_bytes=10)]
    assert scaling.local_step(runs) == {"step_seconds": 0.1,
                                     "gradient_bytes": 10,
                                     "images_per_worker": 32}
    assert scaling.local_step(runs[:2]) == {}  # Absent, not null.


def test_plan_runs():
    plan = scaling.plan_runs(["a", "b"], [1, 2], [0, 4096], sweep=True)
    assert [(r["model"], r["workers"], r["bytes_per_pack"], r["sweep"])
            for r in plan] == [("a", 1, 0, False), ("a", 2, 0, True),
                               ("a", 2, 4096, False), ("b", 1, 0, False),
                               ("b", 2, 0, False), ("b", 2, 4096, False)]
    assert not any(r["sweep"] for r in scaling.plan_runs(["a"], [1, 2], [0],
                                                      sweep=False))
    assert {r["interop_threads"] for r in plan} == {None}


def test_plan_runs_each_inter_op_count_with_more_than_one_worker():
    plan = scaling.plan_runs(["a"], [1, 2], [0], sweep=True,
                             interop_threads=(1, 2))
    assert [(r["workers"], r["interop_threads"], r["sweep"])
            for r in plan] == [(1, 1, False), (2, 1, True), (2, 2, False)]
    merged = scaling.merge_runs([
        dict(_run("a", 2, 0, 1.0, 0.1), steps_per_loop=1, loop_seconds=[1.0],
             allreduce_seconds_all=[0.1], interop_threads=i,
             overlap={"exposed_ms": i})
        for i in (1, 2, 1)])
    assert [(m["interop_threads"], m["rounds"], m["overlaps"])
            for m in merged] == [(1, 2, [{"exposed_ms": 1}] * 2),
                                 (2, 1, [{"exposed_ms": 2}])]


def test_interop_thread_counts():
    assert scaling.interop_thread_counts([]) == (None,)
    assert scaling.interop_thread_counts(["1", "2"]) == (1, 2)
    with pytest.raises(ValueError, match=r"--interop_threads must be "
                       r"integers, got \['two'\]"):
        scaling.interop_thread_counts(["two"])
    with pytest.raises(ValueError, match=r"--interop_threads must be >= 1, "
                       r"got \['0'\]"):
        scaling.interop_thread_counts(["0"])


def test_profile_dir_of_names_the_run(tmp_path):
    run = {"model": "resnet50", "workers": 2, "bytes_per_pack": 4096,
           "interop_threads": None}
    assert scaling.profile_dir_of("", run) is None
    assert scaling.profile_dir_of(str(tmp_path), run) == str(
        tmp_path / "resnet50_w2_p4096")
    assert scaling.profile_dir_of(str(tmp_path), dict(
        run, interop_threads=2)) == str(tmp_path / "resnet50_w2_p4096_i2")


def test_settings_for():
    assert scaling.settings_for("small") == {
        "per_worker_batch": 32, "loops": 3, "steps_per_loop": 20}
    assert scaling.settings_for("resnet50") == {
        "per_worker_batch": 8, "loops": 3, "steps_per_loop": 2}
    assert scaling.settings_for("resnet50", per_worker_batch=2, loops=1) == {
        "per_worker_batch": 2, "loops": 1, "steps_per_loop": 2}
    with pytest.raises(ValueError, match="unknown model"):
        scaling.settings_for("vgg")


def test_check_plan():
    scaling.check_plan(["small"], [1, 2], [0], rounds=1)
    with pytest.raises(ValueError, match="must not be empty"):
        scaling.check_plan([], [1, 2], [0], rounds=1)
    with pytest.raises(ValueError, match=r"\(\[0, 2\]\) must be >= 1"):
        scaling.check_plan(["small"], [0, 2], [0], rounds=1)
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        scaling.check_plan(["vgg"], [1], [0], rounds=1)
    assert scaling.DEFAULT_SWEEP_SIZES == [4096 * 4 ** i for i in range(8)]


def test_report_notes_load_sweep_and_failures():
    rows = scaling.scaling_rows([dict(_run("m", 1, 0, 0.5, 0.01),
                                      others_cores=[0.5])])
    text = scaling.report(rows, [{"bytes": 4096, "workers": 2,
                                  "seconds": 0.002}],
                          [{"run": "m workers=2", "round": 0}]).splitlines()
    assert text[:3] == scaling.scaling_table(rows).splitlines()
    assert text[4].startswith("note: other processes kept up to 0.50 cores")
    assert text[6:9] == ["| bytes | workers | allreduce ms | MB/s (bytes / "
                         "time) |", "|---|---|---|---|", "| 4096 | 2 | 2 | "
                         "2.05 |"]
    assert text[-1] == "FAILED: m workers=2 (round 1)"


def test_two_local_workers_end_to_end(tmp_path):
    out = tmp_path / "scaling.json"
    process = subprocess.run(
        [sys.executable, str(TOOLS / "bench_scaling.py"), "--models=small",
         "--per_worker_batch=4", "--loops=1", "--steps_per_loop=3",
         "--bytes_per_pack=0", "--allreduce_repeats=1",
         "--sweep_sizes=4096,16384", "--sweep_repeats=1", "--run_timeout=240",
         "--interop_threads=2", f"--profile_dir={tmp_path / 'profile'}",
         "--profile_steps=2", f"--out_json={out}"],
        capture_output=True, text=True, timeout=600, check=False)
    assert process.returncode == 0, process.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["failures"] == []
    assert "cpu" in result["machine"]

    runs = {run["workers"]: run for run in result["runs"]}
    assert sorted(runs) == [1, 2]
    for workers, run in runs.items():
        assert (run["model"], run["bytes_per_pack"]) == ("small", 0)
        assert run["per_worker_batch"] == 4 and run["steps_per_loop"] == 3
        assert run["replicas"] == workers
        assert run["params"] == 308074
        assert run["gradient_bytes"] == 4 * 308074
        assert len(run["loop_seconds"]) == 1
        assert run["step_seconds"] > 0 and run["allreduce_seconds"] > 0
        assert run["step_seconds"] == pytest.approx(
            statistics.median(run["loop_seconds"]) / 3)
    t1, t2 = runs[1]["step_seconds"], runs[2]["step_seconds"]
    # The local scenario of tools/comm_model.py: the 1-worker small model.
    assert result["step_seconds"] == t1
    assert result["gradient_bytes"] == 4 * 308074
    assert result["images_per_worker"] == 4

    rows = {row["workers"]: row for row in result["rows"]}
    assert rows[1]["efficiency"] == pytest.approx(1.0)
    assert rows[2]["efficiency"] == pytest.approx(t1 / t2)
    assert rows[2]["images_per_second"] == pytest.approx(2 * 4 / t2)
    assert rows[2]["allreduce_share"] == pytest.approx(
        runs[2]["allreduce_seconds"] / t2)
    for workers, run in runs.items():
        assert len(run["wall_seconds"]) == 1 and run["wall_seconds"][0] > 0
        assert all(load >= 0 for load in run["others_cores"])
        assert rows[workers]["compute_ms"] is None

    sweep = result["allreduce_sweep"]
    assert [set(r) for r in sweep] == [{"bytes", "workers", "seconds"}] * 2
    assert [r["bytes"] for r in sweep] == [4096, 16384]
    assert all(r["workers"] == 2 and r["seconds"] > 0 for r in sweep)

    # The profiled loop: a real trace per worker, read by
    # collective_timeline: the 2-worker step all-reduces its one pack.
    for workers, run in runs.items():
        assert run["interop_threads"] == 2 and run["compression"] == "none"
        assert len(run["overlaps"]) == 1
        assert run["overlaps"][0]["steps"] >= 1
    assert runs[2]["overlaps"][0]["collectives"] >= 1
    assert rows[2]["collectives"] >= 1
    assert 0 <= rows[2]["started_in_backward"] <= rows[2]["collectives"]
    assert rows[2]["exposed_ms"] >= 0
    for name in ("small_w1_p0_i2", "small_w2_p0_i2"):
        assert list((tmp_path / "profile" / name / "worker0").glob(
            "plugins/profile/*/*.xplane.pb"))
    assert list((tmp_path / "profile" / "small_w2_p0_i2" / "worker1").glob(
        "plugins/profile/*/*.xplane.pb"))

    printed = process.stdout
    assert "| small | 2 | 0 | 2 | 4 |" in printed
    assert "| packs started in backprop | exposed comm ms |" in printed
    assert result["table"] in printed


def test_launch_reports_a_failed_worker():
    worker = ("import json, os, sys\n"
              "task = json.loads(os.environ['TF_CONFIG'])['task']\n"
              "print('bench_scaling: worker', task['index'])\n"
              "sys.exit(3 if task['index'] == 1 else 0)")
    with pytest.raises(scaling_bench.RunFailed,
                       match="launcher exit code 1") as error:
        scaling_bench.launch(LAUNCHER, 2, [sys.executable, "-c", worker],
                             cores_per_worker=None, timeout=60,
                             grace_seconds=1)
    assert "[worker 1] bench_scaling: worker 1" in str(error.value)


def test_launch_stops_a_hung_run():
    start = time.monotonic()
    with pytest.raises(scaling_bench.RunFailed, match="timed out after 2 s"):
        scaling_bench.launch(
            LAUNCHER, 1, [sys.executable, "-c", "import time; time.sleep(120)"],
            cores_per_worker=1, timeout=2, grace_seconds=1)
    assert time.monotonic() - start < 30
