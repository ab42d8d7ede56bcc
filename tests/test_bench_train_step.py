"""tf_lbsgd.benchmarks.train_step: log parsing, the table's arithmetic, the
precisions as each peer applies them; a tiny run of
tools/bench_train_step.py in two precisions."""

import json
import os
import pathlib
import subprocess
import sys

import keras
import pytest

from tf_lbsgd import benchmark
from tf_lbsgd import worker_packing
from tf_lbsgd.analysis import machine
from tf_lbsgd.benchmarks import step_peers
from tf_lbsgd.benchmarks import train_step as bench

# abspath, not resolve(): under Bazel the tool is in the runfiles next to
# this file, which is a symlink into the checkout.
REPO_ROOT = pathlib.Path(os.path.abspath(__file__)).parents[1]

# Lines as Model Garden's resnet_ctl_imagenet_main logs them (seen here).
MODEL_GARDEN_LOG = """\
I1125 14:49:25.575316 140027183377280 keras_utils.py:145] TimeHistory: 26.28 seconds, 0.61 examples/second between steps 0 and 1
I1125 14:49:38.706026 140027183377280 keras_utils.py:145] TimeHistory: 12.84 seconds, 1.25 examples/second between steps 1 and 2
I1125 14:49:49.719298 140027183377280 keras_utils.py:145] TimeHistory: 10.99 seconds, 1.46 examples/second between steps 2 and 3
I1125 14:50:00.394624 140027183377280 keras_utils.py:145] TimeHistory: 10.67 seconds, 1.50 examples/second between steps 3 and 4
"""


def test_model_garden_log_skips_the_warmup_steps():
    assert step_peers.seconds_per_step_from_log(MODEL_GARDEN_LOG, 2) == (
        pytest.approx((10.99 + 10.67) / 2))
    assert step_peers.seconds_per_step_from_log(MODEL_GARDEN_LOG, 0) == (
        pytest.approx((26.28 + 12.84 + 10.99 + 10.67) / 4))


def test_model_garden_log_without_steady_steps_is_an_error():
    with pytest.raises(ValueError, match="no TimeHistory line after step 4"):
        step_peers.seconds_per_step_from_log(MODEL_GARDEN_LOG, 4)


def test_summarize_rates_ratios_and_peak_shares():
    rows, records = bench.summarize(
        {"ours": [0.5, 0.4, 0.6], "peer": [1.0, 1.2, 0.8]},
        global_batch=16, gflop=2.0, peaks={"matmul": 100.0, "conv": 80.0})
    assert records["ours"]["median_s_per_step"] == 0.5
    assert records["ours"]["images_per_second"] == pytest.approx(32.0)
    assert records["ours"]["peak_fraction"] == pytest.approx(0.64)
    assert records["ours"]["conv_peak_fraction"] == pytest.approx(0.8)
    assert records["peer"]["ours_speedup"] == pytest.approx(2.0)
    assert [row[0] for row in rows] == ["ours", "peer"]
    assert rows[1][-3:] == ["32%", "40%", "2.00x"]
    assert rows[0][1] == 500.0 and rows[1][1] == 1000  # ms, whole from 1 s.


def test_speed_ratios_between_precisions_per_peer():
    records = {
        "float32": {"ours": {"median_s_per_step": 2.0},
                    "fit": {"median_s_per_step": 3.0},
                    "only_fp32": {"median_s_per_step": 1.0}},
        "mixed_bfloat16": {"ours": {"median_s_per_step": 0.5},
                           "fit": {"median_s_per_step": 6.0}}}
    assert bench.speed_ratios(records) == {
        "mixed_bfloat16/float32": {"ours": 4.0, "fit": 0.5}}
    assert bench.ratio_table(records).splitlines()[2:] == [
        "| ours | 2000 | 500 | 4.00x |", "| fit | 3000 | 6000 | 0.50x |"]


def test_precisions_are_checked():
    assert step_peers.check_precisions(("float32", "mixed_bfloat16")) == [
        "float32", "mixed_bfloat16"]
    with pytest.raises(ValueError, match="unknown precision 'bf16'"):
        step_peers.check_precisions(["bf16"])
    with pytest.raises(ValueError, match="repeated"):
        step_peers.check_precisions(["float32", "float32"])
    with pytest.raises(ValueError, match="no precision"):
        step_peers.check_precisions([])
    assert bench.peak_dtypes(["float32"]) == ["float32", "bfloat16"]
    assert bench.peak_dtypes(["mixed_float16", "mixed_bfloat16"]) == [
        "float32", "bfloat16", "float16"]


def test_failure_reason_is_the_messages_last_real_line():
    message = """Graph execution error:

Detected at node StatefulPartitionedCall defined at (most recent call last):
  File "train_step.py", line 143, in keras_fit

Trying to access resource kernel/replica_1 located in device CPU:1 from CPU:0
 Cf. https://www.tensorflow.org/xla/known_issues
\t [[{{node StatefulPartitionedCall}}]] [Op:__inference_step_4029]"""
    assert bench.failure_reason(RuntimeError(message)) == (
        "RuntimeError: Trying to access resource kernel/replica_1 located in "
        "device CPU:1 from CPU:0")
    assert bench.failure_reason(ValueError("one line")) == (
        "ValueError: one line")


def test_model_garden_takes_its_own_dtype_flag():
    for precision, dtype in [("float32", "fp32"), ("mixed_bfloat16", "bf16"),
                             ("mixed_float16", "fp16")]:
        command = step_peers.model_garden_command(16, 5, precision)
        assert f"--dtype={dtype}" in command and "--train_steps=5" in command
        assert "--enable_xla=false" in command
    assert "--enable_xla=true" in step_peers.model_garden_command(
        16, 5, enable_xla=True)


def test_our_trainer_applies_the_projects_precision_rules():
    """The policy while the model is built; loss scaling only for float16."""
    spec = step_peers.MODELS["small"]
    strategy = step_peers.strategy_for(1)
    for precision, scaled in [("mixed_float16", True),
                              ("mixed_bfloat16", False)]:
        trainer = benchmark.SyntheticTrainer(
            strategy, spec["model_fn"], 2, spec["image_shape"],
            spec["num_classes"], precision=precision)
        assert trainer.model.dtype_policy.name == precision
        assert isinstance(trainer.optimizer,
                          keras.optimizers.LossScaleOptimizer) is scaled
        assert trainer.trainer.loss_scaling is scaled
    assert keras.mixed_precision.global_policy().name == "float32"


def test_resnet50_training_flop_per_image():
    """3 x 4.09 G multiply-adds x 2 (R15, docs/paper.md)."""
    spec = step_peers.MODELS["resnet50"]
    model = spec["model_fn"](input_shape=spec["image_shape"],
                             num_classes=spec["num_classes"])
    assert bench.gflop_per_image(model) == pytest.approx(3 * 4.09 * 2,
                                                         rel=0.01)


def test_tiny_run_writes_a_consistent_table(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tools" / "bench_train_step.py"),
         "--model=small", "--rounds=1", "--steps=2", "--batch=16",
         "--peers=ours,keras_fit", "--replicas=2",
         "--precision=float32,mixed_bfloat16", "--peak_matmul_size=128",
         "--peak_conv_batch=1", f"--out_json={out}"],
        capture_output=True, text=True, env=env, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(out.read_text())
    capability = payload["cpu_bfloat16"]
    assert capability == machine.bfloat16_capability(machine.read_cpuinfo())
    table = result.stdout
    assert f"CPU bfloat16: {capability['verdict']}" in table
    assert ("bfloat16 is emulated" in table) is (
        capability["verdict"] == machine.EMULATED)
    assert "| matmul 128^3 |" in table
    assert "| conv 3x3, 1x56x56x64 -> 64 |" in table
    assert "\nfloat32 (computing in float32; peaks: matmul" in table
    assert "\nmixed_bfloat16 (computing in bfloat16; peaks: matmul" in table
    assert table.count("| ours |") == 3  # Two precisions and the ratios.
    assert payload["global_batch"] == 16 and payload["replicas"] == 2
    assert payload["threads"] == {"inter_op": 0, "intra_op": 0,
                                  "reason": "set: TensorFlow's default"}
    assert "threads per op all (set: TensorFlow's default)" in table
    assert payload["machine"]["cores"] == os.cpu_count()
    assert payload["precisions"] == ["float32", "mixed_bfloat16"]
    peaks = payload["peaks_gflops"]
    assert payload["matmul_peak_gflops"] == peaks["matmul"]["float32"] > 0
    assert peaks["conv"]["bfloat16"] > 0
    # The top-level fields are float32's, as before.
    assert payload["reference"] == "ours"
    assert payload["peers"] == payload["by_precision"]["float32"]["peers"]
    for precision, dtype in [("float32", "float32"),
                             ("mixed_bfloat16", "bfloat16")]:
        entry = payload["by_precision"][precision]
        ours, fit = entry["peers"]["ours"], entry["peers"]["keras_fit"]
        assert ours["ours_speedup"] == 1.0
        for record in (ours, fit):
            assert record["median_s_per_step"] > 0
            assert record["images_per_second"] == pytest.approx(
                16 / record["median_s_per_step"])
            assert record["conv_peak_fraction"] == pytest.approx(
                record["gflops"] / peaks["conv"][dtype])
        assert fit["ours_speedup"] == pytest.approx(
            fit["median_s_per_step"] / ours["median_s_per_step"])
    fp32 = payload["by_precision"]["float32"]["peers"]
    bf16 = payload["by_precision"]["mixed_bfloat16"]["peers"]
    assert payload["speed_ratios"]["mixed_bfloat16/float32"]["ours"] == (
        pytest.approx(fp32["ours"]["median_s_per_step"]
                      / bf16["ours"]["median_s_per_step"]))


def test_packed_ours_beside_fit_in_its_own_process_with_default_threads(
        tmp_path):
    """--pack_workers packs our peer's 4 workers onto the cores;
    --default_threads_peers times fit in a child process of TensorFlow's
    default threads in the same rounds as the peers of this one."""
    out = tmp_path / "bench.json"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tools" / "bench_train_step.py"),
         "--model=small", "--rounds=2", "--steps=2", "--batch=16",
         "--replicas=4", "--peers=ours,keras_fit", "--pack_workers=true",
         "--cpu_threads=auto", "--default_threads_peers=keras_fit",
         "--peak_matmul_size=128", "--peak_conv_batch=1",
         f"--out_json={out}"],
        capture_output=True, text=True, env=env, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(out.read_text())
    replicas = worker_packing.replicas_for(4, os.cpu_count())
    assert payload["ours_packing"]["replicas"] == replicas
    assert ("packed onto" in payload["ours_packing"]["reason"]) is (
        replicas < 4)
    peers = payload["peers"]
    assert set(peers) == {"ours", "keras_fit", "keras_fit_default_threads"}
    for record in peers.values():
        assert len(record["seconds_per_step"]) == 2
        assert record["images_per_second"] == pytest.approx(
            16 / record["median_s_per_step"])
    assert "| keras_fit_default_threads |" in result.stdout
    assert f"ours: {payload['ours_packing']['reason']}" in result.stdout


def test_default_threads_peers_must_be_known_peers():
    with pytest.raises(ValueError, match="unknown peer 'fit'"):
        bench.run_benchmark("small", 1, default_threads_peers=["fit"],
                            child_command=lambda *_: [], steps=1,
                            peers=[], peak_matmul_size=8, peak_conv_batch=1,
                            peak_runs=1)


def test_bad_pack_workers_is_a_usage_error():
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tools" / "bench_train_step.py"),
         "--pack_workers=maybe"], capture_output=True, text=True,
        timeout=120, check=False)
    assert result.returncode == 1
    assert "--pack_workers must be auto, true or false, got 'maybe'" in (
        result.stderr)


def test_bad_cpu_threads_is_a_usage_error():
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tools" / "bench_train_step.py"),
         "--cpu_threads=fast"], capture_output=True, text=True, timeout=120,
        check=False)
    assert result.returncode == 1
    assert "--cpu_threads must be 'auto', 'default' or a pair" in (
        result.stderr)
